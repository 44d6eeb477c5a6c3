-- Buckets whose object names the client stores unencrypted (chosen at creation, never changed):
-- their keys sort in the names' own order, so listings page with a real cursor.
ALTER TABLE buckets ADD COLUMN plain_names BIGINT NOT NULL DEFAULT 0;
