//! Segments and their piece lists: adding a segment to a pending object,
//! reading segments back, the scans of remote segments that audits and the
//! repair checker make, and a repair's swap of a piece list.

use std::str::FromStr;

use archipel_proto::{multipart, NodeId, Redundancy};

use super::{is_unique_violation, BeginWrite, Metabase, Pool, SEGMENT_COLUMNS};
use crate::{Error, Result};

/// One stored piece of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub num: u16,
    pub node: NodeId,
    /// The piece's hash tree root as the node signed it.
    pub root: [u8; 32],
}

const PIECE_RECORD: usize = 2 + 32 + 32;

/// The piece list as one blob: per piece, its number (big-endian u16), node id and root.
pub fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.len() * PIECE_RECORD);
    for piece in pieces {
        out.extend_from_slice(&piece.num.to_be_bytes());
        out.extend_from_slice(piece.node.as_bytes());
        out.extend_from_slice(&piece.root);
    }
    out
}

pub fn decode_pieces(blob: &[u8]) -> Result<Vec<Piece>> {
    if !blob.len().is_multiple_of(PIECE_RECORD) {
        return Err(Error::Corrupt(format!(
            "a piece list of {} bytes is not a whole number of records",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(PIECE_RECORD)
        .map(|record| {
            let mut node = [0u8; 32];
            node.copy_from_slice(&record[2..34]);
            let mut root = [0u8; 32];
            root.copy_from_slice(&record[34..66]);
            Piece {
                num: u16::from_be_bytes([record[0], record[1]]),
                node: NodeId(node),
                root,
            }
        })
        .collect())
}

/// A segment of an object: inline (data kept here) or remote (pieces on nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub root_piece_id: [u8; 32],
    pub encrypted_key: Vec<u8>,
    pub encrypted_key_nonce: Vec<u8>,
    pub plain_offset: i64,
    pub plain_size: i64,
    pub encrypted_size: i64,
    /// `None` for inline segments.
    pub redundancy: Option<Redundancy>,
    pub inline_data: Option<Vec<u8>>,
    pub pieces: Vec<Piece>,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct SegmentRecord {
    pub(super) stream_id: Vec<u8>,
    pub(super) position: i64,
    pub(super) root_piece_id: Vec<u8>,
    pub(super) encrypted_key: Vec<u8>,
    pub(super) encrypted_key_nonce: Vec<u8>,
    pub(super) plain_offset: i64,
    pub(super) plain_size: i64,
    pub(super) encrypted_size: i64,
    pub(super) redundancy: Option<String>,
    pub(super) inline_data: Option<Vec<u8>>,
    pub(super) pieces: Vec<u8>,
    pub(super) created_at: i64,
}

impl TryFrom<SegmentRecord> for Segment {
    type Error = Error;
    fn try_from(r: SegmentRecord) -> Result<Segment> {
        let position = u32::try_from(r.position)
            .map_err(|_| Error::Corrupt(format!("segment position {}", r.position)))?;
        let root_piece_id: [u8; 32] = if r.root_piece_id.is_empty() {
            [0; 32]
        } else {
            r.root_piece_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("root piece id is not 32 bytes".into()))?
        };
        let redundancy = match r.redundancy {
            Some(text) => Some(
                Redundancy::from_str(&text)
                    .map_err(|e| Error::Corrupt(format!("redundancy {text:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Segment {
            stream_id: r.stream_id,
            position,
            root_piece_id,
            encrypted_key: r.encrypted_key,
            encrypted_key_nonce: r.encrypted_key_nonce,
            plain_offset: r.plain_offset,
            plain_size: r.plain_size,
            encrypted_size: r.encrypted_size,
            redundancy,
            inline_data: r.inline_data,
            pieces: decode_pieces(&r.pieces)?,
            created_at: r.created_at,
        })
    }
}

/// A segment's address: its stream and position.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    pub stream_id: Vec<u8>,
    pub position: u32,
}

impl Segment {
    pub fn key(&self) -> SegmentKey {
        SegmentKey {
            stream_id: self.stream_id.clone(),
            position: self.position,
        }
    }
}

/// A segment's key wrapped under an object's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedSegmentKey {
    pub position: u32,
    pub encrypted_key: Vec<u8>,
    pub encrypted_key_nonce: Vec<u8>,
}

/// The pieces of a removed segment, for best-effort deletion from their nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedSegment {
    pub root_piece_id: [u8; 32],
    pub pieces: Vec<Piece>,
}

impl From<Segment> for RemovedSegment {
    fn from(s: Segment) -> Self {
        RemovedSegment {
            root_piece_id: s.root_piece_id,
            pieces: s.pieces,
        }
    }
}

pub(super) fn redundancy_text(r: &Redundancy) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        r.required, r.repair, r.success, r.total, r.share_size
    )
}

/// The segments among `records` that have pieces on nodes, to be deleted.
pub(super) fn removed_segments(records: Vec<SegmentRecord>) -> Result<Vec<RemovedSegment>> {
    let mut removed = Vec::new();
    for record in records {
        let segment = Segment::try_from(record)?;
        if !segment.pieces.is_empty() {
            removed.push(RemovedSegment::from(segment));
        }
    }
    Ok(removed)
}

impl Metabase {
    /// Adds a segment to a pending object. A multipart upload's part may be
    /// uploaded again: its segment then replaces the one at that position,
    /// which is returned for its pieces to be deleted, and the part's record
    /// goes until the part is recorded again.
    pub async fn put_segment(
        &self,
        project: &[u8],
        segment: &Segment,
    ) -> Result<Option<RemovedSegment>> {
        let old_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 AND position = $2"
        );
        let root = if segment.inline_data.is_some() {
            Vec::new()
        } else {
            segment.root_piece_id.to_vec()
        };
        let position = i64::from(segment.position);
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            // Touch the object first so the write lock is taken before the read.
            let pending = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 0",
            )
            .bind(&segment.stream_id)
            .bind(project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pending == 0 {
                return Err(Error::NotFound("a pending object for this stream".into()));
            }
            let (multipart,): (i64,) =
                sqlx::query_as("SELECT multipart FROM objects WHERE stream_id = $1")
                    .bind(&segment.stream_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let part = multipart::part_of(segment.position);
            if multipart != 0 && !(1..=multipart::MAX_PART).contains(&part) {
                return Err(Error::InvalidArgument(format!(
                    "position {} is not in a part of this multipart upload",
                    segment.position
                )));
            }
            let mut replaced = None;
            if multipart != 0 {
                // A part being uploaded again is no longer the part recorded:
                // if this upload fails, completing must not mix the two.
                sqlx::query("DELETE FROM parts WHERE stream_id = $1 AND part_number = $2")
                    .bind(&segment.stream_id)
                    .bind(i64::from(part))
                    .execute(&mut *tx)
                    .await?;
                let old: Option<SegmentRecord> = sqlx::query_as(&old_sql)
                    .bind(&segment.stream_id)
                    .bind(position)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(old) = old {
                    // The same segment committed again (a retried request)
                    // is not a new upload of the part: replacing it would
                    // delete its own pieces.
                    if !root.is_empty() && old.root_piece_id == root {
                        return Err(Error::AlreadyExists(format!(
                            "segment {} of this object",
                            segment.position
                        )));
                    }
                    sqlx::query("DELETE FROM segments WHERE stream_id = $1 AND position = $2")
                        .bind(&segment.stream_id)
                        .bind(position)
                        .execute(&mut *tx)
                        .await?;
                    replaced = Some(Segment::try_from(old)?)
                        .filter(|s| !s.pieces.is_empty())
                        .map(RemovedSegment::from);
                }
            }
            insert_segment!(&mut *tx, segment)?;
            queue_deletions!(tx, replaced.iter());
            tx.commit().await?;
            Ok(replaced)
        })
    }

    /// The segments of a stream in position order.
    pub async fn segments(&self, stream_id: &[u8]) -> Result<Vec<Segment>> {
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 ORDER BY position"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(stream_id).fetch_all(pool).await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    pub async fn segment(&self, stream_id: &[u8], position: u32) -> Result<Segment> {
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 AND position = $2"
        );
        let record: Option<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(stream_id)
                .bind(i64::from(position))
                .fetch_optional(pool)
                .await?
        });
        record
            .ok_or_else(|| Error::NotFound(format!("segment {position}")))?
            .try_into()
    }

    /// The pieces of `removed` segments that no segment lists any more, the
    /// only ones that may be deleted from their nodes: a server-side copy's
    /// segments list the same pieces (same root piece id) as their source's.
    pub async fn unlisted(&self, removed: Vec<RemovedSegment>) -> Result<Vec<RemovedSegment>> {
        let mut unlisted = Vec::with_capacity(removed.len());
        for mut segment in removed {
            if segment.pieces.is_empty() {
                continue;
            }
            let lists: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
                sqlx::query_as("SELECT pieces FROM segments WHERE root_piece_id = $1")
                    .bind(segment.root_piece_id.as_slice())
                    .fetch_all(pool)
                    .await?
            });
            for (blob,) in lists {
                let listed = decode_pieces(&blob)?;
                segment
                    .pieces
                    .retain(|p| !listed.iter().any(|l| l.node == p.node && l.num == p.num));
            }
            if !segment.pieces.is_empty() {
                unlisted.push(segment);
            }
        }
        Ok(unlisted)
    }

    /// Up to `limit` remote segments of committed objects not expired by
    /// `now`, in (stream id, position) order from the first whose stream id is
    /// at least `from`.
    pub async fn committed_remote_segments_from(
        &self,
        from: &[u8],
        limit: usize,
        now: i64,
    ) -> Result<Vec<Segment>> {
        let columns = SEGMENT_COLUMNS
            .split(", ")
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM segments s JOIN objects o ON o.stream_id = s.stream_id \
             WHERE o.committed = 1 AND s.redundancy IS NOT NULL AND s.stream_id >= $1 \
             AND (o.expires_at = 0 OR o.expires_at > $3) \
             ORDER BY s.stream_id, s.position LIMIT $2"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(from)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(now)
                .fetch_all(pool)
                .await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    /// Up to `limit` remote segments (of committed and pending objects not
    /// expired at `now`) after `after` in (stream id, position) order: one
    /// step of the checker's scan.
    pub async fn remote_segments_after(
        &self,
        after: Option<&SegmentKey>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Segment>> {
        let (stream, position) = match after {
            Some(key) => (key.stream_id.clone(), i64::from(key.position)),
            None => (Vec::new(), -1),
        };
        let columns = SEGMENT_COLUMNS
            .split(", ")
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM segments s JOIN objects o ON o.stream_id = s.stream_id \
             WHERE s.redundancy IS NOT NULL AND (o.expires_at = 0 OR o.expires_at > $3) \
             AND (s.stream_id > $1 OR (s.stream_id = $1 AND s.position > $2)) \
             ORDER BY s.stream_id, s.position LIMIT $4"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(stream)
                .bind(position)
                .bind(now)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    /// When the pieces of a stream's segments expire (0 = never); `None` if
    /// the stream is gone.
    pub async fn stream_expiration(&self, stream_id: &[u8]) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT expires_at FROM objects WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(at,)| at))
    }

    /// Swaps a segment's piece list from `old` to `new` if it is still `old`
    /// (a repair's compare-and-swap), queueing the pieces it gives up for
    /// deletion in the same transaction. False if the list had changed.
    pub async fn swap_pieces(
        &self,
        key: &SegmentKey,
        old: &[Piece],
        new: &[Piece],
    ) -> Result<bool> {
        let given_up: Vec<Piece> = old
            .iter()
            .filter(|o| !new.iter().any(|n| n.node == o.node && n.num == o.num))
            .copied()
            .collect();
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let root: Option<(Vec<u8>,)> = sqlx::query_as(
                "UPDATE segments SET pieces = $3 WHERE stream_id = $1 AND position = $2 \
                 AND pieces = $4 RETURNING root_piece_id",
            )
            .bind(&key.stream_id)
            .bind(i64::from(key.position))
            .bind(encode_pieces(new))
            .bind(encode_pieces(old))
            .fetch_optional(&mut *tx)
            .await?;
            let Some((root,)) = root else {
                return Ok(false);
            };
            let removed = [RemovedSegment {
                root_piece_id: root
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("a segment's root piece id".into()))?,
                pieces: given_up,
            }];
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use archipel_proto::hostile;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn piece_lists_round_trip() {
        let pieces = vec![
            Piece {
                num: 3,
                node: NodeId([7; 32]),
                root: [9; 32],
            },
            Piece {
                num: 300,
                node: NodeId([1; 32]),
                root: [2; 32],
            },
        ];
        assert_eq!(decode_pieces(&encode_pieces(&pieces)).unwrap(), pieces);
        assert!(decode_pieces(&[0; 65]).is_err());
    }

    /// A piece list off the database: refused unless a whole number of
    /// records, and then decoded into pieces that encode back to it exactly.
    fn piece_list_is_checked(blob: Vec<u8>) -> Result<(), TestCaseError> {
        match decode_pieces(&blob) {
            Ok(pieces) => prop_assert_eq!(encode_pieces(&pieces), blob),
            Err(Error::Corrupt(_)) => prop_assert!(!blob.len().is_multiple_of(PIECE_RECORD)),
            Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_piece_lists_are_refused_or_decoded_exactly:
            prop::collection::vec(
                (any::<u16>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(num, node, root)| {
                    Piece {
                        num,
                        node: NodeId(node),
                        root,
                    }
                }),
                0..5,
            )
            .prop_flat_map(|pieces| hostile::bytes_or_mutated(encode_pieces(&pieces)))
            => piece_list_is_checked;
    }
}
