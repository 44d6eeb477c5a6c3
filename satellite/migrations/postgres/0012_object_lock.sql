-- Object Lock (S3's write-once-read-many). A version may carry a retention
-- (`retention_mode` 1 governance, 2 compliance, 0 none; `retain_until` in
-- unix seconds) and a legal hold (`legal_hold` 1); until the date passes and
-- while the hold is on, no request removes the version.
ALTER TABLE objects ADD COLUMN retention_mode BIGINT NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN retain_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN legal_hold BIGINT NOT NULL DEFAULT 0;

-- A bucket with Object Lock (`object_lock` 1; never turned off again, and its
-- versioning stays enabled) may give new versions a default retention:
-- `lock_mode` as retention_mode, for `lock_days` days or `lock_years` years.
ALTER TABLE buckets ADD COLUMN object_lock BIGINT NOT NULL DEFAULT 0;
ALTER TABLE buckets ADD COLUMN lock_mode BIGINT NOT NULL DEFAULT 0;
ALTER TABLE buckets ADD COLUMN lock_days BIGINT NOT NULL DEFAULT 0;
ALTER TABLE buckets ADD COLUMN lock_years BIGINT NOT NULL DEFAULT 0;
