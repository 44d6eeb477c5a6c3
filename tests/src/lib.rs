//! The in-process test network ("planet"): one satellite (or several
//! independent ones, every node trusting them all) and N storage nodes, the
//! real servers, each on its own 127.0.0.1 port with its own temp dir, all in
//! the test's process. Every test builds its own planet, so tests run in parallel.
//!
//! Fault injection works on the real thing: stop and restart nodes, silence them
//! (a listener that accepts and never answers), and corrupt or delete piece
//! files on their disks. Each satellite's admin API always runs, on a port and
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
    /// Independent satellites, each with its own identity, metabase, admin
    /// API and project; every node trusts them all. At least one.
    pub satellites: usize,
    pub backend: Backend,
    pub redundancy: Redundancy,
    pub max_segment_size: u64,
    pub inline_threshold: u64,
}

impl Default for PlanetConfig {
    fn default() -> Self {
        PlanetConfig {
            nodes: 10,
            satellites: 1,
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
    /// Where its dashboard (web page, `/api/node`, `/metrics`) listens.
    pub dashboard: SocketAddr,
    server: Option<RunningServer>,
}

impl StorageNode {
    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The dashboard's base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn dashboard_url(&self) -> String {
        format!("http://{}", self.dashboard)
    }

    /// Every piece file this node holds (not counting its trash).
    pub fn piece_files(&self) -> Vec<PathBuf> {
        files_under(
            &self.config.storage_dir,
            archipel_storagenode::is_piece_file,
        )
    }

    /// Every piece file in this node's trash.
    pub fn trash_files(&self) -> Vec<PathBuf> {
        files_under(
            &self.config.storage_dir,
            archipel_storagenode::is_trashed_piece_file,
        )
    }

    /// The piece files this node holds for `satellite` (not counting its trash).
    pub fn piece_files_of(&self, satellite: NodeId) -> Vec<PathBuf> {
        let any = archipel_storagenode::piece_path(&self.config.storage_dir, &satellite, &[0; 32]);
        files_under(satellite_dir(&any), archipel_storagenode::is_piece_file)
    }

    /// The piece files in this node's trash that `satellite` stored.
    pub fn trash_files_of(&self, satellite: NodeId) -> Vec<PathBuf> {
        let any = archipel_storagenode::trash_path(&self.config.storage_dir, &satellite, &[0; 32]);
        files_under(
            satellite_dir(&any),
            archipel_storagenode::is_trashed_piece_file,
        )
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

/// The directory a satellite's pieces (or trashed pieces) live under, from
/// the path the store gives one of them: the storage node's layout
/// (`ROOT/SATELLITE/FAN-OUT/PIECE`) stays the storage node's to define.
fn satellite_dir(piece: &Path) -> &Path {
    piece.parent().and_then(Path::parent).unwrap_or(piece)
}

/// The files under `dir`, at any depth, that `keep` accepts.
fn files_under(dir: &Path, keep: fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.retain(|f| keep(f));
    files
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

/// One satellite of a planet, with its own identity, metabase, admin API and
/// project (and an access grant for that project).
pub struct Satellite {
    pub identity: Identity,
    pub address: SocketAddr,
    pub config: archipel_satellite::Config,
    /// The API key of its project.
    pub api_key: String,
    access: Access,
    server: Option<RunningServer>,
    database: FreshDatabase,
}

impl Satellite {
    /// Creates a fresh metabase under `dir` and a project in it, and starts
    /// a satellite on it with `shared`'s settings and admin API of its own.
    async fn start(
        backend: Backend,
        dir: &Path,
        shared: &archipel_satellite::Config,
    ) -> Result<Satellite> {
        std::fs::create_dir_all(dir)?;
        let database = FreshDatabase::create(backend, dir).await?;
        let mut config = shared.clone();
        config.database_url = database.url().to_string();
        let admin_listener = bind_port_of_its_own().await?;
        config.admin = archipel_satellite::admin::AdminConfig {
            listen_address: admin_listener.local_addr()?.to_string(),
            token: archipel_satellite::admin::AdminConfig::random_token(),
        };
        let listener = bind_port_of_its_own().await?;
        let address = listener.local_addr()?;
        // The project is created first: that also migrates the database, which
        // the satellite would otherwise try at the same moment.
        let api_key = archipel_satellite::create_project(database.url(), "test").await?;
        let identity = Identity::generate();
        let server = start_satellite(config.clone(), identity.clone(), listener, admin_listener);
        let url = NodeUrl {
            id: identity.id(),
            address: address.to_string(),
        };
        let access = Access::request(&url, &api_key, "planet passphrase").await?;
        Ok(Satellite {
            identity,
            address,
            config,
            api_key,
            access,
            server: Some(server),
            database,
        })
    }

    pub fn id(&self) -> NodeId {
        self.identity.id()
    }

    /// An access grant to its project.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A client connected with its access grant.
    pub async fn project(&self) -> Result<Project> {
        Ok(Project::open(&self.access).await?)
    }

    /// The satellite as clients dial it: `ID@127.0.0.1:PORT`.
    pub fn url(&self) -> NodeUrl {
        self.access.satellite()
    }

    /// A gRPC channel to it, over TLS pinned to its id, for tests that speak
    /// the protocol themselves.
    pub async fn channel(&self) -> Result<Channel> {
        pinned_channel(&self.address, self.id()).await
    }

    /// Its admin API, e.g. `http://127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.config.admin.listen_address)
    }

    /// The bearer token of its admin API.
    pub fn admin_token(&self) -> &str {
        &self.config.admin.token
    }

    pub fn database_url(&self) -> &str {
        self.database.url()
    }

    /// Its metabase, opened once, for inspection.
    pub async fn metabase(&self) -> Result<&archipel_satellite::Metabase> {
        Ok(self.database.metabase().await?)
    }

    /// Every remote segment of its committed objects not expired now (up to
    /// a thousand), in (stream id, position) order.
    pub async fn remote_segments(&self) -> Result<Vec<archipel_satellite::metabase::Segment>> {
        Ok(self
            .metabase()
            .await?
            .committed_remote_segments_from(&[], 1000, archipel_proto::orders::unix_now())
            .await?)
    }

    /// Where `nodes` keep the pieces that its committed segments list. Files
    /// of pieces no segment lists (an upload's cancelled long tail) are not
    /// among them.
    pub async fn committed_piece_files(
        &self,
        nodes: &[StorageNode],
    ) -> Result<std::collections::BTreeSet<PathBuf>> {
        let mut files = std::collections::BTreeSet::new();
        for segment in self.remote_segments().await? {
            for piece in &segment.pieces {
                let Some(node) = nodes.iter().find(|n| n.id() == piece.node) else {
                    continue;
                };
                let id = archipel_proto::orders::derive_piece_id(
                    &segment.root_piece_id,
                    &piece.node,
                    piece.num.into(),
                );
                files.insert(archipel_storagenode::piece_path(
                    &node.config.storage_dir,
                    &self.id(),
                    &id,
                ));
            }
        }
        Ok(files)
    }

    /// Waits until its registry holds `count` nodes.
    async fn wait_for_check_ins(&self, count: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let known = self.database.node_count().await?;
            if known >= count {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PlanetError::Other(format!(
                    "only {known} of {count} nodes checked in to satellite {}",
                    self.id()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it and starts it again on the same addresses and database,
    /// after `configure` has changed its configuration.
    async fn restart(
        &mut self,
        configure: impl FnOnce(&mut archipel_satellite::Config),
    ) -> Result<()> {
        self.stop().await?;
        configure(&mut self.config);
        let listener = TcpListener::bind(self.address).await?;
        let admin_listener = TcpListener::bind(&self.config.admin.listen_address).await?;
        self.server = Some(start_satellite(
            self.config.clone(),
            self.identity.clone(),
            listener,
            admin_listener,
        ));
        Ok(())
    }

    async fn stop(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        Ok(())
    }
}

/// A running test network; see the module docs.
pub struct Planet {
    // The first satellite's identity, address, config and API key, as
    // `satellite(0)` has them: what tests of a single satellite use.
    // `restart_satellite`, the only method that changes one, keeps them equal.
    /// `satellite(0).identity`.
    pub satellite_identity: Identity,
    /// `satellite(0).address`.
    pub satellite_address: SocketAddr,
    /// `satellite(0).config`.
    pub satellite_config: archipel_satellite::Config,
    /// `satellite(0).api_key`.
    pub api_key: String,
    pub nodes: Vec<StorageNode>,
    satellites: Vec<Satellite>,
    _dir: tempfile::TempDir,
}

impl Planet {
    /// Starts a planet whose satellites neither audit nor repair (so that
    /// tests injecting faults see only their own effects); see
    /// [`Planet::start_with`].
    pub async fn start(config: PlanetConfig) -> Result<Planet> {
        Planet::start_with(config, |_| {}).await
    }

    /// Starts a planet after `configure` has adjusted the satellites' config
    /// (audits and repair are off unless it turns them on). Each satellite
    /// then gets its own database and admin API in place of `configure`'s.
    pub async fn start_with(
        config: PlanetConfig,
        configure: impl FnOnce(&mut archipel_satellite::Config),
    ) -> Result<Planet> {
        if config.satellites == 0 {
            return Err(PlanetError::Other(
                "a planet needs at least one satellite".into(),
            ));
        }
        let dir = tempfile::tempdir()?;
        let mut shared = archipel_satellite::Config {
            redundancy: config.redundancy,
            max_segment_size: config.max_segment_size,
            inline_threshold: config.inline_threshold,
            distinct_subnets: false,
            min_identity_difficulty: PLANET_IDENTITY_DIFFICULTY,
            ..Default::default()
        };
        shared.audit.enabled = false;
        shared.repair.enabled = false;
        configure(&mut shared);
        let mut satellites = Vec::with_capacity(config.satellites);
        for i in 0..config.satellites {
            let satellite_dir = dir.path().join(format!("satellite{i}"));
            satellites.push(Satellite::start(config.backend, &satellite_dir, &shared).await?);
        }
        let trusted: Vec<_> = satellites
            .iter()
            .map(|satellite| archipel_storagenode::TrustedSatellite {
                id: satellite.id(),
                address: satellite.address.to_string(),
            })
            .collect();

        let mut nodes = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let storage_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&storage_dir)?;
            let mut node_config = archipel_storagenode::Config::new(storage_dir);
            node_config.satellites = trusted.clone();
            node_config.check_in_interval = Duration::from_secs(1);
            // Expired pieces leave the disk within moments, as tests expect.
            node_config.expiration_sweep_interval = Duration::from_millis(200);
            let listener = bind_port_of_its_own().await?;
            let address = listener.local_addr()?;
            let dashboard_listener = bind_port_of_its_own().await?;
            let dashboard = dashboard_listener.local_addr()?;
            let identity = Identity::generate_with_difficulty(PLANET_IDENTITY_DIFFICULTY);
            let server = start_node(
                node_config.clone(),
                identity.clone(),
                listener,
                Some(dashboard_listener),
            );
            nodes.push(StorageNode {
                identity,
                config: node_config,
                address,
                dashboard,
                server: Some(server),
            });
        }
        for satellite in &satellites {
            satellite.wait_for_check_ins(config.nodes).await?;
        }
        let first = &satellites[0];
        Ok(Planet {
            satellite_identity: first.identity.clone(),
            satellite_address: first.address,
            satellite_config: first.config.clone(),
            api_key: first.api_key.clone(),
            nodes,
            satellites,
            _dir: dir,
        })
    }

    /// Satellite `i` (0 is the one the planet's own methods speak of).
    pub fn satellite(&self, i: usize) -> &Satellite {
        &self.satellites[i]
    }

    /// Every satellite, the first first.
    pub fn satellites(&self) -> &[Satellite] {
        &self.satellites
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
        self.satellite(0).access()
    }

    /// A client connected with the planet's access grant.
    pub async fn project(&self) -> Result<Project> {
        self.satellite(0).project().await
    }

    /// The satellite as clients dial it: `ID@127.0.0.1:PORT`.
    pub fn satellite_url(&self) -> NodeUrl {
        self.satellite(0).url()
    }

    /// A gRPC channel to the satellite, over TLS pinned to its id, for tests
    /// that speak the protocol themselves.
    pub async fn satellite_channel(&self) -> Result<Channel> {
        self.satellite(0).channel().await
    }

    /// A gRPC channel to node `i`'s piecestore, over TLS pinned to its id.
    pub async fn node_channel(&self, i: usize) -> Result<Channel> {
        pinned_channel(&self.nodes[i].address, self.nodes[i].id()).await
    }

    /// The satellite's admin API, e.g. `http://127.0.0.1:PORT`.
    pub fn admin_url(&self) -> String {
        self.satellite(0).admin_url()
    }

    /// The bearer token of the satellite's admin API.
    pub fn admin_token(&self) -> &str {
        self.satellite(0).admin_token()
    }

    pub fn database_url(&self) -> &str {
        self.satellite(0).database_url()
    }

    /// The satellite's metabase, opened once, for inspection.
    pub async fn metabase(&self) -> Result<&archipel_satellite::Metabase> {
        self.satellite(0).metabase().await
    }

    /// Every remote segment of committed objects not expired now (up to a
    /// thousand), in (stream id, position) order.
    pub async fn remote_segments(&self) -> Result<Vec<archipel_satellite::metabase::Segment>> {
        self.satellite(0).remote_segments().await
    }

    /// Where the nodes keep the pieces that committed segments list. Files
    /// of pieces no segment lists (an upload's cancelled long tail) are
    /// not among them.
    pub async fn committed_piece_files(&self) -> Result<std::collections::BTreeSet<PathBuf>> {
        self.satellite(0).committed_piece_files(&self.nodes).await
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
            let dashboard = TcpListener::bind(node.dashboard).await?;
            node.server = Some(start_node(
                node.config.clone(),
                node.identity.clone(),
                listener,
                Some(dashboard),
            ));
        }
        Ok(())
    }

    /// Stops node `i` and starts in its place, on its address, a real storage
    /// node with another identity and an empty disk, trusting the same
    /// satellites: an impostor that clients and the satellite meet when they
    /// dial node `i`.
    pub async fn impersonate_node(&mut self, i: usize) -> Result<Impostor> {
        self.stop_node(i).await?;
        let storage_dir = self._dir.path().join(format!("impostor{i}"));
        std::fs::create_dir_all(&storage_dir)?;
        let mut config = self.nodes[i].config.clone();
        config.storage_dir = storage_dir;
        let identity = Identity::generate();
        let listener = TcpListener::bind(self.nodes[i].address).await?;
        let server = start_node(config, identity.clone(), listener, None);
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

    /// Stops the first satellite and starts it again on the same addresses
    /// and database, after `configure` has changed its configuration.
    pub async fn restart_satellite(
        &mut self,
        configure: impl FnOnce(&mut archipel_satellite::Config),
    ) -> Result<()> {
        let first = &mut self.satellites[0];
        first.restart(configure).await?;
        self.satellite_config = first.config.clone();
        Ok(())
    }

    /// Stops every server and waits for them to finish.
    pub async fn shutdown(mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        for satellite in &mut self.satellites {
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

/// Ports below the kernel's ephemeral range (32768 and up on Linux), handed
/// out to servers that a test stops and starts again on the same address.
const OWN_PORTS: std::ops::Range<u16> = 12_000..32_000;

/// Binds a 127.0.0.1 port that stays this server's while it is stopped.
///
/// A port picked by the kernel (port 0) comes from the ephemeral range, from
/// which every outgoing connection on the machine also takes its local port:
/// while the server is down, any connection may take the port and the restart
/// fails with "address in use". Ports below that range are only ever taken by
/// an explicit bind, and within this process each is handed out once; the
/// start depends on the process id so that test binaries running side by
/// side begin far apart.
async fn bind_port_of_its_own() -> Result<TcpListener> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(OWN_PORTS.end - OWN_PORTS.start);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = OWN_PORTS.start + offset as u16;
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PlanetError::Other(format!("no free port in {OWN_PORTS:?}")))
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
    dashboard: Option<TcpListener>,
) -> RunningServer {
    let (shutdown, signal) = shutdown_pair();
    let task = tokio::spawn(async move {
        archipel_storagenode::run(config, identity, listener, dashboard, signal)
            .await
            .map_err(|e| e.to_string())
    });
    RunningServer { shutdown, task }
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
