-- Object versions (S3 versioning). Every committed row of a key is a version
-- of it, numbered from 1 in the order they were committed (`version`); the
-- highest is the key's current one. `versioning` is the bucket's when the
-- version was written (as buckets.versioning); one written while it was not
-- enabled (1) is the key's "null" version: a key has at most one, and the
-- next such write replaces it. A delete marker is a version with no
-- segments. Pending uploads have version 0.
ALTER TABLE objects ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN versioning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN delete_marker BIGINT NOT NULL DEFAULT 0;
UPDATE objects SET version = 1 WHERE committed = 1;
DROP INDEX objects_committed_key;
CREATE UNIQUE INDEX objects_key_version ON objects (project_id, bucket, object_key, version)
    WHERE committed = 1;
CREATE UNIQUE INDEX objects_null_version ON objects (project_id, bucket, object_key)
    WHERE committed = 1 AND versioning <> 1;

-- A bucket's versioning: 0 never enabled, 1 enabled, 2 suspended.
ALTER TABLE buckets ADD COLUMN versioning BIGINT NOT NULL DEFAULT 0;
