-- Node health (audit and unknown-error beta reputations, audit counts, vetting,
-- disqualification, suspension, contact outcomes) and audits pending in containment.
-- A NULL reputation means "never audited": the configured initial values apply.
ALTER TABLE nodes ADD COLUMN audit_alpha REAL;
ALTER TABLE nodes ADD COLUMN audit_beta REAL;
ALTER TABLE nodes ADD COLUMN unknown_alpha REAL;
ALTER TABLE nodes ADD COLUMN unknown_beta REAL;
ALTER TABLE nodes ADD COLUMN audit_total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN audit_success BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN vetted_at BIGINT;
ALTER TABLE nodes ADD COLUMN disqualified_at BIGINT;
ALTER TABLE nodes ADD COLUMN suspended_at BIGINT;
ALTER TABLE nodes ADD COLUMN last_contact_success BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN last_contact_failure BIGINT NOT NULL DEFAULT 0;

-- At most one challenge per node: the exact piece and range it timed out on.
CREATE TABLE pending_audits (
    node_id BLOB PRIMARY KEY,
    stream_id BLOB NOT NULL,
    position BIGINT NOT NULL,
    piece_num BIGINT NOT NULL,
    piece_root BLOB NOT NULL,
    chunk_index BIGINT NOT NULL,
    reverify_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
