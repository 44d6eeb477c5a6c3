//! Garbage collection with retain filters: every `interval`, the satellite
//! reads every piece list from one snapshot of its metabase, builds per node
//! a Bloom filter of the piece ids that node should keep, signs it and sends
//! it; the node moves the pieces it holds for this satellite that the filter
//! does not name, and whose order limits were created before the filter's
//! cutoff, to its trash (see the node's `retain` module). This catches what
//! the deletion queue cannot: pieces of uploads cut short or cancelled in the
//! long tail, and deletes a node missed while it was away or before it
//! rejoined.
//!
//! Why a piece still being uploaded is safe: the cutoff is the snapshot's
//! time less `grace`, and the satellite refuses to commit a segment (or to
//! swap in a repair's pieces) whose order limits are `grace` old. So any
//! piece created before the cutoff was either committed before the
//! snapshot — and is in the filter — or will never be committed.

use std::collections::HashMap;
use std::time::Duration;

use archipel_proto::bloom::BloomFilter;
use archipel_proto::orders::{derive_piece_id, retain_filter, sign_restore_trash, unix_now};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{RestoreTrashRequest, RestoreTrashResponse, RetainFilter, RetainRequest};
use archipel_proto::{Identity, NodeId};
use tokio::task::JoinSet;

use crate::metrics::{self, Metrics};
use crate::worker::{Progress, Work};
use crate::{Error, Metabase, Result};

/// Retain rounds in flight at once, one per node.
const CONCURRENT_NODES: usize = 8;
/// How long a node may take to apply a filter: it walks its index and moves
/// files, which for millions of pieces takes a while.
const RETAIN_TIMEOUT: Duration = Duration::from_secs(600);
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// Garbage collection: retain filters and the deletion queue (the `[gc]` section).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Whether this satellite process sends retain filters (default true).
    pub retain: bool,
    /// Time between two retain rounds (default 24h). The first round runs
    /// one interval after start.
    #[serde(with = "humantime_serde")]
    pub retain_interval: Duration,
    /// Share of garbage pieces a filter lets through, which a later round
    /// (with another seed) catches (default 0.1: 4.8 bits per piece).
    pub false_positive_rate: f64,
    /// How long an upload or a repair may take from its order limits to its
    /// commit; older ones are refused, and pieces younger than this are never
    /// trashed (default 2h).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Wait before the first retry of a piece deletion a node did not
    /// confirm, doubled for each further failure (default 1m).
    #[serde(with = "humantime_serde")]
    pub delete_retry: Duration,
    /// Longest wait between two retries of a piece deletion (default 24h).
    #[serde(with = "humantime_serde")]
    pub delete_retry_max: Duration,
    /// How long the deletion worker waits when nothing is due (default 30s);
    /// a removal wakes it at once.
    #[serde(with = "humantime_serde")]
    pub delete_interval: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            retain: true,
            retain_interval: Duration::from_secs(24 * 3600),
            false_positive_rate: 0.1,
            grace: Duration::from_secs(2 * 3600),
            delete_retry: Duration::from_secs(60),
            delete_retry_max: Duration::from_secs(24 * 3600),
            delete_interval: Duration::from_secs(30),
        }
    }
}

impl GcConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.false_positive_rate > 0.0 && self.false_positive_rate < 1.0) {
            return Err(Error::Config(
                "gc.false_positive_rate must be between 0 and 1".into(),
            ));
        }
        if self.retain_interval.is_zero()
            || self.grace.is_zero()
            || self.delete_retry.is_zero()
            || self.delete_interval.is_zero()
        {
            return Err(Error::Config(
                "gc.retain_interval, gc.grace, gc.delete_retry and gc.delete_interval must be positive"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether order limits created at `created` are too old to commit at `now`.
    pub fn too_old_to_commit(&self, created: i64, now: i64) -> bool {
        now >= created.saturating_add(secs(self.grace))
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// What one retain round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetainReport {
    /// Unix seconds (satellite clock) the metabase snapshot was taken at.
    pub created_at: i64,
    /// Pieces older than this may be trashed.
    pub created_before: i64,
    pub segments: u64,
    /// Nodes sent a filter, and those that failed to take it.
    pub nodes: usize,
    pub failed_nodes: usize,
    /// What the nodes reported moving to their trash.
    pub pieces_trashed: u64,
    pub bytes_trashed: u64,
}

/// Builds and sends retain filters.
#[derive(Clone)]
pub struct RetainSender {
    metabase: Metabase,
    identity: Identity,
    config: GcConfig,
    metrics: std::sync::Arc<Metrics>,
    /// Whether the round at start is skipped (the worker's first unit of work).
    started: bool,
}

impl RetainSender {
    pub fn new(
        metabase: Metabase,
        identity: Identity,
        config: GcConfig,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        RetainSender {
            metabase,
            identity,
            config,
            metrics,
            started: false,
        }
    }

    /// One round: a filter to every known node that is not disqualified.
    pub async fn round(&self) -> Result<RetainReport> {
        let created_at = unix_now();
        let created_before = created_at.saturating_sub(secs(self.config.grace));
        let mut kept: HashMap<NodeId, Vec<[u8; 32]>> = HashMap::new();
        let segments = self
            .metabase
            .scan_piece_lists(|root, pieces| {
                for piece in pieces {
                    kept.entry(piece.node).or_default().push(derive_piece_id(
                        &root,
                        &piece.node,
                        piece.num.into(),
                    ));
                }
            })
            .await?;
        let nodes = self.metabase.retain_targets().await?;
        let mut report = RetainReport {
            created_at,
            created_before,
            segments,
            nodes: nodes.len(),
            ..RetainReport::default()
        };
        let mut sends = JoinSet::new();
        for (node, address) in nodes {
            let ids = kept.remove(&node).unwrap_or_default();
            let filter = self.filter(node, &ids, created_at, created_before);
            if sends.len() >= CONCURRENT_NODES {
                if let Some(done) = sends.join_next().await {
                    self.count(&mut report, done);
                }
            }
            sends.spawn(async move { (node, send_filter(node, &address, filter).await) });
        }
        while let Some(done) = sends.join_next().await {
            self.count(&mut report, done);
        }
        tracing::info!(
            segments = report.segments,
            nodes = report.nodes,
            failed = report.failed_nodes,
            pieces_trashed = report.pieces_trashed,
            bytes_trashed = report.bytes_trashed,
            "sent retain filters"
        );
        Ok(report)
    }

    fn filter(
        &self,
        node: NodeId,
        ids: &[[u8; 32]],
        created_at: i64,
        created_before: i64,
    ) -> RetainFilter {
        let mut bloom = BloomFilter::with_capacity(ids.len(), self.config.false_positive_rate);
        for id in ids {
            bloom.add(id);
        }
        retain_filter(
            &self.identity,
            node,
            bloom,
            ids.len() as u64,
            created_at,
            created_before,
        )
    }

    fn count(
        &self,
        report: &mut RetainReport,
        done: std::result::Result<
            (
                NodeId,
                std::result::Result<archipel_proto::pb::RetainResponse, String>,
            ),
            tokio::task::JoinError,
        >,
    ) {
        match done {
            Ok((_, Ok(response))) => {
                metrics::bump(&self.metrics.retain_filters_sent);
                metrics::add(&self.metrics.retain_pieces_trashed, response.pieces_trashed);
                metrics::add(&self.metrics.retain_bytes_trashed, response.bytes_trashed);
                report.pieces_trashed += response.pieces_trashed;
                report.bytes_trashed += response.bytes_trashed;
            }
            Ok((node, Err(e))) => {
                metrics::bump(&self.metrics.retain_filters_failed);
                report.failed_nodes += 1;
                tracing::info!(%node, "a retain filter was not applied: {e}");
            }
            Err(e) => {
                metrics::bump(&self.metrics.retain_filters_failed);
                report.failed_nodes += 1;
                tracing::warn!("a retain filter send ended abnormally: {e}");
            }
        }
    }

    /// Asks `node` to restore the trash it holds for this satellite.
    pub async fn restore_trash(&self, node: NodeId) -> Result<RestoreTrashResponse> {
        let address = self
            .metabase
            .node(&node)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {node}")))?
            .address;
        let request = sign_restore_trash(
            &self.identity,
            RestoreTrashRequest {
                node_id: node.to_vec(),
                timestamp: unix_now(),
                ..RestoreTrashRequest::default()
            },
        );
        let channel = crate::overlay::connect_piecestore(&address, node, Some(RESTORE_TIMEOUT))
            .await
            .map_err(|e| Error::Unavailable(format!("node {node}: {e}")))?;
        PiecestoreClient::new(channel)
            .restore_trash(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                Error::Unavailable(format!(
                    "node {node} did not restore its trash: {}",
                    archipel_proto::status_reason(&status)
                ))
            })
    }
}

async fn send_filter(
    node: NodeId,
    address: &str,
    filter: RetainFilter,
) -> std::result::Result<archipel_proto::pb::RetainResponse, String> {
    let channel = crate::overlay::connect_piecestore(address, node, Some(RETAIN_TIMEOUT)).await?;
    PiecestoreClient::new(channel)
        .max_encoding_message_size(archipel_proto::bloom::MAX_FILTER_BYTES + (64 << 10))
        .retain(RetainRequest {
            filter: Some(filter),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| archipel_proto::status_reason(&status))
}

impl Work for RetainSender {
    async fn run_once(&mut self) -> Result<Progress> {
        // The worker runs a unit at once at start; a restarted satellite
        // waits an interval instead of rescanning its metabase right away.
        if !self.started {
            self.started = true;
            return Ok(Progress::Idle);
        }
        self.round().await?;
        Ok(Progress::Idle)
    }
}
