//! `backup restore`: writes a snapshot (or the part of it the patterns
//! select) below a target directory.
//!
//! 1. The trees are walked once: directories, symlinks and special files
//!    are made, regular files are created at their full size (sparse: the
//!    blocks of an all-zero chunk are never written, so a sparse file stays
//!    sparse), and each chunk is noted with the places it goes.
//! 2. The chunks are fetched pack by pack, several packs at once, with one
//!    ranged download per run of needed blobs; each blob is decrypted,
//!    decompressed and checked against its id before it is written at its
//!    offsets. A missing or damaged pack is reported with the files it
//!    leaves incomplete, and everything else is still restored.
//! 3. Hard links are made, then modes, owners (when running as root) and
//!    times are set, directories last and deepest first (writing into a
//!    directory changes its mtime).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use crate::blob::{open_blob, BlobId, PackId};
use crate::filter::Patterns;
use crate::index::{Index, Location};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{decode_name, Node, NodeKind, Trees};
use crate::Error;

/// Needed blobs closer than this in a pack are fetched in one request.
const MERGE_GAP: u64 = 1024 * 1024;
/// Longest single request: bounds the memory of a download.
const MAX_RUN: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only these paths (and what is below them); all when empty.
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    /// Packs fetched at once.
    pub download_concurrency: usize,
}

#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
    /// What could not be restored, and why.
    pub errors: Vec<String>,
}

/// A regular file to fill.
struct FileTarget {
    path: PathBuf,
}

/// Where a blob goes: (file, offset) pairs.
type Placements = HashMap<BlobId, Vec<(u32, u64)>>;

struct Plan {
    files: Vec<FileTarget>,
    placements: Placements,
    /// Nodes whose metadata is set at the end, with their paths (directories
    /// in the order met: parents before children).
    metadata: Vec<(PathBuf, Node)>,
    /// (new path, existing path) hard links to make.
    links: Vec<(PathBuf, PathBuf)>,
    summary: RestoreSummary,
}

pub async fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreSummary, Error> {
    let includes = Patterns::new(&options.includes)?;
    let excludes = Patterns::new(&options.excludes)?;
    let index = Arc::new(Index::load(repo).await?);
    let trees = Trees::new(repo, index.clone());
    std::fs::create_dir_all(&options.target).map_err(Error::io(&options.target))?;
    let mut plan = Plan {
        files: Vec::new(),
        placements: HashMap::new(),
        metadata: Vec::new(),
        links: Vec::new(),
        summary: RestoreSummary::default(),
    };
    let mut hard_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Depth first with an explicit stack: (tree, path in the snapshot).
    let mut stack = vec![(snapshot.tree, PathBuf::from("/"))];
    while let Some((tree_id, dir)) = stack.pop() {
        let tree = trees.load(tree_id).await?;
        for node in tree.nodes {
            let name = node.os_name()?;
            let inner = dir.join(&name);
            let selected = (includes.is_empty() || includes.matches_or_below(&inner))
                && !excludes.matches_or_below(&inner);
            let on_the_way = !selected
                && node.kind == NodeKind::Dir
                && !excludes.matches_or_below(&inner)
                && may_hold_includes(&options.includes, &inner);
            if !selected && !on_the_way {
                continue;
            }
            let path = options
                .target
                .join(inner.strip_prefix("/").unwrap_or(&inner));
            match node.kind {
                NodeKind::Dir => {
                    match std::fs::create_dir(&path) {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                        Err(e) => return Err(Error::io(&path)(e)),
                    }
                    if let Some(subtree) = node.subtree {
                        stack.push((subtree, inner));
                    }
                    plan.summary.dirs += 1;
                    plan.metadata.push((path, node));
                }
                NodeKind::File => {
                    if node.links > 1 {
                        if let Some(first) = hard_links.get(&(node.device, node.inode)) {
                            plan.links.push((path, first.clone()));
                            plan.summary.files += 1;
                            continue;
                        }
                        hard_links.insert((node.device, node.inode), path.clone());
                    }
                    // A chunk that no pack holds: the file is reported,
                    // everything else is still restored.
                    let lengths: Option<Vec<u64>> = node
                        .content
                        .iter()
                        .map(|id| index.get(id).map(|l| l.raw_length as u64))
                        .collect();
                    let Some(lengths) = lengths else {
                        plan.summary.errors.push(format!(
                            "a chunk of it is in no pack; incomplete: {}",
                            path.display()
                        ));
                        continue;
                    };
                    create_file(&path, node.size)?;
                    let file = plan.files.len() as u32;
                    let mut offset = 0;
                    for (id, length) in node.content.iter().zip(lengths) {
                        plan.placements.entry(*id).or_default().push((file, offset));
                        offset += length;
                    }
                    plan.files.push(FileTarget { path: path.clone() });
                    progress.files_total.fetch_add(1, Ordering::Relaxed);
                    progress.bytes_total.fetch_add(node.size, Ordering::Relaxed);
                    plan.summary.files += 1;
                    plan.summary.bytes += node.size;
                    plan.metadata.push((path, node));
                }
                NodeKind::Symlink => {
                    let target = decode_name(node.target.as_deref().unwrap_or_default())?;
                    replace_with(&path, |p| std::os::unix::fs::symlink(&target, p))?;
                    plan.summary.others += 1;
                    plan.metadata.push((path, node));
                }
                NodeKind::Fifo => {
                    replace_with(&path, |p| {
                        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(node.mode))
                            .map_err(std::io::Error::from)
                    })?;
                    plan.summary.others += 1;
                    plan.metadata.push((path, node));
                }
                NodeKind::CharDevice | NodeKind::BlockDevice => {
                    let kind = if node.kind == NodeKind::CharDevice {
                        nix::sys::stat::SFlag::S_IFCHR
                    } else {
                        nix::sys::stat::SFlag::S_IFBLK
                    };
                    let made = replace_with(&path, |p| {
                        nix::sys::stat::mknod(
                            p,
                            kind,
                            nix::sys::stat::Mode::from_bits_truncate(node.mode),
                            node.rdev,
                        )
                        .map_err(std::io::Error::from)
                    });
                    match made {
                        Ok(()) => {
                            plan.summary.others += 1;
                            plan.metadata.push((path, node));
                        }
                        Err(e) => plan.summary.errors.push(e.to_string()),
                    }
                }
                // A socket belongs to the process that listened on it.
                NodeKind::Socket => {}
            }
        }
    }

    let Plan {
        files,
        placements,
        metadata,
        links,
        mut summary,
    } = plan;
    let files = Arc::new(files);
    let placements = Arc::new(placements);
    let errors = Arc::new(Mutex::new(Vec::new()));
    // The packs to read, each with its needed blobs by offset.
    let mut by_pack: HashMap<PackId, Vec<(BlobId, Location)>> = HashMap::new();
    for id in placements.keys() {
        if let Some(location) = index.get(id) {
            by_pack
                .entry(index.pack_id(&location))
                .or_default()
                .push((*id, location));
        }
    }
    futures::stream::iter(by_pack)
        .map(|(pack, mut blobs)| {
            let repo = repo.clone();
            let files = files.clone();
            let placements = placements.clone();
            let progress = progress.clone();
            let errors = errors.clone();
            async move {
                blobs.sort_by_key(|(_, l)| l.offset);
                if let Err(e) =
                    restore_pack(&repo, pack, &blobs, &files, &placements, &progress).await
                {
                    let mut affected: Vec<String> = blobs
                        .iter()
                        .flat_map(|(id, _)| placements.get(id).into_iter().flatten())
                        .map(|(file, _)| files[*file as usize].path.display().to_string())
                        .collect();
                    affected.sort();
                    affected.dedup();
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{e}; incomplete: {}", affected.join(", ")));
                }
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(options.download_concurrency.max(1))
        .try_collect::<()>()
        .await?;
    summary.errors.extend(std::mem::take(
        &mut *errors.lock().unwrap_or_else(|p| p.into_inner()),
    ));

    for (path, existing) in &links {
        if let Err(e) = replace_with(path, |p| std::fs::hard_link(existing, p)) {
            summary.errors.push(e.to_string());
        }
    }
    let is_root = nix::unistd::geteuid().is_root();
    // Directories last, deepest first.
    let (dirs, others): (Vec<_>, Vec<_>) = metadata
        .into_iter()
        .partition(|(_, node)| node.kind == NodeKind::Dir);
    for (path, node) in others.iter().chain(dirs.iter().rev()) {
        if let Err(e) = set_metadata(path, node, is_root) {
            summary.errors.push(e.to_string());
        }
    }
    Ok(summary)
}

/// Whether a directory at `dir` (in the snapshot) may hold a path an
/// include pattern names: true unless an anchored pattern leads elsewhere.
fn may_hold_includes(includes: &[String], dir: &Path) -> bool {
    includes
        .iter()
        .any(|pattern| match pattern.strip_prefix('/') {
            None => true,
            Some(anchored) => {
                let wanted: Vec<&str> = anchored.split('/').filter(|c| !c.is_empty()).collect();
                let have: Vec<OsString> = dir
                    .components()
                    .skip(1)
                    .map(|c| c.as_os_str().to_os_string())
                    .collect();
                have.len() < wanted.len()
                    && have.iter().zip(&wanted).all(|(h, w)| {
                        w.contains(['*', '?', '[']) || h.as_os_str() == std::ffi::OsStr::new(w)
                    })
            }
        })
}

fn create_file(path: &Path, size: u64) -> Result<(), Error> {
    // A symlink or other entry where the file goes is replaced, never
    // written through.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_file() {
            remove(path).map_err(Error::io(path))?;
        }
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags_nofollow()
        .open(path)
        .map_err(Error::io(path))?;
    file.set_len(size).map_err(Error::io(path))
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, nix::libc::O_NOFOLLOW)
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `path` with `make`, replacing whatever is there.
fn replace_with(path: &Path, make: impl Fn(&Path) -> std::io::Result<()>) -> Result<(), Error> {
    remove(path).map_err(Error::io(path))?;
    make(path).map_err(Error::io(path))
}

async fn restore_pack(
    repo: &Repository,
    pack: PackId,
    blobs: &[(BlobId, Location)],
    files: &Arc<Vec<FileTarget>>,
    placements: &Arc<Placements>,
    progress: &RestoreProgress,
) -> Result<(), Error> {
    let name = Repository::pack_key(pack);
    let mut start = 0;
    while start < blobs.len() {
        // One run: blobs close together, up to MAX_RUN bytes.
        let first = blobs[start].1.offset as u64;
        let mut end = start + 1;
        while end < blobs.len() {
            let l = &blobs[end].1;
            let previous_end = blobs[end - 1].1.offset as u64 + blobs[end - 1].1.length as u64;
            if l.offset as u64 > previous_end + MERGE_GAP
                || l.offset as u64 + l.length as u64 - first > MAX_RUN
            {
                break;
            }
            end += 1;
        }
        let last = &blobs[end - 1].1;
        let length = last.offset as u64 + last.length as u64 - first;
        let bytes = repo.get_range(&name, first, length).await?;
        let run: Vec<(BlobId, Location)> = blobs[start..end].to_vec();
        let (repo, files, placements) = (repo.clone(), files.clone(), placements.clone());
        let written = tokio::task::spawn_blocking(move || {
            let mut written = 0;
            for (id, location) in &run {
                let at = (location.offset as u64 - first) as usize;
                let sealed = bytes
                    .get(at..at + location.length as usize)
                    .ok_or_else(|| Error::corrupt(format!("pack {pack:?}"), "it was cut short"))?;
                let plain = open_blob(
                    repo.keys(),
                    *id,
                    sealed,
                    location.compressed,
                    location.raw_length,
                )?;
                let zeros = plain.iter().all(|b| *b == 0);
                for (file, offset) in placements.get(id).into_iter().flatten() {
                    let target = &files[*file as usize];
                    if !zeros {
                        write_at(&target.path, &plain, *offset)?;
                    }
                    written += plain.len() as u64;
                }
            }
            Ok::<_, Error>(written)
        })
        .await
        .map_err(|e| Error::Invalid(format!("writing restored files stopped: {e}")))??;
        progress.bytes_done.fetch_add(written, Ordering::Relaxed);
        start = end;
    }
    Ok(())
}

fn write_at(path: &Path, bytes: &[u8], offset: u64) -> Result<(), Error> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nofollow()
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all_at(bytes, offset).map_err(Error::io(path))
}

fn set_metadata(path: &Path, node: &Node, is_root: bool) -> Result<(), Error> {
    if is_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)).map_err(Error::io(path))?;
    }
    if node.kind != NodeKind::Symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))
            .map_err(Error::io(path))?;
    }
    let mtime = filetime::FileTime::from_unix_time(node.mtime, node.mtime_nsec);
    filetime::set_symlink_file_times(path, mtime, mtime).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_on_the_way_to_an_anchored_include_are_entered() {
        let includes = vec!["/home/me/docs".to_string()];
        assert!(may_hold_includes(&includes, Path::new("/home")));
        assert!(may_hold_includes(&includes, Path::new("/home/me")));
        assert!(!may_hold_includes(&includes, Path::new("/home/other")));
        assert!(!may_hold_includes(&includes, Path::new("/home/me/docs")));
        assert!(may_hold_includes(
            &["*.txt".to_string()],
            Path::new("/any/where")
        ));
    }
}
