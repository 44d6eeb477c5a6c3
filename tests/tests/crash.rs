//! Crashes and disk faults on a real network. A storage node killed with
//! SIGKILL in the middle of uploads, or in the middle of applying a retain
//! filter, comes back with every piece it confirmed, no half-written piece
//! and space accounting that equals its disk. A node whose allocation is used
//! up refuses uploads cleanly and says so on its dashboard. A node whose disk
//! fails its write probe takes no new pieces (the satellite stops selecting
//! it), still serves the ones it holds, and takes pieces again once the disk
//! recovers.
//!
//! The node that is killed runs as an OS process of its own (`archipel-devnet
//! node run`, which is exactly `archipel-node`'s code) next to an in-process
//! planet, so that the kill is real: no destructor, no flush, no shutdown.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use archipel_client::UploadOptions;
use archipel_proto::hashtree::TreeBuilder;
use archipel_proto::orders::{derive_piece_id, new_serial, sign_order_limit, unix_now, PieceId};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{OrderLimit, PieceAction, PieceUploadRequest};
use archipel_proto::{Identity, NodeId};
use archipel_storagenode::dashboard::{fetch_report, NodeReport};
use archipel_storagenode::index::Place;
use archipel_storagenode::{Config, PieceStore, TrustedSatellite};
use archipel_tests::{test_data, wait_for, Planet, PlanetConfig, PLANET_IDENTITY_DIFFICULTY};
use common::admin::AdminApi;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::task::JoinSet;

const BUCKET: &str = "crash";

// ---------------------------------------------------------------- the node process

/// A storage node running as a child process (`archipel-devnet node run`),
/// trusting a planet's satellite. Dropping it kills the process.
struct ProcessNode {
    id: NodeId,
    config: Config,
    config_path: PathBuf,
    dashboard: SocketAddr,
    child: Option<tokio::process::Child>,
    /// Holds the config, the identity, the storage directory and the log.
    dir: tempfile::TempDir,
}

/// A loopback address with a port that was free a moment ago.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl ProcessNode {
    /// Writes the node's identity and config (after `configure` changed it)
    /// and starts it; returns once its dashboard answers.
    async fn start(planet: &Planet, configure: impl FnOnce(&mut Config)) -> ProcessNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().join("storage"));
        config.identity_path = dir.path().join("identity");
        config.satellites = vec![TrustedSatellite {
            id: planet.satellite_identity.id(),
            address: planet.satellite_address.to_string(),
        }];
        config.check_in_interval = Duration::from_secs(1);
        config.listen_address = free_address().to_string();
        let dashboard = free_address();
        config.dashboard_address = dashboard.to_string();
        configure(&mut config);
        std::fs::create_dir_all(&config.storage_dir).unwrap();
        let identity = Identity::generate_with_difficulty(PLANET_IDENTITY_DIFFICULTY);
        identity.save(&config.identity_path).unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config.to_toml().unwrap()).unwrap();
        let mut node = ProcessNode {
            id: identity.id(),
            config,
            config_path,
            dashboard,
            child: None,
            dir,
        };
        node.spawn().await;
        node
    }

    fn storage_dir(&self) -> &Path {
        &self.config.storage_dir
    }

    fn temp_dir(&self) -> PathBuf {
        self.storage_dir().join("temp")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The end of the node's log (all its runs), for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts the process on the node's config; returns once its dashboard
    /// answers (the store is open by then: leftovers removed, journal settled).
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the node is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel-devnet"))
            .args(["node", "run", "--config"])
            .arg(&self.config_path)
            .env_remove("ARCHIPEL_NODE_LISTEN")
            .env_remove("ARCHIPEL_NODE_ADVERTISE")
            .env_remove("ARCHIPEL_NODE_DASHBOARD")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the node process exited with {status} at start:\n{}",
                    self.log_tail()
                );
            }
            if report_at(self.dashboard).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node process did not serve its dashboard within 30 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("the node is running");
        Pid::from_raw(i32::try_from(child.id().expect("not reaped yet")).unwrap())
    }

    /// Waits for the process that [`kill_when`] sent SIGKILL.
    async fn reap_killed(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status}");
    }

    /// SIGTERM, and waits for a clean exit.
    async fn stop(&mut self) {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let mut child = self.child.take().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the node stops within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}:\n{}", self.log_tail());
    }

    async fn report(&self) -> NodeReport {
        report_at(self.dashboard).await.unwrap()
    }

    /// Waits until the satellite has recorded the node and the node has
    /// heard so (its first check-in went through).
    async fn wait_until_known(&self, planet: &Planet) {
        let metabase = planet.metabase().await.unwrap();
        let satellite = planet.satellite_identity.id().to_string();
        wait_for("the node process to check in", || async {
            let known = metabase
                .node_record(&self.id, &planet.satellite_config.reputation)
                .await
                .unwrap()
                .is_some();
            known
                && self
                    .report()
                    .await
                    .satellites
                    .iter()
                    .any(|s| s.id == satellite && s.last_contact.is_some())
        })
        .await;
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// The JSON report of the dashboard at `address`, parsed.
async fn report_at(address: SocketAddr) -> Result<NodeReport, String> {
    let body = tokio::task::spawn_blocking(move || fetch_report(&address.to_string()))
        .await
        .unwrap()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Polls `condition` every 100 µs on a thread of its own and sends SIGKILL
/// to `pid` the moment it holds, or when `give_up` is set. Returns whether
/// the condition was met (rather than given up on).
fn kill_when(pid: Pid, give_up: &AtomicBool, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(50);
    loop {
        let met = condition();
        if met || give_up.load(Ordering::SeqCst) || Instant::now() > deadline {
            kill(pid, Signal::SIGKILL).unwrap();
            return met;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The entries of a directory (none if it is missing).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn unfinished_uploads(temp: &Path) -> usize {
    entries(temp)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "partial"))
        .count()
}

// ---------------------------------------------------------------- disk and accounting

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for path in entries(dir) {
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The piece files (or trashed piece files) of `satellite` under a storage
/// directory. The satellite's directory is found from a path the store
/// gives, so the layout stays the store's to define.
fn piece_files(storage_dir: &Path, satellite: &NodeId, trash: bool) -> BTreeSet<PathBuf> {
    let (any, keep): (PathBuf, fn(&Path) -> bool) = if trash {
        (
            archipel_storagenode::trash_path(storage_dir, satellite, &[0; 32]),
            archipel_storagenode::is_trashed_piece_file,
        )
    } else {
        (
            archipel_storagenode::piece_path(storage_dir, satellite, &[0; 32]),
            archipel_storagenode::is_piece_file,
        )
    };
    let satellite_dir = any.parent().unwrap().parent().unwrap();
    let mut files = Vec::new();
    collect_files(satellite_dir, &mut files);
    files.into_iter().filter(|f| keep(f)).collect()
}

fn total_size(files: &BTreeSet<PathBuf>) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

/// Pieces, their bytes and trash bytes of one satellite.
#[derive(Debug, PartialEq, Eq)]
struct Holding {
    pieces: u64,
    used_bytes: u64,
    trash_bytes: u64,
}

/// What the node's disk holds for `satellite`.
fn on_disk(storage_dir: &Path, satellite: &NodeId) -> Holding {
    let stored = piece_files(storage_dir, satellite, false);
    Holding {
        pieces: stored.len() as u64,
        used_bytes: total_size(&stored),
        trash_bytes: total_size(&piece_files(storage_dir, satellite, true)),
    }
}

/// What the node's dashboard says it holds for `satellite`; `None` while
/// its piece index is still being checked against the disk.
fn accounted(report: &NodeReport, satellite: &NodeId) -> Option<Holding> {
    let entry = report
        .satellites
        .iter()
        .find(|s| s.id == satellite.to_string())
        .expect("the report lists every trusted satellite");
    report.disk.index_checked.then_some(Holding {
        pieces: entry.pieces,
        used_bytes: entry.used_bytes,
        trash_bytes: entry.trash_bytes,
    })
}

/// Polls until `probe` gives two equal values, for at most 30 s; then
/// asserts that they are, showing both.
async fn settles<T, F, Fut>(what: &str, mut probe: F)
where
    T: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (T, T)>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (left, right) = probe().await;
        if left == right {
            return;
        }
        if Instant::now() > deadline {
            assert_eq!(left, right, "{what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a node's dashboard and its disk agree on what it holds for
/// `satellite`, with its index checked against the disk.
async fn accounting_equals_disk(dashboard: SocketAddr, storage_dir: &Path, satellite: &NodeId) {
    settles(
        "the dashboard's accounting (left) equals the disk (right)",
        || async move {
            let report = report_at(dashboard).await.unwrap();
            (
                accounted(&report, satellite),
                Some(on_disk(storage_dir, satellite)),
            )
        },
    )
    .await;
}

/// A piece some committed segment lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Committed {
    id: PieceId,
    /// Its hash tree root, as the node signed it at the upload.
    root: [u8; 32],
}

/// Where the committed segments of the planet's satellite put pieces on
/// `node`, by path under its storage directory.
async fn committed_pieces(
    planet: &Planet,
    storage_dir: &Path,
    node: NodeId,
) -> BTreeMap<PathBuf, Committed> {
    let satellite = planet.satellite_identity.id();
    let mut pieces = BTreeMap::new();
    for segment in planet.remote_segments().await.unwrap() {
        for piece in segment.pieces.iter().filter(|p| p.node == node) {
            let id = derive_piece_id(&segment.root_piece_id, &node, piece.num.into());
            pieces.insert(
                archipel_storagenode::piece_path(storage_dir, &satellite, &id),
                Committed {
                    id,
                    root: piece.root,
                },
            );
        }
    }
    pieces
}

/// Opens the store of a stopped node and checks it piece by piece: the
/// index lists exactly the files on disk (stored and in the trash) with
/// their sizes, and every stored piece parses, its leaf hashes and data
/// hash to the root its header records. Returns the stored pieces' roots
/// by path.
async fn check_stopped_store(storage_dir: &Path, satellite: NodeId) -> BTreeMap<PathBuf, [u8; 32]> {
    let store = PieceStore::open(storage_dir.to_path_buf(), 1 << 40)
        .await
        .unwrap();
    assert!(
        store.reconciled(),
        "a node that stopped cleanly has an index it can trust"
    );
    let mut roots = BTreeMap::new();
    for trash in [false, true] {
        let place = if trash {
            Place::Trash(0)
        } else {
            Place::Stored
        };
        let mut indexed = BTreeSet::new();
        let mut after: Option<PieceId> = None;
        loop {
            let page = store.pieces(satellite, Some(place), after).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (id, row) in page {
                let path = if trash {
                    archipel_storagenode::trash_path(storage_dir, &satellite, &id)
                } else {
                    archipel_storagenode::piece_path(storage_dir, &satellite, &id)
                };
                let size = std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("{} is indexed: {e}", path.display()))
                    .len();
                assert_eq!(row.size, size, "{}", path.display());
                if !trash {
                    roots.insert(path.clone(), check_piece(&store, satellite, id).await);
                }
                indexed.insert(path);
            }
        }
        assert_eq!(
            indexed,
            piece_files(storage_dir, &satellite, trash),
            "the index lists the files on disk (trash: {trash})"
        );
    }
    store.close().await.unwrap();
    roots
}

/// Reads one stored piece whole and checks it against its own header.
async fn check_piece(store: &PieceStore, satellite: NodeId, id: PieceId) -> [u8; 32] {
    let mut piece = store.open_piece(satellite, id).await.unwrap();
    let hash = piece.hash().clone();
    let (size, chunk_size) = (piece.piece_size(), piece.chunk_size());
    let leaves = piece.leaves().await.unwrap();
    let mut data = piece.into_data(0, size).await.unwrap();
    let mut tree = TreeBuilder::new(chunk_size);
    while let Some(bytes) = data.next(1 << 16).await.unwrap() {
        tree.update(&bytes);
    }
    assert_eq!(tree.size(), size);
    let (root, computed) = tree.finish();
    assert_eq!(hash.piece_id, id.to_vec());
    assert_eq!(hash.root, root.to_vec(), "piece {}", hex::encode(id));
    assert_eq!(computed, leaves, "piece {}", hex::encode(id));
    root
}

async fn download(planet: &Planet, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    planet
        .project()
        .await
        .unwrap()
        .download(BUCKET, key, None, &mut out, None)
        .await
        .unwrap_or_else(|e| panic!("downloading {key}: {e}"));
    out
}

async fn upload(planet: &Planet, key: &str, data: &[u8]) {
    planet
        .project()
        .await
        .unwrap()
        .upload(BUCKET, key, data, UploadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("uploading {key}: {e}"));
}

/// Every file's bytes, by path.
fn contents(files: impl IntoIterator<Item = PathBuf>) -> BTreeMap<PathBuf, Vec<u8>> {
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

// ---------------------------------------------------------------- kill -9 during uploads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_uploads_keeps_what_it_confirmed_and_no_half_piece() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let satellite = planet.satellite_identity.id();
    // Eleven nodes for segments of ten pieces: nearly every segment has one
    // on the process node, and losing it leaves nine, above the eight an
    // upload needs.
    let mut node = ProcessNode::start(&planet, |_| {}).await;
    node.wait_until_known(&planet).await;
    let project = planet.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut uploaders = JoinSet::new();
    for worker in 0..2u64 {
        let (project, stop, finished) = (project.clone(), stop.clone(), finished.clone());
        uploaders.spawn(async move {
            let mut stored = BTreeMap::new();
            let mut failed = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let seed = worker * 1000 + i;
                i += 1;
                let data = test_data(200_000 + (seed as usize * 48_611) % 300_000, seed);
                let key = format!("object-{seed}");
                match project
                    .upload(BUCKET, &key, &data[..], UploadOptions::default())
                    .await
                {
                    Ok(_) => {
                        stored.insert(key, data);
                    }
                    Err(e) => failed.push(format!("{key}: {e}")),
                }
                finished.fetch_add(1, Ordering::SeqCst);
            }
            (stored, failed)
        });
    }

    // Once the node holds a few pieces, it dies the moment an upload to it
    // is under way (a temporary file exists).
    let storage_dir = node.storage_dir().to_path_buf();
    wait_for("the node process to store a few pieces", || async {
        piece_files(&storage_dir, &satellite, false).len() >= 10
    })
    .await;
    let temp = node.temp_dir();
    let pid = node.pid();
    let caught_mid_upload = tokio::task::spawn_blocking(move || {
        kill_when(pid, &AtomicBool::new(false), || {
            unfinished_uploads(&temp) > 0
        })
    })
    .await
    .unwrap();
    node.reap_killed().await;
    let left_behind = unfinished_uploads(&node.temp_dir());
    let held_at_kill = piece_files(&storage_dir, &satellite, false).len();

    // Uploads go on without it.
    let at_kill = finished.load(Ordering::SeqCst);
    wait_for("six more uploads after the kill", || async {
        finished.load(Ordering::SeqCst) >= at_kill + 6
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut stored = BTreeMap::new();
    let mut failed = Vec::new();
    while let Some(done) = uploaders.join_next().await {
        let (s, f) = done.unwrap();
        stored.extend(s);
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "one node's crash fails no upload: {failed:?}"
    );

    node.spawn().await;
    // The upload cut short is gone, not finished or indexed.
    assert_eq!(
        entries(&node.temp_dir()),
        Vec::<PathBuf>::new(),
        "unfinished uploads are removed at start"
    );
    accounting_equals_disk(node.dashboard, &storage_dir, &satellite).await;
    let committed = committed_pieces(&planet, &storage_dir, node.id).await;
    assert!(!committed.is_empty());
    for file in committed.keys() {
        assert!(
            file.exists(),
            "{} was confirmed and committed but is gone",
            file.display()
        );
    }
    for (key, data) in &stored {
        assert_eq!(&download(&planet, key).await, data, "{key}");
    }

    // Piece by piece: every file parses and holds what was committed.
    node.stop().await;
    let roots = check_stopped_store(&storage_dir, satellite).await;
    for (file, piece) in &committed {
        assert_eq!(roots.get(file), Some(&piece.root), "{}", file.display());
    }
    println!(
        "{} uploads, killed {} ({left_behind} unfinished uploads left in temp/, {held_at_kill} pieces held); \
         {} committed pieces on the node, {} piece files",
        stored.len(),
        if caught_mid_upload {
            "while an upload to it was under way"
        } else {
            "without seeing an upload under way"
        },
        committed.len(),
        roots.len(),
    );
    planet.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- kill -9 during a GC round

/// Pieces younger than this are never trashed: short, so the test need not
/// wait long.
const GRACE: Duration = Duration::from_secs(4);

/// When, during a retain round, the node is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as the first piece reaches the trash.
    FirstTrashedPiece,
    /// Once about half the garbage is in the trash.
    HalfTheGarbage,
    /// Right after the round is asked for, perhaps before the filter arrives.
    RoundStart,
}

/// Piece deletions the satellite sent that nodes did not confirm, so far.
async fn failed_deletes(admin: &AdminApi) -> u64 {
    admin
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("archipel_piece_deletes_total{result=\"failed\"} "))
        .map_or(0, |count| count.parse().unwrap())
}

async fn retain_round(admin: &AdminApi) -> Value {
    admin.json("POST", "/api/gc/retain").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_retain_round_ends_with_its_garbage_in_the_trash() {
    // Small segments, so that a few objects put many pieces on the node.
    let planet = Planet::start_with(
        PlanetConfig {
            max_segment_size: 32 << 10,
            ..PlanetConfig::default()
        },
        |config| {
            config.gc.grace = GRACE;
            // What reaches the node is the retain filter, not a retried delete.
            config.gc.delete_retry = Duration::from_secs(3600);
            // No garbage survives a round as a false positive.
            config.gc.false_positive_rate = 1e-9;
        },
    )
    .await
    .unwrap();
    let satellite = planet.satellite_identity.id();
    let admin = AdminApi::of(&planet);
    let mut node = ProcessNode::start(&planet, |_| {}).await;
    node.wait_until_known(&planet).await;
    let storage_dir = node.storage_dir().to_path_buf();
    let project = planet.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();
    let mut kept = BTreeMap::new();
    for (i, name) in ["kept-0", "doomed-0", "kept-1", "doomed-1"]
        .into_iter()
        .enumerate()
    {
        let data = test_data(1_000_000 + i * 7_000, 100 + i as u64);
        upload(&planet, name, &data).await;
        if name.starts_with("kept") {
            kept.insert(name, data);
        }
    }
    let uploaded = Instant::now();
    let before = committed_pieces(&planet, &storage_dir, node.id).await;

    // Deleted while the node is away: its pieces of them become garbage that
    // only a retain filter reaches.
    node.stop().await;
    project.delete_object(BUCKET, "doomed-0").await.unwrap();
    project.delete_object(BUCKET, "doomed-1").await.unwrap();
    let committed = committed_pieces(&planet, &storage_dir, node.id).await;
    let doomed: Vec<PieceId> = before
        .iter()
        .filter(|(f, _)| !committed.contains_key(*f))
        .map(|(_, piece)| piece.id)
        .collect();
    assert!(doomed.len() >= 20, "{} doomed pieces", doomed.len());
    // Its deletes were tried while it was away (and wait an hour for a retry).
    let metabase = planet.metabase().await.unwrap();
    wait_for(
        "the satellite to fail to delete the node's pieces",
        || async { failed_deletes(&admin).await >= doomed.len() as u64 },
    )
    .await;
    assert_eq!(
        metabase
            .deletion_queue_length(Some(&node.id))
            .await
            .unwrap(),
        doomed.len() as u64
    );
    node.spawn().await;
    tokio::time::sleep_until((uploaded + GRACE + Duration::from_secs(2)).into()).await;

    let trash_dir = storage_dir.join("trash");
    for kill_at in [
        KillAt::FirstTrashedPiece,
        KillAt::HalfTheGarbage,
        KillAt::RoundStart,
    ] {
        // Garbage to collect again (the last round may have trashed it all):
        // the restore also runs on a node that crashed.
        let restore = format!("/api/nodes/{}/restore-trash", node.id);
        admin.json("POST", &restore).await;
        assert!(piece_files(&storage_dir, &satellite, true).is_empty());

        let round_done = Arc::new(AtomicBool::new(false));
        let round = {
            let (admin, round_done) = (AdminApi::of(&planet), round_done.clone());
            tokio::spawn(async move {
                let answer = admin.call("POST", "/api/gc/retain").await;
                round_done.store(true, Ordering::SeqCst);
                answer
            })
        };
        let (pid, trash_dir) = (node.pid(), trash_dir.clone());
        let (half, done) = (doomed.len() / 2, round_done.clone());
        let (dir, sat) = (storage_dir.clone(), satellite);
        let caught = tokio::task::spawn_blocking(move || {
            kill_when(pid, &done, || match kill_at {
                KillAt::FirstTrashedPiece => !entries(&trash_dir).is_empty(),
                KillAt::HalfTheGarbage => piece_files(&dir, &sat, true).len() >= half,
                KillAt::RoundStart => true,
            })
        })
        .await
        .unwrap();
        node.reap_killed().await;
        let (status, body) = round.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let report: Value = serde_json::from_str(&body).unwrap();
        println!(
            "killed at {kill_at:?} (condition met: {caught}), {} pieces in the trash; round: {report}",
            piece_files(&storage_dir, &satellite, true).len()
        );

        node.spawn().await;
        // Nothing committed went to the trash, whatever the moment.
        for file in committed.keys() {
            assert!(file.exists(), "{} is committed but gone", file.display());
        }
        accounting_equals_disk(node.dashboard, &storage_dir, &satellite).await;
    }

    // A round that completes collects what the crashed ones left.
    let report = retain_round(&admin).await;
    assert_eq!(report["failed_nodes"], 0, "{report}");
    accounting_equals_disk(node.dashboard, &storage_dir, &satellite).await;
    let stored = piece_files(&storage_dir, &satellite, false);
    let trashed = piece_files(&storage_dir, &satellite, true);
    assert_eq!(
        stored,
        committed.keys().cloned().collect::<BTreeSet<_>>(),
        "the node keeps exactly the committed pieces"
    );
    for id in &doomed {
        let file = archipel_storagenode::trash_path(&storage_dir, &satellite, id);
        assert!(
            trashed.contains(&file),
            "{} is garbage but not in the trash",
            file.display()
        );
    }
    for (key, data) in &kept {
        assert_eq!(&download(&planet, key).await, data, "{key}");
    }
    node.stop().await;
    let roots = check_stopped_store(&storage_dir, satellite).await;
    for (file, piece) in &committed {
        assert_eq!(roots.get(file), Some(&piece.root), "{}", file.display());
    }
    println!(
        "{} committed pieces kept, {} in the trash ({} of deleted objects)",
        stored.len(),
        trashed.len(),
        doomed.len()
    );
    planet.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- a full disk

/// A PUT order limit of the planet's satellite for a fresh piece on `node`.
fn put_limit(planet: &Planet, node: NodeId) -> OrderLimit {
    sign_order_limit(
        &planet.satellite_identity,
        OrderLimit {
            serial_number: new_serial(),
            node_id: node.to_vec(),
            piece_id: rand::random::<[u8; 32]>().to_vec(),
            action: PieceAction::Put as i32,
            limit: 100_000,
            order_expiration: unix_now() + 600,
            order_creation: unix_now(),
            ..Default::default()
        },
    )
}

/// Uploads 10 000 bytes to node `i` of the planet under `limit`, as a
/// client would.
async fn upload_piece(planet: &Planet, i: usize, limit: OrderLimit) -> Result<(), tonic::Status> {
    let mut client = PiecestoreClient::new(planet.node_channel(i).await.unwrap());
    let messages = vec![
        PieceUploadRequest {
            limit: Some(limit),
            data: vec![7; 10_000],
            done: false,
        },
        PieceUploadRequest {
            limit: None,
            data: Vec::new(),
            done: true,
        },
    ];
    client
        .upload(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

/// The satellite's admin view of a node.
async fn admin_node(admin: &AdminApi, id: NodeId) -> Value {
    admin.json("GET", &format!("/api/nodes/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_uploads_cleanly_and_says_so() {
    let mut planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let satellite = planet.satellite_identity.id();
    let admin = AdminApi::of(&planet);
    let project = planet.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();
    let mut objects = BTreeMap::new();
    objects.insert("stored".to_string(), test_data(300_000, 1));
    upload(&planet, "stored", &objects["stored"]).await;

    // A node whose allocation leaves room for no piece: a few kilobytes
    // above what it holds.
    let full = (0..planet.nodes.len())
        .find(|&i| !planet.nodes[i].piece_files().is_empty())
        .unwrap();
    let id = planet.nodes[full].id();
    let storage_dir = planet.nodes[full].config.storage_dir.clone();
    planet.stop_node(full).await.unwrap();
    let held = contents(planet.nodes[full].piece_files());
    let used = on_disk(&storage_dir, &satellite).used_bytes;
    assert_eq!(planet.nodes[full].trash_files(), Vec::<PathBuf>::new());
    planet.nodes[full].config.allocated_bytes = used + 4_000;
    planet.restart_node(full).await.unwrap();
    let dashboard = planet.nodes[full].dashboard;

    let report = report_at(dashboard).await.unwrap();
    assert_eq!(report.disk.allocated_bytes, used + 4_000);
    assert_eq!(report.disk.used_bytes, used);
    assert!(report.disk.free_bytes <= 4_000, "{:?}", report.disk);
    assert!(
        report.warnings.iter().any(|w| w.contains("full")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.disk.problem, None);

    // It says no to an upload itself, with the reason, and keeps nothing.
    let refused = upload_piece(&planet, full, put_limit(&planet, id))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("not enough space"),
        "{refused:?}"
    );
    // And the satellite, told at the next check-in, stops sending any.
    wait_for("the satellite to learn that the node is full", || async {
        admin_node(&admin, id).await["free_bytes"]
            .as_u64()
            .is_some_and(|free| free <= 4_000)
    })
    .await;

    let committed_before = committed_pieces(&planet, &storage_dir, id).await;
    for i in 0..3u64 {
        let key = format!("after-{i}");
        let data = test_data(300_000 + i as usize * 1000, 10 + i);
        upload(&planet, &key, &data).await;
        objects.insert(key, data);
    }
    assert_eq!(
        committed_pieces(&planet, &storage_dir, id).await,
        committed_before,
        "no new segment lists the full node"
    );
    let node = &planet.nodes[full];
    assert_eq!(
        contents(node.piece_files()),
        held,
        "the full node stored nothing new and lost nothing"
    );
    assert_eq!(entries(&storage_dir.join("temp")), Vec::<PathBuf>::new());
    let report = report_at(dashboard).await.unwrap();
    assert_eq!(report.disk.used_bytes, used);
    assert_eq!(report.disk.reserved_bytes, 0);
    assert!(report.warnings.iter().any(|w| w.contains("full")));
    accounting_equals_disk(dashboard, &storage_dir, &satellite).await;
    for (key, data) in &objects {
        assert_eq!(&download(&planet, key).await, data, "{key}");
    }
    planet.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- a failing disk probe

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_its_disk_probe_takes_no_pieces_and_serves_its_own() {
    let mut planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let satellite = planet.satellite_identity.id();
    let admin = AdminApi::of(&planet);
    let metabase = planet.metabase().await.unwrap().clone();
    let reputation = planet.satellite_config.reputation.clone();
    let project = planet.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();
    let before = test_data(300_000, 2);
    upload(&planet, "before", &before).await;
    let holders: Vec<usize> = planet.remote_segments().await.unwrap()[0]
        .pieces
        .iter()
        .map(|p| planet.node_index(p.node).unwrap())
        .collect();
    let failing = holders[0];
    let id = planet.nodes[failing].id();
    planet.stop_node(failing).await.unwrap();
    planet.nodes[failing].config.disk_probe_interval = Duration::from_millis(200);
    planet.restart_node(failing).await.unwrap();
    let dashboard = planet.nodes[failing].dashboard;
    let storage_dir = planet.nodes[failing].config.storage_dir.clone();
    assert_eq!(report_at(dashboard).await.unwrap().disk.problem, None);

    // A regular file where the probe writes: writes there fail, as on a disk
    // gone read-only (which root would not notice through permissions).
    let temp = storage_dir.join("temp");
    let away = storage_dir.join("temp.away");
    std::fs::rename(&temp, &away).unwrap();
    std::fs::write(&temp, b"not a directory").unwrap();
    wait_for("the node to report its disk problem", || async {
        let report = report_at(dashboard).await.unwrap();
        report.disk.problem.is_some() && report.warnings.iter().any(|w| w.contains("probe"))
    })
    .await;
    wait_for("the satellite to learn the disk problem", || async {
        metabase
            .node_record(&id, &reputation)
            .await
            .unwrap()
            .unwrap()
            .disk_problem
            .is_some()
    })
    .await;
    assert!(
        admin_node(&admin, id).await["disk_problem"].is_string(),
        "the admin API shows the problem"
    );
    let refused = upload_piece(&planet, failing, put_limit(&planet, id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // New uploads pass it by.
    let held = contents(planet.nodes[failing].piece_files());
    let committed_before = committed_pieces(&planet, &storage_dir, id).await;
    let mut objects = BTreeMap::new();
    for i in 0..3u64 {
        let key = format!("during-{i}");
        let data = test_data(250_000 + i as usize * 1000, 20 + i);
        upload(&planet, &key, &data).await;
        objects.insert(key, data);
    }
    assert_eq!(
        committed_pieces(&planet, &storage_dir, id).await,
        committed_before,
        "no new segment lists the node with the failing disk"
    );
    assert_eq!(contents(planet.nodes[failing].piece_files()), held);

    // It still serves what it has: with only k = 4 holders of the first
    // object left, itself one of them, the object downloads.
    let away_holders: Vec<usize> = holders
        .iter()
        .copied()
        .filter(|&i| i != failing)
        .skip(3)
        .collect();
    for &i in &away_holders {
        planet.stop_node(i).await.unwrap();
    }
    assert_eq!(download(&planet, "before").await, before);
    for &i in &away_holders {
        planet.restart_node(i).await.unwrap();
    }

    // The disk recovers: the problem clears on the node and on the
    // satellite, and the node takes pieces again.
    std::fs::remove_file(&temp).unwrap();
    std::fs::rename(&away, &temp).unwrap();
    wait_for("the node to clear its disk problem", || async {
        let report = report_at(dashboard).await.unwrap();
        report.disk.problem.is_none() && !report.warnings.iter().any(|w| w.contains("probe"))
    })
    .await;
    wait_for("the satellite to learn the disk is healthy", || async {
        metabase
            .node_record(&id, &reputation)
            .await
            .unwrap()
            .unwrap()
            .disk_problem
            .is_none()
    })
    .await;
    let mut gained = false;
    for i in 0..5u64 {
        let key = format!("after-{i}");
        let data = test_data(250_000, 30 + i);
        upload(&planet, &key, &data).await;
        objects.insert(key, data);
        if committed_pieces(&planet, &storage_dir, id).await.len() > committed_before.len() {
            gained = true;
            break;
        }
    }
    assert!(gained, "the node takes pieces again once its disk recovers");
    accounting_equals_disk(dashboard, &storage_dir, &satellite).await;
    assert_eq!(download(&planet, "before").await, before);
    for (key, data) in &objects {
        assert_eq!(&download(&planet, key).await, data, "{key}");
    }
    planet.shutdown().await.unwrap();
}
