//! The deletion worker: sends the DELETE order limits for the pieces the
//! metabase queued when it removed their segments, one node at a time in
//! parallel, and keeps the queue durable across failures: a piece a node did
//! not confirm is tried again with a backoff that doubles up to
//! `gc.delete_retry_max`; pieces of disqualified nodes are forgotten. A
//! piece that some segment lists again (a server-side copy shares its
//! source's pieces) is dropped from the queue, never deleted. What the queue
//! still misses, retain filters collect ([`crate::gc`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::orders::{derive_piece_id, unix_now};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{PieceAction, PieceDeleteRequest};
use archipel_proto::NodeId;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::gc::GcConfig;
use crate::metabase::{QueuedDeletion, RemovedSegment};
use crate::metrics::{self, Metrics};
use crate::orders::OrderSigner;
use crate::worker::{Progress, Work};
use crate::{Metabase, Result};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deletions claimed per unit of work.
const BATCH: usize = 1000;
/// How long a claim keeps other workers off a deletion.
const CLAIM: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct PieceDeleter {
    orders: OrderSigner,
    metabase: Metabase,
    config: GcConfig,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

impl PieceDeleter {
    pub fn new(
        orders: OrderSigner,
        metabase: Metabase,
        config: GcConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        PieceDeleter {
            orders,
            metabase,
            config,
            metrics,
            wake: Arc::default(),
        }
    }

    /// Tells the worker that `removed` segments' pieces were queued, so it
    /// sends them now rather than at its next poll.
    pub fn removed(&self, removed: &[RemovedSegment]) {
        if removed.iter().any(|s| !s.pieces.is_empty()) {
            self.wake();
        }
    }

    /// Tells the worker that deletions were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends the deletions due now, up to one batch; returns how many nodes
    /// confirmed and how many deletions were claimed.
    pub async fn delete_due(&self) -> Result<(usize, usize)> {
        let now = unix_now();
        let forgotten = self.metabase.forget_deletions_of_gone_nodes().await?;
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot piece deletions of disqualified nodes");
        }
        let claimed = self
            .metabase
            .claim_deletions(now, now.saturating_add(CLAIM.as_secs() as i64), BATCH)
            .await?;
        let count = claimed.len();
        // Grouped by segment to ask once whether its pieces are listed again.
        let mut by_root: HashMap<[u8; 32], Vec<QueuedDeletion>> = HashMap::new();
        for deletion in claimed {
            by_root
                .entry(deletion.root_piece_id)
                .or_default()
                .push(deletion);
        }
        let removed: Vec<RemovedSegment> = by_root
            .iter()
            .map(|(root, deletions)| RemovedSegment {
                root_piece_id: *root,
                pieces: deletions
                    .iter()
                    .map(|d| crate::metabase::Piece {
                        num: d.piece_num,
                        node: d.node,
                        // `unlisted` matches pieces by node and number only.
                        root: [0; 32],
                    })
                    .collect(),
            })
            .collect();
        let unlisted = self.metabase.unlisted(removed).await?;
        let mut listed = Vec::new();
        let mut by_node: HashMap<NodeId, Vec<QueuedDeletion>> = HashMap::new();
        for (root, deletions) in by_root {
            let free = unlisted.iter().find(|s| s.root_piece_id == root);
            for deletion in deletions {
                let is_free = free.is_some_and(|s| {
                    s.pieces
                        .iter()
                        .any(|p| p.node == deletion.node && p.num == deletion.piece_num)
                });
                if is_free {
                    by_node.entry(deletion.node).or_default().push(deletion);
                } else {
                    listed.push(deletion);
                }
            }
        }
        self.metabase.finish_deletions(&listed).await?;
        let mut sends = JoinSet::new();
        for (node, deletions) in by_node {
            let this = self.clone();
            sends.spawn(async move { this.delete_on_node(node, deletions).await });
        }
        let mut confirmed = 0;
        while let Some(sent) = sends.join_next().await {
            match sent {
                Ok(Ok(deleted)) => confirmed += deleted,
                Ok(Err(e)) => tracing::warn!("cannot record piece deletions: {e}"),
                Err(e) => tracing::warn!("a piece deletion task ended abnormally: {e}"),
            }
        }
        Ok((confirmed, count))
    }

    /// Sends the deletions of one node and records each outcome; returns how
    /// many the node confirmed (a piece it did not have counts as deleted).
    async fn delete_on_node(&self, node: NodeId, deletions: Vec<QueuedDeletion>) -> Result<usize> {
        let client = match self.metabase.node(&node).await? {
            Some(row) => {
                crate::overlay::connect_piecestore(&row.address, node, Some(REQUEST_TIMEOUT))
                    .await
                    .map(PiecestoreClient::new)
                    .map_err(|e| format!("cannot reach node {node} at {}: {e}", row.address))
            }
            None => Err(format!("node {node} is not known")),
        };
        let mut client = match client {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!("{e}; its deletions wait");
                self.retry(&deletions, &e).await?;
                return Ok(0);
            }
        };
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut last_error = String::new();
        for deletion in deletions {
            let piece_id =
                derive_piece_id(&deletion.root_piece_id, &node, deletion.piece_num.into());
            let limit = self.orders.sign(node, &piece_id, PieceAction::Delete, 0, 0);
            match client
                .delete(PieceDeleteRequest { limit: Some(limit) })
                .await
            {
                Ok(_) => done.push(deletion),
                Err(status) if status.code() == tonic::Code::NotFound => done.push(deletion),
                Err(status) => {
                    last_error = archipel_proto::status_reason(&status);
                    failed.push(deletion);
                }
            }
        }
        metrics::add(&self.metrics.pieces_deleted, done.len() as u64);
        self.metabase.finish_deletions(&done).await?;
        if !failed.is_empty() {
            tracing::info!(%node, failed = failed.len(), "node did not delete pieces: {last_error}");
            self.retry(&failed, &last_error).await?;
        }
        Ok(done.len())
    }

    async fn retry(&self, failed: &[QueuedDeletion], error: &str) -> Result<()> {
        metrics::add(&self.metrics.piece_deletes_failed, failed.len() as u64);
        let now = unix_now();
        // All of one node's deletions move together; the first try's count
        // sets the wait.
        let attempts = failed.iter().map(|d| d.attempts).min().unwrap_or(0);
        let wait = self
            .config
            .delete_retry
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.config.delete_retry_max);
        let next = now.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
        self.metabase.retry_deletions(failed, error, next).await
    }
}

impl Work for PieceDeleter {
    async fn run_once(&mut self) -> Result<Progress> {
        let (_, claimed) = self.delete_due().await?;
        Ok(if claimed == BATCH {
            Progress::Busy
        } else {
            Progress::Idle
        })
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
}
