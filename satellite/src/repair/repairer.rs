//! Repair workers: claim the queued segment most at risk, download `k` of its
//! pieces (each verified against the root committed for it), rebuild only the
//! pieces that are missing or not healthy, store them on fresh nodes (none that
//! holds a piece of the segment; one per subnet when the rule is on), and swap
//! the segment's piece list with a compare-and-swap. Everything here is
//! ciphertext: the satellite never holds a key.
//!
//! A swap that fails means the segment changed meanwhile (deleted, overwritten,
//! repaired by another worker): the new pieces are deleted again and nothing is
//! undone. A claim in the database keeps two workers — in one process or in
//! several on one PostgreSQL — off the same segment.

use std::collections::HashSet;
use std::sync::Arc;

use archipel_proto::erasure::{decode_data_shards, BatchEncoder};
use archipel_proto::hashtree::{TreeBuilder, DEFAULT_CHUNK_SIZE};
use archipel_proto::orders::{derive_piece_id, unix_now, verify_piece_hash};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{PieceAction, PieceDownloadRequest, PieceUploadRequest};
use archipel_proto::{NodeId, PeerKey, Redundancy};
use tokio::task::JoinSet;

use crate::audit::{verify_answer, Expected};
use crate::deletes::PieceDeleter;
use crate::health::{self, NetworkView, NodeStatus, PieceHealth};
use crate::metabase::{Node, Piece, Segment, SegmentKey};
use crate::metrics::{self, Metrics};
use crate::orders::OrderSigner;
use crate::repair::checker::{verdict, Verdict};
use crate::reputation::AuditOutcome;
use crate::worker::{Progress, Work};
use crate::{overlay, size_i64, Config, Error, Metabase, Result};

/// Bytes of piece data per upload message.
const UPLOAD_MESSAGE: usize = 256 << 10;
/// Bytes of each piece decoded and re-encoded at a time.
const REBUILD_STEP: u64 = 256 << 10;

/// What a repair of one segment came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// New pieces are stored and in the segment's piece list.
    Repaired { new_pieces: usize, healthy: u16 },
    /// Above the repair threshold after all (nodes came back): nothing done.
    Healthy,
    /// The segment no longer exists.
    Gone,
    /// The segment changed while it was repaired; the new pieces were deleted.
    Superseded,
}

/// Repairs queued segments; cheap to clone (one per worker).
#[derive(Clone)]
pub struct Repairer {
    config: Config,
    orders: OrderSigner,
    metabase: Metabase,
    deleter: PieceDeleter,
    metrics: Arc<Metrics>,
}

/// What the downloads of a repair brought.
struct Fetched {
    downloaded: Vec<(u16, Vec<u8>)>,
    bad: Vec<Piece>,
    last_error: String,
}

/// Why a piece could not be read.
enum FetchError {
    /// The node could not be reached or did not finish in time.
    Unreachable(String),
    /// The node is missing the piece or sent bytes that do not verify.
    Bad(String),
}

impl Repairer {
    pub fn new(
        config: Config,
        orders: OrderSigner,
        metabase: Metabase,
        deleter: PieceDeleter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Repairer {
            config,
            orders,
            metabase,
            deleter,
            metrics,
        }
    }

    /// Repairs the segment at `key` if it still needs it.
    pub async fn repair(&self, key: &SegmentKey) -> Result<RepairOutcome> {
        let segment = match self.metabase.segment(&key.stream_id, key.position).await {
            Ok(segment) => segment,
            Err(Error::NotFound(_)) => return Ok(RepairOutcome::Gone),
            Err(e) => return Err(e),
        };
        let Some(expiration) = self.metabase.stream_expiration(&key.stream_id).await? else {
            return Ok(RepairOutcome::Gone);
        };
        let now = unix_now();
        // Expired data is garbage to nodes already: nothing to keep alive.
        if expiration != 0 && expiration <= now {
            return Ok(RepairOutcome::Gone);
        }
        let Some(redundancy) = segment.redundancy else {
            return Ok(RepairOutcome::Healthy);
        };
        let view = health::view_of(&self.metabase, &self.config, now, &segment.pieces).await?;
        let health = view.classify(&segment.pieces);
        match verdict(health.healthy_count(), &redundancy) {
            Verdict::Healthy => return Ok(RepairOutcome::Healthy),
            Verdict::NeedsRepair | Verdict::Lost => {}
        }
        let piece_size = redundancy.piece_size(
            u64::try_from(segment.encrypted_size)
                .map_err(|_| Error::Corrupt("a negative segment size".into()))?,
        );

        // Nodes first: without any, downloading would be wasted.
        let targets = self
            .choose_nodes(
                &segment,
                &view,
                &health,
                plan_pieces(&health, &HashSet::new(), &redundancy).len(),
                piece_size,
                now,
            )
            .await?;
        if targets.is_empty() {
            return Err(Error::Repair(
                "no fresh node is available for the rebuilt pieces".into(),
            ));
        }
        let Fetched {
            downloaded,
            bad,
            last_error,
        } = self
            .download_pieces(
                &segment,
                &repair_sources(&view, &health),
                &redundancy,
                piece_size,
                expiration,
            )
            .await?;
        // Pieces of a segment deleted or replaced meanwhile are gone from
        // their nodes for good reason: neither a failure nor bad pieces.
        if let Some(changed) = self.changed_since(&segment).await? {
            return Ok(changed);
        }
        // The whole piece failed verification against the node's own signed
        // hash: as good a proof as an audit, and the only one there will be,
        // since the swap below drops the piece (an audit then finds nothing
        // owed and the node would go unpunished).
        for piece in &bad {
            tracing::warn!("node {} holds a bad piece {}", piece.node, piece.num);
            self.metabase
                .record_audit(
                    &piece.node,
                    AuditOutcome::Failure,
                    &self.config.reputation,
                    unix_now(),
                )
                .await?;
        }
        let k = usize::from(redundancy.required);
        if downloaded.len() < k {
            return Err(Error::Repair(format!(
                "only {} of the {k} pieces needed could be read (last error: {last_error})",
                downloaded.len()
            )));
        }
        let bad_nums: HashSet<u16> = bad.iter().map(|p| p.num).collect();
        let wanted: Vec<u16> = plan_pieces(&health, &bad_nums, &redundancy)
            .into_iter()
            .take(targets.len())
            .collect();
        let rebuilt = tokio::task::spawn_blocking(move || {
            rebuild_pieces(&redundancy, &downloaded, &wanted, piece_size)
        })
        .await
        .map_err(|e| Error::Repair(format!("the rebuild task failed: {e}")))??;

        let signed_at = unix_now();
        let stored = self
            .upload_pieces(&segment, targets, rebuilt, piece_size, expiration)
            .await;
        if stored.is_empty() {
            return Err(Error::Repair(
                "no rebuilt piece could be stored on a node".into(),
            ));
        }
        // Pieces older than the garbage collection grace may already be
        // missing from a retain filter: they must not be listed now.
        if self.config.gc.too_old_to_commit(signed_at, unix_now()) {
            self.discard(&segment, stored).await?;
            return Err(Error::Repair(
                "the rebuilt pieces took longer than the garbage collection grace to store".into(),
            ));
        }
        let (pieces, replaced) = merge_pieces(&health, &bad_nums, &stored);
        if !self
            .metabase
            .swap_pieces(key, &segment.pieces, &pieces)
            .await?
        {
            // Another repair may have put the same piece number on the same
            // node (same piece id, one file): never delete what is listed
            // now (the deletion worker checks that again before it sends).
            self.discard(&segment, stored).await?;
            return Ok(RepairOutcome::Superseded);
        }
        let bytes = piece_size * stored.len() as u64;
        metrics::add(&self.metrics.repaired_pieces, stored.len() as u64);
        metrics::add(&self.metrics.repaired_bytes, bytes);
        // The swap queued the pieces given up for new ones for deletion.
        if !replaced.is_empty() || !bad.is_empty() {
            self.deleter.wake();
        }
        // The new nodes were eligible, so the view counts them healthy.
        let healthy = view.classify(&pieces).healthy_count();
        Ok(RepairOutcome::Repaired {
            new_pieces: stored.len(),
            healthy,
        })
    }

    /// Queues the pieces a repair stored but could not list for deletion.
    async fn discard(&self, segment: &Segment, stored: Vec<Piece>) -> Result<()> {
        self.metabase
            .queue_deletions(segment.root_piece_id, stored)
            .await?;
        self.deleter.wake();
        Ok(())
    }

    /// The segment's piece list now; `None` once it is gone.
    async fn current_pieces(&self, key: &SegmentKey) -> Result<Option<Vec<Piece>>> {
        match self.metabase.segment(&key.stream_id, key.position).await {
            Ok(segment) => Ok(Some(segment.pieces)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// How the repair ends if `segment` was deleted or its pieces changed
    /// since it was read; `None` if it is as it was.
    async fn changed_since(&self, segment: &Segment) -> Result<Option<RepairOutcome>> {
        Ok(match self.current_pieces(&segment.key()).await? {
            None => Some(RepairOutcome::Gone),
            Some(pieces) if pieces != segment.pieces => Some(RepairOutcome::Superseded),
            Some(_) => None,
        })
    }

    /// Downloads and verifies pieces from `sources` in order until `k` are in
    /// hand, `k` at a time; also returns the pieces found bad and the last
    /// reason a piece could not be read.
    async fn download_pieces(
        &self,
        segment: &Segment,
        sources: &[Piece],
        redundancy: &Redundancy,
        piece_size: u64,
        expiration: i64,
    ) -> Result<Fetched> {
        let k = usize::from(redundancy.required);
        let ids: Vec<NodeId> = sources.iter().map(|p| p.node).collect();
        let nodes = self.metabase.nodes(&ids).await?;
        let mut next = sources.iter();
        let mut tasks = JoinSet::new();
        let mut downloaded = Vec::with_capacity(k);
        let mut bad = Vec::new();
        let mut last_error = String::new();
        loop {
            while tasks.len() + downloaded.len() < k {
                let Some(piece) = next.next() else { break };
                let Some(node) = nodes
                    .iter()
                    .find(|n| n.id.as_slice() == piece.node.as_bytes())
                else {
                    continue;
                };
                let fetch = self.fetch_piece(
                    node.clone(),
                    segment.root_piece_id,
                    *piece,
                    piece_size,
                    expiration,
                );
                let piece = *piece;
                tasks.spawn(async move { (piece, fetch.await) });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (piece, result) =
                joined.map_err(|e| Error::Repair(format!("a piece download task failed: {e}")))?;
            match result {
                Ok(data) => downloaded.push((piece.num, data)),
                Err(FetchError::Unreachable(why)) => {
                    tracing::info!(
                        "repair could not read piece {} from node {}: {why}",
                        piece.num,
                        piece.node
                    );
                    last_error = why;
                }
                Err(FetchError::Bad(why)) => {
                    tracing::info!("node {} sent a bad piece {}: {why}", piece.node, piece.num);
                    last_error = why;
                    bad.push(piece);
                }
            }
            if downloaded.len() == k {
                break;
            }
        }
        if downloaded.len() == k {
            metrics::add(&self.metrics.repair_download_bytes, piece_size * k as u64);
        }
        Ok(Fetched {
            downloaded,
            bad,
            last_error,
        })
    }

    /// Reads one whole piece under a GET_REPAIR order and verifies it.
    fn fetch_piece(
        &self,
        node: Node,
        root_piece_id: [u8; 32],
        piece: Piece,
        piece_size: u64,
        expiration: i64,
    ) -> impl std::future::Future<Output = std::result::Result<Vec<u8>, FetchError>> + Send + 'static
    {
        let piece_id = derive_piece_id(&root_piece_id, &piece.node, piece.num.into());
        let limit = self.orders.sign(
            piece.node,
            &piece_id,
            PieceAction::GetRepair,
            size_i64(piece_size),
            expiration,
        );
        let timeout = self.config.repair.transfer_timeout;
        async move {
            let key = PeerKey::for_id(piece.node, &node.public_key)
                .map_err(|e| FetchError::Unreachable(format!("the node's key is unusable: {e}")))?;
            let request = PieceDownloadRequest {
                limit: Some(limit),
                offset: 0,
                length: size_i64(piece_size),
            };
            let expected = Expected {
                key: &key,
                piece_id,
                root: piece.root,
                size: piece_size,
                offset: 0,
                length: piece_size,
            };
            tokio::time::timeout(timeout, read_piece(&node.address, request, &expected))
                .await
                .unwrap_or_else(|_| Err(FetchError::Unreachable("the download timed out".into())))
        }
    }

    /// Fresh nodes for up to `count` new pieces: online, eligible, holding no
    /// piece of the segment, and outside the networks of its healthy pieces.
    async fn choose_nodes(
        &self,
        segment: &Segment,
        view: &NetworkView,
        health: &PieceHealth,
        count: usize,
        piece_size: u64,
        now: i64,
    ) -> Result<Vec<Node>> {
        let (vetted, unvetted) =
            overlay::eligible_nodes(&self.metabase, &self.config, piece_size, now).await?;
        let holders: HashSet<NodeId> = segment.pieces.iter().map(|p| p.node).collect();
        let taken_networks = view.networks_of(&health.healthy);
        Ok(select_repair_nodes(
            &mut rand::thread_rng(),
            vetted,
            unvetted,
            &holders,
            &taken_networks,
            count,
            self.config.reputation.unvetted_share,
            self.config.distinct_subnets,
        ))
    }

    /// Stores each rebuilt piece on its node under a PUT_REPAIR order; returns
    /// the pieces that were stored and signed for.
    async fn upload_pieces(
        &self,
        segment: &Segment,
        targets: Vec<Node>,
        rebuilt: Vec<(u16, Vec<u8>)>,
        piece_size: u64,
        expiration: i64,
    ) -> Vec<Piece> {
        let mut tasks = JoinSet::new();
        for (node, (num, data)) in targets.into_iter().zip(rebuilt) {
            let Ok(id) = NodeId::from_bytes(&node.id) else {
                continue;
            };
            let piece_id = derive_piece_id(&segment.root_piece_id, &id, num.into());
            let limit = self.orders.sign(
                id,
                &piece_id,
                PieceAction::PutRepair,
                size_i64(piece_size),
                expiration,
            );
            let timeout = self.config.repair.transfer_timeout;
            tasks.spawn(async move {
                let stored = tokio::time::timeout(timeout, store_piece(&node, id, limit, data))
                    .await
                    .unwrap_or_else(|_| Err("the upload timed out".into()));
                (num, id, stored)
            });
        }
        let mut stored = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((num, node, Ok(root))) => stored.push(Piece { num, node, root }),
                Ok((num, node, Err(why))) => {
                    tracing::info!("repair could not store piece {num} on node {node}: {why}")
                }
                Err(e) => tracing::warn!("a piece upload task failed: {e}"),
            }
        }
        stored
    }
}

/// Nodes for up to `count` rebuilt pieces among the eligible `vetted` and
/// `unvetted` ones: none that holds a piece of the segment (`holders`), none in
/// a network a healthy piece already occupies, vetting shares as for uploads.
#[allow(clippy::too_many_arguments)]
pub fn select_repair_nodes(
    rng: &mut impl rand::Rng,
    vetted: Vec<Node>,
    unvetted: Vec<Node>,
    holders: &HashSet<NodeId>,
    taken_networks: &HashSet<String>,
    count: usize,
    unvetted_share: f64,
    distinct_subnets: bool,
) -> Vec<Node> {
    let fresh = |nodes: Vec<Node>| -> Vec<Node> {
        nodes
            .into_iter()
            .filter(|n| {
                NodeId::from_bytes(&n.id).is_ok_and(|id| !holders.contains(&id))
                    && !taken_networks.contains(&n.last_net)
            })
            .collect()
    };
    overlay::select_vetted(
        rng,
        fresh(vetted),
        fresh(unvetted),
        count,
        unvetted_share,
        distinct_subnets,
    )
}

/// Where a repair reads from, in order: healthy pieces, then the other
/// pieces whose nodes are reachable (suspended, exiting, clumped).
pub fn repair_sources(view: &NetworkView, health: &PieceHealth) -> Vec<Piece> {
    health
        .healthy
        .iter()
        .chain(
            health
                .retrievable
                .iter()
                .filter(|p| view.status(&p.node) != NodeStatus::Offline),
        )
        .copied()
        .collect()
}

/// The piece numbers to rebuild, in order of preference: numbers no piece has
/// (or only a lost or bad one), then numbers held only by pieces that are
/// retrievable but not healthy. Numbers of healthy pieces are never reused.
pub fn plan_pieces(health: &PieceHealth, bad: &HashSet<u16>, redundancy: &Redundancy) -> Vec<u16> {
    let healthy: HashSet<u16> = health
        .healthy
        .iter()
        .map(|p| p.num)
        .filter(|num| !bad.contains(num))
        .collect();
    let held: HashSet<u16> = health
        .retrievable
        .iter()
        .map(|p| p.num)
        .filter(|num| !bad.contains(num))
        .collect();
    let missing = (0..redundancy.total).filter(|n| !healthy.contains(n));
    let (mut free, taken): (Vec<u16>, Vec<u16>) = missing.partition(|n| !held.contains(n));
    free.extend(taken);
    free
}

/// The segment's piece list after a repair stored `stored`: its healthy
/// pieces, the retrievable ones whose number was not given to a new piece, and
/// the new pieces; lost pieces and those that failed verification (`bad`) are
/// dropped. Also returns the retrievable pieces the new ones replace.
pub fn merge_pieces(
    health: &PieceHealth,
    bad: &HashSet<u16>,
    stored: &[Piece],
) -> (Vec<Piece>, Vec<Piece>) {
    let stored_nums: HashSet<u16> = stored.iter().map(|p| p.num).collect();
    let (replaced, kept): (Vec<Piece>, Vec<Piece>) = health
        .retrievable
        .iter()
        .filter(|p| !bad.contains(&p.num))
        .partition(|p| stored_nums.contains(&p.num));
    let mut pieces: Vec<Piece> = health
        .healthy
        .iter()
        .filter(|p| !bad.contains(&p.num))
        .chain(kept.iter())
        .chain(stored.iter())
        .copied()
        .collect();
    pieces.sort_by_key(|p| p.num);
    (pieces, replaced)
}

/// Rebuilds pieces `wanted` of a segment from `k` of its pieces (`(num, bytes)`),
/// a slice at a time so that the extra memory is a few slices, not a segment.
pub fn rebuild_pieces(
    redundancy: &Redundancy,
    pieces: &[(u16, Vec<u8>)],
    wanted: &[u16],
    piece_size: u64,
) -> Result<Vec<(u16, Vec<u8>)>> {
    let k = usize::from(redundancy.required);
    let total = usize::from(redundancy.total);
    if pieces
        .iter()
        .any(|(_, data)| data.len() as u64 != piece_size)
    {
        return Err(Error::Repair(
            "a downloaded piece has the wrong size".into(),
        ));
    }
    let share = u64::from(redundancy.share_size);
    let step = (REBUILD_STEP / share).max(1) * share;
    let mut out: Vec<(u16, Vec<u8>)> = wanted
        .iter()
        .map(|&num| (num, Vec::with_capacity(piece_size as usize)))
        .collect();
    let needs_recovery = wanted.iter().any(|&num| usize::from(num) >= k);
    let mut encoder = BatchEncoder::new(*redundancy);
    let mut offset = 0;
    while offset < piece_size {
        let end = (offset + step).min(piece_size);
        let mut slots: Vec<Option<&[u8]>> = vec![None; total];
        for (num, data) in pieces {
            if let Some(slot) = slots.get_mut(usize::from(*num)) {
                *slot = Some(&data[offset as usize..end as usize]);
            }
        }
        let data = decode_data_shards(redundancy, &slots)?;
        let recovery = if needs_recovery {
            encoder.encode_recovery(&data)?
        } else {
            Vec::new()
        };
        for (num, piece) in &mut out {
            let num = usize::from(*num);
            let shard = if num < k {
                data.get(num)
            } else {
                recovery.get(num - k)
            };
            let shard = shard.ok_or_else(|| {
                Error::Repair(format!("piece {num} is outside the redundancy scheme"))
            })?;
            piece.extend_from_slice(shard);
        }
        offset = end;
    }
    Ok(out)
}

/// Downloads a whole piece and checks it against what was committed.
async fn read_piece(
    address: &str,
    request: PieceDownloadRequest,
    expected: &Expected<'_>,
) -> std::result::Result<Vec<u8>, FetchError> {
    let channel = overlay::connect_piecestore(address, expected.key.id(), None)
        .await
        .map_err(FetchError::Unreachable)?;
    let judge = |status: tonic::Status| match status.code() {
        tonic::Code::NotFound | tonic::Code::DataLoss => {
            FetchError::Bad(format!("{:?}: {}", status.code(), status.message()))
        }
        code => FetchError::Unreachable(format!("{code:?}: {}", status.message())),
    };
    let mut responses = PiecestoreClient::new(channel)
        .download(request)
        .await
        .map_err(judge)?
        .into_inner();
    let header = responses
        .message()
        .await
        .map_err(judge)?
        .ok_or_else(|| FetchError::Unreachable("the node sent no answer".into()))?;
    let mut data = header.data.to_vec();
    while let Some(message) = responses.message().await.map_err(judge)? {
        if (data.len() + message.data.len()) as u64 > expected.size {
            return Err(FetchError::Bad("the node sent more than the piece".into()));
        }
        data.extend_from_slice(&message.data);
    }
    verify_answer(expected, &header, &data).map_err(FetchError::Bad)?;
    Ok(data)
}

/// Uploads a rebuilt piece; returns its root once the node signed for it.
async fn store_piece(
    node: &Node,
    id: NodeId,
    limit: archipel_proto::pb::OrderLimit,
    data: Vec<u8>,
) -> std::result::Result<[u8; 32], String> {
    let key = PeerKey::for_id(id, &node.public_key)
        .map_err(|e| format!("the node's key is unusable: {e}"))?;
    let piece_id = limit.piece_id.clone();
    let size = data.len();
    let mut builder = TreeBuilder::new(DEFAULT_CHUNK_SIZE);
    builder.update(&data);
    let (root, _) = builder.finish();
    let channel = overlay::connect_piecestore(&node.address, id, None).await?;
    let data = Arc::new(data);
    let chunks = size.div_ceil(UPLOAD_MESSAGE).max(1);
    let first = PieceUploadRequest {
        limit: Some(limit),
        ..Default::default()
    };
    let body = (0..chunks).map(move |i| PieceUploadRequest {
        data: data[i * UPLOAD_MESSAGE..((i + 1) * UPLOAD_MESSAGE).min(size)].to_vec(),
        done: i + 1 == chunks,
        ..Default::default()
    });
    let messages = tokio_stream::iter(std::iter::once(first).chain(body));
    let hash = PiecestoreClient::new(channel)
        .upload(messages)
        .await
        .map_err(|s| format!("the node refused the piece: {}", s.message()))?
        .into_inner()
        .hash
        .ok_or("the node sent no piece hash")?;
    verify_piece_hash(&key, &hash).map_err(|e| format!("the piece hash is not signed: {e}"))?;
    if hash.piece_id != piece_id || hash.root != root || hash.piece_size != size as i64 {
        return Err("the node's piece hash does not match the piece sent".into());
    }
    Ok(root)
}

impl Work for Repairer {
    async fn run_once(&mut self) -> Result<Progress> {
        let now = unix_now();
        let lease = i64::try_from(self.config.repair.claim_lease.as_secs()).unwrap_or(i64::MAX);
        let Some(claim) = self
            .metabase
            .claim_repair(now, now.saturating_add(lease))
            .await?
        else {
            return Ok(Progress::Idle);
        };
        let segment = format!(
            "segment {} of stream {}",
            claim.key.position,
            hex::encode(&claim.key.stream_id)
        );
        // Segments that keep failing wait longer each time (up to 32×).
        let backoff = 1i64 << claim.attempts.clamp(1, 6).saturating_sub(1);
        let retry = i64::try_from(self.config.repair.retry_after.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_mul(backoff);
        match self.repair(&claim.key).await {
            Ok(RepairOutcome::Repaired {
                new_pieces,
                healthy,
            }) => {
                metrics::bump(&self.metrics.repairs_succeeded);
                tracing::info!("repaired {segment}: {new_pieces} new pieces, {healthy} healthy");
                let still_low = self
                    .metabase
                    .segment(&claim.key.stream_id, claim.key.position)
                    .await
                    .ok()
                    .and_then(|s| s.redundancy)
                    .is_some_and(|r| healthy <= r.repair);
                let retry_at = still_low.then(|| {
                    (
                        unix_now().saturating_add(retry),
                        "repaired only partly: too few fresh nodes",
                    )
                });
                self.metabase.finish_repair(&claim, retry_at).await?;
            }
            Ok(RepairOutcome::Superseded) => {
                metrics::bump(&self.metrics.repairs_superseded);
                tracing::info!("{segment} changed during its repair; the new pieces are dropped");
                self.metabase.finish_repair(&claim, None).await?;
            }
            Ok(RepairOutcome::Healthy | RepairOutcome::Gone) => {
                self.metabase.finish_repair(&claim, None).await?;
            }
            Err(e) => {
                metrics::bump(&self.metrics.repairs_failed);
                tracing::warn!("repair of {segment} failed (try {}): {e}", claim.attempts);
                let why = e.to_string();
                self.metabase
                    .finish_repair(&claim, Some((unix_now().saturating_add(retry), &why)))
                    .await?;
            }
        }
        Ok(Progress::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(num: u16, node: u8) -> Piece {
        Piece {
            num,
            node: NodeId([node; 32]),
            root: [0; 32],
        }
    }

    #[test]
    fn plans_free_numbers_first_and_never_healthy_ones() {
        let r: Redundancy = "4/6/8/10/256".parse().unwrap();
        let health = PieceHealth {
            healthy: vec![
                piece(0, 1),
                piece(1, 2),
                piece(2, 3),
                piece(3, 4),
                piece(4, 5),
            ],
            retrievable: vec![piece(5, 6), piece(6, 7)],
            lost: vec![piece(7, 8)],
        };
        assert_eq!(plan_pieces(&health, &HashSet::new(), &r), [7, 8, 9, 5, 6]);
        // A healthy piece that failed verification is rebuilt like a missing one.
        let bad: HashSet<u16> = [2, 6].into();
        assert_eq!(plan_pieces(&health, &bad, &r), [2, 6, 7, 8, 9, 5]);
    }

    #[test]
    fn merged_lists_keep_what_counts_and_drop_what_is_replaced() {
        let health = PieceHealth {
            healthy: vec![piece(0, 1), piece(1, 2), piece(2, 3)],
            retrievable: vec![piece(3, 4), piece(4, 5)],
            lost: vec![piece(5, 6)],
        };
        let bad: HashSet<u16> = [1].into();
        let stored = vec![piece(1, 7), piece(4, 8), piece(5, 9)];
        let (pieces, replaced) = merge_pieces(&health, &bad, &stored);
        assert_eq!(
            pieces,
            [
                piece(0, 1),
                piece(1, 7),
                piece(2, 3),
                piece(3, 4),
                piece(4, 8),
                piece(5, 9)
            ]
        );
        assert_eq!(replaced, [piece(4, 5)]);
    }

    #[test]
    fn rebuilt_pieces_equal_the_originals() {
        let r: Redundancy = "3/4/5/6/64".parse().unwrap();
        // Pieces of 5001 shares: two whole rebuild steps and a short one.
        let segment: Vec<u8> = (0..r.stripe_size() as usize * 5001)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let shards = BatchEncoder::new(r).encode(&segment).unwrap();
        let piece_size = shards[0].len() as u64;
        for have in [[0u16, 1, 2], [3, 4, 5], [1, 3, 5]] {
            let pieces: Vec<(u16, Vec<u8>)> = have
                .iter()
                .map(|&n| (n, shards[usize::from(n)].clone()))
                .collect();
            let wanted: Vec<u16> = (0..6).filter(|n| !have.contains(n)).collect();
            let rebuilt = rebuild_pieces(&r, &pieces, &wanted, piece_size).unwrap();
            for (num, data) in rebuilt {
                assert_eq!(data, shards[usize::from(num)], "piece {num} from {have:?}");
            }
        }
        let short = vec![(0, vec![0; 10]), (1, vec![0; 64 * 7]), (2, vec![0; 64 * 7])];
        assert!(rebuild_pieces(&r, &short, &[3], piece_size).is_err());
    }
}
