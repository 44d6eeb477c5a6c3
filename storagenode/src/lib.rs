//! The Archipel storage node: keeps pieces on disk for the satellites it
//! trusts and serves them to clients holding the satellites' order limits.
//!
//! - [`config`]: the node's configuration;
//! - [`store`]: piece files on disk, the trash, space accounting, expirations;
//! - [`index`]: the piece index and space per satellite, in the node's SQLite database;
//! - [`retain`]: garbage collection (retain filters, trash restore, emptying);
//! - [`piecestore`]: the `Piecestore` gRPC service (upload, ranged download, delete);
//! - [`bandwidth`]: bytes transferred per satellite, action and day;
//! - [`disk`]: the disk's write probe;
//! - [`contact`]: periodic check-in with each trusted satellite;
//! - [`standing`]: the node's standing with each satellite, from check-ins;
//! - [`exit`]: graceful exit from a satellite, started by the operator;
//! - [`dashboard`]: the operator's web page, JSON report and Prometheus metrics;
//! - [`metrics`]: counters of transfers and garbage collection;
//! - [`trust`]: trusted satellites and their cached public keys;
//! - [`serials`]: used order serials, kept on disk (replay protection);
//! - [`error`]: the crate's error type and its gRPC status mapping.
//!
//! [`run`] wires them together on a bound listener until shutdown.

pub mod bandwidth;
pub mod cli;
pub mod config;
pub mod contact;
pub mod dashboard;
pub mod disk;
pub mod error;
pub mod exit;
pub mod index;
pub mod metrics;
pub mod piecestore;
pub mod retain;
pub mod serials;
pub mod standing;
pub mod store;
pub mod trust;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::pb::piecestore_server::PiecestoreServer;
use archipel_proto::{orders, transport, Identity};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, TrustedSatellite};
pub use error::{Error, Result};
pub use store::{
    is_piece_file, is_trashed_piece_file, piece_path, trash_path, PieceStore, PIECE_HEADER_SIZE,
};

use bandwidth::Ledger;
use contact::{CheckInContext, SatelliteContact};
use dashboard::Dashboard;
use exit::Exits;
use metrics::NodeMetrics;
use piecestore::{PiecestoreService, MAX_UPLOAD_MESSAGE_SIZE};
use serials::UsedSerials;
use standing::Standings;
use trust::SatelliteKeys;

/// Longest a piece transfer may take: a whole piece of a 64 MiB segment
/// over a slow link fits, a client holding a request open forever does not.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs a storage node on `listener` (TLS with its identity) until `shutdown`
/// completes: opens the piece store and the log of used serials, probes the
/// disk, starts check-ins with every trusted satellite, the housekeeping of
/// expired pieces and the trash, and the dashboard on `dashboard` if given,
/// and serves the piecestore. On shutdown it stops taking requests, lets
/// running ones finish, and stops the background loops.
pub async fn run(
    config: Config,
    identity: Identity,
    listener: TcpListener,
    dashboard: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let local = listener
        .local_addr()
        .map_err(Error::io("cannot read the listener's address"))?;
    let address = match &config.advertised_address {
        Some(address) => address.clone(),
        None => {
            if local.ip().is_unspecified() {
                tracing::warn!(%local, "advertising an unspecified address; set advertised_address so clients can reach this node");
            }
            local.to_string()
        }
    };
    if config.satellites.is_empty() {
        tracing::warn!("no trusted satellite is configured; this node will refuse every order");
    }
    let contacts = config
        .satellites
        .iter()
        .cloned()
        .map(SatelliteContact::new)
        .collect::<Result<Vec<_>>>()?;

    let store = PieceStore::open(config.storage_dir.clone(), config.allocated_bytes).await?;
    let serials = UsedSerials::open(&config.storage_dir, orders::unix_now()).await?;
    let keys = Arc::new(SatelliteKeys::load(&config.storage_dir, config.satellites.clone()).await?);
    let satellite_ids: Vec<_> = config.satellites.iter().map(|s| s.id).collect();
    let standings = Arc::new(Standings::load(store.clone(), &satellite_ids).await?);
    let ledger = Arc::new(Ledger::new(store.clone()));
    let metrics = Arc::new(NodeMetrics::default());
    tracing::info!(node = %identity.id(), %local, advertised = %address, "storage node starting");
    disk::check(&store).await;

    let cancel = CancellationToken::new();
    let mut background = JoinSet::new();
    let exits = Exits::load(
        identity.clone(),
        store.clone(),
        ledger.clone(),
        keys.clone(),
        config.satellites.clone(),
        cancel.clone(),
    )
    .await?;
    exits.resume();
    if let Some(listener) = dashboard {
        let dashboard = Arc::new(Dashboard {
            node_id: identity.id(),
            started_at: orders::unix_now(),
            satellites: config.satellites.clone(),
            store: store.clone(),
            ledger: ledger.clone(),
            standings: standings.clone(),
            metrics: metrics.clone(),
            exits,
            operator_token: dashboard::write_operator_token(&config.storage_dir)?,
        });
        match listener.local_addr() {
            Ok(at) if !at.ip().is_loopback() => tracing::warn!(
                %at,
                "the dashboard listens beyond loopback and has no login: anyone who reaches it sees the node's figures"
            ),
            Ok(at) => tracing::info!("dashboard at http://{at}/"),
            Err(_) => {}
        }
        let cancel = cancel.clone();
        background.spawn(async move {
            if let Err(e) = dashboard::serve(dashboard, listener, cancel).await {
                tracing::error!("the dashboard stopped: {e}");
            }
        });
    }
    background.spawn(disk::watch(
        store.clone(),
        config.disk_probe_interval,
        cancel.clone(),
    ));
    {
        let (ledger, cancel) = (ledger.clone(), cancel.clone());
        background.spawn(async move { ledger.run(cancel).await });
    }
    let context = Arc::new(CheckInContext {
        identity: identity.clone(),
        store: store.clone(),
        keys: keys.clone(),
        standings,
        address,
        interval: config.check_in_interval,
    });
    for contact in contacts {
        background.spawn(contact.run(context.clone(), cancel.clone()));
    }
    if !store.reconciled() {
        let (store, cancel) = (store.clone(), cancel.clone());
        background.spawn(async move {
            match store.reconcile(cancel).await {
                Ok(report) if store.reconciled() => tracing::info!(
                    files_indexed = report.files_indexed,
                    rows_corrected = report.rows_corrected,
                    "the piece index matches the disk"
                ),
                Ok(_) => tracing::info!("stopped checking the piece index against the disk"),
                Err(e) => tracing::error!("cannot check the piece index against the disk: {e}"),
            }
        });
    }
    background.spawn(retain::housekeeping(
        store.clone(),
        metrics.clone(),
        config.expiration_sweep_interval,
        config.trash_retention,
        cancel.clone(),
    ));

    let tls = transport::ServerTls::new(&identity).map_err(Error::Tls)?;
    let service = PiecestoreServer::new(PiecestoreService::new(
        identity,
        store.clone(),
        keys,
        serials,
        config.upload_idle_timeout,
        ledger,
        metrics,
    ))
    .max_decoding_message_size(MAX_UPLOAD_MESSAGE_SIZE);
    let stop = cancel.clone();
    let (connections, accepting) = transport::incoming(listener, tls);
    let served = transport::server(REQUEST_TIMEOUT)
        .add_service(service)
        .serve_with_incoming_shutdown(connections, async move {
            shutdown.await;
            tracing::info!("storage node shutting down");
            stop.cancel();
        })
        .await;
    accepting.closed().await;
    cancel.cancel();
    while background.join_next().await.is_some() {}
    served?;
    store.close().await?;
    tracing::info!("storage node stopped");
    Ok(())
}
