//! `backup check`: is the repository whole? Without reading data it checks
//! that every index object and snapshot opens, every indexed pack is stored
//! (and every stored pack indexed), and every tree of every snapshot reads
//! and names only chunks the index knows. With `read_data` it also
//! downloads every pack and checks its header against the index and every
//! blob against its id. Each problem is reported with the snapshots and
//! files it damages; nothing is changed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::blob::{open_blob, BlobId, PackId};
use crate::index::{load_packs, Index};
use crate::lock::locked;
use crate::pack::parse_pack;
use crate::repo::Repository;
use crate::snapshot;
use crate::tree::{NodeKind, Trees};
use crate::Error;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub packs: u64,
    pub blobs: u64,
    /// Packs read whole (with `read_data`).
    pub packs_read: u64,
    /// Problems: the repository is damaged.
    pub errors: Vec<String>,
    /// Harmless findings (packs left by an interrupted backup).
    pub warnings: Vec<String>,
    /// `snapshot id prefix: path` of every file or tree the errors damage.
    pub damaged: BTreeSet<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

pub async fn check(repo: &Repository, read_data: bool) -> Result<CheckReport, Error> {
    locked(repo, false, "check", run(repo, read_data)).await
}

async fn run(repo: &Repository, read_data: bool) -> Result<CheckReport, Error> {
    let mut report = CheckReport::default();
    let (packs, _) = load_packs(repo).await?;
    let index = Index::of(&packs);
    let stored: HashMap<PackId, u64> = repo.list_packs().await?.into_iter().collect();
    report.packs = stored.len() as u64;
    report.blobs = index.blob_count() as u64;
    // Blobs that cannot be read, and why.
    let mut bad: HashMap<BlobId, String> = HashMap::new();
    for id in index.packs() {
        if !stored.contains_key(id) {
            report.errors.push(format!(
                "pack {id} is in the index but missing from the repository"
            ));
        }
    }
    for (id, location) in index.blobs() {
        if !stored.contains_key(&index.pack_id(location)) {
            bad.insert(
                *id,
                format!("its pack {} is missing", index.pack_id(location)),
            );
        }
    }
    for id in stored.keys() {
        if !index.has_pack(id) {
            report.warnings.push(format!(
                "pack {id} is not indexed (left by an interrupted backup; the next backup or prune takes it in)"
            ));
        }
    }

    if read_data {
        let mut expected: HashMap<PackId, Vec<crate::pack::PackEntry>> = HashMap::new();
        for pack in packs {
            expected.entry(pack.id).or_default().extend(pack.entries);
        }
        let mut results = futures::stream::iter(
            expected
                .into_iter()
                .filter(|(id, _)| stored.contains_key(id)),
        )
        .map(|(id, entries)| async move { (id, read_pack(repo, id, &entries).await) })
        .buffer_unordered(2);
        while let Some((id, result)) = results.next().await {
            report.packs_read += 1;
            match result {
                Ok(blob_errors) => {
                    for (blob, why) in blob_errors {
                        report.errors.push(format!("pack {id}: blob {blob}: {why}"));
                        bad.insert(blob, why);
                    }
                }
                Err((e, blobs)) => {
                    report.errors.push(format!("pack {id}: {e}"));
                    for blob in blobs {
                        bad.insert(blob, e.to_string());
                    }
                }
            }
        }
    }

    let index = Arc::new(index);
    let trees = Trees::new(repo, index.clone());
    let snapshots = match snapshot::load_all(repo).await {
        Ok(snapshots) => snapshots,
        Err(e) => {
            report.errors.push(format!("snapshots: {e}"));
            return Ok(report);
        }
    };
    report.snapshots = snapshots.len() as u64;
    let mut unreadable_trees: HashSet<BlobId> = HashSet::new();
    for snapshot in &snapshots {
        let short = snapshot.short_id().to_string();
        // Walk tree by tree, so that one unreadable tree hides only what is
        // below it.
        let mut stack = vec![(snapshot.tree, std::path::PathBuf::from("/"))];
        while let Some((tree_id, dir)) = stack.pop() {
            let tree = match trees.load(tree_id).await {
                Ok(tree) => tree,
                Err(e) => {
                    if unreadable_trees.insert(tree_id) {
                        report.errors.push(format!("tree {tree_id}: {e}"));
                    }
                    report.damaged.insert(format!("{short}: {}", dir.display()));
                    continue;
                }
            };
            for node in tree.nodes {
                let path = match node.os_name() {
                    Ok(name) => dir.join(name),
                    Err(e) => {
                        report.errors.push(format!("tree {tree_id}: {e}"));
                        continue;
                    }
                };
                if let (NodeKind::Dir, Some(subtree)) = (node.kind, node.subtree) {
                    stack.push((subtree, path));
                    continue;
                }
                for chunk in &node.content {
                    let why = match bad.get(chunk) {
                        Some(why) => Some(why.clone()),
                        None if !index.contains(chunk) => Some("no pack holds it".to_string()),
                        None => None,
                    };
                    if let Some(why) = why {
                        if !bad.contains_key(chunk) {
                            report.errors.push(format!("chunk {chunk}: {why}"));
                            bad.insert(*chunk, why);
                        }
                        report
                            .damaged
                            .insert(format!("{short}: {}", path.display()));
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Reads a whole pack and checks it; the blobs that fail, with why, or the
/// pack's own failure with the blobs it takes down.
async fn read_pack(
    repo: &Repository,
    id: PackId,
    expected: &[crate::pack::PackEntry],
) -> Result<Vec<(BlobId, String)>, (Error, Vec<BlobId>)> {
    let all = || expected.iter().map(|e| e.id).collect::<Vec<_>>();
    let bytes = repo
        .get(&Repository::pack_key(id))
        .await
        .map_err(|e| (e, all()))?;
    let header = parse_pack(repo, id, &bytes).map_err(|e| (e, all()))?;
    let in_header: HashMap<BlobId, crate::pack::PackEntry> =
        header.iter().map(|e| (e.id, *e)).collect();
    let mut failures = Vec::new();
    for e in expected {
        if in_header.get(&e.id) != Some(e) {
            failures.push((e.id, "the index and the pack's header disagree".to_string()));
        }
    }
    for e in &header {
        // `parse_pack` checked that every blob lies inside the pack.
        let sealed = bytes.get(e.range()).unwrap_or_default();
        if let Err(err) = open_blob(repo.keys(), e.id, sealed, e.compressed, e.raw_length) {
            failures.push((e.id, err.to_string()));
        }
    }
    Ok(failures)
}
