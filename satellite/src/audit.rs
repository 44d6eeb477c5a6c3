//! Audits: proofs of storage without downloading pieces. An audit challenges one
//! node for one random hash chunk of one of its pieces, with a GET_AUDIT order
//! limit; the node must return the chunk with its leaf hashes, the sibling hashes
//! up to the root and its signed piece hash, and the satellite checks all of it
//! against the root it committed. The outcome moves the node's reputation
//! ([`crate::reputation`]).
//!
//! What gets audited: a piece chosen at random among the pieces of committed
//! segments ([`PIECE_SAMPLE`] segments read from a random stream id), so each
//! node is audited in proportion to the pieces it holds. A node without pieces
//! costs no audit, and identities made up by the thousand (each with an empty
//! disk) do not thin out the audits of the nodes that hold data; a node's
//! share of audits is its share of the data at stake. Prompt audits
//! ([`AuditRequests`]) name the node, and may name the piece to challenge (one
//! a client found bad while reading); a random piece of the node stands in
//! when that piece is no longer on it, found by scanning the segments from a
//! random stream id (bounded: [`SCAN_BATCH`] × [`SCAN_BATCHES`] rows).
//!
//! Outcomes: the bytes verify (success); wrong bytes, a bad proof, a missing or
//! damaged piece (failure); no TCP connection (offline: no reputation change, a
//! failed contact); connected but no complete answer (silence past the audit
//! timeout, or a connection that breaks off) (containment: the node owes exactly that challenge, which its next audits ask
//! again first; after [`AuditConfig::max_reverify_count`] unanswered retries it
//! is a failure, and being offline meanwhile does not clear it); any other error
//! (unknown: the unknown-error reputation, which leads to suspension). Before a
//! failure counts, the piece is looked up again: if its segment was deleted or
//! its piece replaced while the audit ran, or its object expired, the node may
//! rightly have dropped it, and the audit counts for nothing. Expired objects
//! are never chosen for audits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archipel_proto::hashtree::{self, Hash, DEFAULT_CHUNK_SIZE};
use archipel_proto::orders::{derive_piece_id, unix_now};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{PieceAction, PieceDownloadRequest};
use archipel_proto::{transport, NodeId, PeerKey};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::metabase::{Node, PendingAudit, Piece, Segment, SegmentKey};
use crate::metrics::Metrics;
use crate::orders::OrderSigner;
use crate::reputation::{AuditOutcome, ReputationConfig};
use crate::worker::{Progress, Work};
use crate::{Error, Metabase, Result};

/// Segments read to choose a random piece to audit.
pub const PIECE_SAMPLE: usize = 64;
/// Segments read per query while looking for a piece of the audited node.
pub const SCAN_BATCH: usize = 500;
/// Queries per search before the node is skipped for this round.
pub const SCAN_BATCHES: usize = 20;
/// Prompt audit requests waiting at most; more are dropped (audits happen anyway).
const REQUEST_QUEUE: usize = 1024;

/// The audit settings (the `[audit]` section of the satellite's config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether the satellite audits at all (default true).
    pub enabled: bool,
    /// Pause of each audit worker between two audits (default 30s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A node that connected but has not answered a challenge completely
    /// within this is contained (default 30s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Unanswered retries of a contained node's challenge before it counts as a
    /// failure (default 3).
    pub max_reverify_count: u32,
    /// Audit workers running at once (default 2).
    pub concurrency: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            max_reverify_count: 3,
            concurrency: 2,
        }
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled
            && (self.interval.is_zero() || self.timeout.is_zero() || self.concurrency == 0)
        {
            return Err(Error::Config(
                "audit interval, timeout and concurrency must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What one challenge found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Finding {
    Verified,
    /// The node answered, and the answer proves it does not hold the data.
    Failed(String),
    /// No connection could be made.
    Offline(String),
    /// Connected, but no complete answer: silent past the timeout, or the
    /// connection broke off. Both lead to containment.
    NoAnswer(String),
    /// Any other error.
    Unknown(String),
}

/// What an audit of a node did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditResult {
    /// The outcome was applied to the node's reputation.
    Audited(AuditOutcome),
    /// The node did not answer in time and now owes the challenge (or still does).
    Contained { reverify_count: u32 },
    /// Nothing to audit: unknown or disqualified node, no piece on it, an
    /// audit of it already running, or a piece that stopped being owed while
    /// it was audited (deleted, repaired away or expired).
    Skipped,
}

/// Runs audits; cheap to clone.
#[derive(Clone, Debug)]
pub struct Auditor {
    orders: OrderSigner,
    metabase: Metabase,
    config: AuditConfig,
    reputation: ReputationConfig,
    metrics: Arc<Metrics>,
    /// Nodes being audited now: one audit per node at a time, so that two
    /// workers never answer for the same pending challenge.
    in_flight: Arc<Mutex<HashSet<NodeId>>>,
}

/// Marks a node as being audited until dropped.
struct Claim {
    in_flight: Arc<Mutex<HashSet<NodeId>>>,
    node: NodeId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.node);
    }
}

/// A chosen challenge: one chunk of one piece.
struct Challenge {
    node: Node,
    segment: Segment,
    piece: Piece,
    chunk_index: u64,
}

impl Auditor {
    pub fn new(
        orders: OrderSigner,
        metabase: Metabase,
        config: AuditConfig,
        reputation: ReputationConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Auditor {
            orders,
            metabase,
            config,
            reputation,
            metrics,
            in_flight: Arc::default(),
        }
    }

    fn claim(&self, node: NodeId) -> Option<Claim> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        in_flight.insert(node).then(|| Claim {
            in_flight: self.in_flight.clone(),
            node,
        })
    }

    /// Audits a piece chosen at random among the pieces of committed
    /// segments, on its node (which answers its pending challenge first if it
    /// is contained).
    pub async fn audit_random_piece(&self) -> Result<AuditResult> {
        let now = unix_now();
        let start: [u8; 16] = rand::random();
        let mut sample = self
            .metabase
            .committed_remote_segments_from(&start, PIECE_SAMPLE, now)
            .await?;
        if sample.len() < PIECE_SAMPLE {
            // Wrap around to the lowest stream ids.
            let rest = PIECE_SAMPLE - sample.len();
            let wrapped = self
                .metabase
                .committed_remote_segments_from(&[], rest, now)
                .await?;
            for segment in wrapped {
                if !sample.iter().any(|s| s.key() == segment.key()) {
                    sample.push(segment);
                }
            }
        }
        let pieces: Vec<(&Segment, &Piece)> = sample
            .iter()
            .flat_map(|s| s.pieces.iter().map(move |p| (s, p)))
            .collect();
        if pieces.is_empty() {
            return Ok(AuditResult::Skipped);
        }
        let (segment, piece) = pieces[rand::thread_rng().gen_range(0..pieces.len())];
        let wanted = PieceRef {
            segment: segment.key(),
            num: piece.num,
        };
        self.audit_now(piece.node, Some(&wanted)).await
    }

    /// Audits `node` at once: its pending challenge if it is contained, else a
    /// random chunk of a random piece it holds.
    pub async fn audit_node_now(&self, node: NodeId) -> Result<AuditResult> {
        self.audit_now(node, None).await
    }

    /// Audits `node` at once on a random chunk of `piece`: for a piece a
    /// client found bad. A contained node answers its pending challenge
    /// instead; a random piece of the node stands in if `piece` is no longer
    /// on it.
    pub async fn audit_piece_now(&self, node: NodeId, piece: &PieceRef) -> Result<AuditResult> {
        self.audit_now(node, Some(piece)).await
    }

    async fn audit_now(&self, node: NodeId, piece: Option<&PieceRef>) -> Result<AuditResult> {
        let result = self.audit_node(node, piece).await?;
        match result {
            AuditResult::Audited(outcome) => self.metrics.audited(outcome),
            AuditResult::Contained { .. } => self.metrics.contained(),
            AuditResult::Skipped => {}
        }
        Ok(result)
    }

    async fn audit_node(&self, node: NodeId, wanted: Option<&PieceRef>) -> Result<AuditResult> {
        let Some(_claim) = self.claim(node) else {
            return Ok(AuditResult::Skipped);
        };
        let Some(row) = self.metabase.node(&node).await? else {
            return Ok(AuditResult::Skipped);
        };
        let health = self.metabase.node_health(&node, &self.reputation).await?;
        if health.is_none_or(|h| h.disqualified_at.is_some()) {
            return Ok(AuditResult::Skipped);
        }
        // A node whose exit ended owes nothing: its pieces count as lost.
        if self
            .metabase
            .exit_state(&node)
            .await?
            .is_some_and(|exit| exit.finished_at.is_some())
        {
            return Ok(AuditResult::Skipped);
        }
        if let Some(pending) = self.metabase.pending_audit(&node).await? {
            match self.pending_challenge(&row, &pending).await? {
                Some(challenge) => return self.reverify(challenge, pending).await,
                // The piece is gone or replaced: the node owes nothing any more.
                None => self.metabase.release(&node).await?,
            }
        }
        let named = match wanted {
            Some(wanted) => self.named_piece(&node, wanted).await?,
            None => None,
        };
        let found = match named {
            Some(found) => Some(found),
            None => self.find_piece(&node).await?,
        };
        let Some((segment, piece)) = found else {
            return Ok(AuditResult::Skipped);
        };
        let leaves = hashtree::leaf_count(piece_size(&segment)?, DEFAULT_CHUNK_SIZE);
        let chunk_index = rand::thread_rng().gen_range(0..leaves);
        let challenge = Challenge {
            node: row,
            segment,
            piece,
            chunk_index,
        };
        let finding = self.challenge(&challenge).await;
        let now = unix_now();
        let outcome = match finding {
            Finding::NoAnswer(why) => {
                self.metabase
                    .contain(&PendingAudit {
                        node,
                        stream_id: challenge.segment.stream_id.clone(),
                        position: challenge.segment.position,
                        piece_num: challenge.piece.num,
                        piece_root: challenge.piece.root,
                        chunk_index,
                        reverify_count: 0,
                        created_at: now,
                    })
                    .await?;
                tracing::info!("node {node} did not answer an audit ({why}): contained");
                self.record(node, AuditOutcome::Offline, now).await?;
                return Ok(AuditResult::Contained { reverify_count: 0 });
            }
            other => self.outcome_of(node, other),
        };
        if outcome == AuditOutcome::Failure && !self.still_owed(&challenge, now).await? {
            return Ok(AuditResult::Skipped);
        }
        self.record(node, outcome, now).await?;
        Ok(AuditResult::Audited(outcome))
    }

    /// Whether the challenged piece is still one the node must keep: its
    /// segment still lists it and its object has not expired. A piece deleted,
    /// repaired away or expired while the audit ran may rightly be gone from
    /// the node, so its failure counts for nothing.
    async fn still_owed(&self, c: &Challenge, now: i64) -> Result<bool> {
        let segment = match self
            .metabase
            .segment(&c.segment.stream_id, c.segment.position)
            .await
        {
            Ok(segment) => segment,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !segment.pieces.contains(&c.piece) {
            return Ok(false);
        }
        let expiration = self
            .metabase
            .stream_expiration(&c.segment.stream_id)
            .await?;
        Ok(expiration.is_some_and(|at| at == 0 || at > now))
    }

    /// Asks a contained node its pending challenge again.
    async fn reverify(&self, challenge: Challenge, pending: PendingAudit) -> Result<AuditResult> {
        let node = pending.node;
        let finding = self.challenge(&challenge).await;
        let now = unix_now();
        let outcome = match finding {
            // Staying away does not pay off: the challenge waits.
            Finding::Offline(why) => {
                tracing::info!("contained node {node} is offline: {why}");
                self.record(node, AuditOutcome::Offline, now).await?;
                return Ok(AuditResult::Contained {
                    reverify_count: pending.reverify_count,
                });
            }
            Finding::NoAnswer(why) => {
                let count = self
                    .metabase
                    .count_reverification(&node)
                    .await?
                    .unwrap_or(pending.reverify_count + 1);
                if count < self.config.max_reverify_count {
                    tracing::info!(
                        "contained node {node} left its challenge unanswered again ({count}): {why}"
                    );
                    self.record(node, AuditOutcome::Offline, now).await?;
                    return Ok(AuditResult::Contained {
                        reverify_count: count,
                    });
                }
                tracing::warn!(
                    "contained node {node} never answered its challenge: a failed audit"
                );
                AuditOutcome::Failure
            }
            other => self.outcome_of(node, other),
        };
        self.metabase.release(&node).await?;
        if outcome == AuditOutcome::Failure && !self.still_owed(&challenge, now).await? {
            return Ok(AuditResult::Skipped);
        }
        self.record(node, outcome, now).await?;
        Ok(AuditResult::Audited(outcome))
    }

    fn outcome_of(&self, node: NodeId, finding: Finding) -> AuditOutcome {
        match finding {
            Finding::Verified => AuditOutcome::Success,
            Finding::Failed(why) => {
                tracing::warn!("node {node} failed an audit: {why}");
                AuditOutcome::Failure
            }
            Finding::Offline(why) => {
                tracing::info!("node {node} is offline for its audit: {why}");
                AuditOutcome::Offline
            }
            Finding::Unknown(why) => {
                tracing::warn!("node {node} answered an audit with an error: {why}");
                AuditOutcome::Unknown
            }
            // Handled by the callers, which contain the node instead.
            Finding::NoAnswer(_) => AuditOutcome::Offline,
        }
    }

    async fn record(&self, node: NodeId, outcome: AuditOutcome, now: i64) -> Result<()> {
        let health = self
            .metabase
            .record_audit(&node, outcome, &self.reputation, now)
            .await?;
        if let Some(health) = health {
            if health.disqualified_at == Some(now) && outcome == AuditOutcome::Failure {
                tracing::warn!(
                    "node {node} is disqualified (audit score {:.3})",
                    health.audit.score()
                );
            }
        }
        Ok(())
    }

    /// The pending challenge, if its piece is still where it was.
    async fn pending_challenge(
        &self,
        row: &Node,
        pending: &PendingAudit,
    ) -> Result<Option<Challenge>> {
        let segment = match self
            .metabase
            .segment(&pending.stream_id, pending.position)
            .await
        {
            Ok(segment) => segment,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let piece = segment.pieces.iter().copied().find(|p| {
            p.num == pending.piece_num && p.node == pending.node && p.root == pending.piece_root
        });
        Ok(piece.map(|piece| Challenge {
            node: row.clone(),
            segment,
            piece,
            chunk_index: pending.chunk_index,
        }))
    }

    /// The segment of `wanted` and that piece, if it is still on `node`.
    async fn named_piece(
        &self,
        node: &NodeId,
        wanted: &PieceRef,
    ) -> Result<Option<(Segment, Piece)>> {
        let segment = match self
            .metabase
            .segment(&wanted.segment.stream_id, wanted.segment.position)
            .await
        {
            Ok(segment) => segment,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let piece = segment
            .pieces
            .iter()
            .copied()
            .find(|p| p.num == wanted.num && p.node == *node);
        Ok(piece.map(|piece| (segment, piece)))
    }

    /// A random committed segment with a piece on `node`, and that piece.
    async fn find_piece(&self, node: &NodeId) -> Result<Option<(Segment, Piece)>> {
        let start: [u8; 16] = rand::random();
        let mut from = start.to_vec();
        let mut wrapped = false;
        for _ in 0..SCAN_BATCHES {
            let batch = self
                .metabase
                .committed_remote_segments_from(&from, SCAN_BATCH, unix_now())
                .await?;
            let full = batch.len() == SCAN_BATCH;
            let next = batch.last().map(|s| next_stream_id(&s.stream_id));
            let mut found: Vec<(Segment, Piece)> = batch
                .into_iter()
                .filter(|s| !wrapped || s.stream_id.as_slice() < start.as_slice())
                .filter_map(|s| {
                    let piece = s.pieces.iter().copied().find(|p| p.node == *node)?;
                    Some((s, piece))
                })
                .collect();
            if !found.is_empty() {
                let pick = rand::thread_rng().gen_range(0..found.len());
                return Ok(Some(found.swap_remove(pick)));
            }
            match next {
                // Segments of one stream may straddle batches; the next batch
                // starts at the next stream, which only skips some of a long
                // stream's segments for this search.
                Some(next) if full => from = next,
                _ if !wrapped => {
                    wrapped = true;
                    from = Vec::new();
                }
                _ => break,
            }
            if wrapped && from.as_slice() >= start.as_slice() {
                break;
            }
        }
        Ok(None)
    }

    /// Sends one challenge and judges the answer.
    async fn challenge(&self, c: &Challenge) -> Finding {
        let node = match NodeId::from_bytes(&c.node.id) {
            Ok(id) => id,
            Err(e) => return Finding::Unknown(format!("the node's id is unusable: {e}")),
        };
        let key = match PeerKey::for_id(node, &c.node.public_key) {
            Ok(key) => key,
            Err(e) => return Finding::Unknown(format!("the node's key is unusable: {e}")),
        };
        let size = match piece_size(&c.segment) {
            Ok(size) => size,
            Err(e) => return Finding::Unknown(e.to_string()),
        };
        let chunk = u64::from(DEFAULT_CHUNK_SIZE);
        let leaves = hashtree::leaf_count(size, DEFAULT_CHUNK_SIZE);
        let offset = (c.chunk_index % leaves) * chunk;
        let length = chunk.min(size - offset);
        let piece_id = derive_piece_id(&c.segment.root_piece_id, &node, c.piece.num.into());
        let limit = self.orders.sign(
            node,
            &piece_id,
            PieceAction::GetAudit,
            i64::try_from(length).unwrap_or(i64::MAX),
            0,
        );
        let stream = match tokio::time::timeout(
            self.config.timeout,
            tokio::net::TcpStream::connect(&c.node.address),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Finding::Offline(format!("cannot connect: {e}")),
            Err(_) => return Finding::Offline("the connection attempt timed out".into()),
        };
        let request = PieceDownloadRequest {
            limit: Some(limit),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            length: i64::try_from(length).unwrap_or(i64::MAX),
        };
        let expected = Expected {
            key: &key,
            piece_id,
            root: c.piece.root,
            size,
            offset,
            length,
        };
        match tokio::time::timeout(
            self.config.timeout,
            download_and_verify(stream, &c.node.address, request, &expected),
        )
        .await
        {
            Ok(finding) => finding,
            Err(_) => Finding::NoAnswer("no answer within the audit timeout".into()),
        }
    }
}

/// The size of each piece of a remote segment.
fn piece_size(segment: &Segment) -> Result<u64> {
    let redundancy = segment
        .redundancy
        .ok_or_else(|| Error::Corrupt("an audited segment has no redundancy".into()))?;
    let encrypted = u64::try_from(segment.encrypted_size)
        .map_err(|_| Error::Corrupt("a negative segment size".into()))?;
    Ok(redundancy.piece_size(encrypted))
}

/// The least byte string greater than `id`: where the scan goes on after `id`.
fn next_stream_id(id: &[u8]) -> Vec<u8> {
    let mut next = id.to_vec();
    next.push(0);
    next
}

/// What a correct answer must match.
pub(crate) struct Expected<'a> {
    pub key: &'a PeerKey,
    pub piece_id: [u8; 32],
    pub root: Hash,
    pub size: u64,
    pub offset: u64,
    pub length: u64,
}

/// Over an already connected stream: checks (TLS) that the node is the one
/// whose key must sign the answer, downloads the challenged range and checks
/// it. A node that answers TLS as someone else is not there: offline, not
/// failed.
async fn download_and_verify(
    stream: tokio::net::TcpStream,
    address: &str,
    request: PieceDownloadRequest,
    expected: &Expected<'_>,
) -> Finding {
    let endpoint = match transport::endpoint(address) {
        Ok(endpoint) => endpoint,
        Err(e) => return Finding::Unknown(format!("the node's address is unusable: {e}")),
    };
    let stream = match transport::handshake(stream, expected.key.id()).await {
        Ok(stream) => stream,
        Err(e) => return Finding::Offline(format!("the TLS handshake failed: {e}")),
    };
    let channel = match transport::channel_over(&endpoint, stream).await {
        Ok(channel) => channel,
        Err(e) => return Finding::NoAnswer(format!("the connection broke off: {e}")),
    };
    let mut client = PiecestoreClient::new(channel);
    let mut responses = match client.download(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return judge_status(&status),
    };
    let header = match responses.message().await {
        Ok(Some(header)) => header,
        Ok(None) => return Finding::Failed("the node sent no answer".into()),
        Err(status) => return judge_status(&status),
    };
    // The chunk size is checked (against the one roots are built with) before
    // it bounds what is buffered here.
    let chunk_size = u64::from(header.chunk_size);
    if header.chunk_size != DEFAULT_CHUNK_SIZE {
        return Finding::Failed(format!("the node claims {chunk_size}-byte hash chunks"));
    }
    let mut data = header.data.to_vec();
    // A node may widen the range to its chunks, but not send more than that.
    let most = expected.length + 2 * chunk_size;
    loop {
        match responses.message().await {
            Ok(Some(message)) => {
                data.extend_from_slice(&message.data);
                if data.len() as u64 > most {
                    return Finding::Failed("the node sent more data than asked for".into());
                }
            }
            Ok(None) => break,
            Err(status) => return judge_status(&status),
        }
    }
    match verify_answer(expected, &header, &data) {
        Ok(()) => Finding::Verified,
        Err(why) => Finding::Failed(why),
    }
}

/// An error status: a missing or damaged piece is a failure, a broken
/// connection no answer, anything else the node said unknown.
fn judge_status(status: &tonic::Status) -> Finding {
    // Statuses the node sent carry no source; transport failures do.
    if let Some(source) = std::error::Error::source(status) {
        return Finding::NoAnswer(format!("the connection broke off: {source}"));
    }
    match status.code() {
        tonic::Code::NotFound | tonic::Code::DataLoss => {
            Finding::Failed(format!("{:?}: {}", status.code(), status.message()))
        }
        code => Finding::Unknown(format!("{code:?}: {}", status.message())),
    }
}

/// Checks an answer: the signed piece hash is the committed one, every chunk
/// matches its leaf, the leaves prove to the committed root, and the data
/// covers the challenged range.
pub(crate) fn verify_answer(
    expected: &Expected<'_>,
    header: &archipel_proto::pb::PieceDownloadResponse,
    data: &[u8],
) -> std::result::Result<(), String> {
    let hash = header.hash.as_ref().ok_or("the answer has no piece hash")?;
    archipel_proto::orders::verify_piece_hash(expected.key, hash)
        .map_err(|e| format!("the piece hash is not signed by the node: {e}"))?;
    if hash.piece_id != expected.piece_id
        || hash.root != expected.root
        || u64::try_from(hash.piece_size).ok() != Some(expected.size)
    {
        return Err("the signed piece hash is not the committed one".into());
    }
    // Roots do not bind the chunk size; every committed root is of a tree of
    // DEFAULT_CHUNK_SIZE chunks (clients build it so). Another size would
    // shape the tree so that one chunk could pass for another.
    if header.chunk_size != DEFAULT_CHUNK_SIZE {
        return Err(format!(
            "the answer claims {}-byte hash chunks, not {DEFAULT_CHUNK_SIZE}",
            header.chunk_size
        ));
    }
    let chunk = u64::from(header.chunk_size);
    let aligned = u64::try_from(header.aligned_offset).map_err(|_| "a negative offset")?;
    if aligned % chunk != 0 || aligned > expected.offset {
        return Err("the answer's chunk layout is invalid".into());
    }
    if aligned + (data.len() as u64) < expected.offset + expected.length {
        return Err("the answer does not cover the challenged range".into());
    }
    let to_hash = |bytes: &Vec<u8>| -> std::result::Result<Hash, String> {
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| "a hash is not 32 bytes".to_string())
    };
    let leaves = header
        .leaf_hashes
        .iter()
        .map(to_hash)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let proof = header
        .proof
        .iter()
        .map(to_hash)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(chunk as usize).collect()
    };
    if chunks.len() != leaves.len() {
        return Err(format!(
            "{} chunks came with {} leaf hashes",
            chunks.len(),
            leaves.len()
        ));
    }
    for (i, (bytes, leaf)) in chunks.iter().zip(&leaves).enumerate() {
        if hashtree::leaf_hash(bytes) != *leaf {
            return Err(format!(
                "chunk {i} of the answer does not match its leaf hash"
            ));
        }
    }
    hashtree::verify_range(
        &expected.root,
        expected.size,
        header.chunk_size,
        aligned / chunk,
        &leaves,
        &proof,
    )
    .map_err(|e| format!("the proof does not verify: {e}"))
}

/// One piece of one segment, named in a prompt audit request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceRef {
    pub segment: SegmentKey,
    pub num: u16,
}

/// A prompt audit: of `node`, on `piece` if one is named.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuditRequest {
    node: NodeId,
    piece: Option<PieceRef>,
}

/// Asks the audit workers to audit a node soon; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditRequests(mpsc::Sender<AuditRequest>);

impl AuditRequests {
    /// Queues a prompt audit of `node`; false if the queue is full or the
    /// workers have stopped (the node is still audited in the normal course).
    pub fn request(&self, node: NodeId) -> bool {
        self.send(AuditRequest { node, piece: None })
    }

    /// Queues a prompt audit of `piece` on `node` (see
    /// [`Auditor::audit_piece_now`]); false as for [`AuditRequests::request`].
    pub fn request_piece(&self, node: NodeId, piece: PieceRef) -> bool {
        self.send(AuditRequest {
            node,
            piece: Some(piece),
        })
    }

    fn send(&self, request: AuditRequest) -> bool {
        self.0.try_send(request).is_ok()
    }
}

/// One audit worker: waits for a requested audit or the interval, then audits.
pub struct AuditWorker {
    auditor: Auditor,
    interval: Duration,
    requests: Arc<tokio::sync::Mutex<mpsc::Receiver<AuditRequest>>>,
}

impl Work for AuditWorker {
    async fn run_once(&mut self) -> Result<Progress> {
        // A closed queue disables its branch: then only the interval wakes us.
        let requested = tokio::select! {
            Some(request) = async { self.requests.lock().await.recv().await } => Some(request),
            _ = tokio::time::sleep(self.interval) => None,
        };
        match requested {
            Some(AuditRequest {
                node,
                piece: Some(piece),
            }) => self.auditor.audit_piece_now(node, &piece).await?,
            Some(AuditRequest { node, piece: None }) => self.auditor.audit_node_now(node).await?,
            None => self.auditor.audit_random_piece().await?,
        };
        // The pause is the wait above.
        Ok(Progress::Busy)
    }
}

/// Starts `config.concurrency` audit workers that stop when `stop` turns true.
pub fn spawn_workers(
    auditor: Auditor,
    stop: watch::Receiver<bool>,
) -> (AuditRequests, Vec<tokio::task::JoinHandle<()>>) {
    let (sender, receiver) = mpsc::channel(REQUEST_QUEUE);
    let requests = Arc::new(tokio::sync::Mutex::new(receiver));
    let workers = (0..auditor.config.concurrency)
        .map(|_| {
            tokio::spawn(crate::worker::run_worker(
                "audit",
                auditor.config.interval,
                stop.clone(),
                AuditWorker {
                    auditor: auditor.clone(),
                    interval: auditor.config.interval,
                    requests: requests.clone(),
                },
            ))
        })
        .collect();
    (AuditRequests(sender), workers)
}

#[cfg(test)]
mod hostile_answers;

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::orders::sign_piece_hash;
    use archipel_proto::pb::{PieceDownloadResponse, PieceHash};
    use archipel_proto::Identity;

    /// A node's piece and the answer it gives for chunk `index`.
    struct Answer {
        node: Identity,
        root: Hash,
        size: u64,
        header: PieceDownloadResponse,
        data: Vec<u8>,
    }

    fn answer(size: usize, index: usize) -> Answer {
        let node = Identity::generate();
        let piece: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut tree = hashtree::TreeBuilder::new(DEFAULT_CHUNK_SIZE);
        tree.update(&piece);
        let (root, leaves) = tree.finish();
        let chunk = DEFAULT_CHUNK_SIZE as usize;
        let hash = sign_piece_hash(
            &node,
            PieceHash {
                piece_id: vec![3; 32],
                root: root.to_vec(),
                piece_size: size as i64,
                timestamp: 1,
                node_signature: Vec::new(),
            },
        );
        let end = ((index + 1) * chunk).min(size);
        Answer {
            root,
            size: size as u64,
            header: PieceDownloadResponse {
                hash: Some(hash),
                chunk_size: DEFAULT_CHUNK_SIZE,
                aligned_offset: (index * chunk) as i64,
                leaf_hashes: vec![leaves[index].to_vec()],
                proof: hashtree::range_proof(&leaves, index, index + 1)
                    .iter()
                    .map(|h| h.to_vec())
                    .collect(),
                data: Default::default(),
            },
            data: piece[index * chunk..end].to_vec(),
            node,
        }
    }

    fn check(a: &Answer, index: u64) -> std::result::Result<(), String> {
        let key = PeerKey::for_id(a.node.id(), &a.node.public_key()).unwrap();
        let chunk = u64::from(DEFAULT_CHUNK_SIZE);
        let expected = Expected {
            key: &key,
            piece_id: [3; 32],
            root: a.root,
            size: a.size,
            offset: index * chunk,
            length: chunk.min(a.size - index * chunk),
        };
        verify_answer(&expected, &a.header, &a.data)
    }

    #[test]
    fn honest_answers_verify() {
        let size = 5 * DEFAULT_CHUNK_SIZE as usize + 100;
        for index in 0..6 {
            let a = answer(size, index);
            assert_eq!(check(&a, index as u64), Ok(()), "chunk {index}");
        }
    }

    #[test]
    fn dishonest_answers_fail() {
        let size = 3 * DEFAULT_CHUNK_SIZE as usize;
        let mut a = answer(size, 1);
        a.data[10] ^= 1;
        assert!(check(&a, 1).unwrap_err().contains("leaf hash"));

        // Wrong bytes with matching leaf hashes still fail the proof.
        let mut a = answer(size, 1);
        a.data[10] ^= 1;
        a.header.leaf_hashes = vec![hashtree::leaf_hash(&a.data).to_vec()];
        assert!(check(&a, 1).unwrap_err().contains("proof"));

        // The right bytes of another chunk are not the challenged ones.
        let a = answer(size, 0);
        assert!(check(&a, 1).is_err());

        let mut a = answer(size, 2);
        a.data.truncate(100);
        assert!(check(&a, 2).is_err());

        let mut a = answer(size, 2);
        a.header.proof.pop();
        assert!(check(&a, 2).is_err());

        // A piece hash signed by someone else, or not the committed one.
        let mut a = answer(size, 0);
        let other = answer(size, 0);
        a.node = other.node;
        assert!(check(&a, 0).unwrap_err().contains("signed"));
        let mut a = answer(size, 0);
        a.root = [0; 32];
        assert!(check(&a, 0).unwrap_err().contains("committed"));
        let mut a = answer(size, 0);
        a.header.hash = None;
        assert!(check(&a, 0).is_err());

        // Roots do not bind the chunk size: any other than the one roots are
        // built with is refused, since it would let one chunk pass for another.
        let mut a = answer(size, 1);
        a.header.chunk_size = 3 * DEFAULT_CHUNK_SIZE;
        assert!(check(&a, 1).unwrap_err().contains("hash chunks"));
    }

    #[test]
    fn statuses_are_judged_by_code() {
        assert!(matches!(
            judge_status(&tonic::Status::not_found("gone")),
            Finding::Failed(_)
        ));
        assert!(matches!(
            judge_status(&tonic::Status::data_loss("damaged")),
            Finding::Failed(_)
        ));
        assert!(matches!(
            judge_status(&tonic::Status::internal("disk")),
            Finding::Unknown(_)
        ));
        assert!(matches!(
            judge_status(&tonic::Status::from_error(Box::new(std::io::Error::other(
                "reset"
            )))),
            Finding::NoAnswer(_)
        ));
    }
}
