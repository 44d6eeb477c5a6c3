//! Garbage collection's records: the queue of pieces to delete from their
//! nodes (filled by `queue_deletions!` in the transactions that remove
//! segments, drained by the deletion worker in `crate::deletes`), and the
//! consistent scan of every piece list that retain filters are built from
//! (`crate::gc`).

use archipel_proto::NodeId;

use super::segments::{decode_pieces, Piece, RemovedSegment, SegmentKey};
use super::{BeginWrite, Metabase, Pool};
use crate::{Error, Result};

/// A piece waiting to be deleted from its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedDeletion {
    pub node: NodeId,
    pub root_piece_id: [u8; 32],
    pub piece_num: u16,
    /// Sends tried so far.
    pub attempts: u32,
}

#[derive(sqlx::FromRow)]
struct QueuedRow {
    node_id: Vec<u8>,
    root_piece_id: Vec<u8>,
    piece_num: i64,
    attempts: i64,
}

impl TryFrom<QueuedRow> for QueuedDeletion {
    type Error = Error;

    fn try_from(r: QueuedRow) -> Result<QueuedDeletion> {
        Ok(QueuedDeletion {
            node: NodeId::from_bytes(&r.node_id)
                .map_err(|_| Error::Corrupt("a queued deletion's node id".into()))?,
            root_piece_id: r
                .root_piece_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("a queued deletion's root piece id".into()))?,
            piece_num: u16::try_from(r.piece_num)
                .map_err(|_| Error::Corrupt("a queued deletion's piece number".into()))?,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        })
    }
}

/// Stream id, position, root piece id and piece list of one segment.
type PieceListRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>);

/// Piece lists read per query while scanning for retain filters.
const SCAN_PAGE: i64 = 1000;

impl Metabase {
    /// Queues `pieces` of the segment with root piece id `root` for deletion
    /// (pieces no segment ever listed, such as a repair's orphans).
    pub async fn queue_deletions(&self, root: [u8; 32], pieces: Vec<Piece>) -> Result<()> {
        let removed = [RemovedSegment {
            root_piece_id: root,
            pieces,
        }];
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            queue_deletions!(tx, &removed);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims up to `limit` deletions due at `now`, oldest first, until
    /// `claimed_until` (so another worker leaves them alone meanwhile).
    pub async fn claim_deletions(
        &self,
        now: i64,
        claimed_until: i64,
        limit: usize,
    ) -> Result<Vec<QueuedDeletion>> {
        let _writing = self.writing().await;
        let rows: Vec<QueuedRow> = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let rows: Vec<QueuedRow> = sqlx::query_as(
                "SELECT node_id, root_piece_id, piece_num, attempts FROM piece_deletions \
                 WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
            )
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                sqlx::query(
                    "UPDATE piece_deletions SET next_attempt_at = $4 WHERE node_id = $1 \
                     AND root_piece_id = $2 AND piece_num = $3",
                )
                .bind(&row.node_id)
                .bind(&row.root_piece_id)
                .bind(row.piece_num)
                .bind(claimed_until)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            rows
        });
        rows.into_iter().map(QueuedDeletion::try_from).collect()
    }

    /// Forgets deletions that are done (the node confirmed, or the piece is
    /// listed again and must stay).
    pub async fn finish_deletions(&self, done: &[QueuedDeletion]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for deletion in done {
                sqlx::query(
                    "DELETE FROM piece_deletions WHERE node_id = $1 AND root_piece_id = $2 \
                     AND piece_num = $3",
                )
                .bind(deletion.node.as_bytes().as_slice())
                .bind(deletion.root_piece_id.as_slice())
                .bind(i64::from(deletion.piece_num))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records a failed send of `failed`, to be tried again at `next_attempt_at`.
    pub async fn retry_deletions(
        &self,
        failed: &[QueuedDeletion],
        error: &str,
        next_attempt_at: i64,
    ) -> Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let error = super::repair_queue::printable(error, super::repair_queue::MAX_ERROR_TEXT);
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for deletion in failed {
                sqlx::query(
                    "UPDATE piece_deletions SET attempts = attempts + 1, next_attempt_at = $4, \
                     last_error = $5 WHERE node_id = $1 AND root_piece_id = $2 AND piece_num = $3",
                )
                .bind(deletion.node.as_bytes().as_slice())
                .bind(deletion.root_piece_id.as_slice())
                .bind(i64::from(deletion.piece_num))
                .bind(next_attempt_at)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Drops the queued deletions of disqualified and exited nodes (their
    /// pieces count for nothing and the nodes may never answer); returns how many.
    pub async fn forget_deletions_of_gone_nodes(&self) -> Result<u64> {
        let _writing = self.writing().await;
        let forgotten = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM piece_deletions WHERE node_id IN \
                 (SELECT id FROM nodes WHERE disqualified_at IS NOT NULL \
                 OR exit_finished_at IS NOT NULL)",
            )
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(forgotten)
    }

    /// Pieces waiting to be deleted, in all and on `node` if given.
    pub async fn deletion_queue_length(&self, node: Option<&NodeId>) -> Result<u64> {
        let (count,): (i64,) = on_pool!(self, pool => {
            match node {
                Some(node) => {
                    sqlx::query_as("SELECT COUNT(*) FROM piece_deletions WHERE node_id = $1")
                        .bind(node.as_bytes().as_slice())
                        .fetch_one(pool)
                        .await?
                }
                None => {
                    sqlx::query_as("SELECT COUNT(*) FROM piece_deletions")
                        .fetch_one(pool)
                        .await?
                }
            }
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Calls `visit` with the root piece id and piece list of every remote
    /// segment (of committed and pending objects alike), all read from one
    /// snapshot of the database, so that a copy made and its source deleted
    /// during the scan cannot hide a live piece. Returns the segments seen.
    pub async fn scan_piece_lists(
        &self,
        mut visit: impl FnMut([u8; 32], Vec<Piece>) + Send,
    ) -> Result<u64> {
        let postgres = matches!(self.pool, Pool::Postgres(_));
        let mut seen = 0u64;
        on_pool!(self, pool => {
            // SQLite's read transaction in WAL mode reads one snapshot as it is;
            // PostgreSQL's needs asking.
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            let mut after = SegmentKey {
                stream_id: Vec::new(),
                position: 0,
            };
            let mut first = true;
            loop {
                let rows: Vec<PieceListRow> = sqlx::query_as(
                    "SELECT stream_id, position, root_piece_id, pieces FROM segments \
                     WHERE redundancy IS NOT NULL \
                     AND (stream_id > $1 OR (stream_id = $1 AND position > $2)) \
                     ORDER BY stream_id, position LIMIT $3",
                )
                .bind(&after.stream_id)
                .bind(if first { -1 } else { i64::from(after.position) })
                .bind(SCAN_PAGE)
                .fetch_all(&mut *tx)
                .await?;
                first = false;
                let full = rows.len() as i64 == SCAN_PAGE;
                for (stream_id, position, root, pieces) in rows {
                    let root: [u8; 32] = root
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::Corrupt("a segment's root piece id".into()))?;
                    visit(root, decode_pieces(&pieces)?);
                    seen += 1;
                    after = SegmentKey {
                        stream_id,
                        position: u32::try_from(position)
                            .map_err(|_| Error::Corrupt("a segment position".into()))?,
                    };
                }
                if !full {
                    break;
                }
            }
            tx.commit().await?;
        });
        Ok(seen)
    }
}
