//! `backup prune`: frees the space of blobs no snapshot reaches. Under the
//! exclusive lock (no backup runs meanwhile), it walks every snapshot's
//! trees for the blobs in use, then per pack: deletes packs with nothing in
//! use, repacks (copies the blobs in use into new packs) those whose unused
//! share is above the threshold, keeps the rest. A blob stored twice (two
//! backups at once) is kept once.
//!
//! Order, so that a prune stopped at any point leaves a consistent
//! repository: new packs (indexed as they upload), then one index object
//! for every kept pack, then the old index objects are deleted, then the
//! old packs. It refuses to run when a snapshot's tree or a chunk in use
//! cannot be found: deleting on a damaged repository could lose more.

use std::collections::{HashMap, HashSet};

use crate::blob::{open_blob, seal_blob, BlobId, PackId};
use crate::index::{load_packs, read_unindexed, write_index, Index};
use crate::lock::locked;
use crate::pack::{PackContents, PackEntry, PackUploader};
use crate::repo::Repository;
use crate::snapshot;
use crate::tree::{NodeKind, Trees};
use crate::Error;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// A pack whose unused share of blob bytes is above this (0–1) is
    /// repacked.
    pub max_unused: f64,
    /// Say what would be done, do nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            max_unused: 0.1,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PruneSummary {
    pub packs: u64,
    pub bytes: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    pub blobs_in_use: u64,
    pub blobs_removed: u64,
    /// Repository bytes before minus after.
    pub bytes_freed: u64,
}

pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneSummary, Error> {
    locked(repo, true, "prune", run(repo, options)).await
}

async fn run(repo: &Repository, options: &PruneOptions) -> Result<PruneSummary, Error> {
    let (mut packs, index_objects) = load_packs(repo).await?;
    // Leftovers of interrupted backups count like any pack; an unreadable
    // one holds nothing anyone can use.
    let indexed: HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    let listed = repo.list_packs().await?;
    for (id, read) in read_unindexed(repo, &listed, |id| indexed.contains(id)).await {
        packs.push(PackContents {
            id,
            entries: read.unwrap_or_default(),
        });
    }
    let stored: HashMap<PackId, u64> = listed.into_iter().collect();
    let index = std::sync::Arc::new(Index::of(&packs));
    let used = used_blobs(repo, index.clone()).await?;

    // A pack listed twice (by two index objects) is one pack.
    let mut seen = HashSet::new();
    packs.retain(|p| seen.insert(p.id));
    let (packs, missing): (Vec<_>, Vec<_>) =
        packs.into_iter().partition(|p| stored.contains_key(&p.id));
    let available: HashSet<BlobId> = packs
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    for pack in &missing {
        if let Some(lost) = pack
            .entries
            .iter()
            .find(|e| used.contains(&e.id) && !available.contains(&e.id))
        {
            return Err(Error::corrupt(
                format!("pack {:?}", pack.id),
                format!(
                    "it is missing and holds blob {:?}, which is in use; run `archipel backup check`",
                    lost.id
                ),
            ));
        }
    }

    let mut summary = PruneSummary::default();
    let mut kept_once: HashSet<BlobId> = HashSet::new();
    let mut keep: Vec<PackContents> = Vec::new();
    let mut repack: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let mut delete: Vec<PackId> = Vec::new();
    for pack in packs {
        let size = stored.get(&pack.id).copied().unwrap_or(0);
        summary.packs += 1;
        summary.bytes += size;
        let in_use: Vec<PackEntry> = pack
            .entries
            .iter()
            .filter(|e| used.contains(&e.id) && kept_once.insert(e.id))
            .copied()
            .collect();
        summary.blobs_removed += (pack.entries.len() - in_use.len()) as u64;
        let blob_bytes: u64 = pack.entries.iter().map(|e| e.length as u64).sum();
        let used_bytes: u64 = in_use.iter().map(|e| e.length as u64).sum();
        if in_use.is_empty() {
            delete.push(pack.id);
        } else if (blob_bytes - used_bytes) as f64 > options.max_unused * blob_bytes as f64 {
            repack.push((pack.id, in_use));
        } else {
            keep.push(PackContents {
                id: pack.id,
                entries: in_use,
            });
        }
    }
    summary.blobs_in_use = kept_once.len() as u64;
    summary.packs_deleted = delete.len() as u64;
    summary.packs_repacked = repack.len() as u64;
    let old_bytes: u64 = delete
        .iter()
        .chain(repack.iter().map(|(id, _)| id))
        .map(|id| stored.get(id).copied().unwrap_or(0))
        .sum();
    if options.dry_run {
        let repacked_bytes: u64 = repack
            .iter()
            .flat_map(|(_, entries)| entries)
            .map(|e| e.length as u64)
            .sum();
        summary.bytes_freed = old_bytes.saturating_sub(repacked_bytes);
        return Ok(summary);
    }

    let uploader = PackUploader::new(repo, 2, None);
    for (id, entries) in &repack {
        let bytes = repo.get(&crate::repo::Repository::pack_key(*id)).await?;
        for e in entries {
            let sealed = bytes.get(e.range()).ok_or_else(|| {
                Error::corrupt(format!("pack {id:?}"), "it is shorter than its header says")
            })?;
            // Checked, then sealed afresh: a damaged blob is not copied.
            let plain = open_blob(repo.keys(), e.id, sealed, e.compressed, e.raw_length)?;
            uploader
                .add(seal_blob(repo.keys(), e.id, e.kind, &plain))
                .await?;
        }
    }
    let (written, written_bytes) = uploader.finish().await?;
    summary.packs_written = written;
    summary.bytes_freed = old_bytes.saturating_sub(written_bytes);
    if !keep.is_empty() {
        write_index(repo, &keep).await?;
    }
    for name in &index_objects {
        repo.delete(name).await?;
    }
    for id in delete.iter().chain(repack.iter().map(|(id, _)| id)) {
        repo.delete(&Repository::pack_key(*id)).await?;
    }
    Ok(summary)
}

/// Every blob some snapshot reaches (trees and chunks). An error if a tree
/// or chunk is missing.
async fn used_blobs(
    repo: &Repository,
    index: std::sync::Arc<crate::index::Index>,
) -> Result<HashSet<BlobId>, Error> {
    let trees = Trees::new(repo, index.clone());
    let mut used = HashSet::new();
    let mut stack: Vec<BlobId> = snapshot::load_all(repo)
        .await?
        .iter()
        .map(|s| s.tree)
        .collect();
    while let Some(id) = stack.pop() {
        if !used.insert(id) {
            continue;
        }
        let tree = trees.load(id).await?;
        for node in tree.nodes {
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(subtree)) => stack.push(subtree),
                _ => {
                    for chunk in node.content {
                        if !index.contains(&chunk) {
                            return Err(Error::corrupt(
                                format!("chunk {chunk:?}"),
                                "a snapshot needs it and no pack holds it; run `archipel backup check`",
                            ));
                        }
                        used.insert(chunk);
                    }
                }
            }
        }
    }
    Ok(used)
}
