//! The `Piecestore` gRPC service: checks order limits and moves piece bytes
//! between the network and the [`PieceStore`].
//!
//! Every request is authorized the same way before a byte moves: the
//! satellite is trusted and signed the order limit, the limit is for this node,
//! for an allowed action and not expired, and its serial was not used before.
//! Garbage collection requests (a retain filter, a trash restore) carry the
//! satellite's signature instead; see [`crate::retain`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::hashtree;
use archipel_proto::orders::{self, PieceId};
use archipel_proto::pb::piecestore_server::Piecestore;
use archipel_proto::pb::{
    OrderLimit, PieceAction, PieceDeleteRequest, PieceDeleteResponse, PieceDownloadRequest,
    PieceDownloadResponse, PieceUploadRequest, PieceUploadResponse, RestoreTrashRequest,
    RestoreTrashResponse, RetainRequest, RetainResponse,
};
use archipel_proto::{Identity, NodeId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::bandwidth::Ledger;
use crate::error::{Error, Result};
use crate::metrics::{Direction, NodeMetrics, Outcome};
use crate::serials::UsedSerials;
use crate::store::{PieceData, PieceStore};
use crate::trust::SatelliteKeys;

/// Data bytes per download message. A multiple of the hash chunk size, so
/// messages after the first start on chunk boundaries.
pub const DOWNLOAD_MESSAGE_SIZE: usize = 256 * 1024;
/// Largest upload message accepted; clients send far smaller ones.
pub const MAX_UPLOAD_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// How long a request waits for the key of a trusted satellite the node has
/// not reached yet before it is refused as unavailable.
const SATELLITE_KEY_WAIT: Duration = Duration::from_secs(5);
/// Download messages buffered ahead of a slow client.
const DOWNLOAD_QUEUE: usize = 4;

const UPLOAD_ACTIONS: &[PieceAction] = &[
    PieceAction::Put,
    PieceAction::PutRepair,
    PieceAction::PutExit,
];
const DOWNLOAD_ACTIONS: &[PieceAction] = &[
    PieceAction::Get,
    PieceAction::GetAudit,
    PieceAction::GetRepair,
];
const DELETE_ACTIONS: &[PieceAction] = &[PieceAction::Delete];

/// The service, shared by all connections.
pub struct PiecestoreService {
    identity: Identity,
    store: PieceStore,
    keys: Arc<SatelliteKeys>,
    serials: UsedSerials,
    upload_idle_timeout: Duration,
    ledger: Arc<Ledger>,
    metrics: Arc<NodeMetrics>,
}

/// What a transfer moved, for the bandwidth ledger and the metrics.
#[derive(Default)]
struct Transfer {
    /// The action the request's order limit names, checked or not.
    action: Option<PieceAction>,
    /// Set once the order limit passed every check.
    satellite: Option<NodeId>,
    bytes: u64,
}

impl Transfer {
    fn named_by(limit: Option<&OrderLimit>) -> Transfer {
        Transfer {
            action: limit.and_then(|l| PieceAction::try_from(l.action).ok()),
            ..Transfer::default()
        }
    }
}

/// An order limit that passed every check.
struct Authorized {
    satellite: NodeId,
    piece_id: PieceId,
    /// `limit.limit`, known to be non-negative.
    max_bytes: u64,
    limit: OrderLimit,
}

impl PiecestoreService {
    pub fn new(
        identity: Identity,
        store: PieceStore,
        keys: Arc<SatelliteKeys>,
        serials: UsedSerials,
        upload_idle_timeout: Duration,
        ledger: Arc<Ledger>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        PiecestoreService {
            identity,
            store,
            keys,
            serials,
            upload_idle_timeout,
            ledger,
            metrics,
        }
    }

    /// Counts a finished transfer: its outcome in the metrics and, if its
    /// order limit was honoured, its bytes in the ledger.
    fn account(&self, direction: Direction, transfer: &Transfer, outcome: Outcome) {
        account(&self.ledger, &self.metrics, direction, transfer, outcome);
    }

    async fn authorize(
        &self,
        limit: Option<OrderLimit>,
        allowed: &[PieceAction],
    ) -> Result<Authorized> {
        let limit = limit
            .ok_or_else(|| Error::InvalidRequest("the request carries no order limit".into()))?;
        let satellite = NodeId::from_bytes(&limit.satellite_id)?;
        let key = self.keys.key(satellite, SATELLITE_KEY_WAIT).await?;
        orders::verify_order_limit_signature(&key, &limit)?;
        let now = orders::unix_now();
        orders::check_order_limit_fields(&limit, self.identity.id(), allowed, now)?;
        let piece_id = orders::piece_id_from_bytes(&limit.piece_id)?;
        let max_bytes = u64::try_from(limit.limit).map_err(|_| {
            Error::InvalidRequest(format!("the order limit allows {} bytes", limit.limit))
        })?;
        self.serials
            .record(satellite, &limit.serial_number, limit.order_expiration, now)
            .await?;
        Ok(Authorized {
            satellite,
            piece_id,
            max_bytes,
            limit,
        })
    }

    /// The next upload message, or an error once none came for the idle
    /// timeout: a stalled uploader must not hold its space reservation.
    async fn next_message(
        &self,
        stream: &mut Streaming<PieceUploadRequest>,
    ) -> Result<Option<PieceUploadRequest>, Status> {
        match tokio::time::timeout(self.upload_idle_timeout, stream.message()).await {
            Ok(message) => message,
            Err(_) => Err(Error::UploadIdle(self.upload_idle_timeout).into()),
        }
    }

    async fn upload(
        &self,
        stream: Streaming<PieceUploadRequest>,
    ) -> Result<PieceUploadResponse, Status> {
        let mut transfer = Transfer::default();
        let result = self.receive(stream, &mut transfer).await;
        self.account(Direction::Upload, &transfer, Outcome::of(&result));
        result
    }

    async fn receive(
        &self,
        mut stream: Streaming<PieceUploadRequest>,
        transfer: &mut Transfer,
    ) -> Result<PieceUploadResponse, Status> {
        let mut first = self
            .next_message(&mut stream)
            .await?
            .ok_or_else(|| Error::InvalidRequest("the upload stream is empty".into()))?;
        *transfer = Transfer::named_by(first.limit.as_ref());
        let order = self
            .authorize(first.limit.take(), UPLOAD_ACTIONS)
            .instrument(tracing::debug_span!("order check"))
            .await?;
        transfer.satellite = Some(order.satellite);
        let expiration = order.limit.piece_expiration;
        if expiration != 0 && expiration <= orders::unix_now() {
            return Err(Error::InvalidRequest("the piece would already be expired".into()).into());
        }
        let mut writer = self.store.create(order.limit, order.max_bytes).await?;
        let mut message = first;
        loop {
            if !message.data.is_empty() {
                writer.write(&message.data).await?;
                transfer.bytes += message.data.len() as u64;
            }
            if message.done {
                let hash = writer
                    .commit(&self.identity)
                    .instrument(tracing::debug_span!("piece commit"))
                    .await?;
                tracing::debug!(
                    piece = %hex::encode(order.piece_id),
                    satellite = %order.satellite,
                    size = hash.piece_size,
                    "stored a piece"
                );
                return Ok(PieceUploadResponse { hash: Some(hash) });
            }
            // Ending without `done`, or with a transport error, drops the
            // writer, which discards the upload.
            message = self
                .next_message(&mut stream)
                .await?
                .ok_or(Error::UploadIncomplete)?;
            if message.limit.is_some() {
                return Err(Error::InvalidRequest(
                    "only the first upload message may carry an order limit".into(),
                )
                .into());
            }
        }
    }

    async fn download(
        &self,
        request: PieceDownloadRequest,
    ) -> Result<mpsc::Receiver<Result<PieceDownloadResponse, Status>>> {
        let mut transfer = Transfer::named_by(request.limit.as_ref());
        let started = self.start_download(request, &mut transfer).await;
        match started {
            Ok((header, data)) => Ok(self.send(header, data, transfer)),
            Err(e) => {
                self.account(Direction::Download, &transfer, Outcome::Failure);
                Err(e)
            }
        }
    }

    /// Checks a download request and opens its range of the piece: the first
    /// message (hashes and proof) and the data to follow.
    async fn start_download(
        &self,
        request: PieceDownloadRequest,
        transfer: &mut Transfer,
    ) -> Result<(PieceDownloadResponse, PieceData)> {
        let order = self.authorize(request.limit, DOWNLOAD_ACTIONS).await?;
        transfer.satellite = Some(order.satellite);
        let (offset, length) = match (u64::try_from(request.offset), u64::try_from(request.length))
        {
            (Ok(offset), Ok(length)) => (offset, length),
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "offset {} and length {} must not be negative",
                    request.offset, request.length
                )))
            }
        };
        if length > order.max_bytes {
            return Err(archipel_proto::Error::OverLimit {
                requested: request.length,
                limit: order.limit.limit,
            }
            .into());
        }
        let mut piece = self
            .store
            .open_piece(order.satellite, order.piece_id)
            .await?;
        let piece_size = piece.piece_size();
        let end = offset.saturating_add(length);
        if end > piece_size {
            return Err(Error::RangeOutOfBounds {
                offset,
                end,
                piece_size,
            });
        }
        // Widen to whole chunks: the client verifies chunk by chunk. An empty
        // range still gets the chunk at its offset, so there is a leaf to prove.
        let chunk = u64::from(piece.chunk_size());
        let leaf_count = hashtree::leaf_count(piece_size, piece.chunk_size());
        let first_leaf = (offset / chunk).min(leaf_count - 1);
        let end_leaf = end.div_ceil(chunk).max(first_leaf + 1);
        let aligned_offset = first_leaf * chunk;
        let aligned_end = (end_leaf * chunk).min(piece_size);

        let leaves = piece.leaves().await?;
        let proof = hashtree::range_proof(&leaves, first_leaf as usize, end_leaf as usize);
        let header = PieceDownloadResponse {
            hash: Some(piece.hash().clone()),
            chunk_size: piece.chunk_size(),
            aligned_offset: aligned_offset as i64,
            leaf_hashes: leaves[first_leaf as usize..end_leaf as usize]
                .iter()
                .map(|leaf| leaf.to_vec())
                .collect(),
            proof: proof.iter().map(|hash| hash.to_vec()).collect(),
            data: Default::default(),
        };
        let data = piece
            .into_data(aligned_offset, aligned_end - aligned_offset)
            .await?;
        Ok((header, data))
    }

    /// Streams a started download to the client from a task of its own, and
    /// accounts for it when it ends.
    fn send(
        &self,
        header: PieceDownloadResponse,
        mut data: PieceData,
        mut transfer: Transfer,
    ) -> mpsc::Receiver<Result<PieceDownloadResponse, Status>> {
        let (sender, receiver) = mpsc::channel(DOWNLOAD_QUEUE);
        let (ledger, metrics) = (self.ledger.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let outcome = stream_piece(&sender, header, &mut data, &mut transfer).await;
            account(&ledger, &metrics, Direction::Download, &transfer, outcome);
        });
        receiver
    }

    async fn delete(&self, request: PieceDeleteRequest) -> Result<PieceDeleteResponse> {
        let order = self.authorize(request.limit, DELETE_ACTIONS).await?;
        self.store.delete(order.satellite, order.piece_id).await?;
        tracing::debug!(piece = %hex::encode(order.piece_id), satellite = %order.satellite, "deleted a piece");
        Ok(PieceDeleteResponse {})
    }

    async fn retain(&self, request: RetainRequest) -> Result<RetainResponse> {
        let filter = request
            .filter
            .ok_or_else(|| Error::InvalidRequest("the request carries no filter".into()))?;
        let satellite = NodeId::from_bytes(&filter.satellite_id)?;
        let key = self.keys.key(satellite, SATELLITE_KEY_WAIT).await?;
        let response =
            crate::retain::apply_filter(&self.store, &key, self.identity.id(), filter).await?;
        self.metrics
            .retained(response.pieces_trashed, response.bytes_trashed);
        Ok(response)
    }

    async fn restore_trash(&self, request: RestoreTrashRequest) -> Result<RestoreTrashResponse> {
        let satellite = NodeId::from_bytes(&request.satellite_id)?;
        let key = self.keys.key(satellite, SATELLITE_KEY_WAIT).await?;
        crate::retain::restore(&self.store, &key, self.identity.id(), request).await
    }
}

fn account(
    ledger: &Ledger,
    metrics: &NodeMetrics,
    direction: Direction,
    transfer: &Transfer,
    outcome: Outcome,
) {
    metrics.transfer(direction, transfer.action, outcome);
    if let (Some(satellite), Some(action)) = (transfer.satellite, transfer.action) {
        ledger.record(satellite, action, transfer.bytes);
    }
}

/// Sends `header`, then `data` in messages, counting the data bytes sent.
async fn stream_piece(
    sender: &mpsc::Sender<Result<PieceDownloadResponse, Status>>,
    header: PieceDownloadResponse,
    data: &mut PieceData,
    transfer: &mut Transfer,
) -> Outcome {
    // A closed channel means the client went away.
    if sender.send(Ok(header)).await.is_err() {
        return Outcome::Cancelled;
    }
    loop {
        let message = match data.next(DOWNLOAD_MESSAGE_SIZE).await {
            Ok(Some(data)) => PieceDownloadResponse {
                data: data.into(),
                ..Default::default()
            },
            Ok(None) => return Outcome::Success,
            Err(e) => {
                tracing::warn!("cannot read piece data: {e}");
                let _ = sender.send(Err(e.into())).await;
                return Outcome::Failure;
            }
        };
        let sent = message.data.len() as u64;
        if sender.send(Ok(message)).await.is_err() {
            return Outcome::Cancelled;
        }
        transfer.bytes += sent;
    }
}

/// Logs a refused request at a level fitting its cause, and turns it into a status.
fn refuse(operation: &str, error: Status) -> Status {
    match error.code() {
        tonic::Code::Internal | tonic::Code::DataLoss | tonic::Code::Unknown => {
            tracing::warn!("{operation} failed: {}", error.message());
        }
        _ => tracing::debug!("{operation} refused: {}", error.message()),
    }
    error
}

type DownloadStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<PieceDownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Piecestore for PiecestoreService {
    async fn upload(
        &self,
        request: Request<Streaming<PieceUploadRequest>>,
    ) -> Result<Response<PieceUploadResponse>, Status> {
        PiecestoreService::upload(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refuse("upload", e))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<PieceDownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        match PiecestoreService::download(self, request.into_inner()).await {
            Ok(receiver) => Ok(Response::new(Box::pin(ReceiverStream::new(receiver)))),
            Err(e) => Err(refuse("download", e.into())),
        }
    }

    async fn delete(
        &self,
        request: Request<PieceDeleteRequest>,
    ) -> Result<Response<PieceDeleteResponse>, Status> {
        PiecestoreService::delete(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refuse("delete", e.into()))
    }

    async fn retain(
        &self,
        request: Request<RetainRequest>,
    ) -> Result<Response<RetainResponse>, Status> {
        PiecestoreService::retain(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refuse("retain", e.into()))
    }

    async fn restore_trash(
        &self,
        request: Request<RestoreTrashRequest>,
    ) -> Result<Response<RestoreTrashResponse>, Status> {
        PiecestoreService::restore_trash(self, request.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| refuse("trash restore", e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TrustedSatellite};
    use crate::contact::tests::{serve_satellite, TestSatellite};
    use archipel_proto::hashtree::Hash;
    use archipel_proto::pb::piecestore_client::PiecestoreClient;
    use archipel_proto::pb::PieceHash;
    use archipel_proto::PeerKey;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;
    use tonic::transport::Channel;
    use tonic::Code;

    const TEST_UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

    /// A test satellite (a real `Node` gRPC server) and one storage node
    /// started with [`crate::run`], each on 127.0.0.1:0.
    struct Network {
        satellite: Identity,
        satellite_stop: CancellationToken,
        satellite_task: Option<JoinHandle<()>>,
        node: Identity,
        config: Config,
        address: SocketAddr,
        node_stop: CancellationToken,
        node_task: Option<JoinHandle<Result<()>>>,
        /// Every check-in the satellite received.
        check_ins: Arc<std::sync::Mutex<Vec<archipel_proto::pb::CheckInRequest>>>,
        _dir: tempfile::TempDir,
    }

    impl Network {
        async fn start(allocated: u64) -> Network {
            let dir = tempfile::tempdir().unwrap();
            let satellite = Identity::generate();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let satellite_address = listener.local_addr().unwrap();
            let satellite_stop = CancellationToken::new();
            let check_ins = Arc::default();
            let satellite_task = serve_satellite(
                TestSatellite {
                    identity: satellite.clone(),
                    check_ins: Arc::clone(&check_ins),
                },
                listener,
                satellite_stop.clone(),
            );
            let mut config = Config::new(dir.path().join("storage"));
            config.allocated_bytes = allocated;
            config.check_in_interval = Duration::from_secs(1);
            config.upload_idle_timeout = TEST_UPLOAD_IDLE_TIMEOUT;
            config.satellites = vec![TrustedSatellite {
                id: satellite.id(),
                address: satellite_address.to_string(),
            }];
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let mut network = Network {
                satellite,
                satellite_stop,
                satellite_task: Some(satellite_task),
                node: Identity::generate(),
                config,
                address,
                node_stop: CancellationToken::new(),
                node_task: None,
                check_ins,
                _dir: dir,
            };
            network.start_node(listener);
            network
        }

        fn start_node(&mut self, listener: TcpListener) {
            self.node_stop = CancellationToken::new();
            self.node_task = Some(tokio::spawn(crate::run(
                self.config.clone(),
                self.node.clone(),
                listener,
                None,
                self.node_stop.clone().cancelled_owned(),
            )));
        }

        async fn stop_node(&mut self) {
            self.node_stop.cancel();
            if let Some(task) = self.node_task.take() {
                task.await.unwrap().unwrap();
            }
        }

        async fn restart_node(&mut self) {
            self.stop_node().await;
            let listener = TcpListener::bind(self.address).await.unwrap();
            self.start_node(listener);
        }

        async fn stop_satellite(&mut self) {
            self.satellite_stop.cancel();
            if let Some(task) = self.satellite_task.take() {
                task.await.unwrap();
            }
        }

        async fn client(&self) -> PiecestoreClient<Channel> {
            let endpoint = archipel_proto::transport::endpoint(&self.address.to_string()).unwrap();
            PiecestoreClient::new(
                archipel_proto::transport::connect(&endpoint, self.node.id())
                    .await
                    .unwrap(),
            )
        }

        fn order(&self, action: PieceAction, piece: u8, limit: i64) -> OrderLimit {
            OrderLimit {
                serial_number: orders::new_serial(),
                node_id: self.node.id().to_vec(),
                piece_id: vec![piece; 32],
                action: action as i32,
                limit,
                order_expiration: orders::unix_now() + 60,
                order_creation: orders::unix_now(),
                ..Default::default()
            }
        }

        fn signed(&self, action: PieceAction, piece: u8, limit: i64) -> OrderLimit {
            orders::sign_order_limit(&self.satellite, self.order(action, piece, limit))
        }

        fn piece_file(&self, piece: u8) -> std::path::PathBuf {
            crate::piece_path(&self.config.storage_dir, &self.satellite.id(), &[piece; 32])
        }

        async fn shutdown(mut self) {
            self.stop_node().await;
            self.stop_satellite().await;
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 10) as u8)
            .collect()
    }

    /// Uploads `bytes` in messages of `part` bytes, the first with the limit;
    /// the last message says done unless `finish` is false.
    async fn upload(
        client: &mut PiecestoreClient<Channel>,
        limit: OrderLimit,
        bytes: &[u8],
        part: usize,
        finish: bool,
    ) -> Result<PieceHash, Status> {
        let mut messages = vec![PieceUploadRequest {
            limit: Some(limit),
            ..Default::default()
        }];
        messages.extend(bytes.chunks(part).map(|chunk| PieceUploadRequest {
            data: chunk.to_vec(),
            ..Default::default()
        }));
        if finish {
            messages.last_mut().unwrap().done = true;
        }
        let response = client.upload(tokio_stream::iter(messages)).await?;
        Ok(response.into_inner().hash.unwrap())
    }

    struct Downloaded {
        header: PieceDownloadResponse,
        data: Vec<u8>,
        message_sizes: Vec<usize>,
    }

    async fn download(
        client: &mut PiecestoreClient<Channel>,
        limit: OrderLimit,
        offset: i64,
        length: i64,
    ) -> Result<Downloaded, Status> {
        let mut stream = client
            .download(PieceDownloadRequest {
                limit: Some(limit),
                offset,
                length,
            })
            .await?
            .into_inner();
        let header = stream.message().await?.unwrap();
        let mut downloaded = Downloaded {
            header,
            data: Vec::new(),
            message_sizes: Vec::new(),
        };
        while let Some(message) = stream.message().await? {
            downloaded.message_sizes.push(message.data.len());
            downloaded.data.extend_from_slice(&message.data);
        }
        Ok(downloaded)
    }

    /// What a client does: checks every chunk against its leaf and the leaves
    /// against the signed root, then cuts out the requested range.
    fn verify(
        hash: &PieceHash,
        got: &Downloaded,
        offset: u64,
        length: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let header = &got.header;
        let chunk = header.chunk_size as u64;
        let aligned = header.aligned_offset as u64;
        let root: Hash = hash.root.clone().try_into().unwrap();
        let leaves: Vec<Hash> = header
            .leaf_hashes
            .iter()
            .map(|l| l.clone().try_into().unwrap())
            .collect();
        let proof: Vec<Hash> = header
            .proof
            .iter()
            .map(|p| p.clone().try_into().unwrap())
            .collect();
        let chunks: Vec<&[u8]> = if got.data.is_empty() {
            vec![&[]]
        } else {
            got.data.chunks(chunk as usize).collect()
        };
        if chunks.len() != leaves.len() {
            return Err(format!(
                "{} chunks for {} leaves",
                chunks.len(),
                leaves.len()
            ));
        }
        for (i, (data, leaf)) in chunks.iter().zip(&leaves).enumerate() {
            if hashtree::leaf_hash(data) != *leaf {
                return Err(format!("chunk {i} does not match its leaf"));
            }
        }
        hashtree::verify_range(
            &root,
            hash.piece_size as u64,
            header.chunk_size,
            aligned / chunk,
            &leaves,
            &proof,
        )
        .map_err(|e| e.to_string())?;
        let start = (offset - aligned) as usize;
        Ok(got.data[start..start + length as usize].to_vec())
    }

    #[tokio::test]
    async fn uploaded_piece_downloads_in_verified_ranges() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let bytes = data(600_000 + 123);
        let hash = upload(
            &mut client,
            net.signed(PieceAction::Put, 1, 1 << 20),
            &bytes,
            70_000,
            true,
        )
        .await
        .unwrap();
        assert_eq!(hash.piece_size, bytes.len() as i64);
        assert_eq!(hash.piece_id, vec![1; 32]);
        let node_key = PeerKey::for_id(net.node.id(), &net.node.public_key()).unwrap();
        orders::verify_piece_hash(&node_key, &hash).unwrap();

        let size = bytes.len() as u64;
        for (offset, length) in [
            (0, size),
            (17_000, 40_000),
            (0, 1),
            (size - 1, 1),
            (size, 0),
            (16_384, 16_384),
            (300_000, 299_000),
        ] {
            let action = if offset % 2 == 0 {
                PieceAction::Get
            } else {
                PieceAction::GetAudit
            };
            let got = download(
                &mut client,
                net.signed(action, 1, 1 << 20),
                offset as i64,
                length as i64,
            )
            .await
            .unwrap();
            assert_eq!(got.header.hash.as_ref(), Some(&hash));
            assert_eq!(
                got.header.aligned_offset as u64 % u64::from(got.header.chunk_size),
                0
            );
            assert!(got
                .message_sizes
                .iter()
                .all(|&s| s <= DOWNLOAD_MESSAGE_SIZE));
            let range = verify(&hash, &got, offset, length).unwrap();
            assert_eq!(
                range,
                &bytes[offset as usize..(offset + length) as usize],
                "range {offset}+{length}"
            );
        }
        // A whole download is streamed in several messages, not one.
        let whole = download(
            &mut client,
            net.signed(PieceAction::GetRepair, 1, 1 << 20),
            0,
            size as i64,
        )
        .await
        .unwrap();
        assert_eq!(whole.message_sizes.len(), 3);
        net.shutdown().await;
    }

    #[tokio::test]
    async fn empty_piece_uploads_and_downloads() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        // No data message at all: the message with the limit also says done.
        let hash = upload(
            &mut client,
            net.signed(PieceAction::PutRepair, 2, 100),
            &[],
            1,
            true,
        )
        .await
        .unwrap();
        assert_eq!(hash.piece_size, 0);
        let got = download(&mut client, net.signed(PieceAction::Get, 2, 100), 0, 0)
            .await
            .unwrap();
        assert_eq!(verify(&hash, &got, 0, 0).unwrap(), Vec::<u8>::new());
        net.shutdown().await;
    }

    #[tokio::test]
    async fn order_limits_that_fail_a_check_are_refused() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let bytes = data(1000);

        let mut forged = net.signed(PieceAction::Put, 3, 1000);
        forged.limit = 1 << 30;
        let stranger = Identity::generate();
        let from_stranger =
            orders::sign_order_limit(&stranger, net.order(PieceAction::Put, 3, 1000));
        let mut expired = net.order(PieceAction::Put, 3, 1000);
        expired.order_expiration = orders::unix_now() - 1;
        let expired = orders::sign_order_limit(&net.satellite, expired);
        let mut elsewhere = net.order(PieceAction::Put, 3, 1000);
        elsewhere.node_id = Identity::generate().id().to_vec();
        let elsewhere = orders::sign_order_limit(&net.satellite, elsewhere);
        let wrong_action = net.signed(PieceAction::Get, 3, 1000);
        let deleting = net.signed(PieceAction::Delete, 3, 1000);

        for (what, limit, words) in [
            ("forged", forged, "signature"),
            ("untrusted satellite", from_stranger, "does not trust"),
            ("expired", expired, "expired"),
            ("another node", elsewhere, "not this node"),
            ("a download limit", wrong_action, "Get"),
            ("a delete limit", deleting, "Delete"),
        ] {
            let status = upload(&mut client, limit, &bytes, 500, true)
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
            assert!(
                status.message().contains(words),
                "{what}: {}",
                status.message()
            );
        }
        let mut malformed = net.order(PieceAction::Put, 3, 1000);
        malformed.piece_id = vec![1; 5];
        let malformed = orders::sign_order_limit(&net.satellite, malformed);
        let status = upload(&mut client, malformed, &bytes, 500, true)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let status = download(&mut client, net.signed(PieceAction::Put, 3, 1000), 0, 10)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(!net.piece_file(3).exists());
        net.shutdown().await;
    }

    #[tokio::test]
    async fn transfers_beyond_the_order_limit_are_refused() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let status = upload(
            &mut client,
            net.signed(PieceAction::Put, 4, 1000),
            &data(1001),
            400,
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("exceeds"), "{}", status.message());
        assert!(!net.piece_file(4).exists());

        upload(
            &mut client,
            net.signed(PieceAction::Put, 4, 5000),
            &data(5000),
            400,
            true,
        )
        .await
        .unwrap();
        let status = download(&mut client, net.signed(PieceAction::Get, 4, 100), 0, 101)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = download(
            &mut client,
            net.signed(PieceAction::Get, 4, 10_000),
            4000,
            1001,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        net.shutdown().await;
    }

    #[tokio::test]
    async fn a_serial_is_honoured_once_even_across_restarts() {
        let mut net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let put = net.signed(PieceAction::Put, 5, 1000);
        upload(&mut client, put.clone(), &data(100), 100, true)
            .await
            .unwrap();
        let get = net.signed(PieceAction::Get, 5, 1000);
        download(&mut client, get.clone(), 0, 100).await.unwrap();
        for restarted in [false, true] {
            let status = upload(&mut client, put.clone(), &data(100), 100, true)
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(
                status.message().contains("already used"),
                "restarted {restarted}: {}",
                status.message()
            );
            let status = download(&mut client, get.clone(), 0, 100)
                .await
                .err()
                .unwrap();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(status.message().contains("already used"), "{status:?}");
            if !restarted {
                net.restart_node().await;
                client = net.client().await;
            }
        }
        net.shutdown().await;
    }

    #[tokio::test]
    async fn an_upload_over_a_stored_piece_is_refused() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let hash = upload(
            &mut client,
            net.signed(PieceAction::Put, 12, 1000),
            &data(1000),
            300,
            true,
        )
        .await
        .unwrap();
        let stored = std::fs::read(net.piece_file(12)).unwrap();
        for action in [PieceAction::Put, PieceAction::PutRepair] {
            let status = upload(
                &mut client,
                net.signed(action, 12, 1000),
                &[0xee; 500],
                300,
                true,
            )
            .await
            .unwrap_err();
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
            assert!(
                status.message().contains("already stored"),
                "{}",
                status.message()
            );
        }
        assert_eq!(std::fs::read(net.piece_file(12)).unwrap(), stored);
        let got = download(&mut client, net.signed(PieceAction::Get, 12, 1000), 0, 1000)
            .await
            .unwrap();
        assert_eq!(verify(&hash, &got, 0, 1000).unwrap(), data(1000));
        net.shutdown().await;
    }

    #[tokio::test]
    async fn a_piece_corrupted_on_disk_is_served_but_fails_verification() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let bytes = data(100_000);
        let hash = upload(
            &mut client,
            net.signed(PieceAction::Put, 6, 1 << 20),
            &bytes,
            30_000,
            true,
        )
        .await
        .unwrap();
        let path = net.piece_file(6);
        let mut file = std::fs::read(&path).unwrap();
        file[(crate::PIECE_HEADER_SIZE + 40_000) as usize] ^= 0x55;
        std::fs::write(&path, file).unwrap();

        let got = download(
            &mut client,
            net.signed(PieceAction::GetAudit, 6, 1 << 20),
            35_000,
            10_000,
        )
        .await
        .unwrap();
        assert!(verify(&hash, &got, 35_000, 10_000).is_err());
        // Chunks away from the damage still verify.
        let got = download(
            &mut client,
            net.signed(PieceAction::Get, 6, 1 << 20),
            70_000,
            10_000,
        )
        .await
        .unwrap();
        assert_eq!(
            verify(&hash, &got, 70_000, 10_000).unwrap(),
            &bytes[70_000..80_000]
        );
        net.shutdown().await;
    }

    #[tokio::test]
    async fn uploads_beyond_the_allocation_are_refused() {
        let allocated = crate::store::piece_file_size(60_000, hashtree::DEFAULT_CHUNK_SIZE);
        let net = Network::start(allocated).await;
        let mut client = net.client().await;
        upload(
            &mut client,
            net.signed(PieceAction::Put, 7, 60_000),
            &data(60_000),
            10_000,
            true,
        )
        .await
        .unwrap();
        let status = upload(
            &mut client,
            net.signed(PieceAction::Put, 8, 1000),
            &data(1000),
            1000,
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(!net.piece_file(8).exists());
        // The piece already stored is untouched.
        let got = download(
            &mut client,
            net.signed(PieceAction::Get, 7, 60_000),
            0,
            60_000,
        )
        .await
        .unwrap();
        assert_eq!(got.data, data(60_000));
        net.shutdown().await;
    }

    #[tokio::test]
    async fn a_stalled_upload_is_abandoned_and_releases_its_space() {
        let allocated = crate::store::piece_file_size(60_000, hashtree::DEFAULT_CHUNK_SIZE);
        let net = Network::start(allocated).await;
        let mut client = net.client().await;
        // Sends its order limit, then nothing, holding the whole allocation:
        // seen when a check-in reports no free space while it runs. Started
        // again if it ends first (refused before the node learned the
        // satellite's key at its first check-in, or abandoned before a
        // check-in came).
        let (sender, stalled) = loop {
            let seen = net.check_ins.lock().unwrap().len();
            let (sender, receiver) = mpsc::channel(1);
            sender
                .send(PieceUploadRequest {
                    limit: Some(net.signed(PieceAction::Put, 7, 60_000)),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut stalled_client = client.clone();
            let stalled = tokio::spawn(async move {
                stalled_client
                    .upload(ReceiverStream::new(receiver))
                    .await
                    .map(|_| ())
            });
            let held = loop {
                let reported_full = net.check_ins.lock().unwrap()[seen..]
                    .iter()
                    .any(|c| c.free_bytes == 0);
                if reported_full || stalled.is_finished() {
                    break reported_full && !stalled.is_finished();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if held {
                break (sender, stalled);
            }
            let _ = stalled.await;
        };
        let status = stalled.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("sent nothing"), "{status:?}");
        drop(sender);
        // Its reservation is gone: a piece of the whole allocation fits.
        upload(
            &mut client,
            net.signed(PieceAction::Put, 9, 60_000),
            &data(60_000),
            10_000,
            true,
        )
        .await
        .unwrap();
        net.shutdown().await;
    }

    #[tokio::test]
    async fn missing_deleted_and_unfinished_pieces_are_not_found() {
        let net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let status = download(&mut client, net.signed(PieceAction::Get, 9, 1000), 0, 10)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");

        // A stream that ends without done stores nothing.
        let status = upload(
            &mut client,
            net.signed(PieceAction::Put, 9, 1000),
            &data(1000),
            300,
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!net.piece_file(9).exists());
        let temp = net.config.storage_dir.join("temp");
        assert_eq!(std::fs::read_dir(temp).unwrap().count(), 0);

        upload(
            &mut client,
            net.signed(PieceAction::Put, 9, 1000),
            &data(1000),
            300,
            true,
        )
        .await
        .unwrap();
        assert!(net.piece_file(9).exists());
        let status = client
            .delete(PieceDeleteRequest {
                limit: Some(net.signed(PieceAction::Get, 9, 0)),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        client
            .delete(PieceDeleteRequest {
                limit: Some(net.signed(PieceAction::Delete, 9, 0)),
            })
            .await
            .unwrap();
        assert!(!net.piece_file(9).exists());
        let status = download(&mut client, net.signed(PieceAction::Get, 9, 1000), 0, 10)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        net.shutdown().await;
    }

    #[tokio::test]
    async fn a_restarted_node_verifies_orders_while_its_satellite_is_down() {
        let mut net = Network::start(1 << 30).await;
        let mut client = net.client().await;
        let bytes = data(20_000);
        let hash = upload(
            &mut client,
            net.signed(PieceAction::Put, 10, 1 << 20),
            &bytes,
            5000,
            true,
        )
        .await
        .unwrap();
        net.stop_satellite().await;
        net.restart_node().await;
        let mut client = net.client().await;
        let got = download(
            &mut client,
            net.signed(PieceAction::Get, 10, 1 << 20),
            0,
            20_000,
        )
        .await
        .unwrap();
        assert_eq!(verify(&hash, &got, 0, 20_000).unwrap(), bytes);
        let status = upload(
            &mut client,
            orders::sign_order_limit(&Identity::generate(), net.order(PieceAction::Put, 11, 100)),
            &data(10),
            10,
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        net.stop_node().await;
    }
}
