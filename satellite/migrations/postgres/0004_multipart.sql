-- Multipart uploads: a pending object flagged `multipart` receives its parts'
-- segments at positions part << 18 | index; each recorded part has a row here
-- until the upload is completed (the parts named become the object) or aborted.
ALTER TABLE objects ADD COLUMN multipart BIGINT NOT NULL DEFAULT 0;
CREATE INDEX objects_multipart_uploads ON objects (project_id, bucket, multipart, committed, object_key);

CREATE TABLE parts (
    stream_id BYTEA NOT NULL,
    part_number BIGINT NOT NULL,
    plain_size BIGINT NOT NULL,
    segment_count BIGINT NOT NULL,
    encrypted_info BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (stream_id, part_number)
);
