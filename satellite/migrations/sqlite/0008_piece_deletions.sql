-- Pieces to delete from their nodes: recorded in the transaction that takes
-- them out of the metabase, sent by the deletion worker with retries and
-- backoff until the node confirms, forgotten when the node is disqualified.
-- A piece shared by a server-side copy is recorded too; the worker sends its
-- delete only once no segment of its root lists it.
CREATE TABLE piece_deletions (
    node_id BLOB NOT NULL,
    root_piece_id BLOB NOT NULL,
    piece_num BIGINT NOT NULL,
    queued_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (node_id, root_piece_id, piece_num)
);
CREATE INDEX piece_deletions_due ON piece_deletions (next_attempt_at);

-- What a node said at its last check-in about the space this satellite's
-- pieces take on it, in use and in its trash.
ALTER TABLE nodes ADD COLUMN used_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN trash_bytes BIGINT NOT NULL DEFAULT 0;
-- Why the node takes no uploads (its disk failed a write probe), as it said
-- at its last check-in; NULL while its disk is healthy.
ALTER TABLE nodes ADD COLUMN disk_problem TEXT;
