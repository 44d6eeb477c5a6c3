-- Objects with an expiration, in the order they expire: the cleanup chore
-- deletes them as they come due without scanning the table.
CREATE INDEX objects_expiring ON objects (expires_at) WHERE expires_at <> 0;
