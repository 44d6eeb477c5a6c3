-- Server-side copies give two segments the same root piece id and pieces: a
-- piece is deleted from its node only when no segment of that root lists it.
CREATE INDEX segments_by_root ON segments (root_piece_id);
