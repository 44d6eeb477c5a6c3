-- Who may use a bucket without the project's keys and which web pages may
-- call it from a browser, kept in the clear like the bucket's name (the S3
-- gateway applies them). `acl` is the canned ACL (0 private, 1 public-read,
-- 2 public-read-write, 3 authenticated-read); `public_access_block` holds
-- S3's four settings as bits (1 BlockPublicAcls, 2 IgnorePublicAcls,
-- 4 BlockPublicPolicy, 8 RestrictPublicBuckets), -1 when none is set;
-- `cors` an encoded archipel.CorsRules message, empty when CORS is off.
ALTER TABLE buckets ADD COLUMN acl BIGINT NOT NULL DEFAULT 0;
ALTER TABLE buckets ADD COLUMN public_access_block BIGINT NOT NULL DEFAULT -1;
ALTER TABLE buckets ADD COLUMN cors BYTEA NOT NULL DEFAULT '';
