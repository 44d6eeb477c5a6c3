//! Graceful exit's records (see `crate::exit`): per node, when it began and
//! last asked for work, the scan cursor over the segments, the pieces handed
//! over and those that could not be, and how the exit ended.

use std::collections::HashSet;

use archipel_proto::NodeId;

use super::segments::SegmentKey;
use super::{BeginWrite, Metabase, Pool};
use crate::{Error, Result};

/// Where a node's graceful exit stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitState {
    pub started_at: i64,
    /// The last segment the scan for the node's pieces has passed.
    pub cursor: Option<SegmentKey>,
    /// Pieces still to hand over that the scan's current pass has found.
    pub pass_pieces: i64,
    pub transferred: i64,
    pub failed: i64,
    pub finished_at: Option<i64>,
    /// Why the exit failed; `None` if it succeeded or goes on.
    pub failure: Option<String>,
    pub disqualified_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ExitRow {
    exiting_at: Option<i64>,
    exit_cursor: Option<Vec<u8>>,
    exit_pass_pieces: i64,
    exit_transferred: i64,
    exit_failed: i64,
    exit_finished_at: Option<i64>,
    exit_failure: Option<String>,
    disqualified_at: Option<i64>,
}

const EXIT_COLUMNS: &str =
    "exiting_at, exit_cursor, exit_pass_pieces, exit_transferred, exit_failed, \
     exit_finished_at, exit_failure, disqualified_at";

/// A segment key as one blob: the stream id, then the position (big-endian).
fn encode_cursor(key: &SegmentKey) -> Vec<u8> {
    let mut blob = key.stream_id.clone();
    blob.extend_from_slice(&key.position.to_be_bytes());
    blob
}

fn decode_cursor(blob: &[u8]) -> Result<SegmentKey> {
    let split = blob
        .len()
        .checked_sub(4)
        .ok_or_else(|| Error::Corrupt("an exit cursor is too short".into()))?;
    let (stream_id, position) = blob.split_at(split);
    let position: [u8; 4] = position
        .try_into()
        .map_err(|_| Error::Corrupt("an exit cursor's position".into()))?;
    Ok(SegmentKey {
        stream_id: stream_id.to_vec(),
        position: u32::from_be_bytes(position),
    })
}

impl TryFrom<ExitRow> for ExitState {
    type Error = Error;

    fn try_from(r: ExitRow) -> Result<ExitState> {
        Ok(ExitState {
            started_at: r.exiting_at.unwrap_or(0),
            cursor: r.exit_cursor.as_deref().map(decode_cursor).transpose()?,
            pass_pieces: r.exit_pass_pieces,
            transferred: r.exit_transferred,
            failed: r.exit_failed,
            finished_at: r.exit_finished_at,
            failure: r.exit_failure,
            disqualified_at: r.disqualified_at,
        })
    }
}

impl Metabase {
    /// Starts `node`'s exit if it has not begun (it gets no new pieces from
    /// now on) and notes that it asked for work at `now`; returns where the
    /// exit stands, `None` for an unknown node.
    pub async fn start_exit(&self, node: &NodeId, now: i64) -> Result<Option<ExitState>> {
        let _writing = self.writing().await;
        let sql = format!(
            "UPDATE nodes SET exiting_at = COALESCE(exiting_at, $2), exit_seen_at = $2 \
             WHERE id = $1 RETURNING {EXIT_COLUMNS}"
        );
        let row: Option<ExitRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(node.to_vec()).bind(now).fetch_optional(pool).await?
        });
        row.map(ExitState::try_from).transpose()
    }

    /// Where `node`'s exit stands; `None` for an unknown node.
    pub async fn exit_state(&self, node: &NodeId) -> Result<Option<ExitState>> {
        let sql = format!("SELECT {EXIT_COLUMNS} FROM nodes WHERE id = $1");
        let row: Option<ExitRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(node.to_vec()).fetch_optional(pool).await?
        });
        row.map(ExitState::try_from).transpose()
    }

    /// Counts a piece `node` handed over.
    pub async fn record_exit_transfer(&self, node: &NodeId) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query("UPDATE nodes SET exit_transferred = exit_transferred + 1 WHERE id = $1")
                .bind(node.to_vec())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records a piece `node` could not hand over: it is not offered again.
    pub async fn record_exit_failure(
        &self,
        node: &NodeId,
        segment: &SegmentKey,
        piece_num: u16,
    ) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let added = sqlx::query(
                "INSERT INTO exit_failures (node_id, stream_id, position, piece_num) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(node.to_vec())
            .bind(&segment.stream_id)
            .bind(i64::from(segment.position))
            .bind(i64::from(piece_num))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE nodes SET exit_failed = exit_failed + $2 WHERE id = $1")
                .bind(node.to_vec())
                .bind(i64::try_from(added).unwrap_or(0))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The pieces `node` could not hand over.
    pub async fn exit_failures(&self, node: &NodeId) -> Result<HashSet<(SegmentKey, u16)>> {
        let rows: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT stream_id, position, piece_num FROM exit_failures WHERE node_id = $1",
            )
            .bind(node.to_vec())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(stream_id, position, num)| {
                let position = u32::try_from(position)
                    .map_err(|_| Error::Corrupt("an exit failure's position".into()))?;
                let num = u16::try_from(num)
                    .map_err(|_| Error::Corrupt("an exit failure's piece number".into()))?;
                Ok((
                    SegmentKey {
                        stream_id,
                        position,
                    },
                    num,
                ))
            })
            .collect()
    }

    /// Moves the scan for `node`'s pieces to after `cursor` (`None`: a new
    /// pass from the start), with `pass_pieces` found in the pass so far.
    pub async fn set_exit_cursor(
        &self,
        node: &NodeId,
        cursor: Option<&SegmentKey>,
        pass_pieces: i64,
    ) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query("UPDATE nodes SET exit_cursor = $2, exit_pass_pieces = $3 WHERE id = $1")
                .bind(node.to_vec())
                .bind(cursor.map(encode_cursor))
                .bind(pass_pieces)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ends `node`'s exit at `now`, as a success (`failure` is `None`) or
    /// not; false if it had ended already. A node that exited, either way,
    /// gets no deletes any more.
    pub async fn finish_exit(
        &self,
        node: &NodeId,
        now: i64,
        failure: Option<&str>,
    ) -> Result<bool> {
        let _writing = self.writing().await;
        let finished = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let finished = sqlx::query(
                "UPDATE nodes SET exit_finished_at = $2, exit_failure = $3 \
                 WHERE id = $1 AND exiting_at IS NOT NULL AND exit_finished_at IS NULL",
            )
            .bind(node.to_vec())
            .bind(now)
            .bind(failure)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            sqlx::query("DELETE FROM piece_deletions WHERE node_id = $1")
                .bind(node.to_vec())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            finished
        });
        Ok(finished)
    }

    /// Nodes whose exit goes on but that have not asked for work since
    /// `before`.
    pub async fn silent_exits(&self, before: i64) -> Result<Vec<NodeId>> {
        let rows: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id FROM nodes WHERE exiting_at IS NOT NULL AND exit_finished_at IS NULL \
                 AND exit_seen_at IS NOT NULL AND exit_seen_at < $1",
            )
            .bind(before)
            .fetch_all(pool)
            .await?
        });
        rows.iter()
            .map(|(id,)| {
                NodeId::from_bytes(id)
                    .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_short_blobs() {
        let key = SegmentKey {
            stream_id: vec![1, 2, 3],
            position: 0x0102_0304,
        };
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor(&[1, 2]).is_err());
    }
}
