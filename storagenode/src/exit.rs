//! Graceful exit from one satellite, started by the operator
//! (`archipel-node exit --satellite ID`, through the dashboard's operator
//! API): the node asks the satellite for its pieces' transfers, uploads each
//! piece to the replacement node the satellite chose, under the satellite's
//! PUT_EXIT order limit, and reports the replacement's signed piece hash.
//! Only once the satellite sends its signed receipt does the node delete that
//! satellite's pieces. Progress is kept in the node's database, so an exit
//! goes on after a restart, and is shown on the dashboard.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archipel_proto::orders::{self, sign_exit_request, unix_now, verify_exit_completed};
use archipel_proto::pb::node_client::NodeClient;
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{
    ExitRequest, ExitResponse, ExitTransfer, ExitTransferResult, PieceAction, PieceUploadRequest,
};
use archipel_proto::{transport, Identity, NodeId};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bandwidth::Ledger;
use crate::config::TrustedSatellite;
use crate::error::{Error, Result};
use crate::store::PieceStore;
use crate::trust::SatelliteKeys;

/// Transfers run at once.
const CONCURRENT_TRANSFERS: usize = 4;
/// Data bytes per upload message to a replacement node.
const UPLOAD_MESSAGE: usize = 256 * 1024;
/// Longest one piece's transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Wait before asking again when the satellite had nothing to hand out yet,
/// and the first wait after a failed call (doubled up to `MAX_RETRY`).
const PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long to wait for a satellite's key to check its receipt.
const KEY_WAIT: Duration = Duration::from_secs(10);

/// Where the node's exit from one satellite stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Unix seconds, the node's clock.
    pub started_at: i64,
    /// As the satellite counts them.
    pub pieces_transferred: i64,
    pub pieces_failed: i64,
    /// When the exit ended, either way.
    pub finished_at: Option<i64>,
    /// The satellite's signed receipt (protobuf, hex), once it succeeded.
    pub receipt: Option<String>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Pieces deleted after the receipt came.
    pub pieces_deleted: Option<u64>,
    /// The last error talking to the satellite, while the exit goes on.
    pub last_error: Option<String>,
}

impl ExitStatus {
    pub fn succeeded(&self) -> bool {
        self.receipt.is_some()
    }
}

/// The node's exits, one per satellite at most.
pub struct Exits {
    identity: Identity,
    store: PieceStore,
    ledger: Arc<Ledger>,
    keys: Arc<SatelliteKeys>,
    satellites: Vec<TrustedSatellite>,
    statuses: Mutex<HashMap<NodeId, ExitStatus>>,
    running: Mutex<HashSet<NodeId>>,
    cancel: CancellationToken,
}

fn state_key(satellite: &NodeId) -> String {
    format!("exit:{satellite}")
}

impl Exits {
    /// Reads the exits recorded for `satellites`; workers stop when `cancel` fires.
    pub async fn load(
        identity: Identity,
        store: PieceStore,
        ledger: Arc<Ledger>,
        keys: Arc<SatelliteKeys>,
        satellites: Vec<TrustedSatellite>,
        cancel: CancellationToken,
    ) -> Result<Arc<Exits>> {
        let ids: Vec<NodeId> = satellites.iter().map(|s| s.id).collect();
        let recorded = store
            .with_index(move |index| {
                ids.into_iter()
                    .map(|id| Ok((id, index.record(&state_key(&id))?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        let mut statuses = HashMap::new();
        for (id, json) in recorded {
            if let Some(json) = json {
                match serde_json::from_str(&json) {
                    Ok(status) => {
                        statuses.insert(id, status);
                    }
                    Err(e) => {
                        tracing::warn!(satellite = %id, "ignoring an unreadable exit record: {e}")
                    }
                }
            }
        }
        Ok(Arc::new(Exits {
            identity,
            store,
            ledger,
            keys,
            satellites,
            statuses: Mutex::new(statuses),
            running: Mutex::default(),
            cancel,
        }))
    }

    /// Where the exit from `satellite` stands, if one was started.
    pub fn status(&self, satellite: &NodeId) -> Option<ExitStatus> {
        lock(&self.statuses).get(satellite).cloned()
    }

    /// Goes on with the exits that had not finished when the node stopped.
    pub fn resume(self: &Arc<Self>) {
        let unfinished: Vec<NodeId> = lock(&self.statuses)
            .iter()
            .filter(|(_, status)| status.finished_at.is_none())
            .map(|(id, _)| *id)
            .collect();
        for satellite in unfinished {
            tracing::info!(%satellite, "resuming the graceful exit");
            self.spawn(satellite);
        }
    }

    /// Starts the exit from `satellite` (or leaves a started one as it is);
    /// returns where it stands.
    pub async fn start(self: &Arc<Self>, satellite: NodeId) -> Result<ExitStatus> {
        if !self.satellites.iter().any(|s| s.id == satellite) {
            return Err(Error::UntrustedSatellite(satellite));
        }
        if let Some(status) = self.status(&satellite) {
            if status.finished_at.is_none() {
                self.spawn(satellite);
            }
            return Ok(status);
        }
        let status = ExitStatus {
            started_at: unix_now(),
            ..ExitStatus::default()
        };
        self.save(satellite, status.clone()).await?;
        tracing::info!(%satellite, "graceful exit started by the operator");
        self.spawn(satellite);
        Ok(status)
    }

    fn spawn(self: &Arc<Self>, satellite: NodeId) {
        if !lock(&self.running).insert(satellite) {
            return;
        }
        let exits = self.clone();
        tokio::spawn(async move {
            exits.run(satellite).await;
            lock(&exits.running).remove(&satellite);
        });
    }

    async fn save(&self, satellite: NodeId, status: ExitStatus) -> Result<()> {
        let json = serde_json::to_string(&status).map_err(|e| Error::Io {
            context: "cannot encode an exit's status".into(),
            source: std::io::Error::other(e),
        })?;
        lock(&self.statuses).insert(satellite, status);
        self.store
            .with_index(move |index| index.set_record(&state_key(&satellite), &json))
            .await
    }

    async fn update(&self, satellite: NodeId, change: impl FnOnce(&mut ExitStatus)) {
        let mut status = self.status(&satellite).unwrap_or_default();
        change(&mut status);
        if let Err(e) = self.save(satellite, status).await {
            tracing::warn!(%satellite, "cannot record the exit's progress: {e}");
        }
    }

    /// Drives the exit from `satellite` until it ends or the node stops.
    async fn run(&self, satellite: NodeId) {
        let Some(trusted) = self.satellites.iter().find(|s| s.id == satellite) else {
            return;
        };
        let mut client = match transport::endpoint(&trusted.address) {
            Ok(endpoint) => NodeClient::new(transport::connect_lazy(
                &endpoint.timeout(REQUEST_TIMEOUT),
                satellite,
            )),
            Err(e) => {
                self.update(satellite, |s| {
                    s.last_error = Some(format!("the satellite's address is not usable: {e}"))
                })
                .await;
                return;
            }
        };
        let mut results = Vec::new();
        let mut retry = PAUSE;
        loop {
            let request = sign_exit_request(
                &self.identity,
                ExitRequest {
                    timestamp: unix_now(),
                    results: results.clone(),
                    ..ExitRequest::default()
                },
            );
            let answer = tokio::select! {
                _ = self.cancel.cancelled() => return,
                answer = client.exit(request) => answer,
            };
            let response = match answer {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    // The results are sent again with the next call.
                    let why = archipel_proto::status_reason(&status);
                    tracing::info!(%satellite, "the exit call failed, will retry: {why}");
                    self.update(satellite, |s| s.last_error = Some(why)).await;
                    if self.pause(retry).await {
                        return;
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            retry = PAUSE;
            if self.answered(satellite, &response).await {
                return;
            }
            if response.transfers.is_empty() {
                results = Vec::new();
                if self.pause(PAUSE).await {
                    return;
                }
                continue;
            }
            results = tokio::select! {
                _ = self.cancel.cancelled() => return,
                results = self.transfer_all(satellite, response.transfers) => results,
            };
        }
    }

    /// Sleeps for `wait`; true if the node is stopping.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }

    /// Records what the satellite said; true once the exit has ended.
    async fn answered(&self, satellite: NodeId, response: &ExitResponse) -> bool {
        let progress = response.progress.unwrap_or_default();
        self.update(satellite, |s| {
            s.pieces_transferred = progress.pieces_transferred;
            s.pieces_failed = progress.pieces_failed;
            s.last_error = None;
        })
        .await;
        if !response.failed.is_empty() {
            tracing::warn!(%satellite, "the graceful exit failed: {}", response.failed);
            self.update(satellite, |s| {
                s.failure = Some(response.failed.clone());
                s.finished_at = Some(unix_now());
            })
            .await;
            return true;
        }
        let Some(receipt) = &response.completed else {
            return false;
        };
        let checked = match self.keys.key(satellite, KEY_WAIT).await {
            Ok(key) => {
                verify_exit_completed(&key, self.identity.id(), receipt).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = checked {
            // Without a valid receipt the pieces stay; the next call asks again.
            tracing::warn!(%satellite, "the exit receipt does not check out: {why}");
            self.update(satellite, |s| {
                s.last_error = Some(format!("the exit receipt does not check out: {why}"))
            })
            .await;
            return false;
        }
        self.update(satellite, |s| {
            s.receipt = Some(hex::encode(receipt.encode_to_vec()));
            s.finished_at = Some(unix_now());
        })
        .await;
        match self.store.remove_all(satellite).await {
            Ok(removed) => {
                tracing::info!(
                    %satellite,
                    pieces = removed.pieces,
                    bytes = removed.bytes,
                    "graceful exit completed; the satellite's pieces are deleted"
                );
                self.update(satellite, |s| {
                    s.pieces_deleted = Some(removed.pieces as u64)
                })
                .await;
            }
            Err(e) => {
                tracing::error!(%satellite, "the exit completed, but deleting the satellite's pieces failed: {e}")
            }
        }
        true
    }

    /// Runs `transfers`, a few at a time; returns their results.
    async fn transfer_all(
        &self,
        satellite: NodeId,
        transfers: Vec<ExitTransfer>,
    ) -> Vec<ExitTransferResult> {
        let mut pending = transfers.into_iter();
        let mut running = JoinSet::new();
        let mut results = Vec::new();
        loop {
            while running.len() < CONCURRENT_TRANSFERS {
                let Some(transfer) = pending.next() else {
                    break;
                };
                let (store, ledger) = (self.store.clone(), self.ledger.clone());
                running.spawn(async move { hand_over(&store, &ledger, satellite, transfer).await });
            }
            match running.join_next().await {
                Some(Ok(result)) => results.push(result),
                Some(Err(e)) => tracing::warn!("an exit transfer task failed: {e}"),
                None => return results,
            }
        }
    }
}

/// Uploads one piece to its replacement node; the result names the piece
/// and carries the replacement's signed hash, or why the transfer failed.
async fn hand_over(
    store: &PieceStore,
    ledger: &Ledger,
    satellite: NodeId,
    transfer: ExitTransfer,
) -> ExitTransferResult {
    let mut result = ExitTransferResult {
        limit: transfer.limit.clone(),
        stream_id: transfer.stream_id.clone(),
        position: transfer.position,
        piece_num: transfer.piece_num,
        ..ExitTransferResult::default()
    };
    let sent = tokio::time::timeout(TRANSFER_TIMEOUT, upload(store, satellite, &transfer)).await;
    match sent {
        Ok(Ok((hash, bytes))) => {
            ledger.record(satellite, PieceAction::PutExit, bytes);
            result.hash = Some(hash);
        }
        Ok(Err(why)) => result.error = why,
        Err(_) => result.error = "the transfer timed out".into(),
    }
    result
}

async fn upload(
    store: &PieceStore,
    satellite: NodeId,
    transfer: &ExitTransfer,
) -> std::result::Result<(archipel_proto::pb::PieceHash, u64), String> {
    let limit = transfer
        .limit
        .clone()
        .ok_or("the transfer carries no order limit")?;
    let replacement = NodeId::from_bytes(&limit.node_id).map_err(|e| e.to_string())?;
    let piece_id = orders::piece_id_from_bytes(&transfer.piece_id).map_err(|e| e.to_string())?;
    let piece = store
        .open_piece(satellite, piece_id)
        .await
        .map_err(|e| format!("cannot read the piece: {e}"))?;
    let size = piece.piece_size();
    let mut reader = piece
        .into_data(0, size)
        .await
        .map_err(|e| format!("cannot read the piece: {e}"))?;
    // The piece is read in upload-sized messages and each is sent as read,
    // not gathered into one buffer first; an empty last message says done.
    let mut messages = vec![PieceUploadRequest {
        limit: Some(limit),
        ..PieceUploadRequest::default()
    }];
    let mut bytes = 0u64;
    while let Some(chunk) = reader
        .next(UPLOAD_MESSAGE)
        .await
        .map_err(|e| format!("cannot read the piece: {e}"))?
    {
        bytes += chunk.len() as u64;
        messages.push(PieceUploadRequest {
            data: chunk,
            ..PieceUploadRequest::default()
        });
    }
    messages.push(PieceUploadRequest {
        done: true,
        ..PieceUploadRequest::default()
    });
    let endpoint = transport::endpoint(&transfer.address)
        .map_err(|e| format!("the replacement's address is not usable: {e}"))?
        .timeout(TRANSFER_TIMEOUT);
    let channel = transport::connect(&endpoint, replacement)
        .await
        .map_err(|e| format!("cannot reach the replacement node: {e}"))?;
    let hash = PiecestoreClient::new(channel)
        .upload(tokio_stream::iter(messages))
        .await
        .map_err(|s| format!("the replacement refused the piece: {}", s.message()))?
        .into_inner()
        .hash
        .ok_or("the replacement sent no piece hash")?;
    Ok((hash, bytes))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
