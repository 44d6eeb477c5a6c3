//! The piece store: piece files on disk, the trash, the space they use, and
//! their expirations.
//!
//! Layout under the storage directory:
//!
//! ```text
//! pieces/<satellite id hex>/<first 2 hex digits of piece id>/<other 62 digits>.piece
//! trash/<satellite id hex>/<first 2 hex digits of piece id>/<other 62 digits>.piece
//! temp/<random>.partial            uploads in progress; removed at startup
//! node.db                          the piece index (see [`crate::index`])
//! lock                             locked by the process that has the store open
//! ```
//!
//! A piece file is a fixed [`PIECE_HEADER_SIZE`]-byte header region, then the
//! piece data, then the 32-byte leaf hashes of its hash tree
//! ([`archipel_proto::hashtree`]), so a range proof is served without rereading
//! the piece. The header region holds a magic, a format version, and (as a
//! protobuf) the order limit the piece was stored under, the signed piece hash
//! and the hash chunk size; the rest of it is zero.
//!
//! An upload is written to a temporary file in the same file system, starting
//! after the header region; the header is written last, the file fsynced and
//! then renamed into place (and its directory fsynced). So a crash, a dropped
//! connection or a full disk never leaves a half piece under a piece name.
//!
//! A stored piece is never replaced: an upload of a piece id the store holds
//! already fails with [`Error::PieceExists`], early when the piece is there at
//! [`PieceStore::create`], and for good at [`PieceWriter::commit`], which
//! checks that the name is free and renames under the lock of the piece index
//! that every move and removal of a piece file takes. So of two concurrent
//! uploads of one piece exactly one is stored, and the other leaves it intact.
//! (The lock is the process's: a storage directory serves one process, which
//! holds an exclusive `flock` on `lock` in it while the store is open.)
//!
//! Every piece file has a row in the index, changed with the file under that
//! lock (journalled, so a crash is repaired at the next open), and the space
//! used per satellite is kept with the rows: opening the store reads it
//! rather than walking the disk. The walk ([`PieceStore::reconcile`]) is
//! needed, and the node runs it in the background, only when the index is
//! new beside existing pieces or may have lost its last transactions to a
//! machine crash.
//!
//! Garbage collection moves pieces to the trash rather than deleting them
//! ([`PieceStore::trash`]); the trash can be restored and is emptied after
//! some days (see [`crate::retain`]). Trashed pieces are not served.
//!
//! Space: every piece file counts with its full size, in the trash too. An
//! upload reserves room for the most its order limit allows before it writes
//! a byte, and trades the reservation for the real size when it commits, so
//! concurrent uploads cannot together overrun the allocation. The free space
//! of the disk itself caps what is offered, whatever the allocation says.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use archipel_proto::hashtree::{self, Hash, TreeBuilder};
use archipel_proto::orders::{self, PieceId};
use archipel_proto::pb::{OrderLimit, PieceHash};
use archipel_proto::{Identity, NodeId};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::index::{Index, PieceRow, Place, Settled, Usage};

/// Bytes before the piece data in every piece file.
pub const PIECE_HEADER_SIZE: u64 = 1024;
const MAGIC: &[u8; 8] = b"ARCPIECE";
const FORMAT_VERSION: u16 = 1;
/// magic, version, encoded header length.
const PREAMBLE_SIZE: usize = 8 + 2 + 4;
const PIECE_EXTENSION: &str = "piece";
const TEMP_EXTENSION: &str = "partial";
const HASH_SIZE: u64 = 32;
const PIECES_DIR: &str = "pieces";
const TRASH_DIR: &str = "trash";
/// Pieces changed under one hold of the index lock, so that a long garbage
/// collection round lets uploads commit in between.
pub(crate) const BATCH: usize = 1000;

/// What a piece file's header region records, as a protobuf so fields can be
/// added later without a new format version.
#[derive(Clone, PartialEq, prost::Message)]
struct PieceHeader {
    #[prost(message, optional, tag = "1")]
    order_limit: Option<OrderLimit>,
    #[prost(message, optional, tag = "2")]
    hash: Option<PieceHash>,
    #[prost(uint32, tag = "3")]
    chunk_size: u32,
}

/// Where the piece `piece_id` of `satellite` lives under `storage_dir`.
pub fn piece_path(storage_dir: &Path, satellite: &NodeId, piece_id: &PieceId) -> PathBuf {
    place_path(storage_dir, Place::Stored, satellite, piece_id)
}

/// Where the piece is kept while it is in the trash.
pub fn trash_path(storage_dir: &Path, satellite: &NodeId, piece_id: &PieceId) -> PathBuf {
    place_path(storage_dir, Place::Trash(0), satellite, piece_id)
}

fn place_path(storage_dir: &Path, place: Place, satellite: &NodeId, piece_id: &PieceId) -> PathBuf {
    let root = match place {
        Place::Stored => PIECES_DIR,
        Place::Trash(_) => TRASH_DIR,
    };
    let hex = hex::encode(piece_id);
    let (fan_out, rest) = hex.split_at(2);
    storage_dir
        .join(root)
        .join(satellite.to_string())
        .join(fan_out)
        .join(format!("{rest}.{PIECE_EXTENSION}"))
}

/// Whether `path` names a stored piece file (as opposed to a piece in the
/// trash, an upload in progress or anything else in the storage directory).
pub fn is_piece_file(path: &Path) -> bool {
    parse_piece_path(path, PIECES_DIR).is_some()
}

/// Whether `path` names a piece file in the trash.
pub fn is_trashed_piece_file(path: &Path) -> bool {
    parse_piece_path(path, TRASH_DIR).is_some()
}

/// The satellite and piece id the path of a piece file under `root` encodes.
fn parse_piece_path(path: &Path, root: &str) -> Option<(NodeId, PieceId)> {
    if path.extension()? != PIECE_EXTENSION {
        return None;
    }
    let rest = path.file_stem()?.to_str()?;
    let fan_out_dir = path.parent()?;
    let fan_out = fan_out_dir.file_name()?.to_str()?;
    let satellite_dir = fan_out_dir.parent()?;
    let satellite: NodeId = satellite_dir.file_name()?.to_str()?.parse().ok()?;
    if satellite_dir.parent()?.file_name()? != root {
        return None;
    }
    let bytes = hex::decode(format!("{fan_out}{rest}")).ok()?;
    Some((satellite, bytes.try_into().ok()?))
}

/// Bytes a piece of `data_size` bytes takes on disk.
pub fn piece_file_size(data_size: u64, chunk_size: u32) -> u64 {
    // Saturating, since `data_size` may come from an order limit's byte count.
    PIECE_HEADER_SIZE
        .saturating_add(data_size)
        .saturating_add(hashtree::leaf_count(data_size, chunk_size).saturating_mul(HASH_SIZE))
}

/// Space accounting, behind a lock that is never held across I/O.
#[derive(Default)]
struct Space {
    /// Piece files per satellite, as the index records them.
    usage: HashMap<NodeId, Usage>,
    /// Bytes promised to uploads in progress.
    reserved: u64,
    /// Whether the index is known to match the disk (false while a
    /// reconciliation it needs has not finished).
    reconciled: bool,
    /// Why the disk takes no new pieces: the last write probe failed.
    disk_problem: Option<String>,
}

impl Space {
    fn apply(&mut self, settled: &[Settled]) {
        for change in settled {
            self.usage
                .entry(change.satellite)
                .or_default()
                .shift(&change.after, &change.before);
        }
    }

    fn disk_bytes(&self) -> u64 {
        self.usage.values().map(Usage::disk_bytes).sum()
    }
}

struct Inner {
    /// Held open for the store's life: its lock keeps a second process (a
    /// second node, or an operator command) out of the directory.
    _lock: std::fs::File,
    dir: PathBuf,
    temp_dir: PathBuf,
    allocated: u64,
    chunk_size: u32,
    space: Mutex<Space>,
    /// The piece index. Its lock also serializes moves and removals of piece
    /// files, so that a row changes with its file, and a name found free
    /// before a rename is still free at it.
    index: Mutex<Index>,
}

/// The pieces on this node's disk. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct PieceStore {
    inner: Arc<Inner>,
}

/// Counts of what a change to many pieces did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChangeReport {
    pub pieces: usize,
    pub bytes: u64,
}

impl ChangeReport {
    fn add(&mut self, other: ChangeReport) {
        self.pieces += other.pieces;
        self.bytes += other.bytes;
    }
}

/// What [`PieceStore::reconcile`] corrected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Files on disk the index did not record as they are.
    pub files_indexed: usize,
    /// Rows whose file was not where they said.
    pub rows_corrected: usize,
}

impl PieceStore {
    /// Opens (creating if needed) the store in `dir`: removes the leftovers of
    /// interrupted uploads, settles the pieces that were changing when the
    /// last run stopped, and reads the space used from the piece index. If
    /// the index cannot be trusted whole (new, or the machine crashed), a
    /// reconciliation with the disk starts in the background.
    pub async fn open(dir: PathBuf, allocated: u64) -> Result<Self> {
        spawn_blocking(move || {
            for sub in [PIECES_DIR, TRASH_DIR, "temp"] {
                let path = dir.join(sub);
                std::fs::create_dir_all(&path)
                    .map_err(Error::io(format!("cannot create {}", path.display())))?;
            }
            let lock = lock_storage_dir(&dir)?;
            let (index, opened) = Index::open(&dir)?;
            let store = PieceStore {
                inner: Arc::new(Inner {
                    _lock: lock,
                    temp_dir: dir.join("temp"),
                    dir,
                    allocated,
                    chunk_size: hashtree::DEFAULT_CHUNK_SIZE,
                    space: Mutex::new(Space::default()),
                    index: Mutex::new(index),
                }),
            };
            store.remove_unfinished_uploads()?;
            let mut journal: HashMap<NodeId, Vec<PieceId>> = HashMap::new();
            for (satellite, id) in opened.journal {
                journal.entry(satellite).or_default().push(id);
            }
            for (satellite, ids) in journal {
                tracing::info!(%satellite, pieces = ids.len(), "settling pieces that were changing when the node stopped");
                store.settle_from_disk(&satellite, &ids)?;
            }
            let usage = store.index().usage()?;
            let needs_reconciling =
                opened.lost_transactions || (opened.created && store.holds_piece_files()?);
            {
                let mut space = store.space();
                space.usage = usage;
                space.reconciled = !needs_reconciling;
                tracing::info!(
                    used_bytes = space.disk_bytes(),
                    allocated_bytes = allocated,
                    "piece store opened"
                );
            }
            if opened.lost_transactions {
                tracing::warn!("the node did not stop cleanly before the machine restarted; the piece index must be checked against the disk");
            }
            Ok(store)
        })
        .await
    }

    /// Whether any satellite directory exists under `pieces/` or `trash/`.
    fn holds_piece_files(&self) -> Result<bool> {
        for root in [PIECES_DIR, TRASH_DIR] {
            if !subdirectories(&self.inner.dir.join(root))?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn remove_unfinished_uploads(&self) -> Result<()> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.inner.temp_dir).map_err(Error::io(format!(
            "cannot list {}",
            self.inner.temp_dir.display()
        )))?;
        for entry in entries.flatten() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), "cannot remove an unfinished upload: {e}")
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished uploads left by an earlier run");
        }
        Ok(())
    }

    /// Marks the index as closed cleanly, so the next open trusts it whole.
    pub async fn close(&self) -> Result<()> {
        let store = self.clone();
        spawn_blocking(move || store.index().close()).await
    }

    fn space(&self) -> MutexGuard<'_, Space> {
        // The lock only guards counters; a panic elsewhere cannot leave them
        // half updated, so a poisoned lock is still usable.
        self.inner.space.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index's transactions roll back if a panic interrupts them.
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.inner.allocated
    }

    /// Bytes of stored piece files (not counting the trash).
    pub fn used_bytes(&self) -> u64 {
        self.space().usage.values().map(|u| u.bytes).sum()
    }

    /// Bytes of piece files in the trash.
    pub fn trash_bytes(&self) -> u64 {
        self.space().usage.values().map(|u| u.trash_bytes).sum()
    }

    /// The space used per satellite.
    pub fn usage(&self) -> HashMap<NodeId, Usage> {
        self.space().usage.clone()
    }

    /// Whether the index is known to match the disk.
    pub fn reconciled(&self) -> bool {
        self.space().reconciled
    }

    /// Why the disk takes no new pieces, while the last write probe failed.
    pub fn disk_problem(&self) -> Option<String> {
        self.space().disk_problem.clone()
    }

    /// Records the outcome of a write probe (`None`: it passed); uploads are
    /// refused while a problem stands.
    pub(crate) fn set_disk_problem(&self, problem: Option<String>) {
        self.space().disk_problem = problem;
    }

    /// The directory unfinished uploads (and the disk probe) write to.
    pub(crate) fn temp_dir(&self) -> &Path {
        &self.inner.temp_dir
    }

    /// Runs `work` on the node's database, off the async threads.
    pub(crate) async fn with_index<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Index) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        spawn_blocking(move || work(&mut store.index())).await
    }

    /// Bytes reserved by uploads in progress.
    pub fn reserved_bytes(&self) -> u64 {
        self.space().reserved
    }

    /// Bytes a new upload may still use: what is left of the allocation,
    /// capped by the disk's free space (less what running uploads may write).
    pub fn available_bytes(&self) -> Result<u64> {
        let disk_free = self.disk_free()?;
        Ok(self.available_within(&self.space(), disk_free))
    }

    fn disk_free(&self) -> Result<u64> {
        let stat = rustix::fs::statvfs(&self.inner.dir).map_err(|e| Error::Io {
            context: format!("cannot read the free space of {}", self.inner.dir.display()),
            source: e.into(),
        })?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn available_within(&self, space: &Space, disk_free: u64) -> u64 {
        let left = self
            .inner
            .allocated
            .saturating_sub(space.disk_bytes().saturating_add(space.reserved));
        left.min(disk_free.saturating_sub(space.reserved))
    }

    /// Starts writing the piece `limit` authorizes, of at most `max_size` data
    /// bytes. Nothing is visible under the piece's name until
    /// [`PieceWriter::commit`]; dropping the writer discards the upload.
    pub async fn create(&self, limit: OrderLimit, max_size: u64) -> Result<PieceWriter> {
        let satellite = NodeId::from_bytes(&limit.satellite_id)?;
        let piece_id = orders::piece_id_from_bytes(&limit.piece_id)?;
        let chunk_size = self.inner.chunk_size;
        let requested = piece_file_size(max_size, chunk_size);
        refuse_existing(
            &piece_path(&self.inner.dir, &satellite, &piece_id),
            &piece_id,
        )?;
        let disk_free = self.disk_free()?;
        {
            // Checked and reserved under one lock, so two uploads cannot both
            // take the last free bytes.
            let mut space = self.space();
            if let Some(problem) = &space.disk_problem {
                return Err(Error::DiskUnhealthy(problem.clone()));
            }
            let available = self.available_within(&space, disk_free);
            if requested > available {
                return Err(Error::NotEnoughSpace {
                    requested,
                    available,
                });
            }
            space.reserved += requested;
        }
        let mut writer = PieceWriter {
            store: self.clone(),
            file: None,
            temp_path: self.inner.temp_dir.join(format!(
                "{}.{TEMP_EXTENSION}",
                hex::encode(rand::random::<[u8; 16]>())
            )),
            limit,
            satellite,
            piece_id,
            max_size,
            tree: TreeBuilder::new(chunk_size),
            chunk_size,
            reservation: requested,
            committed: false,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&writer.temp_path)
            .await
            .map_err(Error::io(format!(
                "cannot create {}",
                writer.temp_path.display()
            )))?;
        file.seek(SeekFrom::Start(PIECE_HEADER_SIZE))
            .await
            .map_err(Error::io("cannot seek in a new piece file"))?;
        writer.file = Some(file);
        Ok(writer)
    }

    /// Opens a stored piece for reading. Expired pieces count as absent.
    pub async fn open_piece(&self, satellite: NodeId, piece_id: PieceId) -> Result<StoredPiece> {
        let path = piece_path(&self.inner.dir, &satellite, &piece_id);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::PieceNotFound(hex::encode(piece_id)));
            }
            Err(e) => return Err(Error::io(format!("cannot open {}", path.display()))(e)),
        };
        let damaged = |reason: String| Error::DamagedPiece {
            path: path.clone(),
            reason,
        };
        let mut region = vec![0u8; PIECE_HEADER_SIZE as usize];
        file.read_exact(&mut region)
            .await
            .map_err(|e| damaged(format!("cannot read its header: {e}")))?;
        let header = decode_header(&region).map_err(damaged)?;
        let (order_limit, hash) = match (header.order_limit, header.hash) {
            (Some(limit), Some(hash)) => (limit, hash),
            _ => {
                return Err(damaged(
                    "its header lacks the order limit or the hash".into(),
                ))
            }
        };
        let piece_size = u64::try_from(hash.piece_size).map_err(|_| {
            damaged(format!(
                "its header has a negative size {}",
                hash.piece_size
            ))
        })?;
        if header.chunk_size == 0 {
            return Err(damaged("its header has a zero hash chunk size".into()));
        }
        let expected = piece_file_size(piece_size, header.chunk_size);
        let actual = file
            .metadata()
            .await
            .map_err(Error::io(format!(
                "cannot read the size of {}",
                path.display()
            )))?
            .len();
        if actual != expected {
            return Err(damaged(format!(
                "it has {actual} bytes where its header implies {expected}"
            )));
        }
        let expiration = order_limit.piece_expiration;
        if expiration != 0 && expiration <= orders::unix_now() {
            return Err(Error::PieceExpired(hex::encode(piece_id)));
        }
        Ok(StoredPiece {
            path,
            file,
            order_limit,
            hash,
            chunk_size: header.chunk_size,
            piece_size,
        })
    }

    /// Removes a piece, stored or in the trash.
    pub async fn delete(&self, satellite: NodeId, piece_id: PieceId) -> Result<()> {
        let report = self
            .change(satellite, vec![piece_id], |row| {
                Change::Remove(row.map(|row| row.place))
            })
            .await?;
        if report.pieces == 0 {
            return Err(Error::PieceNotFound(hex::encode(piece_id)));
        }
        Ok(())
    }

    /// Removes every piece of `satellite`, stored or in the trash: what a
    /// node does once it holds the satellite's receipt for its exit.
    pub async fn remove_all(&self, satellite: NodeId) -> Result<ChangeReport> {
        let mut total = ChangeReport::default();
        loop {
            let page = self.pieces(satellite, None, None).await?;
            if page.is_empty() {
                return Ok(total);
            }
            let ids: Vec<PieceId> = page.into_iter().map(|(id, _)| id).collect();
            let report = self
                .change(satellite, ids, |row| {
                    Change::Remove(row.map(|row| row.place))
                })
                .await?;
            if report.pieces == 0 {
                // Rows whose files are gone were cleared; nothing is left to remove.
                return Ok(total);
            }
            total.add(report);
        }
    }

    /// Moves stored pieces of `satellite` to the trash (pieces not stored
    /// are left as they are).
    pub async fn trash(
        &self,
        satellite: NodeId,
        ids: Vec<PieceId>,
        now: i64,
    ) -> Result<ChangeReport> {
        self.change(satellite, ids, move |row| match row {
            Some(PieceRow {
                place: Place::Stored,
                ..
            }) => Change::Move(Place::Trash(now)),
            _ => Change::Keep,
        })
        .await
    }

    /// Moves every piece of `satellite` in the trash back to where it was.
    pub async fn restore_trash(&self, satellite: NodeId) -> Result<ChangeReport> {
        let mut report = ChangeReport::default();
        let mut after = None;
        loop {
            let page = self.pieces(satellite, Some(Place::Trash(0)), after).await?;
            let Some((last, _)) = page.last() else {
                return Ok(report);
            };
            after = Some(*last);
            let ids = page.into_iter().map(|(id, _)| id).collect();
            report.add(
                self.change(satellite, ids, |row| match row {
                    Some(PieceRow {
                        place: Place::Trash(_),
                        ..
                    }) => Change::Move(Place::Stored),
                    _ => Change::Keep,
                })
                .await?,
            );
        }
    }

    /// A page of the pieces of `satellite` after `after` in id order, from
    /// the index: all, or those in `place` (any trash time for the trash).
    pub async fn pieces(
        &self,
        satellite: NodeId,
        place: Option<Place>,
        after: Option<PieceId>,
    ) -> Result<Vec<(PieceId, PieceRow)>> {
        let store = self.clone();
        spawn_blocking(move || {
            store
                .index()
                .pieces(&satellite, place, after.as_ref(), BATCH)
        })
        .await
    }

    /// The creation time of the last retain filter applied for `satellite`.
    pub async fn last_retain(&self, satellite: NodeId) -> Result<Option<i64>> {
        self.with_index(move |index| index.last_retain(&satellite))
            .await
    }

    pub async fn set_last_retain(&self, satellite: NodeId, created_at: i64) -> Result<()> {
        self.with_index(move |index| index.set_last_retain(&satellite, created_at))
            .await
    }

    /// Removes the stored pieces whose expiration is at or before `now`.
    pub async fn sweep_expired(&self, now: i64) -> Result<ChangeReport> {
        self.sweep(
            move |index| index.expired(now, BATCH),
            move |row| match row {
                Some(PieceRow {
                    place: Place::Stored,
                    expiration,
                    ..
                }) if expiration != 0 && expiration <= now => Change::Remove(Some(Place::Stored)),
                _ => Change::Keep,
            },
        )
        .await
    }

    /// Removes the pieces put in the trash before `cutoff`.
    pub async fn empty_trash(&self, cutoff: i64) -> Result<ChangeReport> {
        self.sweep(
            move |index| index.trashed_before(cutoff, BATCH),
            move |row| match row {
                Some(PieceRow {
                    place: Place::Trash(at),
                    ..
                }) if at < cutoff => Change::Remove(Some(Place::Trash(at))),
                _ => Change::Keep,
            },
        )
        .await
    }

    /// Changes, batch by batch, the pieces `due` finds, as `decide` says,
    /// until a batch changes nothing (so a piece that cannot be removed is
    /// tried again on the next sweep, not in a loop).
    async fn sweep(
        &self,
        due: impl Fn(&Index) -> Result<Vec<(NodeId, PieceId)>> + Send + Sync + Copy + 'static,
        decide: impl Fn(Option<PieceRow>) -> Change + Send + Sync + Copy + 'static,
    ) -> Result<ChangeReport> {
        let mut report = ChangeReport::default();
        loop {
            let store = self.clone();
            let batch = spawn_blocking(move || due(&store.index())).await?;
            let mut by_satellite: HashMap<NodeId, Vec<PieceId>> = HashMap::new();
            for (satellite, id) in batch {
                by_satellite.entry(satellite).or_default().push(id);
            }
            let mut changed = ChangeReport::default();
            for (satellite, ids) in by_satellite {
                changed.add(self.change(satellite, ids, decide).await?);
            }
            if changed.pieces == 0 {
                return Ok(report);
            }
            report.add(changed);
        }
    }

    /// Changes the files of `ids` as `decide` says from each one's row (the
    /// index's, or the disk's where the index has none) and settles their
    /// rows, under the index lock, journalled. A piece whose file cannot be
    /// changed is logged and settled from what is on disk. Returns how many
    /// pieces changed and their bytes.
    async fn change(
        &self,
        satellite: NodeId,
        ids: Vec<PieceId>,
        decide: impl Fn(Option<PieceRow>) -> Change + Send + 'static,
    ) -> Result<ChangeReport> {
        let store = self.clone();
        spawn_blocking(move || {
            let dir = &store.inner.dir;
            let mut index = store.index();
            index.begin(&satellite, &ids)?;
            let mut report = ChangeReport::default();
            let mut rows = Vec::with_capacity(ids.len());
            let mut directories = Vec::new();
            for id in ids {
                let row = match index.get(&satellite, &id)? {
                    Some(row) => Some(row),
                    None => state_on_disk(dir, &satellite, &id)?,
                };
                let outcome = match (decide(row), row) {
                    (Change::Keep, _) | (Change::Remove(None), _) | (_, None) => {
                        rows.push((id, row));
                        continue;
                    }
                    (Change::Remove(Some(place)), Some(_)) => {
                        let path = place_path(dir, place, &satellite, &id);
                        remove_if_present(&path).map(|()| None)
                    }
                    (Change::Move(to), Some(row)) => {
                        let from = place_path(dir, row.place, &satellite, &id);
                        let target = place_path(dir, to, &satellite, &id);
                        move_piece_file(&from, &target).map(|parent| {
                            directories.push(parent);
                            Some(PieceRow { place: to, ..row })
                        })
                    }
                };
                match outcome {
                    Ok(new_row) => {
                        report.pieces += 1;
                        report.bytes += row.map_or(0, |r| r.size);
                        rows.push((id, new_row));
                    }
                    Err(e) => {
                        tracing::warn!(piece = %hex::encode(id), "cannot change a piece file: {e}");
                        rows.push((id, state_on_disk(dir, &satellite, &id)?));
                    }
                }
            }
            let settled = index.settle(&satellite, &rows)?;
            store.space().apply(&settled);
            drop(index);
            directories.sort();
            directories.dedup();
            for dir in directories {
                if let Err(e) = sync_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), "cannot sync a piece directory: {e}");
                }
            }
            Ok(report)
        })
        .await
    }

    /// Sets the rows of `ids` from what is on disk (after a crash, or where a
    /// file change failed half way).
    fn settle_from_disk(&self, satellite: &NodeId, ids: &[PieceId]) -> Result<()> {
        let mut index = self.index();
        let rows = ids
            .iter()
            .map(|id| Ok((*id, state_on_disk(&self.inner.dir, satellite, id)?)))
            .collect::<Result<Vec<_>>>()?;
        let settled = index.settle(satellite, &rows)?;
        self.space().apply(&settled);
        Ok(())
    }

    /// Makes the index match the disk: indexes piece files it lacks or
    /// records in the wrong place, and drops rows whose file is gone. Safe
    /// while the node serves: each batch is checked and settled under the
    /// index lock. Stops early, unfinished, when `cancel` fires.
    pub async fn reconcile(&self, cancel: CancellationToken) -> Result<ReconcileReport> {
        let store = self.clone();
        let finished = cancel.clone();
        let report = spawn_blocking(move || {
            let mut report = ReconcileReport::default();
            let dir = &store.inner.dir;
            for root in [PIECES_DIR, TRASH_DIR] {
                for satellite_dir in subdirectories(&dir.join(root))? {
                    for fan_out in subdirectories(&satellite_dir)? {
                        if cancel.is_cancelled() {
                            return Ok(report);
                        }
                        let mut files = Vec::new();
                        collect_files(&fan_out, &mut files)?;
                        let mut found: HashMap<NodeId, Vec<PieceId>> = HashMap::new();
                        for path in files {
                            if let Some((satellite, id)) = parse_piece_path(&path, root) {
                                found.entry(satellite).or_default().push(id);
                            }
                        }
                        for (satellite, ids) in found {
                            report.files_indexed += store.settle_mismatched(&satellite, &ids)?;
                        }
                    }
                }
            }
            let satellites = store.index().satellites()?;
            for satellite in satellites {
                let mut after: Option<PieceId> = None;
                while !cancel.is_cancelled() {
                    let page = store
                        .index()
                        .pieces(&satellite, None, after.as_ref(), BATCH)?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(*last);
                    let ids: Vec<PieceId> = page.into_iter().map(|(id, _)| id).collect();
                    report.rows_corrected += store.settle_mismatched(&satellite, &ids)?;
                }
            }
            Ok(report)
        })
        .await?;
        if !finished.is_cancelled() {
            self.space().reconciled = true;
        }
        Ok(report)
    }

    /// Under the index lock, settles from disk those of `ids` whose row does
    /// not match their file; returns how many.
    fn settle_mismatched(&self, satellite: &NodeId, ids: &[PieceId]) -> Result<usize> {
        let dir = &self.inner.dir;
        let mut index = self.index();
        let mut rows = Vec::new();
        for id in ids {
            let on_disk = state_on_disk(dir, satellite, id)?;
            let indexed = index.get(satellite, id)?;
            let matches = match (indexed, on_disk) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.size == b.size
                        && matches!(
                            (a.place, b.place),
                            (Place::Stored, Place::Stored) | (Place::Trash(_), Place::Trash(_))
                        )
                }
                _ => false,
            };
            if !matches {
                rows.push((*id, on_disk));
            }
        }
        if !rows.is_empty() {
            let settled = index.settle(satellite, &rows)?;
            self.space().apply(&settled);
        }
        Ok(rows.len())
    }
}

/// What [`PieceStore::change`] does to one piece.
enum Change {
    Keep,
    Move(Place),
    /// Remove the file where it is (`None`: there is none).
    Remove(Option<Place>),
}

/// Renames a piece file to `target` (creating its directory); returns the
/// directory to sync.
fn move_piece_file(from: &Path, target: &Path) -> std::io::Result<PathBuf> {
    let parent = target
        .parent()
        .ok_or_else(|| std::io::Error::other("a piece path without a directory"))?;
    std::fs::create_dir_all(parent)?;
    if std::fs::symlink_metadata(target).is_ok() {
        // Stored again meanwhile (a restore onto a re-uploaded piece): the
        // stored copy wins, the other goes.
        std::fs::remove_file(from)?;
    } else {
        std::fs::rename(from, target)?;
    }
    Ok(parent.to_path_buf())
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What the disk says of a piece: stored (preferred), in the trash, or absent.
fn state_on_disk(dir: &Path, satellite: &NodeId, id: &PieceId) -> Result<Option<PieceRow>> {
    for place in [Place::Stored, Place::Trash(0)] {
        let path = place_path(dir, place, satellite, id);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
        };
        // A damaged header still takes space; it counts as created long ago.
        let (created, expiration) = match read_header_blocking(&path) {
            Ok(header) => header
                .order_limit
                .map_or((0, 0), |l| (l.order_creation, l.piece_expiration)),
            Err(e) => {
                tracing::warn!("{e}");
                (0, 0)
            }
        };
        let place = match place {
            Place::Stored => Place::Stored,
            // Moving a file into the trash changes its inode, not its data.
            Place::Trash(_) => Place::Trash(meta.ctime()),
        };
        return Ok(Some(PieceRow {
            size: meta.len(),
            created,
            expiration,
            place,
        }));
    }
    Ok(None)
}

/// Takes the exclusive lock of the storage directory, failing at once if
/// another process has it.
fn lock_storage_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("cannot open {}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| Error::StorageInUse {
            path: dir.to_path_buf(),
            reason: std::io::Error::from(e).to_string(),
        },
    )?;
    Ok(file)
}

/// The directories directly in `dir` (none if it does not exist).
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()))(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("cannot list {}", dir.display())))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Runs blocking file system work off the async threads.
pub(crate) async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io {
            context: "a file system task failed".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Makes the entries of `dir` (files created, renamed or removed in it)
/// survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Fails with [`Error::PieceExists`] if a piece file is at `path`.
fn refuse_existing(path: &Path, piece_id: &PieceId) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(Error::PieceExists(hex::encode(piece_id))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot check for {}", path.display()))(e)),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(Error::io(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("cannot list {}", dir.display())))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(Error::io(format!("cannot stat {}", path.display())))?
            .is_dir();
        if is_dir {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn encode_header(header: &PieceHeader) -> Result<Vec<u8>> {
    let body = header.encode_to_vec();
    let mut region = Vec::with_capacity(PIECE_HEADER_SIZE as usize);
    region.extend_from_slice(MAGIC);
    region.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    region.extend_from_slice(&(body.len() as u32).to_le_bytes());
    region.extend_from_slice(&body);
    if region.len() > PIECE_HEADER_SIZE as usize {
        // Only oversized fields in a signed order limit can get here.
        return Err(Error::InvalidRequest(format!(
            "the order limit is too large to store ({} header bytes, at most {PIECE_HEADER_SIZE})",
            region.len()
        )));
    }
    region.resize(PIECE_HEADER_SIZE as usize, 0);
    Ok(region)
}

fn decode_header(region: &[u8]) -> std::result::Result<PieceHeader, String> {
    if region.len() < PREAMBLE_SIZE || &region[..8] != MAGIC {
        return Err("it does not start with the piece file magic".into());
    }
    let version = u16::from_le_bytes([region[8], region[9]]);
    if version != FORMAT_VERSION {
        return Err(format!("it has unknown format version {version}"));
    }
    let len = u32::from_le_bytes([region[10], region[11], region[12], region[13]]) as usize;
    let body = region
        .get(PREAMBLE_SIZE..PREAMBLE_SIZE + len)
        .ok_or_else(|| format!("its header length {len} overruns the header region"))?;
    PieceHeader::decode(body).map_err(|e| format!("its header does not decode: {e}"))
}

fn read_header_blocking(path: &Path) -> Result<PieceHeader> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::PieceNotFound(path.display().to_string()));
        }
        Err(e) => return Err(Error::io(format!("cannot open {}", path.display()))(e)),
    };
    let mut region = vec![0u8; PIECE_HEADER_SIZE as usize];
    let damaged = |reason: String| Error::DamagedPiece {
        path: path.to_path_buf(),
        reason,
    };
    file.read_exact(&mut region)
        .map_err(|e| damaged(format!("cannot read its header: {e}")))?;
    decode_header(&region).map_err(damaged)
}

/// An upload in progress. Dropping it without [`PieceWriter::commit`] removes
/// the temporary file and gives back the reserved space.
pub struct PieceWriter {
    store: PieceStore,
    file: Option<tokio::fs::File>,
    temp_path: PathBuf,
    limit: OrderLimit,
    satellite: NodeId,
    piece_id: PieceId,
    max_size: u64,
    tree: TreeBuilder,
    chunk_size: u32,
    reservation: u64,
    committed: bool,
}

impl PieceWriter {
    /// Appends piece data.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        let requested = self.tree.size() + data.len() as u64;
        if requested > self.max_size {
            return Err(archipel_proto::Error::OverLimit {
                requested: requested as i64,
                limit: self.max_size as i64,
            }
            .into());
        }
        let file = self.file_mut()?;
        file.write_all(data)
            .await
            .map_err(Error::io("cannot write piece data"))?;
        self.tree.update(data);
        Ok(())
    }

    fn file_mut(&mut self) -> Result<&mut tokio::fs::File> {
        self.file.as_mut().ok_or_else(|| Error::Io {
            context: "the piece file was already closed".into(),
            source: std::io::Error::other("write after close"),
        })
    }

    /// Finishes the piece: writes its leaf hashes and header, makes it durable
    /// and visible under its name, and returns the piece hash signed by
    /// `node`. Fails with [`Error::PieceExists`], leaving the stored piece as
    /// it is, if the piece was stored meanwhile.
    pub async fn commit(mut self, node: &Identity) -> Result<PieceHash> {
        let tree = std::mem::replace(&mut self.tree, TreeBuilder::new(self.chunk_size));
        let piece_size = tree.size();
        let (root, leaves) = tree.finish();
        let hash = orders::sign_piece_hash(
            node,
            PieceHash {
                piece_id: self.piece_id.to_vec(),
                root: root.to_vec(),
                piece_size: piece_size as i64,
                timestamp: orders::unix_now(),
                node_signature: Vec::new(),
            },
        );
        let header = encode_header(&PieceHeader {
            order_limit: Some(self.limit.clone()),
            hash: Some(hash.clone()),
            chunk_size: self.chunk_size,
        })?;
        let leaf_bytes: Vec<u8> = leaves.iter().flatten().copied().collect();
        let context = format!("cannot finish piece file {}", self.temp_path.display());
        let mut file = self.file.take().ok_or_else(|| Error::Io {
            context: context.clone(),
            source: std::io::Error::other("the file was already closed"),
        })?;
        async {
            file.write_all(&leaf_bytes).await?;
            file.seek(SeekFrom::Start(0)).await?;
            file.write_all(&header).await?;
            file.flush().await?;
            file.sync_all().await
        }
        .await
        .map_err(Error::io(context))?;
        drop(file);

        let store = self.store.clone();
        let temp = self.temp_path.clone();
        let final_path = piece_path(&store.inner.dir, &self.satellite, &self.piece_id);
        let row = PieceRow {
            size: piece_file_size(piece_size, self.chunk_size),
            created: self.limit.order_creation,
            expiration: self.limit.piece_expiration,
            place: Place::Stored,
        };
        let (satellite, piece_id) = (self.satellite, self.piece_id);
        spawn_blocking(move || {
            let parent = final_path.parent().unwrap_or(&store.inner.dir);
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("cannot create {}", parent.display())))?;
            let mut index = store.index();
            // Under the lock, no other commit can take the name between the
            // check and the rename.
            refuse_existing(&final_path, &piece_id)?;
            index.begin(&satellite, &[piece_id])?;
            if let Err(e) = std::fs::rename(&temp, &final_path) {
                index.settle(&satellite, &[(piece_id, None)])?;
                return Err(Error::io(format!(
                    "cannot move the finished piece to {}",
                    final_path.display()
                ))(e));
            }
            match index.settle(&satellite, &[(piece_id, Some(row))]) {
                Ok(settled) => store.space().apply(&settled),
                Err(e) => {
                    // Unrecorded, the piece must not stay; its journal entry
                    // settles it at the next open if this removal fails too.
                    if let Err(removal) = std::fs::remove_file(&final_path) {
                        tracing::warn!(path = %final_path.display(), "cannot remove an unrecorded piece: {removal}");
                    }
                    return Err(e);
                }
            }
            drop(index);
            // The reservation is given back by Drop, which runs whatever
            // happens to this future. Without this sync the rename itself
            // might not survive a crash.
            if let Err(e) = sync_dir(parent) {
                tracing::warn!(dir = %parent.display(), "cannot sync a piece directory: {e}");
            }
            Ok(())
        })
        .await?;
        self.committed = true;
        Ok(hash)
    }
}

impl Drop for PieceWriter {
    fn drop(&mut self) {
        if self.reservation > 0 {
            let mut space = self.store.space();
            space.reserved = space.reserved.saturating_sub(self.reservation);
        }
        if !self.committed {
            // The open handle (if any) may still have a write in flight on a
            // blocking thread; unlinking now is fine on Unix, the data just
            // goes with the last handle.
            self.file = None;
            if let Err(e) = std::fs::remove_file(&self.temp_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.temp_path.display(), "cannot remove an unfinished upload: {e}");
                }
            }
        }
    }
}

/// A committed piece opened for reading.
pub struct StoredPiece {
    path: PathBuf,
    file: tokio::fs::File,
    order_limit: OrderLimit,
    hash: PieceHash,
    chunk_size: u32,
    piece_size: u64,
}

impl StoredPiece {
    /// The order limit the piece was uploaded under.
    pub fn order_limit(&self) -> &OrderLimit {
        &self.order_limit
    }

    /// The piece hash the node signed when it stored the piece.
    pub fn hash(&self) -> &PieceHash {
        &self.hash
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn piece_size(&self) -> u64 {
        self.piece_size
    }

    /// All leaf hashes of the piece's hash tree, as stored.
    pub async fn leaves(&mut self) -> Result<Vec<Hash>> {
        let count = hashtree::leaf_count(self.piece_size, self.chunk_size);
        let mut bytes = vec![0u8; (count * HASH_SIZE) as usize];
        let path = &self.path;
        self.file
            .seek(SeekFrom::Start(PIECE_HEADER_SIZE + self.piece_size))
            .await
            .map_err(Error::io(format!("cannot seek in {}", path.display())))?;
        self.file
            .read_exact(&mut bytes)
            .await
            .map_err(Error::io(format!(
                "cannot read the leaf hashes of {}",
                path.display()
            )))?;
        Ok(bytes
            .chunks_exact(HASH_SIZE as usize)
            .map(|leaf| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(leaf);
                hash
            })
            .collect())
    }

    /// The `length` data bytes from `offset`, to be read in pieces.
    pub async fn into_data(self, offset: u64, length: u64) -> Result<PieceData> {
        let end = offset.saturating_add(length);
        if end > self.piece_size {
            return Err(Error::RangeOutOfBounds {
                offset,
                end,
                piece_size: self.piece_size,
            });
        }
        let mut file = self.file.into_std().await;
        let path = self.path;
        spawn_blocking(move || {
            file.seek(SeekFrom::Start(PIECE_HEADER_SIZE + offset))
                .map_err(Error::io(format!("cannot seek in {}", path.display())))?;
            Ok(PieceData {
                file: Some(file),
                path,
                remaining: length,
            })
        })
        .await
    }
}

/// A range of a piece's data, read in order, each read going straight from
/// the file into the buffer that is sent (a buffered async file would copy
/// it once more, into a buffer first zeroed).
pub struct PieceData {
    /// With the blocking task while a read runs; gone after a failed read.
    file: Option<std::fs::File>,
    path: PathBuf,
    remaining: u64,
}

impl PieceData {
    /// The next `max` bytes or fewer; `None` once the range is read.
    pub async fn next(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let size = self.remaining.min(max as u64);
        if size == 0 {
            return Ok(None);
        }
        let context = format!("cannot read {}", self.path.display());
        let Some(mut file) = self.file.take() else {
            return Err(Error::io(context)(std::io::Error::other(
                "an earlier read failed",
            )));
        };
        let (file, data) = spawn_blocking(move || {
            let mut data = Vec::with_capacity(size as usize);
            (&mut file)
                .take(size)
                .read_to_end(&mut data)
                .map_err(Error::io(context.clone()))?;
            if (data.len() as u64) < size {
                return Err(Error::io(context)(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok((file, data))
        })
        .await?;
        self.file = Some(file);
        self.remaining -= size;
        Ok(Some(data))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::LazyLock;

    use archipel_proto::hostile;
    use archipel_proto::pb::PieceAction;
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn limit(satellite: &Identity, piece: u8, expiration: i64) -> OrderLimit {
        orders::sign_order_limit(
            satellite,
            OrderLimit {
                serial_number: orders::new_serial(),
                node_id: vec![9; 32],
                piece_id: vec![piece; 32],
                action: PieceAction::Put as i32,
                limit: 1 << 20,
                piece_expiration: expiration,
                order_expiration: orders::unix_now() + 60,
                ..Default::default()
            },
        )
    }

    pub(crate) fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    pub(crate) async fn put(
        store: &PieceStore,
        node: &Identity,
        limit: OrderLimit,
        bytes: &[u8],
    ) -> PieceHash {
        let mut writer = store.create(limit, bytes.len() as u64).await.unwrap();
        for part in bytes.chunks(10_000) {
            writer.write(part).await.unwrap();
        }
        writer.commit(node).await.unwrap()
    }

    async fn read_range(
        store: &PieceStore,
        sat: NodeId,
        piece: u8,
        offset: u64,
        len: u64,
    ) -> Vec<u8> {
        let piece = store.open_piece(sat, [piece; 32]).await.unwrap();
        read_all(piece.into_data(offset, len).await.unwrap()).await
    }

    /// Reads the range in the odd-sized pieces the download does not use.
    async fn read_all(mut data: PieceData) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = data.next(7_777).await.unwrap() {
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[tokio::test]
    async fn written_piece_reads_back_whole_and_in_ranges_with_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let bytes = data(100_000);
        let hash = put(&store, &node, limit(&sat, 1, 0), &bytes).await;
        let node_key = archipel_proto::PeerKey::from_public_key(&node.public_key()).unwrap();
        orders::verify_piece_hash(&node_key, &hash).unwrap();
        assert_eq!(hash.piece_size, 100_000);

        assert_eq!(read_range(&store, sat.id(), 1, 0, 100_000).await, bytes);
        assert_eq!(
            read_range(&store, sat.id(), 1, 12_345, 50_000).await,
            &bytes[12_345..62_345]
        );

        let mut piece = store.open_piece(sat.id(), [1; 32]).await.unwrap();
        assert_eq!(piece.hash(), &hash);
        assert_eq!(piece.order_limit().piece_id, vec![1; 32]);
        let leaves = piece.leaves().await.unwrap();
        let root: Hash = hash.root.clone().try_into().unwrap();
        assert_eq!(hashtree::root_from_leaves(&leaves, 100_000), root);
        assert!(matches!(
            piece.into_data(99_000, 2_000).await,
            Err(Error::RangeOutOfBounds { .. })
        ));

        let path = piece_path(dir.path(), &sat.id(), &[1; 32]);
        assert!(is_piece_file(&path));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            piece_file_size(100_000, hashtree::DEFAULT_CHUNK_SIZE)
        );
    }

    #[tokio::test]
    async fn empty_piece_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let hash = put(&store, &node, limit(&sat, 2, 0), &[]).await;
        assert_eq!(hash.piece_size, 0);
        let mut piece = store.open_piece(sat.id(), [2; 32]).await.unwrap();
        assert_eq!(
            piece.leaves().await.unwrap(),
            vec![hashtree::leaf_hash(&[])]
        );
        assert!(read_range(&store, sat.id(), 2, 0, 0).await.is_empty());
    }

    #[tokio::test]
    async fn dropped_upload_leaves_no_piece_and_no_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let sat = Identity::generate();
        let mut writer = store.create(limit(&sat, 3, 0), 50_000).await.unwrap();
        writer.write(&data(20_000)).await.unwrap();
        assert!(store.reserved_bytes() > 0);
        drop(writer);
        assert_eq!(store.reserved_bytes(), 0);
        assert_eq!(store.used_bytes(), 0);
        assert!(matches!(
            store.open_piece(sat.id(), [3; 32]).await,
            Err(Error::PieceNotFound(_))
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join("temp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn writes_beyond_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let sat = Identity::generate();
        assert!(matches!(
            store.create(limit(&sat, 4, 0), i64::MAX as u64).await,
            Err(Error::NotEnoughSpace { .. })
        ));
        let mut writer = store.create(limit(&sat, 4, 0), 1000).await.unwrap();
        writer.write(&data(1000)).await.unwrap();
        assert!(matches!(
            writer.write(&[1]).await,
            Err(Error::Order(archipel_proto::Error::OverLimit { .. }))
        ));
    }

    #[tokio::test]
    async fn leftover_temp_files_are_removed_and_space_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let expected_used;
        {
            let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
                .await
                .unwrap();
            put(&store, &node, limit(&sat, 5, 0), &data(30_000)).await;
            put(&store, &node, limit(&sat, 6, 0), &data(70_000)).await;
            expected_used = store.used_bytes();
            assert_eq!(
                expected_used,
                piece_file_size(30_000, hashtree::DEFAULT_CHUNK_SIZE)
                    + piece_file_size(70_000, hashtree::DEFAULT_CHUNK_SIZE)
            );
        }
        // An upload interrupted by a crash: its writer never ran Drop.
        std::fs::write(dir.path().join("temp").join("x.partial"), b"half").unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("temp")).unwrap().count(),
            0
        );
        assert_eq!(store.used_bytes(), expected_used);
        assert_eq!(store.reserved_bytes(), 0);
        assert!(matches!(
            store.open_piece(sat.id(), [7; 32]).await,
            Err(Error::PieceNotFound(_))
        ));
    }

    #[tokio::test]
    async fn allocation_is_enforced_including_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let allocated = piece_file_size(100_000, hashtree::DEFAULT_CHUNK_SIZE) + 10;
        let store = PieceStore::open(dir.path().to_path_buf(), allocated)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let first = store.create(limit(&sat, 8, 0), 100_000).await.unwrap();
        assert!(matches!(
            store.create(limit(&sat, 9, 0), 1).await,
            Err(Error::NotEnoughSpace { .. })
        ));
        drop(first);
        put(&store, &node, limit(&sat, 8, 0), &data(60_000)).await;
        assert_eq!(
            store.available_bytes().unwrap(),
            allocated - store.used_bytes()
        );
        assert!(matches!(
            store.create(limit(&sat, 9, 0), 60_000).await,
            Err(Error::NotEnoughSpace { .. })
        ));
        store.delete(sat.id(), [8; 32]).await.unwrap();
        assert_eq!(store.used_bytes(), 0);
        assert!(matches!(
            store.delete(sat.id(), [8; 32]).await,
            Err(Error::PieceNotFound(_))
        ));
        store.create(limit(&sat, 9, 0), 60_000).await.unwrap();
    }

    #[tokio::test]
    async fn a_stored_piece_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let path = piece_path(dir.path(), &sat.id(), &[10; 32]);

        // Two uploads of one piece under way at once: both pass the early
        // check, the first to commit stores the piece, the other is refused.
        let mut first = store.create(limit(&sat, 10, 0), 50_000).await.unwrap();
        let mut second = store.create(limit(&sat, 10, 0), 50_000).await.unwrap();
        first.write(&data(50_000)).await.unwrap();
        second.write(&vec![0xee; 20_000]).await.unwrap();
        let hash = first.commit(&node).await.unwrap();
        let stored = std::fs::read(&path).unwrap();
        assert!(matches!(
            second.commit(&node).await,
            Err(Error::PieceExists(id)) if id == hex::encode([10; 32])
        ));
        // A later upload is refused before it writes a byte.
        assert!(matches!(
            store.create(limit(&sat, 10, 0), 20_000).await,
            Err(Error::PieceExists(_))
        ));

        assert_eq!(std::fs::read(&path).unwrap(), stored);
        assert_eq!(
            read_range(&store, sat.id(), 10, 0, 50_000).await,
            data(50_000)
        );
        assert_eq!(
            store.open_piece(sat.id(), [10; 32]).await.unwrap().hash(),
            &hash
        );
        assert_eq!(
            store.used_bytes(),
            piece_file_size(50_000, hashtree::DEFAULT_CHUNK_SIZE)
        );
        assert_eq!(store.reserved_bytes(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("temp")).unwrap().count(),
            0
        );

        // Once deleted, the piece may be stored again.
        store.delete(sat.id(), [10; 32]).await.unwrap();
        put(&store, &node, limit(&sat, 10, 0), &data(20_000)).await;
        assert_eq!(
            read_range(&store, sat.id(), 10, 0, 20_000).await,
            data(20_000)
        );
    }

    #[tokio::test]
    async fn expired_pieces_are_hidden_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let now = orders::unix_now();
        put(&store, &node, limit(&sat, 11, now - 5), &data(10)).await;
        put(&store, &node, limit(&sat, 12, now + 3600), &data(10)).await;
        put(&store, &node, limit(&sat, 13, 0), &data(10)).await;
        assert!(matches!(
            store.open_piece(sat.id(), [11; 32]).await,
            Err(Error::PieceExpired(_))
        ));
        let report = store.sweep_expired(now).await.unwrap();
        assert_eq!(report.pieces, 1);
        assert!(!piece_path(dir.path(), &sat.id(), &[11; 32]).exists());
        assert_eq!(
            store.used_bytes(),
            2 * piece_file_size(10, hashtree::DEFAULT_CHUNK_SIZE)
        );

        // The index keeps expirations, so a restart still sweeps the rest later.
        drop(store);
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let report = store.sweep_expired(now + 3600).await.unwrap();
        assert_eq!(report.pieces, 1);
        store.open_piece(sat.id(), [13; 32]).await.unwrap();
    }

    #[tokio::test]
    async fn trashed_pieces_are_not_served_and_come_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        for piece in 1..=3 {
            put(
                &store,
                &node,
                limit(&sat, piece, 0),
                &data(5_000 * piece as usize),
            )
            .await;
        }
        let before = store.usage()[&sat.id()];
        let report = store
            .trash(sat.id(), vec![[1; 32], [2; 32], [9; 32]], 1_000)
            .await
            .unwrap();
        assert_eq!(report.pieces, 2, "a piece the store lacks is not counted");
        assert!(matches!(
            store.open_piece(sat.id(), [1; 32]).await,
            Err(Error::PieceNotFound(_))
        ));
        assert!(trash_path(dir.path(), &sat.id(), &[1; 32]).exists());
        let trashed = store.usage()[&sat.id()];
        assert_eq!(trashed.pieces, 1);
        assert_eq!(trashed.trash_pieces, 2);
        assert_eq!(trashed.disk_bytes(), before.bytes);
        assert_eq!(store.used_bytes() + store.trash_bytes(), before.bytes);

        let restored = store.restore_trash(sat.id()).await.unwrap();
        assert_eq!(restored.pieces, 2);
        assert_eq!(store.usage()[&sat.id()], before);
        for piece in 1..=3u8 {
            let len = 5_000 * u64::from(piece);
            assert_eq!(
                read_range(&store, sat.id(), piece, 0, len).await,
                data(len as usize)
            );
        }
    }

    #[tokio::test]
    async fn the_trash_empties_after_its_retention_and_deletes_reach_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        for piece in 1..=3 {
            put(&store, &node, limit(&sat, piece, 0), &data(100)).await;
        }
        store.trash(sat.id(), vec![[1; 32]], 100).await.unwrap();
        store.trash(sat.id(), vec![[2; 32]], 200).await.unwrap();
        let emptied = store.empty_trash(150).await.unwrap();
        assert_eq!(emptied.pieces, 1);
        assert!(!trash_path(dir.path(), &sat.id(), &[1; 32]).exists());
        assert!(trash_path(dir.path(), &sat.id(), &[2; 32]).exists());
        store.delete(sat.id(), [2; 32]).await.unwrap();
        assert!(!trash_path(dir.path(), &sat.id(), &[2; 32]).exists());
        assert!(matches!(
            store.delete(sat.id(), [2; 32]).await,
            Err(Error::PieceNotFound(_))
        ));
        let usage = store.usage()[&sat.id()];
        assert_eq!(
            (usage.pieces, usage.trash_pieces, usage.trash_bytes),
            (1, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_change_cut_short_by_a_crash_is_settled_from_the_disk_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let size = piece_file_size(3_000, hashtree::DEFAULT_CHUNK_SIZE);
        {
            let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
                .await
                .unwrap();
            for piece in 1..=3 {
                put(&store, &node, limit(&sat, piece, 0), &data(3_000)).await;
            }
            // Three changes journalled, their files changed, then the process
            // dies before the rows are settled.
            store
                .index()
                .begin(&sat.id(), &[[1; 32], [2; 32], [3; 32]])
                .unwrap();
            let stored = |p: u8| piece_path(dir.path(), &sat.id(), &[p; 32]);
            let trashed = trash_path(dir.path(), &sat.id(), &[1; 32]);
            std::fs::create_dir_all(trashed.parent().unwrap()).unwrap();
            std::fs::rename(stored(1), trashed).unwrap();
            std::fs::remove_file(stored(2)).unwrap();
            assert_eq!(store.usage()[&sat.id()].pieces, 3);
        }
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let usage = store.usage()[&sat.id()];
        assert_eq!(
            usage,
            Usage {
                pieces: 1,
                bytes: size,
                trash_pieces: 1,
                trash_bytes: size
            }
        );
        assert!(store.reconciled(), "a process crash needs no disk walk");
        store.restore_trash(sat.id()).await.unwrap();
        assert_eq!(read_range(&store, sat.id(), 1, 0, 3_000).await, data(3_000));
    }

    #[tokio::test]
    async fn a_lost_index_is_rebuilt_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        let before;
        {
            let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
                .await
                .unwrap();
            let now = orders::unix_now();
            put(&store, &node, limit(&sat, 1, 0), &data(1_000)).await;
            put(&store, &node, limit(&sat, 2, now + 60), &data(2_000)).await;
            put(&store, &node, limit(&sat, 3, 0), &data(3_000)).await;
            store.trash(sat.id(), vec![[3; 32]], now).await.unwrap();
            before = store.usage();
            store.close().await.unwrap();
        }
        for file in ["node.db", "node.db-wal", "node.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(file));
        }
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        assert!(!store.reconciled());
        let report = store.reconcile(CancellationToken::new()).await.unwrap();
        assert!(store.reconciled());
        assert_eq!(report.files_indexed, 3);
        assert_eq!(store.usage(), before);
        let expiring = store.index().get(&sat.id(), &[2; 32]).unwrap().unwrap();
        assert_ne!(
            expiring.expiration, 0,
            "the expiration is read from the header"
        );
        assert!(matches!(
            store
                .index()
                .get(&sat.id(), &[3; 32])
                .unwrap()
                .unwrap()
                .place,
            Place::Trash(_)
        ));
    }

    #[tokio::test]
    async fn damaged_headers_and_truncated_files_are_reported_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (sat, node) = (Identity::generate(), Identity::generate());
        put(&store, &node, limit(&sat, 14, 0), &data(40_000)).await;
        put(&store, &node, limit(&sat, 15, 0), &data(40_000)).await;

        let truncated = piece_path(dir.path(), &sat.id(), &[14; 32]);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated)
            .unwrap();
        file.set_len(PIECE_HEADER_SIZE + 100).unwrap();
        assert!(matches!(
            store.open_piece(sat.id(), [14; 32]).await,
            Err(Error::DamagedPiece { .. })
        ));

        let scrambled = piece_path(dir.path(), &sat.id(), &[15; 32]);
        let mut bytes = std::fs::read(&scrambled).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&scrambled, bytes).unwrap();
        assert!(matches!(
            store.open_piece(sat.id(), [15; 32]).await,
            Err(Error::DamagedPiece { .. })
        ));
    }

    #[test]
    fn only_piece_paths_are_piece_files() {
        let sat = Identity::generate().id();
        let dir = Path::new("/srv/node");
        let path = piece_path(dir, &sat, &[0xab; 32]);
        assert_eq!(parse_piece_path(&path, PIECES_DIR), Some((sat, [0xab; 32])));
        assert!(!is_piece_file(&dir.join("temp").join("abc.partial")));
        assert!(!is_piece_file(&path.with_extension("partial")));
        assert!(!is_piece_file(
            &dir.join("satellites").join(format!("{sat}.key"))
        ));
    }

    const SATELLITE: NodeId = NodeId([4; 32]);
    const PIECE: PieceId = [5; 32];

    /// A header with arbitrary values in every field (a piece's signatures
    /// are not checked when it is read back), and the region it encodes to.
    fn header_and_region(max_piece_size: i64) -> impl Strategy<Value = (PieceHeader, Vec<u8>)> {
        let limit = (
            hostile::bytes(20),
            hostile::bytes(40),
            any::<i32>(),
            any::<i64>(),
            prop_oneof![Just(0i64), any::<i64>()],
        )
            .prop_map(
                |(serial_number, piece_id, action, limit, piece_expiration)| OrderLimit {
                    serial_number,
                    satellite_id: SATELLITE.to_vec(),
                    piece_id,
                    action,
                    limit,
                    piece_expiration,
                    ..Default::default()
                },
            );
        let hash = (
            hostile::bytes(40),
            hostile::bytes(40),
            prop_oneof![0..=max_piece_size, any::<i64>()],
            hostile::bytes(70),
        )
            .prop_map(|(piece_id, root, piece_size, node_signature)| PieceHash {
                piece_id,
                root,
                piece_size,
                timestamp: 1,
                node_signature,
            });
        let chunk_size = prop_oneof![
            Just(0u32),
            1u32..5000,
            Just(hashtree::DEFAULT_CHUNK_SIZE),
            any::<u32>()
        ];
        (prop::option::of(limit), prop::option::of(hash), chunk_size).prop_map(
            |(order_limit, hash, chunk_size)| {
                let header = PieceHeader {
                    order_limit,
                    hash,
                    chunk_size,
                };
                let region = encode_header(&header).unwrap();
                (header, region)
            },
        )
    }

    /// A region decodes to the header it encodes while intact; damaged, to
    /// an error or some header, never a panic.
    fn header_region_is_checked(
        ((header, region), damaged): ((PieceHeader, Vec<u8>), Vec<u8>),
    ) -> Result<(), TestCaseError> {
        let decoded = decode_header(&damaged);
        if damaged == region {
            prop_assert_eq!(decoded, Ok(header));
        }
        Ok(())
    }

    /// A piece file as a node commits it: 100 bytes of data.
    static PIECE_FILE: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
                .await
                .unwrap();
            let (sat, node) = (Identity::generate(), Identity::generate());
            put(&store, &node, limit(&sat, 1, 0), &data(100)).await;
            std::fs::read(piece_path(dir.path(), &sat.id(), &[1; 32])).unwrap()
        })
    });

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Damaged piece files: the committed one damaged anywhere, or in the
    /// header it uses (the rest of the region is padding), and files whose
    /// length fits their header's arbitrary field values, which get past the
    /// size check to the leaves and the data.
    fn piece_files() -> impl Strategy<Value = Vec<u8>> {
        let file = PIECE_FILE.clone();
        let used = PREAMBLE_SIZE + u32::from_le_bytes(file[10..14].try_into().unwrap()) as usize;
        let (head, rest) = (file[..used].to_vec(), file[used..].to_vec());
        let fitting = header_and_region(4000).prop_map(|(header, mut file)| {
            if let Some(hash) = &header.hash {
                if header.chunk_size > 0 && (0..=4000).contains(&hash.piece_size) {
                    let size = piece_file_size(hash.piece_size as u64, header.chunk_size);
                    file.resize(size as usize, 0x5a);
                }
            }
            file
        });
        prop_oneof![
            hostile::bytes_or_mutated(file),
            hostile::mutated(head).prop_map(move |head| [head, rest.clone()].concat()),
            fitting,
        ]
    }

    /// A store to read hostile piece files from, at one piece's path.
    struct PieceReader {
        dir: tempfile::TempDir,
        runtime: tokio::runtime::Runtime,
        store: PieceStore,
    }

    impl PieceReader {
        fn new() -> PieceReader {
            let dir = tempfile::tempdir().unwrap();
            let runtime = runtime();
            let store = runtime
                .block_on(PieceStore::open(dir.path().to_path_buf(), 1 << 30))
                .unwrap();
            let path = piece_path(dir.path(), &SATELLITE, &PIECE);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            PieceReader {
                dir,
                runtime,
                store,
            }
        }

        /// Reads `file` back as a node does: its header alone when the store
        /// opens or sweeps, then the piece, its leaves and its data, which must
        /// stay within the file.
        fn check(&self, file: Vec<u8>) -> Result<(), TestCaseError> {
            let path = piece_path(self.dir.path(), &SATELLITE, &PIECE);
            std::fs::write(&path, &file).unwrap();
            let _ = read_header_blocking(&path);
            self.runtime.block_on(async {
                let mut piece = match self.store.open_piece(SATELLITE, PIECE).await {
                    Ok(piece) => piece,
                    Err(Error::DamagedPiece { .. } | Error::PieceExpired(_)) => return Ok(()),
                    Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
                };
                let (size, chunk) = (piece.piece_size(), piece.chunk_size());
                let leaves = piece.leaves().await.unwrap();
                prop_assert_eq!(leaves.len() as u64, hashtree::leaf_count(size, chunk));
                let data = read_all(piece.into_data(0, size).await.unwrap()).await;
                let start = PIECE_HEADER_SIZE as usize;
                prop_assert_eq!(&data[..], &file[start..start + size as usize]);
                Ok(())
            })
        }
    }

    archipel_proto::hostile_tests! {
        hostile_header_regions_are_refused_or_decoded:
            header_and_region(1 << 40).prop_flat_map(|(header, region)| {
                let damaged = hostile::bytes_or_mutated(region.clone());
                (Just((header, region)), damaged)
            })
            => header_region_is_checked;
        hostile_piece_files_are_refused_or_read_within_bounds: piece_files() => {
            let reader = PieceReader::new();
            move |file| reader.check(file)
        };
    }
}
