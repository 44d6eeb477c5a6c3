//! `backup run`: walks the chosen paths, cuts files into content-defined
//! chunks ([`crate::chunker`]), stores each chunk the repository does not have yet, and
//! writes a tree per directory and finally the snapshot.
//!
//! - **Unchanged files are not read**: a file whose size, mtime and inode
//!   equal its entry in the parent snapshot (the last one of the same host
//!   and paths) keeps that entry's chunk list.
//! - **Parallel, bounded**: a few files are read at once (blocking threads,
//!   [`BackupOptions::read_concurrency`]), a few packs upload at once; a
//!   reader waits when the uploads are all busy, so memory is bounded by a
//!   few packs and a few chunks, whatever the size of a file or a tree.
//!   Directories are walked depth first; only the trees on the current path
//!   and the entries of the directories being read are held.
//! - **Interruptible**: packs are indexed as they upload, the snapshot is
//!   written last; a killed backup leaves packs that the next one indexes
//!   ([`Index::recover`]) and deduplicates against.
//! - Symlinks are stored, never followed; a file or directory that cannot be
//!   read is skipped and named in the summary's `errors` (the snapshot is
//!   still written, as restic does).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::blob::{seal_blob, BlobId, BlobKind};
use crate::chunker::Chunker;
use crate::filter::Patterns;
use crate::index::Index;
use crate::lock::{hostname, locked};
use crate::pack::PackUploader;
use crate::repo::Repository;
use crate::snapshot::{self, Snapshot};
use crate::tree::{encode_name, Node, NodeKind, Tree, Trees};
use crate::Error;

/// Directory entries worked on at once within one directory.
const ENTRIES_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    /// Patterns of paths to leave out ([`crate::filter`]).
    pub excludes: Vec<String>,
    pub tags: Vec<String>,
    /// Recorded as the snapshot's host; this machine's name by default.
    pub host: Option<String>,
    /// The snapshot to compare with (`None`: the latest of the same host and
    /// paths).
    pub parent: Option<String>,
    /// Read every file, even those that look unchanged.
    pub force: bool,
    /// Files read at once.
    pub read_concurrency: usize,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
}

impl Default for BackupOptions {
    fn default() -> BackupOptions {
        BackupOptions {
            paths: Vec::new(),
            excludes: Vec::new(),
            tags: Vec::new(),
            host: None,
            parent: None,
            force: false,
            read_concurrency: 2,
            upload_concurrency: 2,
        }
    }
}

/// Live counters for a progress display. The totals come from a scan that
/// runs beside the backup, final once `scan_done` is set.
#[derive(Debug, Default)]
pub struct BackupProgress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub scan_done: AtomicBool,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Bytes of new, compressed and sealed blobs handed to the uploads.
    pub bytes_stored: AtomicU64,
    /// Bytes of packs uploaded: reaches `bytes_stored` (plus the packs'
    /// headers) when the backup ends.
    pub bytes_uploaded: Arc<AtomicU64>,
}

/// What a backup did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    /// New blobs stored.
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of the new blobs (after deduplication).
    pub bytes_added: u64,
    /// What they take in the repository (after compression and sealing).
    pub bytes_stored: u64,
    pub total_files: u64,
    /// Plaintext bytes of every file in the snapshot.
    pub total_bytes: u64,
    pub packs: u64,
    /// Packs left by an interrupted backup and indexed by this one.
    pub packs_recovered: u64,
    pub duration_seconds: f64,
    /// Paths that could not be read, with the reason; they are not in the
    /// snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    total_bytes: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Backs up `options.paths` and writes a snapshot of them.
pub async fn backup(
    repo: &Repository,
    options: BackupOptions,
    progress: Arc<BackupProgress>,
) -> Result<Snapshot, Error> {
    locked(repo, false, "backup", run(repo, options, progress)).await
}

async fn run(
    repo: &Repository,
    options: BackupOptions,
    progress: Arc<BackupProgress>,
) -> Result<Snapshot, Error> {
    let started = Instant::now();
    // A snapshot is dated when it starts, as restic's are: it shows the
    // files as they were from then on.
    let time = SystemTime::now();
    let paths = absolute_paths(&options.paths)?;
    let excludes = Patterns::new(&options.excludes)?;
    let mut index = Index::load(repo).await?;
    let recovered = index.recover(repo).await?;
    let index = Arc::new(index);
    let host = options.host.clone().unwrap_or_else(hostname);
    let path_names: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let snapshots = snapshot::load_all(repo).await?;
    let parent = match &options.parent {
        Some(spec) => Some(snapshot::find(&snapshots, spec)?.clone()),
        None => snapshots
            .iter()
            .rev()
            .find(|s| s.hostname == host && s.paths == path_names)
            .cloned(),
    };
    let trees = Trees::new(repo, index.clone());
    let parent_root = match &parent {
        Some(parent) => Some(trees.load(parent.tree).await?),
        None => None,
    };

    let selection = Selection::of(&paths);
    let scan_stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let selection = selection.clone();
        let excludes = excludes.clone();
        let progress = progress.clone();
        let stop = scan_stop.clone();
        tokio::task::spawn_blocking(move || scan(&selection, &excludes, &progress, &stop))
    };

    let archiver = Arc::new(Archiver {
        repo: repo.clone(),
        index,
        fresh: Mutex::default(),
        uploader: PackUploader::new(
            repo,
            options.upload_concurrency,
            Some(progress.bytes_uploaded.clone()),
        ),
        trees,
        excludes,
        read_slots: Semaphore::new(options.read_concurrency.max(1)),
        chunkers: Mutex::default(),
        force: options.force,
        counters: Counters::default(),
        progress: progress.clone(),
        errors: Mutex::default(),
    });
    let root = archiver
        .clone()
        .archive_selection(PathBuf::from("/"), Arc::new(selection), parent_root)
        .await;
    scan_stop.store(true, Ordering::Relaxed);
    let _ = scanner.await;
    let root = root?;
    let Ok(archiver) = Arc::try_unwrap(archiver) else {
        return Err(Error::Invalid("the backup's workers outlived it".into()));
    };
    let (packs, _) = archiver.uploader.finish().await?;
    let c = &archiver.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = BackupSummary {
        files_new: load(&c.files_new),
        files_changed: load(&c.files_changed),
        files_unmodified: load(&c.files_unmodified),
        dirs_new: load(&c.dirs_new),
        dirs_changed: load(&c.dirs_changed),
        dirs_unmodified: load(&c.dirs_unmodified),
        data_blobs: load(&c.data_blobs),
        tree_blobs: load(&c.tree_blobs),
        bytes_added: load(&c.bytes_added),
        bytes_stored: load(&progress.bytes_stored),
        total_files: load(&c.files_new) + load(&c.files_changed) + load(&c.files_unmodified),
        total_bytes: load(&c.total_bytes),
        packs,
        packs_recovered: recovered as u64,
        duration_seconds: started.elapsed().as_secs_f64(),
        errors: archiver
            .errors
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
    };
    let mut snapshot = Snapshot {
        id: String::new(),
        time,
        tree: root,
        paths: path_names,
        hostname: host,
        username: username(),
        tags: options.tags,
        parent: parent.map(|p| p.id),
        summary: Some(summary),
    };
    snapshot.save(repo).await?;
    Ok(snapshot)
}

fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name)
        })
}

/// The paths as absolute paths whose directories are resolved (the last
/// component is kept as given, so a symlink is backed up as a symlink),
/// sorted, each existing.
fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    if paths.is_empty() {
        return Err(Error::Invalid("name at least one path to back up".into()));
    }
    let mut out = Vec::new();
    for path in paths {
        std::fs::symlink_metadata(path).map_err(Error::io(path))?;
        let absolute = std::path::absolute(path).map_err(Error::io(path))?;
        let resolved = match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                .map_err(Error::io(parent))?
                .join(name),
            // `/`, or a path ending in `..`.
            _ => std::fs::canonicalize(&absolute).map_err(Error::io(&absolute))?,
        };
        out.push(resolved);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The paths to back up, as a tree of path components from `/`.
#[derive(Clone, Debug, Default)]
struct Selection {
    /// Back up this whole entry.
    whole: bool,
    children: BTreeMap<OsString, Selection>,
}

impl Selection {
    fn of(paths: &[PathBuf]) -> Selection {
        let mut root = Selection::default();
        for path in paths {
            let mut at = &mut root;
            for component in path.components() {
                if let Component::Normal(name) = component {
                    at = at.children.entry(name.to_os_string()).or_default();
                }
            }
            at.whole = true;
        }
        root
    }
}

struct Archiver {
    repo: Repository,
    index: Arc<Index>,
    /// Blobs stored by this backup so far.
    fresh: Mutex<HashSet<BlobId>>,
    uploader: PackUploader,
    trees: Trees,
    excludes: Patterns,
    read_slots: Semaphore,
    /// Chunkers not in use by a reading thread.
    chunkers: Mutex<Vec<Chunker>>,
    force: bool,
    counters: Counters,
    progress: Arc<BackupProgress>,
    errors: Mutex<Vec<String>>,
}

impl Archiver {
    /// Whether the blob must be stored (and from now on, it is this backup's
    /// to store).
    fn claim(&self, id: BlobId) -> bool {
        !self.index.contains(&id)
            && self
                .fresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
    }

    fn skip(&self, path: &Path, error: impl std::fmt::Display) {
        tracing::warn!(path = %path.display(), %error, "skipped");
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}: {error}", path.display()));
    }

    async fn save_tree(&self, tree: &Tree) -> Result<BlobId, Error> {
        let bytes = tree.to_bytes();
        let id = self.repo.keys().blob_id(&bytes);
        if self.claim(id) {
            let sealed = seal_blob(self.repo.keys(), id, BlobKind::Tree, &bytes);
            bump(&self.counters.tree_blobs, 1);
            bump(&self.counters.bytes_added, bytes.len() as u64);
            bump(&self.progress.bytes_stored, sealed.bytes.len() as u64);
            self.uploader.add(sealed).await?;
        }
        Ok(id)
    }

    async fn parent_tree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.trees.load(id).await {
            Ok(tree) => Some(tree),
            Err(e) => {
                tracing::warn!(error = %e, "a parent tree is unreadable; reading its files again");
                None
            }
        }
    }

    fn count_dir(&self, id: BlobId, parent: Option<&Node>) {
        let counter = match parent.and_then(|p| p.subtree) {
            None => &self.counters.dirs_new,
            Some(old) if old == id => &self.counters.dirs_unmodified,
            Some(_) => &self.counters.dirs_changed,
        };
        bump(counter, 1);
    }

    /// The tree of the selected entries of `dir`.
    fn archive_selection(
        self: Arc<Self>,
        dir: PathBuf,
        selection: Arc<Selection>,
        parent: Option<Tree>,
    ) -> BoxFuture<'static, Result<BlobId, Error>> {
        async move {
            let mut nodes = Vec::new();
            for (name, child) in &selection.children {
                let path = dir.join(name);
                let encoded = encode_name(name);
                let parent_node = parent.as_ref().and_then(|t| t.find(&encoded)).cloned();
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) => {
                        self.skip(&path, e);
                        continue;
                    }
                };
                let node = if child.whole {
                    self.clone()
                        .archive_entry(path, name.clone(), meta, parent_node)
                        .await?
                } else if meta.is_dir() {
                    let parent_tree = self.parent_tree(parent_node.as_ref()).await;
                    let subtree = self
                        .clone()
                        .archive_selection(path, Arc::new(child.clone()), parent_tree)
                        .await?;
                    self.count_dir(subtree, parent_node.as_ref());
                    let mut node = node_from(name, &meta);
                    node.subtree = Some(subtree);
                    Some(node)
                } else {
                    self.skip(&path, "not a directory, but paths below it were given");
                    None
                };
                nodes.extend(node);
            }
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            self.save_tree(&Tree { nodes }).await
        }
        .boxed()
    }

    /// The node for one entry, backing up what it holds; `None` when it is
    /// excluded or could not be read.
    fn archive_entry(
        self: Arc<Self>,
        path: PathBuf,
        name: OsString,
        meta: Metadata,
        parent: Option<Node>,
    ) -> BoxFuture<'static, Result<Option<Node>, Error>> {
        async move {
            if self.excludes.matches(&path) {
                return Ok(None);
            }
            let mut node = node_from(&name, &meta);
            match node.kind {
                NodeKind::File => {
                    let Some(content) = self.file_content(&path, &node, parent.as_ref()).await?
                    else {
                        return Ok(None);
                    };
                    node.content = content;
                    let counter = match &parent {
                        None => &self.counters.files_new,
                        Some(old) if *old == node => &self.counters.files_unmodified,
                        Some(_) => &self.counters.files_changed,
                    };
                    bump(counter, 1);
                    bump(&self.counters.total_bytes, node.size);
                    bump(&self.progress.files_done, 1);
                }
                NodeKind::Dir => {
                    let parent_tree = self.parent_tree(parent.as_ref()).await;
                    let Some(subtree) = self.clone().archive_dir(path, parent_tree).await? else {
                        return Ok(None);
                    };
                    self.count_dir(subtree, parent.as_ref());
                    node.subtree = Some(subtree);
                }
                NodeKind::Symlink => match std::fs::read_link(&path) {
                    Ok(target) => node.target = Some(encode_name(target.as_os_str())),
                    Err(e) => {
                        self.skip(&path, e);
                        return Ok(None);
                    }
                },
                _ => {}
            }
            Ok(Some(node))
        }
        .boxed()
    }

    /// A directory's tree; `None` if it cannot be listed.
    async fn archive_dir(
        self: Arc<Self>,
        path: PathBuf,
        parent: Option<Tree>,
    ) -> Result<Option<BlobId>, Error> {
        let listed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || list_dir(&path))
                .await
                .map_err(|e| Error::Invalid(format!("listing a directory stopped: {e}")))?
        };
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) => {
                self.skip(&path, e);
                return Ok(None);
            }
        };
        let parent = parent.map(Arc::new);
        let nodes: Vec<Option<Node>> = futures::stream::iter(entries)
            .map(|(name, meta)| {
                let parent_node = parent
                    .as_ref()
                    .and_then(|t| t.find(&encode_name(&name)))
                    .cloned();
                self.clone()
                    .archive_entry(path.join(&name), name, meta, parent_node)
            })
            .buffered(ENTRIES_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut nodes: Vec<Node> = nodes.into_iter().flatten().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(self.save_tree(&Tree { nodes }).await?))
    }

    /// A file's chunks: the parent's when the file looks unchanged and
    /// they are all stored, else read; `None` if it cannot be read.
    async fn file_content(
        self: &Arc<Self>,
        path: &Path,
        node: &Node,
        parent: Option<&Node>,
    ) -> Result<Option<Vec<BlobId>>, Error> {
        if let Some(old) = parent {
            if !self.force
                && old.kind == NodeKind::File
                && old.size == node.size
                && old.mtime == node.mtime
                && old.mtime_nsec == node.mtime_nsec
                && old.inode == node.inode
                && old.content.iter().all(|id| self.index.contains(id))
            {
                bump(&self.progress.bytes_done, node.size);
                return Ok(Some(old.content.clone()));
            }
        }
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|_| Error::Invalid("the backup was stopped".into()))?;
        let archiver = self.clone();
        let owned = path.to_path_buf();
        let handle = tokio::runtime::Handle::current();
        let read = tokio::task::spawn_blocking(move || archiver.read_file(&owned, &handle))
            .await
            .map_err(|e| Error::Invalid(format!("reading a file stopped: {e}")))?;
        match read {
            Ok(content) => Ok(Some(content)),
            Err(ReadError::Io(e)) => {
                self.skip(path, e);
                Ok(None)
            }
            Err(ReadError::Repository(e)) => Err(e),
        }
    }

    /// Chunks a file and stores the new chunks (runs on a blocking thread).
    fn read_file(
        &self,
        path: &Path,
        handle: &tokio::runtime::Handle,
    ) -> Result<Vec<BlobId>, ReadError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(ReadError::Io)?;
        let keys = self.repo.keys();
        // A chunker (and its buffer) per reading thread, kept for the run.
        let mut chunker = self
            .chunkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Chunker::new(self.repo.config().chunker, keys.chunker_seed()));
        let mut content = Vec::new();
        let chunked = chunker.chunk(&mut file, |chunk| {
            bump(&self.progress.bytes_done, chunk.len() as u64);
            let id = keys.blob_id(chunk);
            if self.claim(id) {
                let sealed = seal_blob(keys, id, BlobKind::Data, chunk);
                bump(&self.counters.data_blobs, 1);
                bump(&self.counters.bytes_added, chunk.len() as u64);
                bump(&self.progress.bytes_stored, sealed.bytes.len() as u64);
                handle
                    .block_on(self.uploader.add(sealed))
                    .map_err(ReadError::Repository)?;
            }
            content.push(id);
            Ok(())
        });
        self.chunkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(chunker);
        chunked.map(|()| content)
    }
}

enum ReadError {
    /// The file: skipped.
    Io(std::io::Error),
    /// The repository: the backup fails.
    Repository(Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// A directory's entries with their metadata (not following symlinks).
fn list_dir(path: &Path) -> std::io::Result<Vec<(OsString, Metadata)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        // An entry removed since the listing is simply not there.
        if let Ok(meta) = std::fs::symlink_metadata(entry.path()) {
            entries.push((entry.file_name(), meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

fn node_from(name: &OsStr, meta: &Metadata) -> Node {
    let file_type = meta.file_type();
    let kind = if file_type.is_dir() {
        NodeKind::Dir
    } else if file_type.is_symlink() {
        NodeKind::Symlink
    } else if file_type.is_fifo() {
        NodeKind::Fifo
    } else if file_type.is_socket() {
        NodeKind::Socket
    } else if file_type.is_char_device() {
        NodeKind::CharDevice
    } else if file_type.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    };
    let file = kind == NodeKind::File;
    let hard_linked = file && meta.nlink() > 1;
    Node {
        name: encode_name(name),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        size: if file { meta.size() } else { 0 },
        inode: if file { meta.ino() } else { 0 },
        device: if hard_linked { meta.dev() } else { 0 },
        links: if hard_linked { meta.nlink() } else { 0 },
        content: Vec::new(),
        subtree: None,
        target: None,
        rdev: if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
            meta.rdev()
        } else {
            0
        },
    }
}

/// Counts the files and bytes a backup will go through, for its progress.
fn scan(selection: &Selection, excludes: &Patterns, progress: &BackupProgress, stop: &AtomicBool) {
    fn walk(
        path: &Path,
        selection: &Selection,
        excludes: &Patterns,
        progress: &BackupProgress,
        stop: &AtomicBool,
    ) {
        for (name, child) in &selection.children {
            let path = path.join(name);
            if child.whole {
                count(&path, excludes, progress, stop);
            } else {
                walk(&path, child, excludes, progress, stop);
            }
        }
    }
    fn count(path: &Path, excludes: &Patterns, progress: &BackupProgress, stop: &AtomicBool) {
        if stop.load(Ordering::Relaxed) || excludes.matches(path) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    count(&entry.path(), excludes, progress, stop);
                }
            }
        } else if meta.is_file() {
            bump(&progress.files_total, 1);
            bump(&progress.bytes_total, meta.size());
        }
    }
    walk(Path::new("/"), selection, excludes, progress, stop);
    progress.scan_done.store(true, Ordering::Relaxed);
}
