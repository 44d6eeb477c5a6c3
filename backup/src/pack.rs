//! Packs: objects near the network's segment size that hold many sealed
//! blobs, so that nodes never store tiny pieces and the satellite tracks few
//! objects. Layout of a pack object `data/<pack id>`:
//!
//! ```text
//! sealed blob ‖ sealed blob ‖ … ‖ sealed header ‖ header length (u32 LE)
//! ```
//!
//! The header lists every blob (id, kind, compression, offset, length, raw
//! length) and is sealed bound to the pack's id, so a pack describes itself:
//! the index is a cache of the headers, and a pack whose index was never
//! written (an interrupted backup) is found and used again
//! ([`crate::index::Index::recover`]).
//!
//! [`PackUploader`] fills packs (one open pack per blob kind), uploads full
//! ones with a few uploads in flight (adding a blob waits when they are all
//! busy: memory stays bounded at those packs and one open per kind), and
//! writes index objects for what it uploaded, in batches and at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;

use crate::blob::{BlobId, BlobKind, PackId, SealedBlob};
use crate::crypto::random_bytes;
use crate::repo::Repository;
use crate::Error;

/// Bytes of one header entry.
pub const ENTRY_LEN: usize = 32 + 1 + 1 + 4 + 4 + 4;
/// Bytes read from a pack's end to find its header in one request: enough
/// for the header of a pack of ~1000 blobs.
const HEADER_GUESS: u64 = 64 * 1024;
/// Packs whose entries go into one index object while a backup runs, so an
/// interrupted backup leaves at most this many packs to recover.
const INDEX_BATCH: usize = 16;

/// Where a blob is in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: BlobId,
    pub kind: BlobKind,
    pub compressed: bool,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

impl PackEntry {
    /// Where the sealed blob is in its pack's bytes (computed without
    /// overflow, whatever a damaged header or index says).
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = self.offset as usize;
        start..start + self.length as usize
    }
}

/// A pack's id and contents, as its header and the index list them.
#[derive(Clone, Debug)]
pub struct PackContents {
    pub id: PackId,
    pub entries: Vec<PackEntry>,
}

pub fn encode_entries(entries: &[PackEntry], out: &mut Vec<u8>) {
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.push(e.kind.code());
        out.push(u8::from(e.compressed));
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
}

pub fn decode_entries(bytes: &[u8], what: &str) -> Result<Vec<PackEntry>, Error> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(Error::corrupt(what, "its blob list has a torn entry"));
    }
    bytes
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let u32_at = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            Ok(PackEntry {
                id: BlobId(id),
                kind: BlobKind::from_code(e[32])
                    .ok_or_else(|| Error::corrupt(what, format!("unknown blob kind {}", e[32])))?,
                compressed: match e[33] {
                    0 => false,
                    1 => true,
                    other => return Err(Error::corrupt(what, format!("bad flag {other}"))),
                },
                offset: u32_at(34),
                length: u32_at(38),
                raw_length: u32_at(42),
            })
        })
        .collect()
}

fn header_aad(id: PackId) -> Vec<u8> {
    [&b"archipel backup pack header "[..], &id.0].concat()
}

/// A pack being filled.
struct OpenPack {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl OpenPack {
    /// A pack with room for `capacity` bytes, reserved at once (pages are
    /// only taken as they are written) so that the buffer never doubles.
    fn new(capacity: usize) -> OpenPack {
        OpenPack {
            bytes: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    fn add(&mut self, blob: SealedBlob) {
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            compressed: blob.compressed,
            offset: self.bytes.len() as u32,
            length: blob.bytes.len() as u32,
            raw_length: blob.raw_length,
        });
        self.bytes.extend_from_slice(&blob.bytes);
    }

    fn finish(mut self, repo: &Repository) -> (PackContents, Vec<u8>) {
        let id = PackId(random_bytes());
        let mut header = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        encode_entries(&self.entries, &mut header);
        let sealed = repo.keys().seal(&header_aad(id), &header);
        self.bytes.extend_from_slice(&sealed);
        self.bytes
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        (
            PackContents {
                id,
                entries: self.entries,
            },
            self.bytes,
        )
    }
}

/// The header of the pack `id` of `size` bytes, read from its end.
pub async fn read_header(
    repo: &Repository,
    id: PackId,
    size: u64,
) -> Result<Vec<PackEntry>, Error> {
    let what = format!("pack {id:?}");
    if size < 4 {
        return Err(Error::corrupt(what, "it is too short to hold a header"));
    }
    let guess = HEADER_GUESS.min(size);
    let tail = repo
        .get_range(&Repository::pack_key(id), size - guess, guess)
        .await?;
    let len_at = tail.len().saturating_sub(4);
    let header_len = u32::from_le_bytes(
        tail[len_at..]
            .try_into()
            .map_err(|_| Error::corrupt(what.clone(), "it was cut short"))?,
    ) as u64;
    if header_len + 4 > size {
        return Err(Error::corrupt(what, "its header length is past its start"));
    }
    let sealed = if header_len + 4 <= guess {
        tail[(len_at - header_len as usize)..len_at].to_vec()
    } else {
        repo.get_range(&Repository::pack_key(id), size - 4 - header_len, header_len)
            .await?
    };
    parse_header(repo, id, &sealed, size)
}

/// The entries of a pack's sealed header, checked to lie inside the pack.
pub fn parse_header(
    repo: &Repository,
    id: PackId,
    sealed: &[u8],
    size: u64,
) -> Result<Vec<PackEntry>, Error> {
    let what = format!("pack {id:?}");
    let header = repo
        .keys()
        .open(&header_aad(id), sealed)
        .ok_or_else(|| Error::corrupt(what.clone(), "its header does not decrypt"))?;
    let entries = decode_entries(&header, &what)?;
    let data_end = size - 4 - sealed.len() as u64;
    if entries
        .iter()
        .any(|e| e.offset as u64 + e.length as u64 > data_end)
    {
        return Err(Error::corrupt(what, "a blob lies past the pack's data"));
    }
    Ok(entries)
}

/// The entries of a whole pack's bytes (its header is at its end).
pub fn parse_pack(repo: &Repository, id: PackId, bytes: &[u8]) -> Result<Vec<PackEntry>, Error> {
    let what = format!("pack {id:?}");
    let len_at = bytes
        .len()
        .checked_sub(4)
        .ok_or_else(|| Error::corrupt(what.clone(), "it is too short to hold a header"))?;
    let header_len = u32::from_le_bytes(
        bytes[len_at..]
            .try_into()
            .map_err(|_| Error::corrupt(what.clone(), "it was cut short"))?,
    ) as usize;
    let start = len_at
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt(what, "its header length is past its start"))?;
    parse_header(repo, id, &bytes[start..len_at], bytes.len() as u64)
}

/// Fills packs and uploads them; see the module docs.
pub struct PackUploader {
    repo: Repository,
    target_size: usize,
    capacity: usize,
    open: [Mutex<OpenPack>; 2],
    /// One permit per upload that may run.
    slots: Arc<Semaphore>,
    uploads: SyncMutex<Vec<JoinHandle<Result<(), Error>>>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Uploaded packs not yet in an index object.
    unindexed: SyncMutex<Vec<PackContents>>,
    /// Uploaded packs and their bytes.
    totals: SyncMutex<(u64, u64)>,
    failed: SyncMutex<Option<String>>,
    uploaded: Arc<AtomicU64>,
}

impl PackUploader {
    /// `uploads`: packs uploaded at once. Memory held: `uploads` packs
    /// uploading and one filling per kind (a full pack waits, still open,
    /// for an upload to end, and the blobs meant for it wait with it).
    /// `uploaded` counts the bytes of packs uploaded, for progress displays.
    pub fn new(
        repo: &Repository,
        uploads: usize,
        uploaded: Option<Arc<AtomicU64>>,
    ) -> PackUploader {
        let config = repo.config();
        let target_size = config.pack_size as usize;
        // A pack is sent once it reaches its size: room for the blob that
        // crosses it and for most headers.
        let capacity = target_size + config.chunker.max as usize + (1 << 20);
        let open = || Mutex::new(OpenPack::new(capacity));
        PackUploader {
            repo: repo.clone(),
            target_size,
            capacity,
            open: [open(), open()],
            slots: Arc::new(Semaphore::new(uploads.max(1))),
            uploads: SyncMutex::default(),
            shared: Arc::new(Shared {
                uploaded: uploaded.unwrap_or_default(),
                ..Shared::default()
            }),
        }
    }

    /// Adds a blob to the open pack of its kind, sending the pack off when it
    /// is full (waiting while the uploads are all busy).
    pub async fn add(&self, blob: SealedBlob) -> Result<(), Error> {
        if let Some(failure) = self.failure() {
            return Err(Error::Invalid(format!("a pack upload failed: {failure}")));
        }
        let mut open = self.open[blob.kind.code() as usize].lock().await;
        open.add(blob);
        if open.bytes.len() >= self.target_size {
            let full = std::mem::replace(&mut *open, OpenPack::new(self.capacity));
            self.send(full).await?;
        }
        Ok(())
    }

    async fn send(&self, pack: OpenPack) -> Result<(), Error> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Invalid("the pack uploads were stopped".into()))?;
        let (contents, bytes) = pack.finish(&self.repo);
        let (repo, shared) = (self.repo.clone(), self.shared.clone());
        let upload = tokio::spawn(async move {
            let result = upload(&repo, &shared, contents, bytes).await;
            drop(slot);
            if let Err(e) = &result {
                let mut failed = shared.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.get_or_insert_with(|| e.to_string());
            }
            result
        });
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        uploads.retain(|u| !u.is_finished());
        uploads.push(upload);
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Uploads the partly filled packs, waits for every upload and indexes
    /// what is not indexed yet. Returns the packs and bytes uploaded.
    pub async fn finish(self) -> Result<(u64, u64), Error> {
        for slot in &self.open {
            let open = std::mem::replace(&mut *slot.lock().await, OpenPack::new(0));
            if !open.entries.is_empty() {
                self.send(open).await?;
            }
        }
        let uploads = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|p| p.into_inner()));
        for upload in uploads {
            upload
                .await
                .map_err(|e| Error::Invalid(format!("a pack upload stopped: {e}")))??;
        }
        if let Some(failure) = self.failure() {
            return Err(Error::Invalid(format!("a pack upload failed: {failure}")));
        }
        let rest = std::mem::take(
            &mut *self
                .shared
                .unindexed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if !rest.is_empty() {
            crate::index::write_index(&self.repo, &rest).await?;
        }
        let totals = *self.shared.totals.lock().unwrap_or_else(|p| p.into_inner());
        Ok(totals)
    }
}

async fn upload(
    repo: &Repository,
    shared: &Shared,
    contents: PackContents,
    bytes: Vec<u8>,
) -> Result<(), Error> {
    let size = bytes.len() as u64;
    repo.put(&Repository::pack_key(contents.id), bytes).await?;
    shared.uploaded.fetch_add(size, Ordering::Relaxed);
    {
        let mut totals = shared.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.0 += 1;
        totals.1 += size;
    }
    let batch = {
        let mut unindexed = shared.unindexed.lock().unwrap_or_else(|p| p.into_inner());
        unindexed.push(contents);
        (unindexed.len() >= INDEX_BATCH).then(|| std::mem::take(&mut *unindexed))
    };
    if let Some(batch) = batch {
        crate::index::write_index(repo, &batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_ones_are_refused() {
        let entries = vec![
            PackEntry {
                id: BlobId([1; 32]),
                kind: BlobKind::Tree,
                compressed: true,
                offset: 0,
                length: 100,
                raw_length: 300,
            },
            PackEntry {
                id: BlobId([2; 32]),
                kind: BlobKind::Data,
                compressed: false,
                offset: 100,
                length: 7,
                raw_length: 7,
            },
        ];
        let mut bytes = Vec::new();
        encode_entries(&entries, &mut bytes);
        assert_eq!(decode_entries(&bytes, "t").unwrap(), entries);
        assert!(decode_entries(&bytes[1..], "t").is_err());
        bytes[32] = 9;
        assert!(decode_entries(&bytes, "t").is_err());
    }
}
