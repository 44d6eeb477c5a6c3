//! The Archipel satellite: the coordinator that keeps encrypted metadata (the
//! [`metabase`]), the registry of storage nodes ([`overlay`]), and serves the
//! `Node` (check-in) and `Metainfo` gRPC services on one listener ([`service`]).
//! Pieces of removed segments are queued in the metabase and deleted from
//! their nodes by a worker that retries until they are ([`deletes`]); retain
//! filters collect whatever else nodes hold that no segment lists ([`gc`]);
//! abandoned uploads and expired objects are swept by a cleanup worker
//! ([`worker`]).
//! Audit workers check that nodes keep their pieces ([`audit`]) and move their
//! reputation ([`reputation`]), which node selection heeds. The repair checker
//! and repairers ([`repair`]) keep every segment above its repair threshold,
//! judging pieces by [`health`]; workers count what they do in [`metrics`].
//! Operators watch and steer it through the [`admin`] HTTP API.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::latency::RecordLatency;
use archipel_proto::{transport, Identity, Redundancy};
use tokio::net::TcpListener;

pub mod admin;
pub mod audit;
pub mod cli;
pub mod deletes;
mod error;
pub mod exit;
pub mod gc;
pub mod health;
pub mod metabase;
pub mod metrics;
pub mod orders;
pub mod overlay;
pub mod permission;
pub mod repair;
pub mod reputation;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;
pub mod worker;

pub use error::{Error, Result};
pub use metabase::Metabase;

/// The satellite's configuration (the `config.toml` written by `setup`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Metabase location: `sqlite://PATH?mode=rwc` (embedded, the default) or
    /// `postgres://user@host/db` (production; CockroachDB-compatible SQL).
    pub database_url: String,
    /// File holding the satellite's Ed25519 identity (binary only).
    pub identity_path: PathBuf,
    /// Address the gRPC server listens on (binary only).
    pub listen_address: String,
    /// Erasure coding of new segments: `k/repair/success/total[/share_size]`.
    #[serde(with = "redundancy_text")]
    pub redundancy: Redundancy,
    /// Largest plaintext segment a client may upload, in bytes.
    pub max_segment_size: u64,
    /// Encrypted segments up to this many bytes are stored inline in the metabase.
    pub inline_threshold: u64,
    /// Put at most one piece of a segment in each /24 (IPv4) or /64 (IPv6) network.
    pub distinct_subnets: bool,
    /// A node counts as online if it checked in within this window.
    #[serde(with = "humantime_serde")]
    pub node_online_window: Duration,
    /// How long order limits stay valid after they are issued.
    #[serde(with = "humantime_serde")]
    pub order_expiration: Duration,
    /// Uploads not committed within this are deleted with their pieces.
    #[serde(with = "humantime_serde")]
    pub pending_object_expiration: Duration,
    /// Multipart uploads neither completed nor aborted within this are deleted
    /// with their parts.
    #[serde(with = "humantime_serde")]
    pub multipart_upload_expiration: Duration,
    /// How often the cleanup worker looks for abandoned uploads and expired objects.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// The check-in interval the satellite asks nodes to keep.
    #[serde(with = "humantime_serde")]
    pub check_in_interval: Duration,
    /// Check-ins from node ids with fewer trailing zero bits are refused: a
    /// proof of work that makes mass-produced identities cost CPU time
    /// (`archipel-node setup --difficulty`). A file written before this
    /// setting existed reads as 0, so an upgrade never locks existing nodes
    /// out; new configurations get [`archipel_proto::DEFAULT_IDENTITY_DIFFICULTY`].
    #[serde(default)]
    pub min_identity_difficulty: u32,
    /// Audits: whether, how often, how patiently (the `[audit]` section).
    pub audit: audit::AuditConfig,
    /// Reputation, disqualification, suspension and vetting (the `[reputation]` section).
    pub reputation: reputation::ReputationConfig,
    /// The repair checker and workers (the `[repair]` section).
    pub repair: repair::RepairConfig,
    /// The admin HTTP API and Prometheus metrics (the `[admin]` section).
    pub admin: admin::AdminConfig,
    /// Garbage collection: retain filters and piece deletions (the `[gc]` section).
    pub gc: gc::GcConfig,
    /// Graceful exit of nodes (the `[exit]` section).
    pub exit: exit::ExitConfig,
}

/// The redundancy scheme as `k/repair/success/total/share_size` text in TOML.
mod redundancy_text {
    use archipel_proto::Redundancy;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Redundancy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "{}/{}/{}/{}/{}",
            r.required, r.repair, r.success, r.total, r.share_size
        ))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Redundancy, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A byte count as the signed 64-bit integer the database and the protocol
/// carry, saturating (no real size comes near the limit).
pub(crate) fn size_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Unix seconds as an RFC 3339 time, for messages.
pub(crate) fn format_unix(unix_seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Encrypted segments up to this size are kept in the metabase by default:
/// an object this small costs one request and one transaction instead of
/// `total` piece uploads and their order limits, and its row stays within a
/// few times the piece list a remote segment would need anyway (see
/// docs/PERFORMANCE.md, "Small objects").
pub const DEFAULT_INLINE_THRESHOLD: u64 = 16 << 10;

/// Production redundancy: Storj's 29/35/80/110.
pub fn default_redundancy() -> Redundancy {
    Redundancy {
        required: 29,
        repair: 35,
        success: 80,
        total: 110,
        share_size: archipel_proto::redundancy::DEFAULT_SHARE_SIZE,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://satellite.db?mode=rwc".into(),
            identity_path: PathBuf::from("identity"),
            listen_address: "0.0.0.0:7777".into(),
            redundancy: default_redundancy(),
            max_segment_size: 64 << 20,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            distinct_subnets: true,
            node_online_window: Duration::from_secs(4 * 3600),
            order_expiration: Duration::from_secs(3600),
            pending_object_expiration: Duration::from_secs(24 * 3600),
            multipart_upload_expiration: Duration::from_secs(7 * 24 * 3600),
            cleanup_interval: Duration::from_secs(600),
            check_in_interval: Duration::from_secs(3600),
            min_identity_difficulty: archipel_proto::DEFAULT_IDENTITY_DIFFICULTY,
            audit: audit::AuditConfig::default(),
            reputation: reputation::ReputationConfig::default(),
            repair: repair::RepairConfig::default(),
            admin: admin::AdminConfig::default(),
            gc: gc::GcConfig::default(),
            exit: exit::ExitConfig::default(),
        }
    }
}

impl Config {
    /// Defaults with the given database, for tests.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            ..Config::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.redundancy
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if self.max_segment_size == 0 {
            return Err(Error::Config("max_segment_size must be positive".into()));
        }
        // Clients buffer an inline segment whole, and take no more than this.
        if self.inline_threshold > 1 << 20 {
            return Err(Error::Config(
                "inline_threshold must be at most 1 MiB (1048576 bytes)".into(),
            ));
        }
        if self.cleanup_interval.is_zero() || self.check_in_interval.is_zero() {
            return Err(Error::Config(
                "cleanup_interval and check_in_interval must be positive".into(),
            ));
        }
        self.audit.validate()?;
        self.repair.validate()?;
        self.gc.validate()?;
        self.exit.validate()?;
        self.reputation.validate()
    }
}

/// Longest a gRPC request may take on the satellite: far more than any
/// metadata call needs, but a bound on what a stalled client can hold.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Serves the satellite's gRPC services on `listener` (TLS with its identity), and the admin API on
/// `admin` if given (see [`admin::AdminConfig::bind`]), until `shutdown`
/// completes.
pub async fn run(
    config: Config,
    identity: Identity,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    if admin.is_some() && !config.admin.enabled() {
        return Err(Error::Config(
            "the admin API needs a token in the [admin] section".into(),
        ));
    }
    let tls = transport::ServerTls::new(&identity)?;
    let metabase = Metabase::connect(&config.database_url).await?;
    let orders = orders::OrderSigner::new(identity.clone(), config.order_expiration);
    let metrics = Arc::new(metrics::Metrics::default());
    let deleter = deletes::PieceDeleter::new(
        orders.clone(),
        metabase.clone(),
        config.gc.clone(),
        metrics.clone(),
    );
    let mut state = service::State::new(
        config.clone(),
        identity.clone(),
        metabase.clone(),
        deleter.clone(),
        metrics.clone(),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    if config.audit.enabled {
        let auditor = audit::Auditor::new(
            orders.clone(),
            metabase.clone(),
            config.audit.clone(),
            config.reputation.clone(),
            metrics.clone(),
        );
        let (requests, audits) = audit::spawn_workers(auditor, stop_rx.clone());
        state.audit_requests = Some(requests);
        workers.extend(audits);
    }
    if config.repair.enabled {
        workers.push(tokio::spawn(worker::run_worker(
            "repair checker",
            config.repair.checker_interval,
            stop_rx.clone(),
            repair::checker::Checker::new(config.clone(), metabase.clone(), metrics.clone()),
        )));
        let repairer = repair::repairer::Repairer::new(
            config.clone(),
            orders,
            metabase.clone(),
            deleter.clone(),
            metrics.clone(),
        );
        for _ in 0..config.repair.workers {
            workers.push(tokio::spawn(worker::run_worker(
                "repair",
                config.repair.interval,
                stop_rx.clone(),
                repairer.clone(),
            )));
        }
    }
    let retain = gc::RetainSender::new(
        metabase.clone(),
        identity.clone(),
        config.gc.clone(),
        metrics.clone(),
    );
    let admin = admin.map(|listener| {
        tokio::spawn(admin::serve(
            listener,
            config.clone(),
            metabase.clone(),
            metrics.clone(),
            retain.clone(),
            stop_rx.clone(),
        ))
    });
    let state = Arc::new(state);
    workers.push(tokio::spawn(worker::run_worker(
        "piece deletion",
        config.gc.delete_interval,
        stop_rx.clone(),
        deleter.clone(),
    )));
    if config.gc.retain {
        workers.push(tokio::spawn(worker::run_worker(
            "retain filters",
            config.gc.retain_interval,
            stop_rx.clone(),
            retain,
        )));
    }
    workers.push(tokio::spawn(worker::run_worker(
        "silent exiting nodes",
        config.exit.check_interval,
        stop_rx.clone(),
        exit::ExitWatcher::new(metabase.clone(), config.exit.clone()),
    )));
    workers.push(tokio::spawn(worker::run_worker(
        "cleanup of abandoned uploads and expired objects",
        config.cleanup_interval,
        stop_rx,
        worker::Cleanup::new(
            metabase.clone(),
            deleter,
            config.pending_object_expiration,
            config.multipart_upload_expiration,
        ),
    )));

    tracing::info!(
        "satellite {} serving on {}",
        state.identity.id(),
        listener.local_addr()?
    );
    let (connections, accepting) = transport::incoming(listener, tls);
    let served = transport::server(REQUEST_TIMEOUT)
        .layer(RecordLatency::new(metrics.rpc_latencies.clone()))
        .add_service(archipel_proto::pb::node_server::NodeServer::from_arc(
            state.clone(),
        ))
        .add_service(archipel_proto::pb::metainfo_server::MetainfoServer::from_arc(state))
        .serve_with_incoming_shutdown(connections, shutdown)
        .await;
    accepting.closed().await;
    let _ = stop_tx.send(true);
    for worker in workers {
        if let Err(e) = worker.await {
            tracing::warn!("a background worker ended abnormally: {e}");
        }
    }
    if let Some(admin) = admin {
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("the admin API failed: {e}"),
            Err(e) => tracing::warn!("the admin API ended abnormally: {e}"),
        }
    }
    metabase.close().await;
    Ok(served?)
}

/// Creates a project in the database at `database_url` (migrating it first if
/// needed) and returns the project's API key.
pub async fn create_project(database_url: &str, name: &str) -> Result<String> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument("a project needs a name".into()));
    }
    let metabase = Metabase::connect(database_url).await?;
    let key = metabase
        .create_project(name, archipel_proto::orders::unix_now())
        .await;
    metabase.close().await;
    key
}
