//! The upload path: read the stream segment by segment, seal it block by block,
//! cut the ciphertext into stripes, erasure-code batches of stripes and stream
//! share `i` of every batch to node `i` — with bounded memory, whatever the
//! object's size.
//!
//! Long tail: all `total` piece uploads start together, each fed through its own
//! bounded channel ([`NODE_QUEUE_DEPTH`] batches deep). A node that fails is
//! dropped; a node whose queue stays full for [`SLOW_NODE_GRACE`] after
//! `success` others took the batch is dropped as well, so one slow node never
//! stalls an upload. Once the data is sent, the segment commits with the valid
//! signed piece hashes that arrive until `success` are in, plus a grace in
//! proportion to the upload's duration so far (see [`long_tail_grace`]); the
//! remaining uploads are cancelled.
//!
//! What a node signs is checked against what was sent: each piece's hash tree
//! is built from the bytes as they stream out, and a node whose signed root
//! differs (it stored, or claims, other data) is left out of the commit as if
//! it had failed. The satellite so records only roots the client computed
//! itself, and audits hold nodes to them.
//!
//! A segment whose ciphertext fits the satellite's inline threshold goes inline
//! (to decide, up to threshold + 1 bytes are buffered). Every other segment
//! reserves the size of a full segment with the satellite (a short last segment
//! uses less).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archipel_proto::erasure::BatchEncoder;
use archipel_proto::hashtree::{Hash, TreeBuilder, DEFAULT_CHUNK_SIZE};
use archipel_proto::orders;
use archipel_proto::pb::commit_object_request::LastSegment;
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{self, AddressedOrderLimit, PieceHash, PieceUploadRequest};
use archipel_proto::{NodeId, PeerKey, Redundancy};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::crypto::{self, Key, SegmentCipher, DEFAULT_BLOCK_SIZE, TAG_SIZE};
use crate::metainfo::{Metainfo, UploadLimits};
use crate::nodes::NodePool;
use crate::ranges::{encrypted_size, max_plain_within};
use crate::{
    non_negative, to_unix, Error, ObjectInfo, Precondition, SegmentHealth, SegmentStat,
    UploadOptions, VersionInfo, VersionLock,
};

/// Largest segment a satellite may ask for: bounds what a segment upload holds.
const MAX_SEGMENT_SIZE: u64 = 4 << 30;
/// Largest inline threshold a satellite may set: the client buffers that much.
const MAX_INLINE_THRESHOLD: u64 = 1 << 20;

/// Data bytes (before erasure coding) gathered into one batch of stripes.
pub(crate) const BATCH_TARGET: u64 = 1 << 20;
/// Messages each node's queue holds before the node counts as behind.
const NODE_QUEUE_DEPTH: usize = 4;
/// How long a node may stay behind once `success` others have taken a batch.
const SLOW_NODE_GRACE: Duration = Duration::from_secs(2);
/// The shortest and the longest the last nodes get to confirm once `success`
/// have. The wait ends as soon as they all confirm: only a node that lags
/// makes an upload wait at all.
const MIN_LONG_TAIL_GRACE: Duration = Duration::from_millis(10);
const MAX_LONG_TAIL_GRACE: Duration = Duration::from_millis(100);
/// How long to wait for signed piece hashes once all data is sent.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest gRPC message to a node.
const MAX_NODE_MESSAGE: usize = 16 << 20;

/// How long the last nodes get to confirm once `success` have, for a segment
/// upload that has run for `elapsed`: a quarter of that, within
/// [`MIN_LONG_TAIL_GRACE`] and [`MAX_LONG_TAIL_GRACE`]. Enough to keep the
/// pieces that finish together with the others (a piece cancelled while its
/// node commits it stays there, unlisted, until garbage collection), too
/// little to let a slow node hold a large upload up, and a small one at most
/// 10 ms.
fn long_tail_grace(elapsed: Duration) -> Duration {
    (elapsed / 4).clamp(MIN_LONG_TAIL_GRACE, MAX_LONG_TAIL_GRACE)
}

/// Stripes per batch: about [`BATCH_TARGET`] bytes, at least one stripe.
pub(crate) fn stripes_per_batch(scheme: &Redundancy) -> u64 {
    (BATCH_TARGET / scheme.stripe_size()).max(1)
}

/// The upload stream with one-byte lookahead, so that a block knows whether it
/// is the last one.
pub(crate) struct Source<R> {
    reader: R,
    buffer: Vec<u8>,
    eof: bool,
    consumed: u64,
}

impl<R: AsyncRead + Unpin> Source<R> {
    pub(crate) fn new(reader: R) -> Self {
        Source {
            reader,
            buffer: Vec::new(),
            eof: false,
            consumed: 0,
        }
    }

    /// Buffers at least `want` bytes unless the stream ends first.
    async fn fill(&mut self, want: usize) -> Result<(), Error> {
        while self.buffer.len() < want && !self.eof {
            // Reads go into spare capacity (nothing to zero first), and the
            // room for an AEAD tag lets a block taken from the front be sealed
            // without moving it.
            self.buffer
                .reserve(want + TAG_SIZE as usize - self.buffer.len());
            let n = self
                .reader
                .read_buf(&mut self.buffer)
                .await
                .map_err(Error::Read)?;
            self.eof = n == 0;
        }
        Ok(())
    }

    /// The next `max` bytes, fewer only at the end of the stream.
    async fn take(&mut self, max: u64) -> Result<Vec<u8>, Error> {
        let want = usize::try_from(max).unwrap_or(usize::MAX);
        self.fill(want).await?;
        let take = want.min(self.buffer.len());
        let rest = self.buffer.split_off(take);
        self.consumed += take as u64;
        Ok(std::mem::replace(&mut self.buffer, rest))
    }

    fn exhausted(&self) -> bool {
        self.eof && self.buffer.is_empty()
    }

    /// The next block of at most `max` bytes and whether it ends the segment
    /// (`room` is what the segment can still take).
    async fn next_block(&mut self, max: u64, room: u64) -> Result<(Vec<u8>, bool), Error> {
        let want = max.min(room) as usize;
        self.fill(want + 1).await?;
        let take = want.min(self.buffer.len());
        // The block keeps the buffer's allocation; only the lookahead moves.
        let rest = self.buffer.split_off(take);
        let block = std::mem::replace(&mut self.buffer, rest);
        self.consumed += take as u64;
        let last = take as u64 == room || self.exhausted();
        Ok((block, last))
    }
}

/// Seals one segment's plaintext block by block as it is read.
pub(crate) struct SegmentSealer {
    cipher: SegmentCipher,
    block_size: u64,
    room: u64,
    next_index: u64,
    done: bool,
    plain_size: u64,
}

impl SegmentSealer {
    pub(crate) fn new(key: &Key, position: u32, block_size: u32, max_segment_size: u64) -> Self {
        SegmentSealer {
            cipher: SegmentCipher::new(key, position),
            block_size: block_size as u64,
            room: max_segment_size,
            next_index: 0,
            done: false,
            plain_size: 0,
        }
    }

    /// The next sealed block, or `None` once the segment is complete.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut Source<R>,
    ) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let (mut block, last) = source.next_block(self.block_size, self.room).await?;
        self.room -= block.len() as u64;
        self.plain_size += block.len() as u64;
        self.cipher.seal_block(self.next_index, last, &mut block);
        self.next_index += 1;
        self.done = last;
        Ok(Some(block))
    }
}

/// Cuts ciphertext into stripes and erasure-codes them a batch at a time.
///
/// Ciphertext goes straight into the `k` data shards of the batch (share `i`
/// of every stripe belongs to shard `i`), so each byte is copied once before
/// the erasure coder sees it, and the shards are handed on, not copied again.
pub(crate) struct StripeEncoder {
    encoder: BatchEncoder,
    share_bytes: usize,
    shard_bytes: usize,
    /// The data shards of the batch being filled.
    data: Vec<Vec<u8>>,
    /// Ciphertext bytes in `data`.
    filled: usize,
    encrypted_size: u64,
}

impl StripeEncoder {
    pub(crate) fn new(scheme: Redundancy) -> Self {
        let share_bytes = scheme.share_size as usize;
        let shard_bytes = stripes_per_batch(&scheme) as usize * share_bytes;
        StripeEncoder {
            encoder: BatchEncoder::new(scheme),
            share_bytes,
            shard_bytes,
            data: Self::empty_shards(scheme.required as usize, shard_bytes),
            filled: 0,
            encrypted_size: 0,
        }
    }

    fn empty_shards(k: usize, shard_bytes: usize) -> Vec<Vec<u8>> {
        (0..k).map(|_| Vec::with_capacity(shard_bytes)).collect()
    }

    /// Appends ciphertext to the data shards, share by share; stops at the end
    /// of the batch and returns how much of `data` it took.
    fn scatter(&mut self, mut data: &[u8]) -> usize {
        let k = self.data.len();
        let batch_bytes = self.shard_bytes * k;
        let start = data.len();
        while !data.is_empty() && self.filled < batch_bytes {
            let in_stripe = self.filled % (self.share_bytes * k);
            let shard = in_stripe / self.share_bytes;
            let take = (self.share_bytes - in_stripe % self.share_bytes).min(data.len());
            self.data[shard].extend_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
        }
        start - data.len()
    }

    /// Adds ciphertext; returns the `n` shards of each batch it completed.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, Error> {
        self.encrypted_size += data.len() as u64;
        let mut batches = Vec::new();
        while !data.is_empty() {
            let took = self.scatter(data);
            data = &data[took..];
            if self.filled == self.shard_bytes * self.data.len() {
                batches.push(self.encode_pending()?);
            }
        }
        Ok(batches)
    }

    /// Zero-pads and encodes what is left; `None` if nothing is.
    pub(crate) fn finish(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        if self.filled == 0 {
            return Ok(None);
        }
        let stripe_bytes = self.share_bytes * self.data.len();
        let padded = self.filled.div_ceil(stripe_bytes) * stripe_bytes;
        self.scatter(&vec![0; padded - self.filled]);
        self.encode_pending().map(Some)
    }

    fn encode_pending(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        let recovery = self
            .encoder
            .encode_recovery(&self.data)
            .map_err(|e| Error::Corrupt(format!("erasure coding failed: {e}")))?;
        let fresh = Self::empty_shards(self.data.len(), self.shard_bytes);
        let mut shards = std::mem::replace(&mut self.data, fresh);
        shards.extend(recovery);
        self.filled = 0;
        Ok(shards)
    }

    pub(crate) fn encrypted_size(&self) -> u64 {
        self.encrypted_size
    }
}

/// One segment's batches of shards, made as its plaintext is read: the upload's
/// data path (seal blocks, cut stripes, erasure-code batches) without the network.
pub(crate) struct SegmentBatches<'s, R> {
    source: &'s mut Source<R>,
    sealer: SegmentSealer,
    encoder: StripeEncoder,
    ready: std::collections::VecDeque<Vec<Vec<u8>>>,
    sealed_all: bool,
}

impl<'s, R: AsyncRead + Unpin> SegmentBatches<'s, R> {
    pub(crate) fn new(
        source: &'s mut Source<R>,
        sealer: SegmentSealer,
        scheme: Redundancy,
    ) -> Self {
        SegmentBatches {
            source,
            sealer,
            encoder: StripeEncoder::new(scheme),
            ready: Default::default(),
            sealed_all: false,
        }
    }

    /// The `n` shards of the next batch, or `None` once the segment is done.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            if self.sealed_all {
                return Ok(None);
            }
            match self.sealer.next(self.source).await? {
                Some(block) => self.ready.extend(self.encoder.push(&block)?),
                None => {
                    self.sealed_all = true;
                    self.ready.extend(self.encoder.finish()?);
                }
            }
        }
    }

    fn consumed(&self) -> u64 {
        self.source.consumed
    }

    fn plain_size(&self) -> u64 {
        self.sealer.plain_size
    }

    fn encrypted_size(&self) -> u64 {
        self.encoder.encrypted_size()
    }
}

/// Encrypts and erasure-codes the first segment (at most `max_segment_size`
/// bytes) of `reader` exactly as an upload does — fresh random key, AES-256-GCM
/// blocks, batches of stripes — and hands each batch's `n` shards, data shards
/// first, to `batch`. Returns the encrypted size. Nothing is sent anywhere: this
/// exists so that benchmarks measure the client's real upload pipeline.
pub async fn encode_segment(
    reader: impl AsyncRead + Unpin,
    scheme: Redundancy,
    max_segment_size: u64,
    mut batch: impl FnMut(Vec<Vec<u8>>),
) -> Result<u64, Error> {
    let mut source = Source::new(reader);
    let sealer = SegmentSealer::new(&Key::random(), 0, DEFAULT_BLOCK_SIZE, max_segment_size);
    let mut batches = SegmentBatches::new(&mut source, sealer, scheme);
    while let Some(shards) = batches.next().await? {
        batch(shards);
    }
    Ok(batches.encrypted_size())
}

/// One piece upload in progress.
struct NodeUpload {
    limit: AddressedOrderLimit,
    queue: Option<mpsc::Sender<PieceUploadRequest>>,
    task: AbortHandle,
}

impl NodeUpload {
    fn drop_node(&mut self) {
        self.queue = None;
        self.task.abort();
    }
}

type PieceResult = (usize, Result<SentPiece, String>);

/// What a node signed for a piece, with the root of what was sent to it.
struct SentPiece {
    hash: PieceHash,
    sent_root: Hash,
}

/// Streams one piece to one node, building the piece's hash tree from the
/// bytes as they leave; returns the node's signed hash and that root.
async fn upload_piece(
    nodes: NodePool,
    limit: AddressedOrderLimit,
    requests: mpsc::Receiver<PieceUploadRequest>,
) -> Result<SentPiece, String> {
    let channel = nodes.channel(&limit).await?;
    let address = limit.node_address;
    let mut client = PiecestoreClient::new(channel)
        .max_encoding_message_size(MAX_NODE_MESSAGE)
        .max_decoding_message_size(MAX_NODE_MESSAGE);
    // Hashing happens as tonic takes each message, on whichever worker drives
    // this node's stream, so the n trees are built in parallel. The node
    // answers only after `done`, by which time every message went through.
    let tree = Arc::new(Mutex::new(TreeBuilder::new(DEFAULT_CHUNK_SIZE)));
    let hashing = Arc::clone(&tree);
    let requests = ReceiverStream::new(requests).map(move |request| {
        if let Ok(mut tree) = hashing.lock() {
            tree.update(&request.data);
        }
        request
    });
    let response = client.upload(requests).await.map_err(|s| {
        format!(
            "the node at {address} refused the piece: {}",
            archipel_proto::status_reason(&s)
        )
    })?;
    let hash = response
        .into_inner()
        .hash
        .ok_or_else(|| format!("the node at {address} sent no piece hash"))?;
    let tree = std::mem::replace(
        &mut *tree
            .lock()
            .map_err(|_| "the piece hash tree was poisoned".to_string())?,
        TreeBuilder::new(DEFAULT_CHUNK_SIZE),
    );
    let (sent_root, _) = tree.finish();
    Ok(SentPiece { hash, sent_root })
}

/// Checks a node's signed statement of what it stored against what was sent.
fn check_piece_hash(
    limit: &AddressedOrderLimit,
    sent: &SentPiece,
    piece_size: u64,
) -> Result<(), String> {
    let hash = &sent.hash;
    let order = limit.limit.as_ref().ok_or("the order limit is missing")?;
    let node = NodeId::from_bytes(&order.node_id).map_err(|e| e.to_string())?;
    let key = PeerKey::for_id(node, &limit.node_public_key).map_err(|e| e.to_string())?;
    orders::verify_piece_hash(&key, hash)
        .map_err(|e| format!("node {node} signed its piece hash badly: {e}"))?;
    if hash.piece_id != order.piece_id {
        return Err(format!("node {node} hashed another piece"));
    }
    if hash.piece_size != piece_size as i64 {
        return Err(format!(
            "node {node} stored {} bytes instead of {piece_size}",
            hash.piece_size
        ));
    }
    if hash.root != sent.sent_root {
        return Err(format!(
            "node {node} signed the hash of other data than the piece it was sent"
        ));
    }
    Ok(())
}

/// The `total` piece uploads of one segment.
struct PieceUploads {
    started: Instant,
    nodes: Vec<NodeUpload>,
    tasks: JoinSet<PieceResult>,
    success: usize,
    last_error: Option<String>,
}

impl PieceUploads {
    /// Starts one upload per order limit; limits for piece numbers outside
    /// `0..total`, or repeating one, are ignored.
    fn start(nodes: &NodePool, limits: Vec<AddressedOrderLimit>, scheme: &Redundancy) -> Self {
        let mut tasks = JoinSet::new();
        let pool = nodes;
        let mut nodes = Vec::with_capacity(limits.len());
        let mut seen = vec![false; scheme.total as usize];
        for limit in limits {
            match seen.get_mut(limit.piece_num as usize) {
                Some(seen) if !*seen => *seen = true,
                _ => continue,
            }
            let index = nodes.len();
            let (queue, requests) = mpsc::channel(NODE_QUEUE_DEPTH);
            let first = PieceUploadRequest {
                limit: limit.limit.clone(),
                ..Default::default()
            };
            // The queue is empty, so the order limit always fits.
            let queue = queue.try_send(first).is_ok().then_some(queue);
            let node_limit = limit.clone();
            let pool = pool.clone();
            let span = tracing::debug_span!("piece upload", piece = limit.piece_num);
            let task = tasks.spawn(
                async move { (index, upload_piece(pool, node_limit, requests).await) }
                    .instrument(span),
            );
            nodes.push(NodeUpload { limit, queue, task });
        }
        PieceUploads {
            started: Instant::now(),
            nodes,
            tasks,
            success: scheme.success as usize,
            last_error: None,
        }
    }

    fn active(&self) -> usize {
        self.nodes.iter().filter(|n| n.queue.is_some()).count()
    }

    /// Collects the reasons of uploads that already ended, for the error message.
    fn note_finished_failures(&mut self) {
        while let Some(joined) = self.tasks.try_join_next() {
            if let Ok((_, Err(e))) = joined {
                self.last_error = Some(e);
            }
        }
    }

    fn not_enough(&mut self, stored: usize) -> Error {
        self.note_finished_failures();
        Error::UploadFailed {
            stored,
            needed: self.success,
            last_error: self.last_error.take(),
        }
    }

    /// Gives every active node its message; drops nodes that fail or lag.
    async fn send(
        &mut self,
        mut message: impl FnMut(usize) -> PieceUploadRequest,
    ) -> Result<(), Error> {
        let mut accepted = 0;
        let mut waiting = FuturesUnordered::new();
        let mut behind = Vec::new();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let Some(queue) = &node.queue else { continue };
            let piece_num = node.limit.piece_num as usize;
            match queue.try_send(message(piece_num)) {
                Ok(()) => accepted += 1,
                Err(mpsc::error::TrySendError::Full(request)) => {
                    let queue = queue.clone();
                    behind.push(index);
                    waiting.push(async move { (index, queue.send(request).await.is_ok()) });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => node.drop_node(),
            }
        }
        let mut deadline = (accepted >= self.success).then(|| Instant::now() + SLOW_NODE_GRACE);
        loop {
            let next = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline.into(), waiting.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
                None => waiting.next().await,
            };
            let Some((index, sent)) = next else { break };
            behind.retain(|&i| i != index);
            if sent {
                accepted += 1;
                if accepted >= self.success && deadline.is_none() {
                    deadline = Some(Instant::now() + SLOW_NODE_GRACE);
                }
            } else {
                self.nodes[index].drop_node();
            }
        }
        // Whoever is still waiting is too slow: the upload goes on without it.
        drop(waiting);
        for index in behind {
            self.nodes[index].drop_node();
        }
        if self.active() < self.success {
            let active = self.active();
            return Err(self.not_enough(active));
        }
        Ok(())
    }

    /// Ends the streams and gathers at least `success` valid piece hashes.
    async fn finish(mut self, piece_size: u64) -> Result<Vec<pb::SegmentPieceUpload>, Error> {
        self.send(|_| PieceUploadRequest {
            done: true,
            ..Default::default()
        })
        .await?;
        for node in &mut self.nodes {
            node.queue = None;
        }
        let mut pieces = Vec::new();
        let deadline = tokio::time::Instant::now() + RESULT_TIMEOUT;
        let mut tail_deadline = None;
        loop {
            let joined = if pieces.len() < self.success {
                match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                    Ok(Some(joined)) => joined,
                    Ok(None) => break,
                    Err(_) => {
                        self.last_error = Some("storage nodes did not confirm in time".into());
                        break;
                    }
                }
            } else {
                // Enough pieces: keep those confirmed within a moment, cancel the rest.
                let tail = *tail_deadline.get_or_insert_with(|| {
                    tokio::time::Instant::now() + long_tail_grace(self.started.elapsed())
                });
                match tokio::time::timeout_at(tail, self.tasks.join_next()).await {
                    Ok(Some(joined)) => joined,
                    Ok(None) | Err(_) => break,
                }
            };
            let Ok((index, result)) = joined else {
                continue; // cancelled as too slow
            };
            let limit = &self.nodes[index].limit;
            let checked = result.and_then(|sent| {
                check_piece_hash(limit, &sent, piece_size)?;
                Ok(sent.hash)
            });
            match checked {
                Ok(hash) => pieces.push(pb::SegmentPieceUpload {
                    piece_num: limit.piece_num,
                    node_id: limit
                        .limit
                        .as_ref()
                        .map(|l| l.node_id.clone())
                        .unwrap_or_default(),
                    hash: Some(hash),
                }),
                Err(e) => self.last_error = Some(e),
            }
        }
        if pieces.len() < self.success {
            return Err(Error::UploadFailed {
                stored: pieces.len(),
                needed: self.success,
                last_error: self.last_error,
            });
        }
        // Dropping the join set cancels the long tail.
        Ok(pieces)
    }
}

/// One batch's share of data for one node.
fn data_message(shard: Vec<u8>) -> PieceUploadRequest {
    PieceUploadRequest {
        data: shard,
        ..Default::default()
    }
}

/// What [`ObjectUpload::segments`] stored.
pub(crate) struct StoredSegments {
    pub(crate) stats: Vec<SegmentStat>,
    /// Each segment's wrapped-key nonce: random, so it names this upload of
    /// the segment to the satellite.
    pub(crate) key_nonces: Vec<Vec<u8>>,
    /// The plaintext bytes read.
    pub(crate) size: u64,
    /// The last segment's commit, when held back to go with the object's.
    pub(crate) last: Option<SegmentCommit>,
}

#[derive(Clone)]
pub(crate) struct ObjectUpload {
    metainfo: Metainfo,
    object_key: Key,
    stream_id: Vec<u8>,
    scheme: Redundancy,
    max_segment_size: u64,
    inline_plain: Option<u64>,
    progress: Option<crate::Progress>,
    /// Plaintext bytes sent so far, over all segments (which may be in
    /// flight together), for `progress`.
    sent: Arc<Mutex<u64>>,
    /// Segments in flight at once; see [`UploadOptions::parallelism`].
    parallelism: usize,
}

/// A segment stored on nodes or sealed for inline storage, not yet
/// committed: committed on its own, or with its object (saving a round trip).
pub(crate) enum SegmentCommit {
    Remote(pb::CommitSegmentRequest),
    Inline(pb::MakeInlineSegmentRequest),
}

impl SegmentCommit {
    async fn send(self, metainfo: &Metainfo) -> Result<(), Error> {
        match self {
            SegmentCommit::Remote(request) => metainfo.commit_segment(request).await,
            SegmentCommit::Inline(request) => metainfo.make_inline_segment(request).await,
        }
    }

    fn into_last_segment(self) -> LastSegment {
        match self {
            SegmentCommit::Remote(request) => LastSegment::RemoteSegment(request),
            SegmentCommit::Inline(request) => LastSegment::InlineSegment(request),
        }
    }
}

/// Seals what is left of one segment's plaintext in memory: an inline segment.
async fn seal_inline<R: AsyncRead + Unpin>(
    sealer: &mut SegmentSealer,
    source: &mut Source<R>,
) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    while let Some(block) = sealer.next(source).await? {
        data.extend_from_slice(&block);
    }
    Ok(data)
}

fn inline_stat(position: u32, plain_size: u64, encrypted_size: u64) -> SegmentStat {
    SegmentStat {
        position,
        plain_size,
        encrypted_size,
        inline: true,
        redundancy: None,
        piece_count: 0,
        healthy_pieces: 0,
        health: SegmentHealth::Healthy,
    }
}

/// A segment upload running on its own task.
struct SegmentTask {
    handle: AbortOnDrop<Result<StoredSegment, Error>>,
    /// Whether it is the object's last segment.
    last: bool,
}

/// A task cancelled when its handle is dropped, so that a failed upload
/// leaves no segment upload running behind it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One stored segment, its commit still to send.
struct StoredSegment {
    stat: SegmentStat,
    /// The nonce of its wrapped key, which names this upload of it.
    key_nonce: Vec<u8>,
    commit: SegmentCommit,
}

impl ObjectUpload {
    /// Stores the next segment at `position` (on the nodes of `begun` when
    /// the satellite already began it); the caller commits it.
    async fn segment<R: AsyncRead + Unpin>(
        &self,
        source: &mut Source<R>,
        position: u32,
        begun: Option<pb::BeginSegmentResponse>,
    ) -> Result<StoredSegment, Error> {
        let segment_key = Key::random();
        let wrapped = crypto::wrap_key(
            &self.object_key,
            &segment_key,
            &crypto::segment_key_purpose(position),
        );
        let mut sealer = SegmentSealer::new(
            &segment_key,
            position,
            DEFAULT_BLOCK_SIZE,
            self.max_segment_size,
        );
        if let Some(inline_plain) = self.inline_plain {
            source.fill(inline_plain as usize + 1).await?;
            let fits = self.max_segment_size <= inline_plain
                || (source.eof && source.buffer.len() as u64 <= inline_plain);
            if fits {
                let data = seal_inline(&mut sealer, source).await?;
                self.advance(sealer.plain_size);
                let stat = inline_stat(position, sealer.plain_size, data.len() as u64);
                let commit = SegmentCommit::Inline(pb::MakeInlineSegmentRequest {
                    header: self.metainfo.header(),
                    stream_id: self.stream_id.clone(),
                    position,
                    encrypted_key: wrapped.encrypted,
                    encrypted_key_nonce: wrapped.nonce.clone(),
                    plain_size: sealer.plain_size as i64,
                    encrypted_inline_data: data,
                });
                return Ok(StoredSegment {
                    stat,
                    key_nonce: wrapped.nonce,
                    commit,
                });
            }
        }

        let begin = match begun {
            Some(begun) => begun,
            None => {
                self.metainfo
                    .begin_segment(pb::BeginSegmentRequest {
                        header: self.metainfo.header(),
                        stream_id: self.stream_id.clone(),
                        position,
                        max_encrypted_size: encrypted_size(
                            self.max_segment_size,
                            DEFAULT_BLOCK_SIZE as u64,
                        ) as i64,
                    })
                    .await?
            }
        };
        let scheme = match &begin.redundancy {
            Some(scheme) => Redundancy::from_pb(scheme)
                .map_err(|e| Error::Protocol(format!("segment redundancy: {e}")))?,
            None => self.scheme,
        };
        let mut uploads = PieceUploads::start(&self.metainfo.nodes, begin.limits, &scheme);
        if uploads.nodes.len() < uploads.success {
            return Err(Error::UploadFailed {
                stored: 0,
                needed: uploads.success,
                last_error: Some(format!(
                    "the satellite offered only {} storage nodes",
                    uploads.nodes.len()
                )),
            });
        }
        // Progress counts what this segment sent, whatever others send meanwhile.
        let mut reported = source.consumed;
        let mut batches = SegmentBatches::new(source, sealer, scheme);
        while let Some(mut shards) = batches.next().await? {
            // Each piece number goes to one node, so its shard moves there.
            uploads
                .send(|piece| data_message(std::mem::take(&mut shards[piece])))
                .await?;
            let consumed = batches.consumed();
            self.advance(consumed - reported);
            reported = consumed;
        }
        let encrypted = batches.encrypted_size();
        let plain_size = batches.plain_size();
        let pieces = uploads.finish(scheme.piece_size(encrypted)).await?;
        let stored = pieces.len() as u32;
        let commit = SegmentCommit::Remote(pb::CommitSegmentRequest {
            header: self.metainfo.header(),
            segment_id: begin.segment_id,
            encrypted_key: wrapped.encrypted,
            encrypted_key_nonce: wrapped.nonce.clone(),
            plain_size: plain_size as i64,
            encrypted_size: encrypted as i64,
            pieces,
        });
        let stat = SegmentStat {
            position,
            plain_size,
            encrypted_size: encrypted,
            inline: false,
            redundancy: Some(scheme),
            piece_count: stored,
            // The satellite chose these nodes as healthy moments ago.
            healthy_pieces: stored,
            health: SegmentHealth::of(Some(&scheme), stored),
        };
        Ok(StoredSegment {
            stat,
            key_nonce: wrapped.nonce,
            commit,
        })
    }

    /// Counts `bytes` more plaintext sent and reports the total.
    fn advance(&self, bytes: u64) {
        // Reported under the lock, so that segments sending side by side
        // never report a smaller total after a larger one.
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *sent += bytes;
        if let Some(progress) = &self.progress {
            progress(*sent);
        }
    }
}

impl ObjectUpload {
    /// An upload into the pending object `stream_id` with the parameters the
    /// satellite gave for it (checked: they come from the network).
    pub(crate) fn new(
        metainfo: &Metainfo,
        object_key: Key,
        stream_id: Vec<u8>,
        redundancy: Option<&pb::RedundancyScheme>,
        max_segment_size: i64,
        inline_threshold: i64,
        progress: Option<crate::Progress>,
    ) -> Result<ObjectUpload, Error> {
        let scheme = Redundancy::from_pb(
            redundancy
                .ok_or_else(|| Error::Protocol("no redundancy scheme for the object".into()))?,
        )
        .map_err(|e| Error::Protocol(format!("object redundancy: {e}")))?;
        let max_segment_size = non_negative(max_segment_size, "maximum segment size")?;
        if max_segment_size == 0 || max_segment_size > MAX_SEGMENT_SIZE {
            return Err(Error::Protocol(format!(
                "the maximum segment size of {max_segment_size} bytes is not between 1 and {MAX_SEGMENT_SIZE}"
            )));
        }
        let inline_threshold = non_negative(inline_threshold, "inline threshold")?;
        if inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(Error::Protocol(format!(
                "the inline threshold of {inline_threshold} bytes exceeds {MAX_INLINE_THRESHOLD}"
            )));
        }
        Ok(ObjectUpload {
            metainfo: metainfo.clone(),
            object_key,
            stream_id,
            scheme,
            max_segment_size,
            inline_plain: max_plain_within(inline_threshold, DEFAULT_BLOCK_SIZE as u64),
            progress,
            sent: Arc::default(),
            parallelism: 1,
        })
    }

    /// Keeps up to `parallelism` segments in flight (0 counts as 1).
    pub(crate) fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// Uploads everything `source` yields as segments (at least one, perhaps
    /// empty), segment 0 on the nodes of `first` if the satellite began it;
    /// segment `i` goes to position `position(i)`, `None` meaning there are
    /// too many segments. Each segment is committed as soon as the stream
    /// shows more to come; the last one too, unless `hold_last`: then it is
    /// in [`StoredSegments::last`], to be committed with the object.
    pub(crate) async fn segments<R: AsyncRead + Unpin>(
        &self,
        source: &mut Source<R>,
        position: impl Fn(u32) -> Option<u32>,
        mut first: Option<pb::BeginSegmentResponse>,
        hold_last: bool,
    ) -> Result<StoredSegments, Error> {
        if self.parallelism > 1 {
            return self
                .parallel_segments(source, position, first, hold_last)
                .await;
        }
        let mut stored = StoredSegments {
            stats: Vec::new(),
            key_nonces: Vec::new(),
            size: 0,
            last: None,
        };
        loop {
            let position = u32::try_from(stored.stats.len())
                .ok()
                .and_then(&position)
                .ok_or_else(|| Error::Interrupted("the upload has too many segments".into()))?;
            let segment = self
                .segment(source, position, first.take())
                .instrument(tracing::debug_span!("segment upload", position))
                .await?;
            stored.stats.push(segment.stat);
            stored.key_nonces.push(segment.key_nonce);
            source.fill(1).await?;
            let done = source.exhausted();
            if done && hold_last {
                stored.last = Some(segment.commit);
            } else {
                segment.commit.send(&self.metainfo).await?;
            }
            if done {
                stored.size = source.consumed;
                return Ok(stored);
            }
        }
    }

    /// Keeps up to [`ObjectUpload::parallelism`] segments in flight at once
    /// (commits in position order), otherwise as [`ObjectUpload::segments`].
    /// Each segment is read whole into memory before its upload starts (the
    /// source is read in order, the uploads run side by side), and the next
    /// is read only when a slot is free: at most `parallelism` segments'
    /// plaintext is held. Each upload runs on a task of its own, so a source
    /// that is slow to read never stalls the segments already sending.
    async fn parallel_segments<R: AsyncRead + Unpin>(
        &self,
        source: &mut Source<R>,
        position: impl Fn(u32) -> Option<u32>,
        mut first: Option<pb::BeginSegmentResponse>,
        hold_last: bool,
    ) -> Result<StoredSegments, Error> {
        let mut stored = StoredSegments {
            stats: Vec::new(),
            key_nonces: Vec::new(),
            size: 0,
            last: None,
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(self.parallelism));
        let mut running: VecDeque<SegmentTask> = VecDeque::new();
        for index in 0u32.. {
            while running
                .front()
                .is_some_and(|task| task.handle.0.is_finished())
            {
                if let Some(task) = running.pop_front() {
                    self.collect(task, &mut stored, hold_last).await?;
                }
            }
            let position = position(index)
                .ok_or_else(|| Error::Interrupted("the upload has too many segments".into()))?;
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::Interrupted("the segment slots closed".into()))?;
            let data = source.take(self.max_segment_size).await?;
            source.fill(1).await?;
            let last = source.exhausted();
            let upload = self.clone();
            let begun = first.take();
            let handle = tokio::spawn(
                async move {
                    let _slot = slot;
                    let mut segment = Source::new(&data[..]);
                    upload.segment(&mut segment, position, begun).await
                }
                .instrument(tracing::debug_span!("segment upload", position)),
            );
            running.push_back(SegmentTask {
                handle: AbortOnDrop(handle),
                last,
            });
            if last {
                break;
            }
        }
        while let Some(task) = running.pop_front() {
            self.collect(task, &mut stored, hold_last).await?;
        }
        stored.size = source.consumed;
        Ok(stored)
    }

    /// Waits for a segment upload of [`ObjectUpload::parallel_segments`] and
    /// commits it, or holds it back as the last.
    async fn collect(
        &self,
        mut task: SegmentTask,
        stored: &mut StoredSegments,
        hold_last: bool,
    ) -> Result<(), Error> {
        let segment = (&mut task.handle.0)
            .await
            .map_err(|e| Error::Interrupted(format!("a segment upload stopped: {e}")))??;
        stored.stats.push(segment.stat);
        stored.key_nonces.push(segment.key_nonce);
        if task.last && hold_last {
            stored.last = Some(segment.commit);
        } else {
            segment.commit.send(&self.metainfo).await?;
        }
        Ok(())
    }

    /// Commits the pending object with `metadata` (and for a multipart
    /// upload, the `parts` that make it, each by its number and its sealed
    /// info as listed).
    pub(crate) async fn commit(
        &self,
        metadata: &crypto::ObjectMetadata,
        parts: Vec<(u32, Vec<u8>)>,
        last: Option<SegmentCommit>,
        precondition: Option<&Precondition>,
    ) -> Result<pb::CommitObjectResponse, Error> {
        let (parts, part_infos) = parts.into_iter().unzip();
        let sealed = SealedMetadata::new(&self.object_key, metadata);
        self.metainfo
            .commit_object(pb::CommitObjectRequest {
                header: self.metainfo.header(),
                stream_id: self.stream_id.clone(),
                encrypted_metadata: sealed.data,
                encrypted_metadata_key: sealed.key.encrypted,
                encrypted_metadata_nonce: sealed.key.nonce,
                parts,
                part_infos,
                last_segment: last.map(SegmentCommit::into_last_segment),
                precondition: precondition.map(Precondition::to_pb),
            })
            .await
    }

    /// Deletes the pending object after a failed upload, so that it neither
    /// lingers until the satellite's cleanup nor keeps its bucket from being
    /// deleted. Best effort: the satellite's cleanup is the fallback.
    pub(crate) async fn abandon(&self, bucket: &str, key: &str) {
        let abort = self
            .metainfo
            .abort_object(self.stream_id.clone(), bucket, key);
        match tokio::time::timeout(ABANDON_TIMEOUT, abort).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cannot delete the failed upload of {key:?}: {e}"),
            Err(_) => tracing::debug!("deleting the failed upload of {key:?} timed out"),
        }
    }
}

/// How long a failed upload waits for its pending object to be deleted.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(5);

/// Object metadata sealed under a fresh key, and that key wrapped under the
/// object's key: what the satellite keeps.
pub(crate) struct SealedMetadata {
    pub(crate) data: Vec<u8>,
    pub(crate) key: crypto::WrappedKey,
}

impl SealedMetadata {
    pub(crate) fn new(object_key: &Key, metadata: &crypto::ObjectMetadata) -> SealedMetadata {
        let (data, metadata_key) = crypto::seal_metadata(metadata);
        SealedMetadata {
            data,
            key: crypto::wrap_key(object_key, &metadata_key, crypto::METADATA_KEY_PURPOSE),
        }
    }
}

/// The parameters of a new pending object of `bucket` at the encrypted key,
/// with the expiration and Object Lock of `options`.
pub(crate) fn begin_request(
    metainfo: &Metainfo,
    bucket: &str,
    encrypted_key: String,
    options: &UploadOptions,
) -> pb::BeginObjectRequest {
    pb::BeginObjectRequest {
        header: metainfo.header(),
        bucket: bucket.to_string(),
        encrypted_object_key: encrypted_key.into_bytes(),
        encryption: Some(pb::EncryptionParameters {
            cipher: crypto::CIPHER_AES_256_GCM,
            block_size: DEFAULT_BLOCK_SIZE,
        }),
        expires_at: options.expires.map_or(0, to_unix),
        lock: options.lock.to_pb(),
        ..Default::default()
    }
}

/// Whether the satellite refused an inline object as larger than its inline
/// threshold (lowered since the client heard it).
fn refused_as_too_large(error: &Error) -> bool {
    matches!(error, Error::Satellite { code: tonic::Code::InvalidArgument, message }
        if message.contains("inline threshold"))
}

/// The metadata sealed with an upload of `size` bytes, late metadata included.
fn object_metadata(options: &UploadOptions, size: u64) -> crypto::ObjectMetadata {
    let mut user = options.metadata.clone();
    if let Some(late) = &options.late_metadata {
        user.extend(late());
    }
    crypto::ObjectMetadata {
        size,
        created: std::time::SystemTime::now(),
        content_type: options.content_type.clone(),
        metadata: user,
    }
}

/// What an upload stored, as the satellite committed it.
fn uploaded(
    key: &str,
    metadata: crypto::ObjectMetadata,
    committed: &pb::CommitObjectResponse,
    options: &UploadOptions,
    segments: Vec<SegmentStat>,
) -> Result<ObjectInfo, Error> {
    let expires = committed
        .object
        .as_ref()
        .filter(|o| o.expires_at > 0)
        .map(|o| crate::from_unix(o.expires_at))
        .or(options.expires);
    Ok(ObjectInfo {
        key: key.to_string(),
        size: metadata.size,
        created: metadata.created,
        expires,
        content_type: metadata.content_type,
        metadata: metadata.metadata,
        segments,
        version: committed
            .object
            .as_ref()
            .and_then(|o| VersionInfo::of(o, committed.versioning).transpose())
            .transpose()?,
        lock: VersionLock::from_pb(committed.object.as_ref().and_then(|o| o.lock.as_ref())),
    })
}

/// Stores the whole object `plain` as one inline segment with one request.
async fn put_inline_object(
    metainfo: &Metainfo,
    path: &crypto::ObjectPath,
    (bucket, key): (&str, &str),
    plain: &[u8],
    options: &UploadOptions,
) -> Result<ObjectInfo, Error> {
    let object_key = crypto::object_key(&path.key);
    let segment_key = Key::random();
    let wrapped = crypto::wrap_key(&object_key, &segment_key, &crypto::segment_key_purpose(0));
    let mut sealer = SegmentSealer::new(&segment_key, 0, DEFAULT_BLOCK_SIZE, plain.len() as u64);
    let data = seal_inline(&mut sealer, &mut Source::new(plain)).await?;
    let stat = inline_stat(0, sealer.plain_size, data.len() as u64);
    let metadata = object_metadata(options, plain.len() as u64);
    let sealed = SealedMetadata::new(&object_key, &metadata);
    let object = begin_request(metainfo, bucket, path.stored.clone(), options);
    let committed = metainfo
        .put_inline_object(
            pb::PutInlineObjectRequest {
                header: object.header,
                bucket: object.bucket,
                encrypted_object_key: object.encrypted_object_key,
                encryption: object.encryption,
                expires_at: object.expires_at,
                encrypted_key: wrapped.encrypted,
                encrypted_key_nonce: wrapped.nonce,
                plain_size: sealer.plain_size as i64,
                encrypted_inline_data: data,
                encrypted_metadata: sealed.data,
                encrypted_metadata_key: sealed.key.encrypted,
                encrypted_metadata_nonce: sealed.key.nonce,
                precondition: options.precondition.as_ref().map(Precondition::to_pb),
                lock: object.lock,
            },
            key,
        )
        .await?;
    if let Some(progress) = &options.progress {
        progress(plain.len() as u64);
    }
    uploaded(key, metadata, &committed, options, vec![stat])
}

/// Uploads an object. With the satellite's upload limits known (from an
/// earlier upload), an object that fits inline takes one request, and one
/// whose first segment goes to nodes has that segment begun with the object.
/// The last segment is committed with the object.
pub(crate) async fn upload_object(
    metainfo: &Metainfo,
    path: crypto::ObjectPath,
    bucket: &str,
    key: &str,
    reader: impl AsyncRead + Unpin + Send,
    options: UploadOptions,
) -> Result<ObjectInfo, Error> {
    let mut source = Source::new(reader);
    let mut first_segment_size = 0;
    if let Some(limits) = metainfo.upload_limits() {
        let inline_plain = max_plain_within(limits.inline_threshold, DEFAULT_BLOCK_SIZE as u64);
        source
            .fill(inline_plain.map_or(0, |plain| plain as usize) + 1)
            .await?;
        let buffered = source.buffer.len() as u64;
        let fits = inline_plain.is_some_and(|plain| source.eof && buffered <= plain);
        if fits && buffered <= limits.max_segment_size {
            let plain = &source.buffer;
            let put = put_inline_object(metainfo, &path, (bucket, key), plain, &options)
                .instrument(tracing::debug_span!("inline object upload"));
            match put.await {
                Err(e) if refused_as_too_large(&e) => metainfo.forget_upload_limits(),
                done => return done,
            }
        } else {
            let segment = if source.eof {
                buffered.min(limits.max_segment_size)
            } else {
                limits.max_segment_size
            };
            first_segment_size = encrypted_size(segment, DEFAULT_BLOCK_SIZE as u64);
        }
    }
    let mut begin = metainfo
        .begin_object(
            pb::BeginObjectRequest {
                first_segment_max_encrypted_size: first_segment_size as i64,
                ..begin_request(metainfo, bucket, path.stored, &options)
            },
            key,
        )
        .await?;
    let first_segment = begin.first_segment.take();
    let upload = ObjectUpload::new(
        metainfo,
        crypto::object_key(&path.key),
        begin.stream_id,
        begin.redundancy.as_ref(),
        begin.max_segment_size,
        begin.inline_threshold,
        options.progress.clone(),
    )?
    .with_parallelism(options.parallelism);
    metainfo.remember_upload_limits(UploadLimits {
        max_segment_size: upload.max_segment_size,
        inline_threshold: non_negative(begin.inline_threshold, "inline threshold")?,
    });
    let stored = async {
        let stored = upload
            .segments(&mut source, Some, first_segment, true)
            .await?;
        let metadata = object_metadata(&options, stored.size);
        let committed = upload
            .commit(
                &metadata,
                Vec::new(),
                stored.last,
                options.precondition.as_ref(),
            )
            .await?;
        Ok::<_, Error>((stored.stats, metadata, committed))
    }
    .await;
    match stored {
        Ok((segments, metadata, committed)) => {
            uploaded(key, metadata, &committed, &options, segments)
        }
        Err(e) => {
            upload.abandon(bucket, key).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cuts `len` bytes into segments the way [`upload_object`] does.
    async fn segment_sizes(len: usize, max_segment: u64, block: u32) -> Vec<u64> {
        let data = vec![7u8; len];
        let mut source = Source::new(&data[..]);
        let mut sizes = Vec::new();
        loop {
            let key = Key::random();
            let mut sealer = SegmentSealer::new(&key, sizes.len() as u32, block, max_segment);
            let mut sealed = 0;
            while let Some(block) = sealer.next(&mut source).await.unwrap() {
                sealed += block.len() as u64;
            }
            assert_eq!(
                sealed,
                encrypted_size(sealer.plain_size, block as u64),
                "segment {} of a {len}-byte stream",
                sizes.len()
            );
            sizes.push(sealer.plain_size);
            source.fill(1).await.unwrap();
            if source.exhausted() {
                break;
            }
        }
        assert_eq!(source.consumed, len as u64);
        sizes
    }

    #[tokio::test]
    async fn streams_are_cut_into_full_segments_and_a_rest() {
        assert_eq!(segment_sizes(0, 100, 30).await, [0]);
        assert_eq!(segment_sizes(1, 100, 30).await, [1]);
        assert_eq!(segment_sizes(99, 100, 30).await, [99]);
        assert_eq!(segment_sizes(100, 100, 30).await, [100]);
        assert_eq!(segment_sizes(101, 100, 30).await, [100, 1]);
        assert_eq!(segment_sizes(250, 100, 30).await, [100, 100, 50]);
        assert_eq!(segment_sizes(300, 100, 100).await, [100, 100, 100]);
    }

    #[test]
    fn the_long_tail_waits_in_proportion_to_the_upload() {
        assert_eq!(
            long_tail_grace(Duration::from_millis(4)),
            MIN_LONG_TAIL_GRACE
        );
        assert_eq!(
            long_tail_grace(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(
            long_tail_grace(Duration::from_secs(60)),
            MAX_LONG_TAIL_GRACE
        );
    }

    #[test]
    fn batches_are_whole_stripes_of_about_a_mebibyte() {
        let scheme = Redundancy::new(4, 6, 8, 10, 1024).unwrap();
        assert_eq!(
            stripes_per_batch(&scheme) * scheme.stripe_size(),
            BATCH_TARGET
        );
        let huge = Redundancy::new(29, 35, 80, 110, 64 * 1024).unwrap();
        assert_eq!(stripes_per_batch(&huge), 1);

        let mut encoder = StripeEncoder::new(scheme);
        let batch = (stripes_per_batch(&scheme) * scheme.stripe_size()) as usize;
        assert!(encoder.push(&vec![1; batch - 1]).unwrap().is_empty());
        let full = encoder.push(&[1, 2, 3]).unwrap();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].len(), 10);
        assert_eq!(full[0][0].len(), batch / 4);
        // The two bytes left become one zero-padded stripe.
        let rest = encoder.finish().unwrap().unwrap();
        assert_eq!(rest[0].len(), 1024);
        assert_eq!(encoder.encrypted_size(), batch as u64 + 2);
        assert!(encoder.finish().unwrap().is_none());
    }

    #[test]
    fn stripes_encode_like_the_batch_encoder_whatever_the_pieces_pushed() {
        let scheme = Redundancy::new(3, 4, 5, 6, 64).unwrap();
        let batch = (stripes_per_batch(&scheme) * scheme.stripe_size()) as usize;
        let data: Vec<u8> = (0..batch * 2 + 500).map(|i| (i * 7 % 251) as u8).collect();
        let mut encoder = StripeEncoder::new(scheme);
        let mut batches = Vec::new();
        for piece in data.chunks(1000) {
            batches.extend(encoder.push(piece).unwrap());
        }
        batches.extend(encoder.finish().unwrap());
        assert_eq!(batches.len(), 3);
        let mut padded = data.clone();
        let stripe = scheme.stripe_size() as usize;
        padded.resize(batch * 2 + 500usize.div_ceil(stripe) * stripe, 0);
        let mut reference = BatchEncoder::new(scheme);
        for (shards, chunk) in batches.iter().zip(padded.chunks(batch)) {
            assert_eq!(shards, &reference.encode(chunk).unwrap());
        }
    }
}
