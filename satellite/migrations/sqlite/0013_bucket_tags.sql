-- A bucket's tags (S3 bucket tagging, for cost allocation and the like), as
-- an encoded archipel.BucketTags message; empty for none. Like the bucket's
-- name, they are not encrypted: the satellite's operator can read them.
ALTER TABLE buckets ADD COLUMN tags BLOB NOT NULL DEFAULT x'';
