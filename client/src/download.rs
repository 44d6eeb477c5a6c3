//! The download path: for each segment overlapping the wanted range, fetch the
//! same byte range of slightly more than `k` pieces in parallel (data pieces
//! first, so erasure decoding is rarely needed), verify every hash-tree chunk as
//! it arrives, rebuild the stripes batch by batch, open the AEAD blocks and
//! write only the wanted bytes. Memory stays at a few batches whatever the
//! object's size.
//!
//! The first batch reads a few pieces beyond `k` ([`extra_pieces`]); the
//! following ones read only `k`, the data pieces first, so that the extra
//! pieces do not cost every batch their transfer, TLS and hashing. A batch
//! that lags (see [`hedge_delay`]) gets another piece. A piece that fails,
//! stalls past [`PIECE_READ_TIMEOUT`] or fails verification is replaced by
//! another piece opened at the current batch; fewer than `k` usable pieces is
//! [`Error::NotEnoughPieces`].
//!
//! Heal on read: pieces that proved bad (failed verification, or the node said
//! they are missing or damaged) are reported to the satellite once the segment
//! is done (waiting at most [`REPORT_TIMEOUT`]), so that it audits them. Unreachable or slow
//! nodes are not reported: being away is not misbehaviour.

use std::time::Duration;

use archipel_proto::erasure::{decode_data_shards, scatter_data_shards};
use archipel_proto::hashtree::{self, Hash};
use archipel_proto::orders;
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{
    self, AddressedOrderLimit, BadPiece, BadPieceReason, PieceDownloadRequest,
    PieceDownloadResponse,
};
use archipel_proto::{NodeId, PeerKey, Redundancy};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use crate::crypto::{self, Key, SegmentCipher, CIPHER_AES_256_GCM, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use crate::metainfo::Metainfo;
use crate::nodes::NodePool;
use crate::ranges::{RangePlan, SegmentLayout};
use crate::upload::stripes_per_batch;
use crate::{non_negative, ByteRange, Error, ObjectInfo, Progress, Version};

/// How long one batch of one piece may take before another piece replaces it.
const PIECE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a data piece once `k` pieces (some of them parity) are
/// in, to spare a decode.
const DATA_PIECE_GRACE: Duration = Duration::from_millis(20);
/// Largest gRPC message from a node.
const MAX_NODE_MESSAGE: usize = 16 << 20;
/// Longest a download waits for the satellite to take a bad-piece report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pieces fetched beyond `k` for a segment's first batch, so that one slow or
/// failing node costs nothing while the fastest `k` show themselves.
fn extra_pieces(k: usize) -> usize {
    1 + k / 10
}

/// After the first batch only `k` pieces are read. A batch still short of
/// `k` pieces this long after it started (the first batch: [`FIRST_HEDGE`])
/// gets one more piece, and another each time as long again passes.
fn hedge_delay(previous_batch: Duration) -> Duration {
    (previous_batch * 3).max(MIN_HEDGE)
}
const FIRST_HEDGE: Duration = Duration::from_millis(500);
const MIN_HEDGE: Duration = Duration::from_millis(50);

/// Turns the stripes of a range, in order, into the range's plaintext. The
/// ciphertext is opened where it lies in the decryptor's buffer, and the
/// plaintext is read from there.
pub(crate) struct SegmentDecryptor {
    layout: SegmentLayout,
    plan: RangePlan,
    cipher: SegmentCipher,
    skip: u64,
    next_block: u64,
    buffer: Vec<u8>,
    /// Where the ciphertext not yet opened starts in `buffer`.
    unopened: usize,
    /// Where in `buffer` the wanted plaintext of the last push lies.
    opened: Vec<std::ops::Range<usize>>,
}

impl SegmentDecryptor {
    /// `skip` is how many bytes precede `plan.cipher_start` in what will be pushed.
    pub(crate) fn new(
        layout: SegmentLayout,
        plan: RangePlan,
        cipher: SegmentCipher,
        skip: u64,
    ) -> Self {
        SegmentDecryptor {
            layout,
            plan,
            cipher,
            skip,
            next_block: plan.first_block,
            buffer: Vec::new(),
            unopened: 0,
            opened: Vec::new(),
        }
    }

    /// Adds ciphertext and copies the wanted plaintext of every block it
    /// completes to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.push_with(|buffer| buffer.extend_from_slice(data))?;
        for plain in self.opened() {
            out.extend_from_slice(plain);
        }
        Ok(())
    }

    /// Adds the ciphertext `fill` appends to the buffer it is given, and
    /// opens every block it completes: their wanted plaintext is then
    /// [`opened`](Self::opened), until the next push.
    pub(crate) fn push_with(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<(), Error> {
        self.opened.clear();
        // What is left is less than a block.
        self.buffer.drain(..self.unopened);
        self.unopened = 0;
        let before = self.buffer.len();
        fill(&mut self.buffer);
        let skip = self.skip.min((self.buffer.len() - before) as u64) as usize;
        self.skip -= skip as u64;
        if before == 0 {
            self.unopened = skip;
        } else {
            self.buffer.drain(before..before + skip);
        }
        while self.next_block < self.plan.end_block {
            let len = self.layout.sealed_block_len(self.next_block) as usize;
            let start = self.unopened;
            let Some(block) = self.buffer.get_mut(start..start + len) else {
                break;
            };
            let index = self.next_block;
            let plain_len = self
                .cipher
                .open_block(index, self.layout.is_last_block(index), block)?
                .len();
            let block_start = index * self.layout.block_size;
            let from = self.plan.start.saturating_sub(block_start) as usize;
            let to = (self.plan.end - block_start).min(plain_len as u64) as usize;
            if from > to {
                return Err(Error::Corrupt(
                    "a block is shorter than its segment says".into(),
                ));
            }
            self.opened.push(start + from..start + to);
            self.unopened += len;
            self.next_block += 1;
        }
        if self.next_block >= self.plan.end_block {
            // Only stripe padding is left.
            self.unopened = self.buffer.len();
        }
        Ok(())
    }

    /// The wanted plaintext the last push opened, block by block.
    pub(crate) fn opened(&self) -> impl Iterator<Item = &[u8]> {
        self.opened.iter().map(|range| &self.buffer[range.clone()])
    }

    /// Checks that every wanted block arrived.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.next_block < self.plan.end_block {
            return Err(Error::Corrupt(format!(
                "segment data ended after block {} of {}",
                self.next_block, self.plan.end_block
            )));
        }
        Ok(())
    }
}

/// Why a piece could not be read.
struct PieceFailure {
    message: String,
    /// Set when the node showed that it lacks the committed piece.
    bad: Option<BadPieceReason>,
}

impl PieceFailure {
    /// The node sent something that does not verify against the committed piece.
    fn corrupt(message: String) -> Self {
        PieceFailure {
            message,
            bad: Some(BadPieceReason::Corrupt),
        }
    }

    /// The node at `address` failed a download stream with `status`.
    fn node_failed(address: &str, status: &tonic::Status) -> Self {
        let reason = archipel_proto::status_reason(status);
        PieceFailure::status(status, format!("the node at {address} failed: {reason}"))
    }

    /// An error status during a download: the node saying the piece is
    /// missing or damaged is worth a report, anything else is not.
    fn status(status: &tonic::Status, message: String) -> Self {
        // Statuses the node sent carry no source; transport failures do.
        let from_node = std::error::Error::source(status).is_none();
        let bad = match status.code() {
            tonic::Code::NotFound if from_node => Some(BadPieceReason::Missing),
            tonic::Code::DataLoss if from_node => Some(BadPieceReason::Corrupt),
            _ => None,
        };
        PieceFailure { message, bad }
    }
}

impl From<String> for PieceFailure {
    fn from(message: String) -> Self {
        PieceFailure { message, bad: None }
    }
}

impl From<&str> for PieceFailure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// A verified byte range of one piece, read as it streams from its node.
struct PieceReader {
    stream: tonic::Streaming<PieceDownloadResponse>,
    chunks: ChunkVerifier,
}

/// Checks a piece's bytes, as they arrive in messages of any size, chunk by
/// chunk against proven leaf hashes, and keeps the verified bytes of the
/// wanted range.
struct ChunkVerifier {
    address: String,
    piece_size: u64,
    chunk_size: u64,
    first_leaf: u64,
    leaves: Vec<Hash>,
    /// Piece offset where `chunk` starts.
    chunk_start: u64,
    /// A chunk being assembled from more than one message.
    chunk: Vec<u8>,
    /// Next piece offset to hand out, and the end of the range.
    next: u64,
    end: u64,
    verified: Vec<u8>,
}

fn to_hash(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

impl PieceReader {
    async fn open(
        nodes: &NodePool,
        limit: &AddressedOrderLimit,
        root: &[u8],
        piece_size: u64,
        offset: u64,
        end: u64,
    ) -> Result<PieceReader, PieceFailure> {
        let address = limit.node_address.clone();
        let order = limit.limit.as_ref().ok_or("the order limit is missing")?;
        let node = NodeId::from_bytes(&order.node_id).map_err(|e| e.to_string())?;
        let key = PeerKey::for_id(node, &limit.node_public_key)
            .map_err(|e| format!("node {node}: {e}"))?;
        let root = to_hash(root).ok_or("the satellite's piece root is malformed")?;

        let channel = nodes.channel(limit).await?;
        let mut client = PiecestoreClient::new(channel)
            .max_decoding_message_size(MAX_NODE_MESSAGE)
            .max_encoding_message_size(MAX_NODE_MESSAGE);
        let mut stream = client
            .download(PieceDownloadRequest {
                limit: Some(order.clone()),
                offset: offset as i64,
                length: (end - offset) as i64,
            })
            .await
            .map_err(|s| {
                PieceFailure::status(
                    &s,
                    format!(
                        "the node at {address} refused the download: {}",
                        archipel_proto::status_reason(&s)
                    ),
                )
            })?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(|s| PieceFailure::node_failed(&address, &s))?
            .ok_or_else(|| format!("the node at {address} sent nothing"))?;

        let bad = |what: &str| PieceFailure::corrupt(format!("the node at {address} {what}"));
        let hash = first
            .hash
            .as_ref()
            .ok_or_else(|| bad("sent no piece hash"))?;
        orders::verify_piece_hash(&key, hash).map_err(|_| bad("signed its piece hash badly"))?;
        if hash.piece_id != order.piece_id {
            return Err(bad("sent the hash of another piece"));
        }
        if hash.root != root || hash.piece_size != piece_size as i64 {
            return Err(bad("holds a piece other than the one committed"));
        }
        // Roots do not bind the chunk size, and every committed root is of a
        // tree of DEFAULT_CHUNK_SIZE chunks (the upload builds it so): another
        // size would shape the tree so that one chunk could pass for another.
        if first.chunk_size != hashtree::DEFAULT_CHUNK_SIZE {
            return Err(bad("sent a bad chunk layout"));
        }
        let chunk_size = u64::from(first.chunk_size);
        let aligned = u64::try_from(first.aligned_offset).map_err(|_| bad("sent a bad offset"))?;
        if !aligned.is_multiple_of(chunk_size) || aligned > offset {
            return Err(bad("sent a bad chunk layout"));
        }
        let leaves: Vec<Hash> = first
            .leaf_hashes
            .iter()
            .map(|h| to_hash(h))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("sent a malformed leaf hash"))?;
        let proof: Vec<Hash> = first
            .proof
            .iter()
            .map(|h| to_hash(h))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("sent a malformed proof"))?;
        let first_leaf = aligned / chunk_size;
        let needed = end.div_ceil(chunk_size) - first_leaf;
        if (leaves.len() as u64) < needed {
            return Err(bad("sent too few leaf hashes"));
        }
        hashtree::verify_range(
            &root,
            piece_size,
            first.chunk_size,
            first_leaf,
            &leaves,
            &proof,
        )
        .map_err(|e| bad(&format!("sent hashes that do not verify: {e}")))?;

        let mut chunks = ChunkVerifier {
            address,
            piece_size,
            chunk_size,
            first_leaf,
            leaves,
            chunk_start: aligned,
            chunk: Vec::new(),
            next: offset,
            end,
            verified: Vec::new(),
        };
        chunks.absorb(&first.data)?;
        Ok(PieceReader { stream, chunks })
    }

    /// The next `n` verified bytes of the range.
    async fn read(&mut self, n: usize) -> Result<Vec<u8>, PieceFailure> {
        while self.chunks.verified.len() < n {
            let address = &self.chunks.address;
            let message = self
                .stream
                .message()
                .await
                .map_err(|s| PieceFailure::node_failed(address, &s))?
                .ok_or_else(|| format!("the node at {address} ended the piece early"))?;
            self.chunks.absorb(&message.data)?;
        }
        let rest = self.chunks.verified.split_off(n);
        Ok(std::mem::replace(&mut self.chunks.verified, rest))
    }
}

impl ChunkVerifier {
    /// Takes in streamed bytes; only chunks that match their leaf hash get through.
    fn absorb(&mut self, mut data: &[u8]) -> Result<(), PieceFailure> {
        while !data.is_empty() {
            if self.chunk_start >= self.piece_size {
                return Err(PieceFailure::corrupt(format!(
                    "the node at {} sent bytes past the piece's end",
                    self.address
                )));
            }
            let chunk_len = self.chunk_size.min(self.piece_size - self.chunk_start) as usize;
            let mut assembled = None;
            let chunk: &[u8] = if self.chunk.is_empty() && data.len() >= chunk_len {
                // A whole chunk in this message: verified where it lies.
                let (chunk, rest) = data.split_at(chunk_len);
                data = rest;
                chunk
            } else {
                let take = (chunk_len - self.chunk.len()).min(data.len());
                self.chunk.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.chunk.len() < chunk_len {
                    break;
                }
                assembled.insert(std::mem::take(&mut self.chunk))
            };
            self.keep_verified(chunk)?;
            if let Some(mut buffer) = assembled {
                buffer.clear();
                self.chunk = buffer;
            }
        }
        Ok(())
    }

    /// Checks the whole chunk at `chunk_start` against its leaf hash and
    /// keeps the part of it the range wants.
    fn keep_verified(&mut self, chunk: &[u8]) -> Result<(), PieceFailure> {
        let leaf = (self.chunk_start / self.chunk_size)
            .checked_sub(self.first_leaf)
            .and_then(|i| self.leaves.get(i as usize))
            .ok_or_else(|| {
                PieceFailure::corrupt(format!("the node at {} sent unproven bytes", self.address))
            })?;
        if hashtree::leaf_hash(chunk) != *leaf {
            return Err(PieceFailure::corrupt(format!(
                "the node at {} sent data that does not match the piece's hash",
                self.address
            )));
        }
        let chunk_end = self.chunk_start + chunk.len() as u64;
        let lo = self.next.max(self.chunk_start);
        let hi = self.end.min(chunk_end);
        if lo < hi {
            self.verified.extend_from_slice(
                &chunk[(lo - self.chunk_start) as usize..(hi - self.chunk_start) as usize],
            );
            self.next = hi;
        }
        self.chunk_start = chunk_end;
        Ok(())
    }
}

/// One piece of a segment, with its reader once opened.
struct PieceSlot {
    piece_num: usize,
    limit: AddressedOrderLimit,
    root: Vec<u8>,
    reader: Option<PieceReader>,
}

/// Where the batches of a range lie in every piece.
#[derive(Clone, Copy)]
struct BatchLayout {
    piece_start: u64,
    piece_end: u64,
    piece_size: u64,
    batch_bytes: u64,
}

impl BatchLayout {
    fn count(&self) -> u64 {
        (self.piece_end - self.piece_start).div_ceil(self.batch_bytes)
    }

    fn range(&self, batch: u64) -> (u64, u64) {
        let start = self.piece_start + batch * self.batch_bytes;
        (start, (start + self.batch_bytes).min(self.piece_end))
    }
}

/// Reads batch `batch` of a piece, opening the piece at that batch if needed.
async fn read_batch(
    nodes: &NodePool,
    mut slot: PieceSlot,
    batches: BatchLayout,
    batch: u64,
) -> (PieceSlot, u64, Result<Vec<u8>, PieceFailure>) {
    let (start, end) = batches.range(batch);
    let work = async {
        if slot.reader.is_none() {
            let reader = PieceReader::open(
                nodes,
                &slot.limit,
                &slot.root,
                batches.piece_size,
                start,
                batches.piece_end,
            )
            .await?;
            slot.reader = Some(reader);
        }
        match slot.reader.as_mut() {
            Some(reader) => reader.read((end - start) as usize).await,
            None => Err("the piece reader vanished".into()),
        }
    };
    let span = tracing::debug_span!("piece read", piece = slot.piece_num, batch);
    let result = match tokio::time::timeout(PIECE_READ_TIMEOUT, work.instrument(span)).await {
        Ok(result) => result,
        Err(_) => Err(format!("the node at {} stalled", slot.limit.node_address).into()),
    };
    (slot, batch, result)
}

/// The pieces reading batch `batch` (or beyond): the ones still on an earlier
/// batch lag, and do not count towards the `k` a batch needs.
fn reading(running: &[Option<u64>], batch: u64) -> usize {
    running.iter().flatten().filter(|&&at| at >= batch).count()
}

/// Downloads `plan` of a remote segment and writes its plaintext; adds the
/// pieces that proved bad to `bad`, whatever the outcome.
#[allow(clippy::too_many_arguments)]
async fn download_remote(
    nodes: &NodePool,
    segment: pb::DownloadSegmentResponse,
    scheme: Redundancy,
    layout: SegmentLayout,
    plan: RangePlan,
    cipher: SegmentCipher,
    sink: &mut Sink<'_, impl AsyncWrite + Unpin>,
    bad: &mut Vec<BadPiece>,
) -> Result<(), Error> {
    let k = scheme.required as usize;
    let n = scheme.total as usize;
    let piece_size = non_negative(segment.piece_size, "piece size")?;
    if piece_size != layout.piece_size(&scheme) {
        return Err(Error::Corrupt(format!(
            "pieces are said to hold {piece_size} bytes, the segment needs {}",
            layout.piece_size(&scheme)
        )));
    }
    if segment.limits.len() != segment.piece_roots.len() {
        return Err(Error::Protocol(
            "piece roots and order limits differ in number".into(),
        ));
    }
    let mut candidates: Vec<PieceSlot> = segment
        .limits
        .into_iter()
        .zip(segment.piece_roots)
        .filter(|(limit, _)| (limit.piece_num as usize) < n)
        .map(|(limit, root)| PieceSlot {
            piece_num: limit.piece_num as usize,
            limit,
            root,
            reader: None,
        })
        .collect();
    // Lowest piece numbers first: data pieces spare a decode.
    candidates.sort_by_key(|slot| std::cmp::Reverse(slot.piece_num));
    candidates.dedup_by_key(|slot| slot.piece_num);

    let (piece_start, piece_end) = plan.piece_range(&scheme);
    let (first_stripe, _) = plan.stripes(&scheme);
    let batches = BatchLayout {
        piece_start,
        piece_end,
        piece_size,
        batch_bytes: stripes_per_batch(&scheme) * scheme.share_size as u64,
    };
    let skip = plan.cipher_start - first_stripe * scheme.stripe_size();
    let mut decryptor = SegmentDecryptor::new(layout, plan, cipher, skip);

    let mut in_flight = FuturesUnordered::new();
    // Which batch each piece is reading, if any.
    let mut running: Vec<Option<u64>> = vec![None; n];
    for _ in 0..(k + extra_pieces(k)) {
        let Some(slot) = candidates.pop() else { break };
        running[slot.piece_num] = Some(0);
        in_flight.push(read_batch(nodes, slot, batches, 0));
    }
    let mut idle: Vec<PieceSlot> = Vec::new();
    let mut last_error = None;
    let mut hedge = FIRST_HEDGE;
    for batch in 0..batches.count() {
        let started = tokio::time::Instant::now();
        // Data pieces first; pieces beyond `k` close their streams and wait
        // among the candidates, to be opened again if one is needed.
        idle.sort_by_key(|slot| slot.piece_num);
        for mut slot in idle.drain(..) {
            if reading(&running, batch) < k {
                running[slot.piece_num] = Some(batch);
                in_flight.push(read_batch(nodes, slot, batches, batch));
            } else {
                slot.reader = None;
                candidates.push(slot);
            }
        }
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut have = 0;
        let mut grace = None;
        let mut hedge_at = started + hedge;
        loop {
            if have >= k {
                let all_data = shards[..k].iter().all(Option::is_some);
                let data_coming = running[..k].iter().any(Option::is_some);
                if all_data || !data_coming {
                    break;
                }
                grace.get_or_insert_with(|| tokio::time::Instant::now() + DATA_PIECE_GRACE);
            }
            let deadline = grace.unwrap_or(hedge_at);
            let next = match tokio::time::timeout_at(deadline, in_flight.next()).await {
                Ok(next) => next,
                Err(_) if grace.is_some() => break,
                Err(_) => {
                    // Slow: one more piece for this batch.
                    if let Some(slot) = candidates.pop() {
                        running[slot.piece_num] = Some(batch);
                        in_flight.push(read_batch(nodes, slot, batches, batch));
                    }
                    hedge_at = tokio::time::Instant::now() + hedge;
                    continue;
                }
            };
            match next {
                None => {
                    if have >= k {
                        break;
                    }
                    for _ in have..k {
                        let Some(slot) = candidates.pop() else { break };
                        running[slot.piece_num] = Some(batch);
                        in_flight.push(read_batch(nodes, slot, batches, batch));
                    }
                    if in_flight.is_empty() {
                        return Err(Error::NotEnoughPieces {
                            got: have,
                            needed: k,
                            last_error,
                        });
                    }
                }
                Some((mut slot, read, Ok(data))) => {
                    running[slot.piece_num] = None;
                    if read == batch {
                        shards[slot.piece_num] = Some(data);
                        have += 1;
                        idle.push(slot);
                    } else if have + reading(&running, batch) < k {
                        // Behind the others, and needed: catch up.
                        running[slot.piece_num] = Some(read + 1);
                        in_flight.push(read_batch(nodes, slot, batches, read + 1));
                    } else {
                        // Behind and not needed: close it, keep it in reserve.
                        slot.reader = None;
                        candidates.push(slot);
                    }
                }
                Some((slot, _, Err(failure))) => {
                    running[slot.piece_num] = None;
                    if let (Some(reason), Some(order)) = (failure.bad, &slot.limit.limit) {
                        bad.push(BadPiece {
                            piece_num: slot.limit.piece_num,
                            node_id: order.node_id.clone(),
                            reason: reason.into(),
                        });
                    }
                    last_error = Some(failure.message);
                    if let Some(next) = candidates.pop() {
                        running[next.piece_num] = Some(batch);
                        in_flight.push(read_batch(nodes, next, batches, batch));
                    }
                }
            }
        }

        hedge = hedge_delay(started.elapsed());
        let decoded;
        let refs: Vec<&[u8]> = match shards[..k].iter().map(Option::as_deref).collect() {
            // Every data piece is here: nothing to decode, nothing to copy.
            Some(data) => data,
            None => {
                let present: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
                decoded = decode_data_shards(&scheme, &present)
                    .map_err(|e| Error::Corrupt(format!("erasure decoding failed: {e}")))?;
                decoded.iter().map(Vec::as_slice).collect()
            }
        };
        decryptor.push_with(|buffer| scatter_data_shards(&scheme, &refs, buffer))?;
        for plain in decryptor.opened() {
            sink.write(plain).await?;
        }
    }
    decryptor.finish()
}

/// The caller's writer, counting bytes and reporting progress.
struct Sink<'a, W> {
    writer: W,
    written: u64,
    progress: Option<&'a Progress>,
}

impl<W: AsyncWrite + Unpin> Sink<'_, W> {
    async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.writer.write_all(data).await.map_err(Error::Write)?;
        self.written += data.len() as u64;
        if let Some(progress) = self.progress {
            progress(self.written);
        }
        Ok(())
    }
}

/// The plaintext byte range `start..end` a request asks of an object of `size` bytes.
pub(crate) fn resolve_range(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), Error> {
    let Some(range) = range else {
        return Ok((0, size));
    };
    if range.offset > size {
        return Err(Error::InvalidRange {
            offset: range.offset,
            size,
        });
    }
    let end = match range.length {
        Some(length) => range.offset.saturating_add(length).min(size),
        None => size,
    };
    Ok((range.offset, end))
}

/// An object opened for reading: what the satellite said of it, the version
/// pinned by its stream id, and the download of one segment already in hand.
pub(crate) struct OpenObject {
    metainfo: Metainfo,
    bucket: String,
    key: String,
    object: pb::Object,
    object_key: Key,
    pub(crate) info: ObjectInfo,
    block_size: u64,
    /// In position order.
    segments: Vec<pb::SegmentInfo>,
    prefetched: Option<pb::DownloadSegmentResponse>,
}

/// Opens an object with one request, which also prepares the download of the
/// segment holding plaintext `offset`.
pub(crate) async fn open_object(
    metainfo: &Metainfo,
    path: crypto::ObjectPath,
    (bucket, key, version): (&str, &str, &Version),
    offset: u64,
) -> Result<OpenObject, Error> {
    let object_key = crypto::object_key(&path.key);
    let response = metainfo
        .get_object(bucket, key, &path.stored, version, Some(offset))
        .await
        .map_err(|e| crate::version_not_found(e, version))?;
    let object = crate::readable((bucket, key, version), response.object, response.versioning)?;
    let stats = response
        .segments
        .iter()
        .map(crate::segment_stat)
        .collect::<Result<Vec<_>, _>>()?;
    let info = crate::object_info(key, &object, &object_key, stats, Some(response.versioning))?;
    let encryption = object.encryption.unwrap_or_default();
    if encryption.cipher != CIPHER_AES_256_GCM
        || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&encryption.block_size)
    {
        return Err(Error::Corrupt(format!(
            "unknown encryption (cipher {}, block size {})",
            encryption.cipher, encryption.block_size
        )));
    }
    let mut segments = response.segments;
    segments.sort_by_key(|s| s.position);
    let mut total = 0u64;
    // Single uploads have positions 0, 1, 2, …; a multipart upload's parts
    // leave gaps between them. Positions are bound into every segment's
    // encryption, and the sizes must add up to the sealed size, so a segment
    // left out or moved does not go unnoticed either way.
    if segments.windows(2).any(|w| w[0].position == w[1].position) {
        return Err(Error::Corrupt("a segment is listed twice".into()));
    }
    for segment in &segments {
        total = total
            .checked_add(non_negative(segment.plain_size, "segment size")?)
            .ok_or_else(|| Error::Corrupt("the segments' sizes overflow".into()))?;
    }
    if total != info.size {
        return Err(Error::Corrupt(format!(
            "the segments hold {total} bytes, the object {}",
            info.size
        )));
    }
    Ok(OpenObject {
        metainfo: metainfo.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        object,
        object_key,
        info,
        block_size: encryption.block_size as u64,
        segments,
        prefetched: response.download,
    })
}

impl OpenObject {
    /// Writes the object (or `range` of it) to `writer`; returns the bytes
    /// written. See [`crate::Project::download`]. With `parallelism` N > 1,
    /// up to N segments are read at once, each into memory (at most N
    /// segments' plaintext is held), and written out in order.
    pub(crate) async fn download(
        mut self,
        range: Option<ByteRange>,
        writer: impl AsyncWrite + Unpin + Send,
        progress: Option<Progress>,
        parallelism: usize,
    ) -> Result<u64, Error> {
        let (start, end) = resolve_range(range, self.info.size)?;
        let mut sink = Sink {
            writer,
            written: 0,
            progress: progress.as_ref(),
        };
        // The segments the range touches, with the part of each it wants.
        let mut wanted = Vec::new();
        let mut segment_start = 0u64;
        for segment in &self.segments {
            let plain_size = segment.plain_size as u64;
            let segment_end = segment_start + plain_size;
            let (lo, hi) = (start.max(segment_start), end.min(segment_end));
            if lo < hi {
                let layout = SegmentLayout {
                    plain_size,
                    block_size: self.block_size,
                };
                wanted.push((
                    segment.position,
                    layout,
                    (lo - segment_start, hi - segment_start),
                ));
            }
            segment_start = segment_end;
        }
        if parallelism <= 1 {
            for (position, layout, range) in wanted {
                let response = self.segment_download(position).await?;
                self.read_segment(position, response, layout, range, &mut sink)
                    .await?;
            }
        } else {
            let mut prefetched = self.prefetched.take();
            let this = &self;
            let mut segments = futures::stream::iter(wanted)
                .map(|(position, layout, range)| {
                    let prefetched = prefetched.take_if(|download| {
                        download
                            .segment
                            .as_ref()
                            .is_some_and(|s| s.position == position)
                    });
                    async move {
                        let response = match prefetched {
                            Some(response) => response,
                            None => this.fetch_segment_download(position).await?,
                        };
                        let mut plain = Sink {
                            writer: Vec::new(),
                            written: 0,
                            progress: None,
                        };
                        this.read_segment(position, response, layout, range, &mut plain)
                            .await?;
                        Ok::<_, Error>(plain.writer)
                    }
                })
                .buffered(parallelism);
            while let Some(plain) = segments.next().await {
                sink.write(&plain?).await?;
            }
        }
        sink.writer.flush().await.map_err(Error::Write)?;
        Ok(sink.written)
    }

    /// The satellite's answer for downloading the segment at `position`
    /// (the one that came with the object when it is that segment).
    async fn segment_download(
        &mut self,
        position: u32,
    ) -> Result<pb::DownloadSegmentResponse, Error> {
        let prefetched = self.prefetched.take_if(|download| {
            download
                .segment
                .as_ref()
                .is_some_and(|s| s.position == position)
        });
        match prefetched {
            Some(response) => Ok(response),
            None => self.fetch_segment_download(position).await,
        }
    }

    async fn fetch_segment_download(
        &self,
        position: u32,
    ) -> Result<pb::DownloadSegmentResponse, Error> {
        self.metainfo
            .download_segment(&self.object.stream_id, position, &self.bucket, &self.key)
            .await
    }

    /// Reads `range` of the segment at `position`, which the satellite's
    /// `response` must be about, into `sink`.
    async fn read_segment(
        &self,
        position: u32,
        response: pb::DownloadSegmentResponse,
        layout: SegmentLayout,
        range: (u64, u64),
        sink: &mut Sink<'_, impl AsyncWrite + Unpin>,
    ) -> Result<(), Error> {
        if response.segment.as_ref().map(|s| s.position) != Some(position) {
            return Err(Error::Protocol(format!(
                "the download of segment {position} is for another segment"
            )));
        }
        download_segment(
            &self.metainfo,
            &self.object,
            &self.object_key,
            response,
            layout,
            range,
            sink,
        )
        .instrument(tracing::debug_span!("segment download", position))
        .await
    }
}

/// Reads `start..end` of the segment whose download the satellite answered
/// with `response`.
async fn download_segment(
    metainfo: &Metainfo,
    object: &pb::Object,
    object_key: &Key,
    response: pb::DownloadSegmentResponse,
    layout: SegmentLayout,
    (start, end): (u64, u64),
    sink: &mut Sink<'_, impl AsyncWrite + Unpin>,
) -> Result<(), Error> {
    let info = response
        .segment
        .ok_or_else(|| Error::Protocol("a segment download names no segment".into()))?;
    let position = info.position;
    if info.plain_size as u64 != layout.plain_size
        || info.encrypted_size as u64 != layout.encrypted_size()
    {
        return Err(Error::Corrupt(format!(
            "segment {position} is said to hold {} bytes ({} encrypted), expected {} ({})",
            info.plain_size,
            info.encrypted_size,
            layout.plain_size,
            layout.encrypted_size()
        )));
    }
    let segment_key = crypto::unwrap_key(
        object_key,
        &response.encrypted_key,
        &response.encrypted_key_nonce,
        &crypto::segment_key_purpose(position),
    )?;
    let cipher = SegmentCipher::new(&segment_key, position);
    let plan = layout.plan(start, end);
    if info.inline {
        let data = &response.encrypted_inline_data;
        if data.len() as u64 != layout.encrypted_size() {
            return Err(Error::Corrupt(format!(
                "inline segment {position} holds {} bytes, expected {}",
                data.len(),
                layout.encrypted_size()
            )));
        }
        let mut decryptor = SegmentDecryptor::new(layout, plan, cipher, 0);
        let mut plain = Vec::new();
        decryptor.push(
            &data[plan.cipher_start as usize..plan.cipher_end as usize],
            &mut plain,
        )?;
        decryptor.finish()?;
        return sink.write(&plain).await;
    }
    let scheme = Redundancy::from_pb(
        info.redundancy
            .as_ref()
            .ok_or_else(|| Error::Protocol(format!("segment {position} has no redundancy")))?,
    )
    .map_err(|e| Error::Protocol(format!("segment {position}: {e}")))?;
    let mut bad = Vec::new();
    let result = download_remote(
        &metainfo.nodes,
        response,
        scheme,
        layout,
        plan,
        cipher,
        sink,
        &mut bad,
    )
    .await;
    if !bad.is_empty() {
        // Awaited, not spawned: a command-line download would exit before a
        // background report went out. Bounded, and errors are ignored: the
        // pieces get audited in the normal course anyway.
        let report = metainfo.report_bad_pieces(object.stream_id.clone(), position, bad);
        let _ = tokio::time::timeout(REPORT_TIMEOUT, report).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::{SegmentSealer, Source, StripeEncoder};
    use proptest::prelude::*;

    /// Seals and encodes `plain` as one segment with the real upload pipeline.
    async fn encode(key: &Key, plain: &[u8], block: u32, scheme: Redundancy) -> Vec<Vec<u8>> {
        let mut source = Source::new(plain);
        let mut sealer = SegmentSealer::new(key, 2, block, plain.len().max(1) as u64);
        let mut encoder = StripeEncoder::new(scheme);
        let mut pieces = vec![Vec::new(); scheme.total as usize];
        let mut add = |shards: Vec<Vec<u8>>| {
            for (piece, shard) in pieces.iter_mut().zip(shards) {
                piece.extend_from_slice(&shard);
            }
        };
        while let Some(sealed) = sealer.next(&mut source).await.unwrap() {
            for shards in encoder.push(&sealed).unwrap() {
                add(shards);
            }
        }
        if let Some(shards) = encoder.finish().unwrap() {
            add(shards);
        }
        assert_eq!(
            encoder.encrypted_size(),
            crate::ranges::encrypted_size(plain.len() as u64, block as u64)
        );
        pieces
    }

    /// Reads `start..end` back from the pieces, batch by batch, with `lost` pieces missing.
    fn decode(
        key: &Key,
        pieces: &[Vec<u8>],
        lost: &[usize],
        layout: SegmentLayout,
        scheme: Redundancy,
        (start, end): (u64, u64),
    ) -> Result<Vec<u8>, Error> {
        let plan = layout.plan(start, end);
        let (piece_start, piece_end) = plan.piece_range(&scheme);
        let (first_stripe, _) = plan.stripes(&scheme);
        let skip = plan.cipher_start - first_stripe * scheme.stripe_size();
        let mut decryptor = SegmentDecryptor::new(layout, plan, SegmentCipher::new(key, 2), skip);
        let batch = stripes_per_batch(&scheme) * scheme.share_size as u64;
        let mut out = Vec::new();
        let mut offset = piece_start;
        while offset < piece_end {
            let upto = (offset + batch).min(piece_end);
            let slots: Vec<Option<&[u8]>> = pieces
                .iter()
                .enumerate()
                .map(|(i, p)| (!lost.contains(&i)).then(|| &p[offset as usize..upto as usize]))
                .collect();
            let data = decode_data_shards(&scheme, &slots).unwrap();
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut stripes = Vec::new();
            scatter_data_shards(&scheme, &refs, &mut stripes);
            decryptor.push(&stripes, &mut out)?;
            offset = upto;
        }
        decryptor.finish()?;
        Ok(out)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn segment_round_trips_at_boundaries() {
        let scheme = Redundancy::new(3, 4, 5, 6, 64).unwrap();
        let block = 100u32;
        let stripe = scheme.stripe_size() as usize;
        let key = Key::random();
        for len in [
            1,
            99,
            100,
            101,
            199,
            200,
            201,
            stripe - 1,
            stripe,
            stripe + 1,
            5000,
        ] {
            let plain = data(len);
            let pieces = encode(&key, &plain, block, scheme).await;
            let layout = SegmentLayout {
                plain_size: len as u64,
                block_size: block as u64,
            };
            assert_eq!(pieces[0].len() as u64, layout.piece_size(&scheme));
            let back = decode(&key, &pieces, &[0, 4, 5], layout, scheme, (0, len as u64)).unwrap();
            assert_eq!(back, plain, "length {len}");
        }
    }

    #[tokio::test]
    async fn tampered_or_misplaced_pieces_fail_authentication() {
        let scheme = Redundancy::new(2, 2, 3, 4, 64).unwrap();
        let key = Key::random();
        let plain = data(1000);
        let layout = SegmentLayout {
            plain_size: 1000,
            block_size: 128,
        };
        let mut pieces = encode(&key, &plain, 128, scheme).await;
        pieces[1][10] ^= 1;
        assert!(matches!(
            decode(&key, &pieces, &[2, 3], layout, scheme, (0, 1000)),
            Err(Error::Decryption(_))
        ));
        // The same pieces decode fine once the bad one is left out.
        assert_eq!(
            decode(&key, &pieces, &[1, 3], layout, scheme, (0, 1000)).unwrap(),
            plain
        );
        // A segment that claims to be shorter ends at a block not marked last.
        let short = SegmentLayout {
            plain_size: 500,
            block_size: 128,
        };
        assert!(decode(&key, &pieces, &[1, 3], short, scheme, (0, 500)).is_err());
        // Another key (another segment's) does not open it.
        assert!(decode(&Key::random(), &pieces, &[1, 3], layout, scheme, (0, 1000)).is_err());
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        let r = |offset, length| Some(ByteRange { offset, length });
        assert_eq!(resolve_range(None, 10).unwrap(), (0, 10));
        assert_eq!(resolve_range(r(3, Some(4)), 10).unwrap(), (3, 7));
        assert_eq!(resolve_range(r(3, Some(100)), 10).unwrap(), (3, 10));
        assert_eq!(resolve_range(r(3, None), 10).unwrap(), (3, 10));
        assert_eq!(resolve_range(r(10, None), 10).unwrap(), (10, 10));
        assert_eq!(resolve_range(r(5, Some(u64::MAX)), 10).unwrap(), (5, 10));
        assert!(matches!(
            resolve_range(r(11, None), 10),
            Err(Error::InvalidRange {
                offset: 11,
                size: 10
            })
        ));
    }

    /// A verifier of `piece` (chunks of `chunk` bytes) for `offset..end`,
    /// and the piece bytes it is to be fed, from the first wanted chunk on.
    fn verifier(piece: &[u8], chunk: usize, offset: usize, end: usize) -> (ChunkVerifier, &[u8]) {
        let leaves: Vec<Hash> = piece.chunks(chunk).map(hashtree::leaf_hash).collect();
        let first_leaf = offset / chunk;
        let end_leaf = end.div_ceil(chunk).max(first_leaf + 1).min(leaves.len());
        let aligned = first_leaf * chunk;
        let verifier = ChunkVerifier {
            address: "test".into(),
            piece_size: piece.len() as u64,
            chunk_size: chunk as u64,
            first_leaf: first_leaf as u64,
            leaves: leaves[first_leaf..end_leaf].to_vec(),
            chunk_start: aligned as u64,
            chunk: Vec::new(),
            next: offset as u64,
            end: end as u64,
            verified: Vec::new(),
        };
        (
            verifier,
            &piece[aligned..(end_leaf * chunk).min(piece.len())],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// However the node cuts its messages, exactly the wanted bytes come
        /// through, and one changed byte stops them.
        #[test]
        fn chunks_verify_whatever_the_message_boundaries(
            len in 1usize..5000, chunk in 1usize..700, a in any::<usize>(), b in any::<usize>(),
            cuts in proptest::collection::vec(1usize..900, 1..40), flip in any::<usize>()
        ) {
            let piece: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let (offset, end) = { let (x, y) = (a % len, b % len); (x.min(y), x.max(y) + 1) };
            let (mut honest, sent) = verifier(&piece, chunk, offset, end);
            let mut rest = sent;
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let (message, more) = rest.split_at((*cut.next().unwrap()).min(rest.len()));
                prop_assert!(honest.absorb(message).is_ok());
                rest = more;
            }
            prop_assert_eq!(&honest.verified[..], &piece[offset..end]);

            let mut tampered = sent.to_vec();
            tampered[flip % sent.len()] ^= 1;
            let (mut checking, _) = verifier(&piece, chunk, offset, end);
            let mut rest = &tampered[..];
            let mut refused = false;
            while !rest.is_empty() {
                let (message, more) = rest.split_at((*cut.next().unwrap()).min(rest.len()));
                if checking.absorb(message).is_err() {
                    refused = true;
                    break;
                }
                rest = more;
            }
            prop_assert!(refused);
        }

        #[test]
        fn random_ranges_read_back_from_any_k_pieces(
            len in 1usize..6000, block in 1u32..400, shares in 1u32..4,
            a in any::<u64>(), b in any::<u64>(), lost in proptest::collection::vec(0usize..6, 0..3)
        ) {
            let scheme = Redundancy::new(3, 4, 5, 6, shares * 64).unwrap();
            let key = Key::random();
            let plain = data(len);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let pieces = runtime.block_on(encode(&key, &plain, block, scheme));
            let layout = SegmentLayout { plain_size: len as u64, block_size: block as u64 };
            let start = a % len as u64;
            let end = start + 1 + b % (len as u64 - start);
            let back = decode(&key, &pieces, &lost, layout, scheme, (start, end)).unwrap();
            prop_assert_eq!(&back[..], &plain[start as usize..end as usize]);
        }
    }
}
