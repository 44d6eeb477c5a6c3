-- Repair and online scores: nodes an operator is retiring (their pieces no longer count as healthy)
-- and the queue of segments at or below their repair threshold, most at risk first
-- (smallest margin = healthy pieces - k; a negative margin means the segment is lost).
ALTER TABLE nodes ADD COLUMN exiting_at BIGINT;

CREATE TABLE repair_queue (
    stream_id BLOB NOT NULL,
    position BIGINT NOT NULL,
    healthy BIGINT NOT NULL,
    margin BIGINT NOT NULL,
    inserted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    claim BLOB,
    PRIMARY KEY (stream_id, position)
);
CREATE INDEX repair_queue_risk ON repair_queue (margin, inserted_at);

-- Audit contacts per node per 12-hour window: the online score is the share of
-- contacts that reached the node over the recent windows.
CREATE TABLE node_online_windows (
    node_id BLOB NOT NULL,
    window_start BIGINT NOT NULL,
    total BIGINT NOT NULL,
    online BIGINT NOT NULL,
    PRIMARY KEY (node_id, window_start)
);
