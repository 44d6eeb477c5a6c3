//! Graceful exit, started by a node's operator: the node leaves the network
//! (for this satellite) by handing each of its pieces to a replacement node
//! itself, instead of making the network repair them.
//!
//! The node drives it with `Node.Exit` calls. The first marks it exiting (it
//! gets no new pieces). Each call reports the transfers done since the last
//! and gets the next batch: the satellite scans the segments for the node's
//! pieces (a cursor in the node's row keeps its place), picks a replacement
//! for each as repair does (eligible, holding no piece of the segment,
//! outside the networks of its healthy pieces), and signs a PUT_EXIT order
//! limit for it. A reported transfer counts only once the replacement's
//! signed piece hash carries the segment's committed root for that piece
//! number; then the piece list is swapped with repair's compare-and-swap.
//! A transfer that failed is recorded and not offered again; a piece for
//! which no replacement is available yet is offered again in the next pass.
//! When a whole pass of the scan finds nothing left, the exit succeeds —
//! unless more than `max_failed_share` of the pieces could not be handed
//! over — and the node gets a signed receipt, after which it deletes the
//! satellite's pieces. A node silent for `inactivity_timeout` fails its exit
//! (see [`ExitWatcher`]). Once an exit has ended, either way, the node's
//! pieces still listed count as lost (it is `Exited`), so repair rebuilds
//! them and audits leave the node alone.

use std::collections::HashSet;
use std::time::Duration;

use archipel_proto::orders::{
    derive_piece_id, sign_exit_completed, unix_now, verify_order_limit_signature, verify_piece_hash,
};
use archipel_proto::pb::{self, PieceAction};
use archipel_proto::{Identity, NodeId, PeerKey};

use crate::deletes::PieceDeleter;
use crate::metabase::{ExitState, Piece, Segment, SegmentKey};
use crate::orders::OrderSigner;
use crate::repair::repairer::select_repair_nodes;
use crate::worker::{Progress, Work};
use crate::{health, overlay, size_i64, Config, Error, Metabase, Result};

/// Segments read per query while scanning for an exiting node's pieces.
const SCAN_PAGE: usize = 500;
/// Pages scanned per call at most, so that a call answers promptly even on
/// a large metabase; the node asks again.
const PAGES_PER_CALL: usize = 20;

/// Graceful exit (the `[exit]` section).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExitConfig {
    /// Transfers handed out per call (default 20).
    pub batch: usize,
    /// An exiting node that has not asked for work for this long fails its
    /// exit (default 1h).
    #[serde(with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    /// Largest share of a node's pieces that may fail to transfer for its
    /// exit to still succeed (default 0.1).
    pub max_failed_share: f64,
    /// Time between two looks for silent exiting nodes (default 5m).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for ExitConfig {
    fn default() -> Self {
        ExitConfig {
            batch: 20,
            inactivity_timeout: Duration::from_secs(3600),
            max_failed_share: 0.1,
            check_interval: Duration::from_secs(300),
        }
    }
}

impl ExitConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.inactivity_timeout.is_zero() || self.check_interval.is_zero() {
            return Err(Error::Config(
                "exit batch, inactivity_timeout and check_interval must not be zero".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_failed_share) {
            return Err(Error::Config(
                "exit max_failed_share must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }
}

/// Answers exiting nodes' calls.
#[derive(Clone)]
pub struct GracefulExit {
    config: Config,
    identity: Identity,
    key: PeerKey,
    metabase: Metabase,
    orders: OrderSigner,
    deleter: PieceDeleter,
}

/// What one reported transfer came to.
enum Reported {
    Transferred,
    Failed,
    /// Neither: the segment changed meanwhile, or the transfer came too late
    /// to list; the piece is offered again if it is still the node's.
    Dropped,
}

impl GracefulExit {
    /// `key` is the public side of `identity`, which signs the receipts.
    pub fn new(
        config: Config,
        identity: Identity,
        key: PeerKey,
        metabase: Metabase,
        orders: OrderSigner,
        deleter: PieceDeleter,
    ) -> Self {
        GracefulExit {
            key,
            config,
            identity,
            metabase,
            orders,
            deleter,
        }
    }

    /// One call of `node`: applies the reported `results`, then answers
    /// with the next transfers, the receipt, or the failure.
    pub async fn call(
        &self,
        node: NodeId,
        results: Vec<pb::ExitTransferResult>,
    ) -> Result<pb::ExitResponse> {
        let now = unix_now();
        let state = self
            .metabase
            .start_exit(&node, now)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {node}")))?;
        if state.finished_at.is_some() {
            return Ok(self.ended(node, &state));
        }
        if state.disqualified_at.is_some() {
            self.metabase
                .finish_exit(&node, now, Some("the node is disqualified"))
                .await?;
            return self.current(node).await;
        }
        if state.started_at == now {
            tracing::info!(%node, "graceful exit started");
        }
        for result in results {
            match self.apply(node, result).await {
                Ok(Reported::Transferred) => self.metabase.record_exit_transfer(&node).await?,
                Ok(Reported::Failed) | Ok(Reported::Dropped) => {}
                Err(e) => tracing::info!(%node, "an exit transfer was refused: {e}"),
            }
        }
        let state = self
            .metabase
            .exit_state(&node)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {node}")))?;
        let scan = self.next_transfers(node, &state, now).await?;
        let pass_pieces = state.pass_pieces.saturating_add(scan.found);
        if scan.passed_end && pass_pieces == 0 {
            // A whole pass found nothing left to hand over: neither pieces
            // waiting for a replacement nor pieces still in transfer.
            let total = state.transferred + state.failed;
            let failure = (total > 0
                && state.failed as f64 > self.config.exit.max_failed_share * total as f64)
                .then(|| {
                    format!(
                        "{} of the node's {total} pieces could not be handed over",
                        state.failed
                    )
                });
            self.metabase
                .finish_exit(&node, unix_now(), failure.as_deref())
                .await?;
            match &failure {
                None => {
                    tracing::info!(%node, transferred = state.transferred, "graceful exit completed")
                }
                Some(why) => tracing::warn!(%node, "graceful exit failed: {why}"),
            }
            return self.current(node).await;
        }
        if scan.passed_end {
            self.metabase.set_exit_cursor(&node, None, 0).await?;
        } else {
            self.metabase
                .set_exit_cursor(&node, scan.cursor.as_ref(), pass_pieces)
                .await?;
        }
        Ok(pb::ExitResponse {
            transfers: scan.transfers,
            progress: Some(progress(&state)),
            ..Default::default()
        })
    }

    /// The answer for an exit that may have just ended.
    async fn current(&self, node: NodeId) -> Result<pb::ExitResponse> {
        let state = self
            .metabase
            .exit_state(&node)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {node}")))?;
        Ok(self.ended(node, &state))
    }

    /// The answer for an ended exit: the receipt or why it failed.
    fn ended(&self, node: NodeId, state: &ExitState) -> pb::ExitResponse {
        let mut response = pb::ExitResponse {
            progress: Some(progress(state)),
            ..Default::default()
        };
        match (&state.failure, state.finished_at) {
            (Some(why), _) => response.failed = why.clone(),
            (None, Some(finished_at)) => {
                response.completed = Some(sign_exit_completed(
                    &self.identity,
                    pb::ExitCompleted {
                        node_id: node.to_vec(),
                        started_at: state.started_at,
                        finished_at,
                        pieces_transferred: state.transferred,
                        pieces_failed: state.failed,
                        ..Default::default()
                    },
                ))
            }
            (None, None) => {}
        }
        response
    }

    /// Checks one reported transfer and, if it holds, swaps the piece over.
    async fn apply(&self, node: NodeId, result: pb::ExitTransferResult) -> Result<Reported> {
        let limit = result
            .limit
            .ok_or_else(|| Error::InvalidArgument("a transfer result has no order limit".into()))?;
        verify_order_limit_signature(&self.key, &limit)?;
        if limit.action != PieceAction::PutExit as i32 {
            return Err(Error::InvalidArgument(
                "a transfer result's order limit is not for an exit".into(),
            ));
        }
        let replacement = NodeId::from_bytes(&limit.node_id)?;
        let num = u16::try_from(result.piece_num)
            .map_err(|_| Error::InvalidArgument("a piece number over 65535".into()))?;
        let key = SegmentKey {
            stream_id: result.stream_id,
            position: result.position,
        };
        let segment = match self.metabase.segment(&key.stream_id, key.position).await {
            Ok(segment) => segment,
            Err(Error::NotFound(_)) => {
                // Deleted meanwhile: whatever was sent is garbage now.
                return Ok(Reported::Dropped);
            }
            Err(e) => return Err(e),
        };
        if limit.piece_id != derive_piece_id(&segment.root_piece_id, &replacement, num.into()) {
            return Err(Error::InvalidArgument(
                "a transfer result names another segment than its order limit".into(),
            ));
        }
        let Some(exiting) = segment
            .pieces
            .iter()
            .find(|p| p.num == num && p.node == node)
            .copied()
        else {
            // Repaired or replaced meanwhile.
            self.discard(&segment, num, replacement).await?;
            return Ok(Reported::Dropped);
        };
        let hash = match (result.hash, result.error.is_empty()) {
            (Some(hash), true) => hash,
            (_, _) => {
                tracing::info!(%node, piece = num, "an exit transfer failed: {}", result.error);
                self.metabase.record_exit_failure(&node, &key, num).await?;
                return Ok(Reported::Failed);
            }
        };
        let replacement_key = self
            .metabase
            .node(&replacement)
            .await?
            .ok_or_else(|| Error::NotFound(format!("node {replacement}")))
            .and_then(|n| Ok(PeerKey::for_id(replacement, &n.public_key)?))?;
        let verified = verify_piece_hash(&replacement_key, &hash).is_ok()
            && hash.piece_id == limit.piece_id
            && hash.root.as_slice() == exiting.root.as_slice();
        if !verified {
            tracing::warn!(%node, %replacement, piece = num, "an exit transfer's piece hash does not match the committed piece");
            self.discard(&segment, num, replacement).await?;
            self.metabase.record_exit_failure(&node, &key, num).await?;
            return Ok(Reported::Failed);
        }
        // As for repairs: a piece older than the garbage collection grace may
        // be missing from a retain filter already, so it must not be listed.
        if self
            .config
            .gc
            .too_old_to_commit(limit.order_creation, unix_now())
        {
            self.discard(&segment, num, replacement).await?;
            return Ok(Reported::Dropped);
        }
        let swapped: Vec<Piece> = segment
            .pieces
            .iter()
            .map(|p| {
                if p.num == num && p.node == node {
                    Piece {
                        num,
                        node: replacement,
                        root: exiting.root,
                    }
                } else {
                    *p
                }
            })
            .collect();
        if !self
            .metabase
            .swap_pieces(&key, &segment.pieces, &swapped)
            .await?
        {
            self.discard(&segment, num, replacement).await?;
            return Ok(Reported::Dropped);
        }
        // The swap queued the exiting node's copy for deletion.
        self.deleter.wake();
        Ok(Reported::Transferred)
    }

    /// Queues a piece a replacement stored but that is not listed for
    /// deletion (the deletion worker checks again that no segment lists it).
    async fn discard(&self, segment: &Segment, num: u16, node: NodeId) -> Result<()> {
        self.metabase
            .queue_deletions(
                segment.root_piece_id,
                vec![Piece {
                    num,
                    node,
                    root: [0; 32],
                }],
            )
            .await?;
        self.deleter.wake();
        Ok(())
    }

    /// The next transfers for `node` from where its scan stands, up to a
    /// batch.
    async fn next_transfers(&self, node: NodeId, state: &ExitState, now: i64) -> Result<Scan> {
        let failures = self.metabase.exit_failures(&node).await?;
        let mut scan = Scan {
            transfers: Vec::new(),
            found: 0,
            cursor: state.cursor.clone(),
            passed_end: false,
        };
        for _ in 0..PAGES_PER_CALL {
            let page = self
                .metabase
                .remote_segments_after(scan.cursor.as_ref(), SCAN_PAGE, now)
                .await?;
            if page.is_empty() {
                scan.passed_end = true;
                return Ok(scan);
            }
            for segment in page {
                scan.cursor = Some(segment.key());
                let Some(piece) = segment.pieces.iter().find(|p| p.node == node) else {
                    continue;
                };
                if failures.contains(&(segment.key(), piece.num)) {
                    continue;
                }
                scan.found += 1;
                if let Some(transfer) = self.transfer_of(node, &segment, piece, now).await? {
                    scan.transfers.push(transfer);
                    if scan.transfers.len() >= self.config.exit.batch {
                        return Ok(scan);
                    }
                }
            }
        }
        Ok(scan)
    }

    /// The transfer of `node`'s `piece` of `segment`, if a replacement is
    /// available.
    async fn transfer_of(
        &self,
        node: NodeId,
        segment: &Segment,
        piece: &Piece,
        now: i64,
    ) -> Result<Option<pb::ExitTransfer>> {
        let Some(redundancy) = segment.redundancy else {
            return Ok(None);
        };
        let Some(expiration) = self.metabase.stream_expiration(&segment.stream_id).await? else {
            return Ok(None);
        };
        let piece_size = redundancy.piece_size(
            u64::try_from(segment.encrypted_size)
                .map_err(|_| Error::Corrupt("a negative segment size".into()))?,
        );
        let view = health::view_of(&self.metabase, &self.config, now, &segment.pieces).await?;
        let healthy = view.classify(&segment.pieces).healthy;
        let (vetted, unvetted) =
            overlay::eligible_nodes(&self.metabase, &self.config, piece_size, now).await?;
        let holders: HashSet<NodeId> = segment.pieces.iter().map(|p| p.node).collect();
        let Some(target) = select_repair_nodes(
            &mut rand::thread_rng(),
            vetted,
            unvetted,
            &holders,
            &view.networks_of(&healthy),
            1,
            self.config.reputation.unvetted_share,
            self.config.distinct_subnets,
        )
        .into_iter()
        .next() else {
            tracing::debug!(%node, "no replacement node for an exiting piece yet");
            return Ok(None);
        };
        let target_id = NodeId::from_bytes(&target.id)?;
        let new_piece_id = derive_piece_id(&segment.root_piece_id, &target_id, piece.num.into());
        Ok(Some(pb::ExitTransfer {
            piece_id: derive_piece_id(&segment.root_piece_id, &node, piece.num.into()).to_vec(),
            limit: Some(self.orders.sign(
                target_id,
                &new_piece_id,
                PieceAction::PutExit,
                size_i64(piece_size),
                expiration,
            )),
            address: target.address,
            stream_id: segment.stream_id.clone(),
            position: segment.position,
            piece_num: piece.num.into(),
        }))
    }
}

/// What one call's scan found.
struct Scan {
    transfers: Vec<pb::ExitTransfer>,
    /// The node's pieces still to hand over seen, with or without a
    /// replacement available yet.
    found: i64,
    /// The last segment looked at.
    cursor: Option<SegmentKey>,
    /// Whether the scan reached the last segment.
    passed_end: bool,
}

fn progress(state: &ExitState) -> pb::ExitProgress {
    pb::ExitProgress {
        started_at: state.started_at,
        pieces_transferred: state.transferred,
        pieces_failed: state.failed,
    }
}

/// Fails the exits of nodes that stopped asking for work.
pub struct ExitWatcher {
    metabase: Metabase,
    config: ExitConfig,
}

impl ExitWatcher {
    pub fn new(metabase: Metabase, config: ExitConfig) -> Self {
        ExitWatcher { metabase, config }
    }
}

impl Work for ExitWatcher {
    async fn run_once(&mut self) -> Result<Progress> {
        let now = unix_now();
        let timeout = i64::try_from(self.config.inactivity_timeout.as_secs()).unwrap_or(i64::MAX);
        for node in self
            .metabase
            .silent_exits(now.saturating_sub(timeout))
            .await?
        {
            let why = format!(
                "the node stopped handing over its pieces for longer than {} s",
                self.config.inactivity_timeout.as_secs()
            );
            if self.metabase.finish_exit(&node, now, Some(&why)).await? {
                tracing::warn!(%node, "graceful exit failed: {why}");
            }
        }
        Ok(Progress::Idle)
    }
}
