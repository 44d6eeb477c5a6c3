//! The repair queue: segments the checker found at or below their repair
//! threshold, the claims repair workers take on them, and the admin view.

use super::segments::SegmentKey;
use super::{Metabase, Pool};
use crate::{Error, Result};

/// A segment the checker found at or below its repair threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSegment {
    pub key: SegmentKey,
    pub healthy: u16,
    pub required: u16,
}

/// A repair worker's hold on a queued segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairClaim {
    pub key: SegmentKey,
    token: [u8; 16],
    /// Tries so far, this one included.
    pub attempts: i64,
}

/// A repair queue entry as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueEntry {
    #[serde(with = "hex::serde")]
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub healthy: i64,
    /// Healthy pieces beyond `k`; negative: the segment cannot be rebuilt now.
    pub margin: i64,
    pub inserted_at: i64,
    pub updated_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct QueueEntryRow {
    stream_id: Vec<u8>,
    position: i64,
    healthy: i64,
    margin: i64,
    inserted_at: i64,
    updated_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl TryFrom<QueueEntryRow> for QueueEntry {
    type Error = Error;
    fn try_from(r: QueueEntryRow) -> Result<QueueEntry> {
        Ok(QueueEntry {
            position: u32::try_from(r.position)
                .map_err(|_| Error::Corrupt(format!("segment position {}", r.position)))?,
            stream_id: r.stream_id,
            healthy: r.healthy,
            margin: r.margin,
            inserted_at: r.inserted_at,
            updated_at: r.updated_at,
            attempts: r.attempts,
            last_error: r.last_error,
        })
    }
}

/// Queue candidates a claim tries before it reports an empty queue.
const CLAIM_CANDIDATES: i64 = 16;
/// Longest repair error text kept with a queued segment.
pub(super) const MAX_ERROR_TEXT: usize = 500;

/// `text` without control characters (which PostgreSQL text refuses as NUL
/// and logs garble), cut to at most `max` characters.
pub(super) fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Metabase {
    /// Puts a segment in the repair queue, or updates its health there.
    pub async fn enqueue_repair(&self, item: &QueuedSegment, now: i64) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO repair_queue (stream_id, position, healthy, margin, inserted_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (stream_id, position) \
                 DO UPDATE SET healthy = excluded.healthy, margin = excluded.margin, \
                 updated_at = excluded.updated_at",
            )
            .bind(&item.key.stream_id)
            .bind(i64::from(item.key.position))
            .bind(i64::from(item.healthy))
            .bind(i64::from(item.healthy) - i64::from(item.required))
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Drops queue entries the checker did not see in a whole pass that
    /// started at `pass_start`: their segments are gone.
    pub async fn prune_repair_queue(&self, pass_start: i64) -> Result<u64> {
        let _writing = self.writing().await;
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM repair_queue WHERE updated_at < $1")
                .bind(pass_start)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Claims the queued segment most at risk (least margin) that nobody holds
    /// a live claim on, until `until`. Lost segments (fewer healthy pieces than
    /// `k`) are tried too: pieces on suspended, exiting or clumped nodes may
    /// still make up `k`. Several workers and
    /// satellite processes can call this at once: the claim is a conditional
    /// update, so exactly one of them wins a segment.
    pub async fn claim_repair(&self, now: i64, until: i64) -> Result<Option<RepairClaim>> {
        // The riskiest few, tried in order: workers racing for the first one
        // fall through to the next instead of idling.
        let candidates: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT stream_id, position, attempts FROM repair_queue \
                 WHERE claimed_until < $1 ORDER BY margin, inserted_at LIMIT $2",
            )
            .bind(now)
            .bind(CLAIM_CANDIDATES)
            .fetch_all(pool)
            .await?
        });
        for (stream_id, position, attempts) in candidates {
            let token: [u8; 16] = rand::random();
            let _writing = self.writing().await;
            let won = on_pool!(self, pool => {
                sqlx::query(
                    "UPDATE repair_queue SET claimed_until = $3, claim = $4, \
                     attempts = attempts + 1 \
                     WHERE stream_id = $1 AND position = $2 AND claimed_until < $5",
                )
                .bind(&stream_id)
                .bind(position)
                .bind(until)
                .bind(token.to_vec())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if won == 1 {
                let position = u32::try_from(position)
                    .map_err(|_| Error::Corrupt(format!("segment position {position}")))?;
                return Ok(Some(RepairClaim {
                    key: SegmentKey {
                        stream_id,
                        position,
                    },
                    token,
                    attempts: attempts.saturating_add(1),
                }));
            }
        }
        Ok(None)
    }

    /// Ends a claim: the segment leaves the queue (`retry_at` = None) or stays
    /// for another try after `retry_at`, with the reason it failed.
    pub async fn finish_repair(
        &self,
        claim: &RepairClaim,
        retry_at: Option<(i64, &str)>,
    ) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            match retry_at {
                None => sqlx::query(
                    "DELETE FROM repair_queue WHERE stream_id = $1 AND position = $2 AND claim = $3",
                )
                .bind(&claim.key.stream_id)
                .bind(i64::from(claim.key.position))
                .bind(claim.token.to_vec())
                .execute(pool)
                .await?,
                Some((at, why)) => sqlx::query(
                    "UPDATE repair_queue SET claimed_until = $4, last_error = $5, claim = NULL \
                     WHERE stream_id = $1 AND position = $2 AND claim = $3",
                )
                .bind(&claim.key.stream_id)
                .bind(i64::from(claim.key.position))
                .bind(claim.token.to_vec())
                .bind(at)
                .bind(printable(why, MAX_ERROR_TEXT))
                .execute(pool)
                .await?,
            };
        });
        Ok(())
    }

    /// The queue, most at risk first: at most `limit` entries, and whether
    /// only lost segments (margin < 0) are wanted.
    pub async fn repair_queue(&self, limit: usize, lost_only: bool) -> Result<Vec<QueueEntry>> {
        let sql = format!(
            "SELECT stream_id, position, healthy, margin, inserted_at, updated_at, attempts, \
             last_error FROM repair_queue {} ORDER BY margin, inserted_at LIMIT $1",
            if lost_only { "WHERE margin < 0" } else { "" }
        );
        let rows: Vec<QueueEntryRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(QueueEntry::try_from).collect()
    }

    /// How many segments wait for repair, and how many of them are lost.
    pub async fn repair_queue_counts(&self) -> Result<(u64, u64)> {
        let (queued, lost): (i64, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*), SUM(CASE WHEN margin < 0 THEN 1 ELSE 0 END) FROM repair_queue",
            )
            .fetch_one(pool)
            .await?
        });
        Ok((queued.max(0) as u64, lost.unwrap_or(0).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_printable_and_bounded() {
        assert_eq!(printable("a\0b\nc", 10), "abc");
        assert_eq!(printable("ééééé", 3), "ééé");
    }
}
