-- Projects, API keys, buckets, objects, segments and the node registry.
-- Numbers are BIGINT and flags are BIGINT 0/1 so that both backends decode them as i64.
CREATE TABLE projects (
    id BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    salt BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_hash BYTEA PRIMARY KEY,
    project_id BYTEA NOT NULL REFERENCES projects (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE buckets (
    project_id BYTEA NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE objects (
    stream_id BYTEA PRIMARY KEY,
    project_id BYTEA NOT NULL,
    bucket TEXT NOT NULL,
    object_key BYTEA NOT NULL,
    committed BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    cipher BIGINT NOT NULL,
    block_size BIGINT NOT NULL,
    encrypted_metadata BYTEA NOT NULL,
    encrypted_metadata_key BYTEA NOT NULL,
    encrypted_metadata_nonce BYTEA NOT NULL,
    plain_size BIGINT NOT NULL,
    segment_count BIGINT NOT NULL
);
CREATE INDEX objects_by_key ON objects (project_id, bucket, object_key);
CREATE UNIQUE INDEX objects_committed_key ON objects (project_id, bucket, object_key) WHERE committed = 1;
CREATE INDEX objects_pending_age ON objects (committed, created_at);

CREATE TABLE segments (
    stream_id BYTEA NOT NULL,
    position BIGINT NOT NULL,
    root_piece_id BYTEA NOT NULL,
    encrypted_key BYTEA NOT NULL,
    encrypted_key_nonce BYTEA NOT NULL,
    plain_offset BIGINT NOT NULL,
    plain_size BIGINT NOT NULL,
    encrypted_size BIGINT NOT NULL,
    redundancy TEXT,
    inline_data BYTEA,
    pieces BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (stream_id, position)
);

CREATE TABLE nodes (
    id BYTEA PRIMARY KEY,
    public_key BYTEA NOT NULL,
    address TEXT NOT NULL,
    last_net TEXT NOT NULL,
    capacity_bytes BIGINT NOT NULL,
    free_bytes BIGINT NOT NULL,
    version TEXT NOT NULL,
    last_contact BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX nodes_last_contact ON nodes (last_contact);
