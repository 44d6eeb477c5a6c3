-- Graceful exit driven by the node (see crate::exit): when it last asked
-- for work, where the satellite's scan for its pieces stands, what it has
-- handed over, and how the exit ended (finished_at set; failure NULL on
-- success). exiting_at (0003) says when it began.
ALTER TABLE nodes ADD COLUMN exit_seen_at BIGINT;
ALTER TABLE nodes ADD COLUMN exit_cursor BYTEA;
-- Pieces of the node the current pass of the scan has found so far: a pass
-- that ends having found none finishes the exit.
ALTER TABLE nodes ADD COLUMN exit_pass_pieces BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN exit_transferred BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN exit_failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN exit_finished_at BIGINT;
ALTER TABLE nodes ADD COLUMN exit_failure TEXT;

-- Pieces an exiting node could not hand over: not offered to it again; they
-- stay for repair.
CREATE TABLE exit_failures (
    node_id BYTEA NOT NULL,
    stream_id BYTEA NOT NULL,
    position BIGINT NOT NULL,
    piece_num BIGINT NOT NULL,
    PRIMARY KEY (node_id, stream_id, position, piece_num)
);
