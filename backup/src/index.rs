//! The index: which pack holds each blob. Index objects `index/<random id>`
//! each list some packs with their headers' entries (zstd-compressed, then
//! sealed); loading a repository reads them all into one map. Writers only
//! add index objects (backups never rewrite one), so concurrent backups need
//! no coordination; prune replaces them all under its exclusive lock.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};

use crate::blob::{BlobId, BlobKind, PackId};
use crate::crypto::random_bytes;
use crate::pack::{decode_entries, encode_entries, read_header, PackContents, PackEntry};
use crate::repo::Repository;
use crate::Error;

const INDEX_AAD: &[u8] = b"archipel backup index";
/// Index objects' format byte.
const INDEX_FORMAT: u8 = 1;

/// Where one blob is.
#[derive(Clone, Copy, Debug)]
pub struct Location {
    /// Position in [`Index::packs`].
    pub pack: u32,
    pub kind: BlobKind,
    pub compressed: bool,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// Every indexed blob. About 70 bytes a blob in memory.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_positions: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, Location>,
}

impl Index {
    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.blobs.get(id).copied()
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn pack_id(&self, location: &Location) -> PackId {
        self.packs[location.pack as usize]
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_positions.contains_key(id)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.blobs.iter()
    }

    /// Adds a pack's entries. A blob already indexed keeps its first
    /// location (a copy in a second pack is waste that prune removes).
    pub fn add(&mut self, pack: &PackContents) {
        let position = *self.pack_positions.entry(pack.id).or_insert_with(|| {
            self.packs.push(pack.id);
            (self.packs.len() - 1) as u32
        });
        for e in &pack.entries {
            self.blobs.entry(e.id).or_insert(Location {
                pack: position,
                kind: e.kind,
                compressed: e.compressed,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
    }

    /// The index of `packs`.
    pub fn of(packs: &[PackContents]) -> Index {
        let mut index = Index::default();
        for pack in packs {
            index.add(pack);
        }
        index
    }

    /// Reads every index object.
    pub async fn load(repo: &Repository) -> Result<Index, Error> {
        Ok(Index::of(&load_packs(repo).await?.0))
    }

    /// Finds packs that no index object lists (left by an interrupted
    /// backup), reads their headers and adds them, writing an index object
    /// for them so the next reader need not. Returns how many it found.
    pub async fn recover(&mut self, repo: &Repository) -> Result<usize, Error> {
        let stored = repo.list_packs().await?;
        let mut found = Vec::new();
        for (id, read) in read_unindexed(repo, &stored, |id| self.has_pack(id)).await {
            match read {
                Ok(entries) => found.push(PackContents { id, entries }),
                // A damaged leftover is not used; `check` reports it.
                Err(e) => tracing::warn!(pack = ?id, error = %e, "an unindexed pack is unreadable"),
            }
        }
        for pack in &found {
            self.add(pack);
        }
        if !found.is_empty() {
            write_index(repo, &found).await?;
        }
        Ok(found.len())
    }
}

/// The headers of the `stored` packs (id, size) that are not `indexed`,
/// each read or the reason it could not be.
pub async fn read_unindexed(
    repo: &Repository,
    stored: &[(PackId, u64)],
    indexed: impl Fn(&PackId) -> bool,
) -> Vec<(PackId, Result<Vec<PackEntry>, Error>)> {
    let mut out = Vec::new();
    for (id, size) in stored.iter().filter(|(id, _)| !indexed(id)) {
        out.push((*id, read_header(repo, *id, *size).await));
    }
    out
}

/// Every pack every index object lists (a pack may appear twice), and the
/// index objects' names.
pub async fn load_packs(repo: &Repository) -> Result<(Vec<PackContents>, Vec<String>), Error> {
    let names: Vec<String> = repo
        .list("index/")
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let packs: Vec<Vec<PackContents>> = futures::stream::iter(names.iter())
        .map(|name| read_index(repo, name))
        .buffered(8)
        .try_collect()
        .await?;
    Ok((packs.into_iter().flatten().collect(), names))
}

/// Writes an index object listing `packs`; returns its name.
pub async fn write_index(repo: &Repository, packs: &[PackContents]) -> Result<String, Error> {
    let mut plain = vec![INDEX_FORMAT];
    for pack in packs {
        plain.extend_from_slice(&pack.id.0);
        plain.extend_from_slice(&(pack.entries.len() as u32).to_le_bytes());
        encode_entries(&pack.entries, &mut plain);
    }
    let compressed = zstd::bulk::compress(&plain, crate::blob::COMPRESSION_LEVEL)
        .map_err(|e| Error::Invalid(format!("compressing an index: {e}")))?;
    let name = format!("index/{}", hex::encode(random_bytes::<32>()));
    repo.put_sealed(&name, INDEX_AAD, &compressed).await?;
    Ok(name)
}

/// The packs an index object lists.
pub async fn read_index(repo: &Repository, name: &str) -> Result<Vec<PackContents>, Error> {
    let what = format!("index object {name}");
    let compressed = repo.get_sealed(name, INDEX_AAD).await?;
    let plain = zstd::stream::decode_all(compressed.as_slice())
        .map_err(|e| Error::corrupt(what.clone(), format!("zstd: {e}")))?;
    let (&format, mut rest) = plain
        .split_first()
        .ok_or_else(|| Error::corrupt(what.clone(), "it is empty"))?;
    if format != INDEX_FORMAT {
        return Err(Error::corrupt(what, format!("unknown format {format}")));
    }
    let mut packs = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 36 {
            return Err(Error::corrupt(what, "it was cut short"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&rest[..32]);
        let count = u32::from_le_bytes([rest[32], rest[33], rest[34], rest[35]]) as usize;
        let len = count
            .checked_mul(crate::pack::ENTRY_LEN)
            .filter(|len| 36 + len <= rest.len())
            .ok_or_else(|| Error::corrupt(what.clone(), "it was cut short"))?;
        let entries: Vec<PackEntry> = decode_entries(&rest[36..36 + len], &what)?;
        packs.push(PackContents {
            id: PackId(id),
            entries,
        });
        rest = &rest[36 + len..];
    }
    Ok(packs)
}
