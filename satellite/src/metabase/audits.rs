//! Containment: a node that left an audit challenge unanswered owes exactly
//! that answer next.

use archipel_proto::NodeId;

use super::{Metabase, Pool};
use crate::{Error, Result};

/// A challenge a node left unanswered: it must answer exactly this one next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAudit {
    pub node: NodeId,
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub piece_num: u16,
    /// The root the piece was committed with when challenged.
    pub piece_root: [u8; 32],
    /// The hash chunk asked for (in units of the default chunk size).
    pub chunk_index: u64,
    /// Retries that went unanswered so far.
    pub reverify_count: u32,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct PendingAuditRow {
    node_id: Vec<u8>,
    stream_id: Vec<u8>,
    position: i64,
    piece_num: i64,
    piece_root: Vec<u8>,
    chunk_index: i64,
    reverify_count: i64,
    created_at: i64,
}

impl TryFrom<PendingAuditRow> for PendingAudit {
    type Error = Error;
    fn try_from(r: PendingAuditRow) -> Result<PendingAudit> {
        let corrupt = |what: &str| Error::Corrupt(format!("a pending audit's {what}"));
        Ok(PendingAudit {
            node: NodeId::from_bytes(&r.node_id).map_err(|_| corrupt("node id"))?,
            stream_id: r.stream_id,
            position: u32::try_from(r.position).map_err(|_| corrupt("position"))?,
            piece_num: u16::try_from(r.piece_num).map_err(|_| corrupt("piece number"))?,
            piece_root: r
                .piece_root
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("piece root"))?,
            chunk_index: u64::try_from(r.chunk_index).map_err(|_| corrupt("chunk index"))?,
            reverify_count: u32::try_from(r.reverify_count).map_err(|_| corrupt("retry count"))?,
            created_at: r.created_at,
        })
    }
}

impl Metabase {
    /// Puts a node in containment with the challenge it left unanswered; a node
    /// already contained keeps its first challenge. Returns whether it was added.
    pub async fn contain(&self, pending: &PendingAudit) -> Result<bool> {
        let _writing = self.writing().await;
        let added = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pending_audits (node_id, stream_id, position, piece_num, piece_root, \
                 chunk_index, reverify_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (node_id) DO NOTHING",
            )
            .bind(pending.node.to_vec())
            .bind(&pending.stream_id)
            .bind(i64::from(pending.position))
            .bind(i64::from(pending.piece_num))
            .bind(pending.piece_root.to_vec())
            .bind(i64::try_from(pending.chunk_index).unwrap_or(i64::MAX))
            .bind(i64::from(pending.reverify_count))
            .bind(pending.created_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(added > 0)
    }

    /// The challenge a contained node still owes, if any.
    pub async fn pending_audit(&self, node: &NodeId) -> Result<Option<PendingAudit>> {
        let row: Option<PendingAuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT node_id, stream_id, position, piece_num, piece_root, chunk_index, \
                 reverify_count, created_at FROM pending_audits WHERE node_id = $1",
            )
            .bind(node.to_vec())
            .fetch_optional(pool)
            .await?
        });
        row.map(PendingAudit::try_from).transpose()
    }

    /// Counts one more unanswered retry of a node's pending audit; returns the
    /// new count (`None` if the node is no longer contained).
    pub async fn count_reverification(&self, node: &NodeId) -> Result<Option<u32>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "UPDATE pending_audits SET reverify_count = reverify_count + 1 \
                 WHERE node_id = $1 RETURNING reverify_count",
            )
            .bind(node.to_vec())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(n,)| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Releases a node from containment.
    pub async fn release(&self, node: &NodeId) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM pending_audits WHERE node_id = $1")
                .bind(node.to_vec())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
