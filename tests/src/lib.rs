//! The in-process test network ("planet"): one satellite and N storage nodes,
//! the real servers, each on its own 127.0.0.1 port with its own temp dir, all in
//! the test's process. Every test builds its own planet, so tests run in parallel.
//!
//! Fault injection works on the real thing: stop and restart nodes, silence them
//! (a listener that accepts and never answers), and corrupt or delete piece
//! files on their disks. The satellite's admin API always runs, on a port and
//! with a token of its own.
//!
//! Also here: the seeded churn simulation of the durability loop ([`churn`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipel_client::{Access, Project};
use archipel_proto::{transport, Identity, NodeId, NodeUrl, Redundancy};
pub use archipel_satellite::testing::Backend;
use archipel_satellite::testing::FreshDatabase;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub mod churn;

/// Everything a planet can fail with; tests unwrap it.
#[derive(Debug, thiserror::Error)]
pub enum PlanetError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("satellite: {0}")]
    Satellite(#[from] archipel_satellite::Error),
    #[error("storage node: {0}")]
    Node(#[from] archipel_storagenode::Error),
    #[error("client: {0}")]
    Client(#[from] archipel_client::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] archipel_proto::Error),
    #[error("connection: {}", archipel_proto::error_chain(.0))]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, PlanetError>;

/// The identity difficulty planets require of nodes: low, so that start-up
/// stays fast, but not zero, so that the check runs.
pub const PLANET_IDENTITY_DIFFICULTY: u32 = 4;

#[derive(Clone, Debug)]
pub struct PlanetConfig {
    pub nodes: usize,
    pub backend: Backend,
    pub redundancy: Redundancy,
    pub max_segment_size: u64,
    pub inline_threshold: u64,
}

impl Default for PlanetConfig {
    fn default() -> Self {
        PlanetConfig {
            nodes: 10,
            backend: Backend::Sqlite,
            redundancy: Redundancy::new(4, 6, 8, 10, 1024).expect("a valid scheme"),
            max_segment_size: 1 << 20,
            inline_threshold: 4096,
        }
    }
}

impl PlanetConfig {
    pub fn with_backend(backend: Backend) -> Self {
        PlanetConfig {
            backend,
            ..Default::default()
        }
    }
}

/// A server task started in-process, stopped through its shutdown channel.
struct RunningServer {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::result::Result<(), String>>,
}

impl RunningServer {
    async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PlanetError::Other(e)),
            Err(e) => Err(PlanetError::Other(format!("server task failed: {e}"))),
        }
    }
}

fn shutdown_pair() -> (
    oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

pub struct StorageNode {
    pub identity: Identity,
    pub config: archipel_storagenode::Config,
    pub address: SocketAddr,
    server: Option<RunningServer>,
}

impl StorageNode {
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Every piece file this node holds (not counting its trash).
    pub fn piece_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_files(&self.config.storage_dir, &mut files);
        files.retain(|f| archipel_storagenode::is_piece_file(f));
        files
    }

    /// Every piece file in this node's trash.
    pub fn trash_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_files(&self.config.storage_dir, &mut files);
        files.retain(|f| archipel_storagenode::is_trashed_piece_file(f));
        files
    }

    /// Bytes of the piece files this node holds (not counting its trash).
    pub fn piece_bytes(&self) -> u64 {
        self.piece_files()
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub struct Planet {
    pub satellite_identity: Identity,
    pub satellite_address: SocketAddr,
    pub satellite_config: archipel_satellite::Config,
    pub nodes: Vec<StorageNode>,
    pub api_key: String,
    access: Access,
    satellite: Option<RunningServer>,
    _database: FreshDatabase,
    _dir: tempfile::TempDir,
}

impl Planet {
    /// Starts a planet whose satellite neither audits nor repairs (so that tests
    /// injecting faults see only their own effects); see [`Planet::start_with`].
    pub async fn start(config: PlanetConfig) -> Result<Planet> {
        Planet::start_with(config, |_| {}).await
    }

    /// Starts a planet after `configure` has adjusted the satellite's config
    /// (audits and repair are off unless it turns them on).
    pub async fn start_with(
        config: PlanetConfig,
        configure: impl FnOnce(&mut archipel_satellite::Config),
    ) -> Result<Planet> {
        let dir = tempfile::tempdir()?;
        let database = FreshDatabase::create(config.backend, dir.path()).await?;
        let satellite_identity = Identity::generate();
        let mut satellite_config = archipel_satellite::Config::new(database.url());
        satellite_config.redundancy = config.redundancy;
        satellite_config.max_segment_size = config.max_segment_size;
        satellite_config.inline_threshold = config.inline_threshold;
        satellite_config.distinct_subnets = false;
        satellite_config.min_identity_difficulty = PLANET_IDENTITY_DIFFICULTY;
        satellite_config.audit.enabled = false;
        satellite_config.repair.enabled = false;
        let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
        satellite_config.admin = archipel_satellite::admin::AdminConfig {
            listen_address: admin_listener.local_addr()?.to_string(),
            token: archipel_satellite::admin::AdminConfig::random_token(),
        };
        configure(&mut satellite_config);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let satellite_address = listener.local_addr()?;
        // The project is created first: that also migrates the database, which
        // the satellite would otherwise try at the same moment.
        let api_key = archipel_satellite::create_project(database.url(), "test").await?;
        let satellite = start_satellite(
            satellite_config.clone(),
            satellite_identity.clone(),
            listener,
            admin_listener,
        );

        let mut nodes = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let storage_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&storage_dir)?;
            let mut node_config = archipel_storagenode::Config::new(storage_dir);
            node_config.satellites = vec![archipel_storagenode::TrustedSatellite {
                id: satellite_identity.id(),
                address: satellite_address.to_string(),
            }];
            node_config.check_in_interval = Duration::from_secs(1);
            // Expired pieces leave the disk within moments, as tests expect.
            node_config.expiration_sweep_interval = Duration::from_millis(200);
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            let identity = Identity::generate_with_difficulty(PLANET_IDENTITY_DIFFICULTY);
            let server = start_node(node_config.clone(), identity.clone(), listener);
            nodes.push(StorageNode {
                identity,
                config: node_config,
                address,
                server: Some(server),
            });
        }
        wait_for_check_ins(&database, config.nodes).await?;
        let satellite_url = archipel_proto::NodeUrl {
            id: satellite_identity.id(),
            address: satellite_address.to_string(),
        };
        let access = Access::request(&satellite_url, &api_key, "planet passphrase").await?;
        Ok(Planet {
            satellite_identity,
            satellite_address,
            satellite_config,
            nodes,
            api_key,
            access,
            satellite: Some(satellite),
            _database: database,
            _dir: dir,
        })
    }

    /// A node's health as the satellite keeps it (the node must be known).
    pub async fn node_health(
        &self,
        node: NodeId,
    ) -> Result<archipel_satellite::reputation::NodeHealth> {
        self.metabase()
            .await?
            .node_health(&node, &self.satellite_config.reputation)
            .await?
            .ok_or_else(|| PlanetError::Other(format!("node {node} is unknown")))
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A client connected with the planet's access grant.
    pub async fn project(&self) -> Result<Project> {
        Ok(Project::open(&self.access).await?)
    }

    /// The satellite as clients dial it: `ID@127.0.0.1:PORT`.
    pub fn satellite_url(&self) -> NodeUrl {
        self.access.satellite()
    }

    /// A gRPC channel to the satellite, over TLS pinned to its id, for tests
    /// that speak the protocol themselves.
    pub async fn satellite_channel(&self) -> Result<Channel> {
        pinned_channel(&self.satellite_address, self.satellite_identity.id()).await
    }

    /// A gRPC channel to node `i`'s piecestore, over TLS pinned to its id.
    pub async fn node_channel(&self, i: usize) -> Result<Channel> {
        pinned_channel(&self.nodes[i].address, self.nodes[i].id()).await
    }

    /// The satellite's admin API, e.g. `http://127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.satellite_config.admin.listen_address)
    }

    /// The bearer token of the satellite's admin API.
    pub fn admin_token(&self) -> &str {
        &self.satellite_config.admin.token
    }

    pub fn database_url(&self) -> &str {
        self._database.url()
    }

    /// The satellite's metabase, opened once, for inspection.
    pub async fn metabase(&self) -> Result<&archipel_satellite::Metabase> {
        Ok(self._database.metabase().await?)
    }

    /// Every remote segment of committed objects not expired now (up to a
    /// thousand), in (stream id, position) order.
    pub async fn remote_segments(&self) -> Result<Vec<archipel_satellite::metabase::Segment>> {
        Ok(self
            .metabase()
            .await?
            .committed_remote_segments_from(&[], 1000, archipel_proto::orders::unix_now())
            .await?)
    }

    /// Where the nodes keep the pieces that committed segments list. Files
    /// of pieces no segment lists (an upload's cancelled long tail) are
    /// not among them.
    pub async fn committed_piece_files(&self) -> Result<std::collections::BTreeSet<PathBuf>> {
        let satellite = self.satellite_identity.id();
        let mut files = std::collections::BTreeSet::new();
        for segment in self.remote_segments().await? {
            for piece in &segment.pieces {
                let Some(i) = self.node_index(piece.node) else {
                    continue;
                };
                let id = archipel_proto::orders::derive_piece_id(
                    &segment.root_piece_id,
                    &piece.node,
                    piece.num.into(),
                );
                files.insert(archipel_storagenode::piece_path(
                    &self.nodes[i].config.storage_dir,
                    &satellite,
                    &id,
                ));
            }
        }
        Ok(files)
    }

    /// The indices of the nodes holding a piece some committed segment lists.
    pub async fn holders(&self) -> Result<Vec<usize>> {
        let mut holders: Vec<usize> = self
            .remote_segments()
            .await?
            .iter()
            .flat_map(|segment| &segment.pieces)
            .filter_map(|piece| self.node_index(piece.node))
            .collect();
        holders.sort_unstable();
        holders.dedup();
        Ok(holders)
    }

    /// Stops node `i` and puts a [`SilentListener`] on its address instead.
    pub async fn silence_node(&mut self, i: usize) -> Result<SilentListener> {
        self.stop_node(i).await?;
        SilentListener::bind(self.nodes[i].address).await
    }

    /// Stops node `i` (its data stays on disk).
    pub async fn stop_node(&mut self, i: usize) -> Result<()> {
        if let Some(server) = self.nodes[i].server.take() {
            server.stop().await?;
        }
        Ok(())
    }

    /// Starts a stopped node again on its old address with its old data.
    pub async fn restart_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        if node.server.is_none() {
            let listener = TcpListener::bind(node.address).await?;
            node.server = Some(start_node(
                node.config.clone(),
                node.identity.clone(),
                listener,
            ));
        }
        Ok(())
    }

    /// Stops node `i` and starts in its place, on its address, a real storage
    /// node with another identity and an empty disk, trusting the same
    /// satellite: an impostor that clients and the satellite meet when they
    /// dial node `i`.
    pub async fn impersonate_node(&mut self, i: usize) -> Result<Impostor> {
        self.stop_node(i).await?;
        let storage_dir = self._dir.path().join(format!("impostor{i}"));
        std::fs::create_dir_all(&storage_dir)?;
        let mut config = self.nodes[i].config.clone();
        config.storage_dir = storage_dir;
        let identity = Identity::generate();
        let listener = TcpListener::bind(self.nodes[i].address).await?;
        let server = start_node(config, identity.clone(), listener);
        Ok(Impostor { identity, server })
    }

    /// Every stored piece file on the running nodes.
    pub fn running_piece_files(&self) -> std::collections::BTreeSet<PathBuf> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .flat_map(|n| n.piece_files())
            .collect()
    }

    /// Index of the node with this id.
    pub fn node_index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == id)
    }

    /// Stops the satellite and starts it again on the same addresses and
    /// database, after `configure` has changed its configuration.
    pub async fn restart_satellite(
        &mut self,
        configure: impl FnOnce(&mut archipel_satellite::Config),
    ) -> Result<()> {
        if let Some(satellite) = self.satellite.take() {
            satellite.stop().await?;
        }
        configure(&mut self.satellite_config);
        let listener = TcpListener::bind(self.satellite_address).await?;
        let admin_listener = TcpListener::bind(&self.satellite_config.admin.listen_address).await?;
        self.satellite = Some(start_satellite(
            self.satellite_config.clone(),
            self.satellite_identity.clone(),
            listener,
            admin_listener,
        ));
        Ok(())
    }

    /// Stops every server and waits for them to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        if let Some(satellite) = self.satellite.take() {
            satellite.stop().await?;
        }
        Ok(())
    }
}

/// A real storage node answering on another node's address; see
/// [`Planet::impersonate_node`].
pub struct Impostor {
    pub identity: Identity,
    server: RunningServer,
}

impl Impostor {
    pub async fn stop(self) -> Result<()> {
        self.server.stop().await
    }
}

/// A TCP listener that accepts connections and holds them without ever
/// speaking: a node that is there but does not answer.
pub struct SilentListener {
    task: JoinHandle<()>,
}

impl SilentListener {
    pub async fn bind(address: SocketAddr) -> Result<SilentListener> {
        let listener = TcpListener::bind(address).await?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Ok(SilentListener { task })
    }

    /// Closes the listener and every connection it holds, and waits until they are.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_satellite(
    config: archipel_satellite::Config,
    identity: Identity,
    listener: TcpListener,
    admin_listener: TcpListener,
) -> RunningServer {
    let (shutdown, signal) = shutdown_pair();
    let task = tokio::spawn(async move {
        archipel_satellite::run(config, identity, listener, Some(admin_listener), signal)
            .await
            .map_err(|e| e.to_string())
    });
    RunningServer { shutdown, task }
}

fn start_node(
    config: archipel_storagenode::Config,
    identity: Identity,
    listener: TcpListener,
) -> RunningServer {
    let (shutdown, signal) = shutdown_pair();
    let task = tokio::spawn(async move {
        archipel_storagenode::run(config, identity, listener, signal)
            .await
            .map_err(|e| e.to_string())
    });
    RunningServer { shutdown, task }
}

/// Waits until the satellite's registry holds `count` nodes.
async fn wait_for_check_ins(database: &FreshDatabase, count: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let known = database.node_count().await?;
        if known >= count {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(PlanetError::Other(format!(
                "only {known} of {count} nodes checked in"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pinned_channel(address: &SocketAddr, id: NodeId) -> Result<Channel> {
    let endpoint = transport::endpoint(&address.to_string())?;
    Ok(transport::connect(&endpoint, id).await?)
}

/// Polls `check` every 100 ms until it holds; panics with `what` after a
/// minute (tests wait for background work: check-ins, audits, repairs).
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pseudo-random bytes for test objects, reproducible from a seed.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Declares each listed `async fn name(backend: Backend)` as two tests, one per
/// metabase backend: `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}
