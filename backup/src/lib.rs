//! The backup engine behind `archipel backup`: encrypted, deduplicated
//! snapshots of local files in a repository on Archipel, stored through the
//! client library (never through the S3 gateway).
//!
//! - [`repo`]: where a repository lives, its config and keys, object I/O;
//! - [`crypto`]: the repository's keys, keyed chunk ids, sealing;
//! - [`chunker`]: content-defined chunking (FastCDC) with a reused buffer;
//! - [`blob`]: chunks and trees as sealed, compressed blobs;
//! - [`pack`]: packs of blobs near the segment size, and their upload;
//! - [`index`]: which pack holds which blob;
//! - [`tree`]: directory trees; [`snapshot`]: snapshots;
//! - [`lock`]: shared and exclusive locks as objects with expiry;
//! - [`archiver`]: `run`; [`restorer`]: `restore`; [`walk`]: `ls`, `diff`;
//! - [`policy`]: `forget`'s keep rules; [`prune`]: `prune`; [`check`]: `check`;
//! - [`filter`]: include and exclude patterns.
//!
//! `docs/BACKUP.md` describes the format and its guarantees for users.

pub mod archiver;
pub mod blob;
pub mod check;
pub mod chunker;
pub mod crypto;
mod error;
pub mod filter;
pub mod index;
pub mod lock;
pub mod pack;
pub mod policy;
pub mod prune;
pub mod repo;
pub mod restorer;
pub mod snapshot;
pub mod tree;
pub mod walk;

pub use archiver::{backup, BackupOptions, BackupProgress, BackupSummary};
pub use blob::{BlobId, PackId};
pub use check::{check, CheckReport};
pub use error::Error;
pub use policy::{KeepPolicy, Verdict};
pub use prune::{prune, PruneOptions, PruneSummary};
pub use repo::{ChunkerSizes, InitOptions, RepoLocation, Repository};
pub use restorer::{restore, RestoreOptions, RestoreProgress, RestoreSummary};
pub use snapshot::Snapshot;

/// Removes the snapshots `policy` does not keep (all of them are listed in
/// the verdicts; with `dry_run`, nothing is removed). Takes a shared lock:
/// removing a snapshot deletes no data, which only `prune` does.
pub async fn forget(
    repo: &Repository,
    policy: &KeepPolicy,
    dry_run: bool,
) -> Result<Vec<Verdict>, Error> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no keep rule given (--keep-last, --keep-daily, …): nothing would be kept".into(),
        ));
    }
    lock::locked(repo, false, "forget", async {
        let snapshots = snapshot::load_all(repo).await?;
        let verdicts = policy::apply(policy, &snapshots);
        if !dry_run {
            for snapshot in verdicts.iter().flat_map(|v| &v.remove) {
                Snapshot::delete(repo, &snapshot.id).await?;
            }
        }
        Ok(verdicts)
    })
    .await
}

/// Removes the snapshots `specs` name (ids or unique prefixes).
pub async fn forget_snapshots(repo: &Repository, specs: &[String]) -> Result<Vec<Snapshot>, Error> {
    lock::locked(repo, false, "forget", async {
        let snapshots = snapshot::load_all(repo).await?;
        let chosen = specs
            .iter()
            .map(|spec| snapshot::find(&snapshots, spec).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        for snapshot in &chosen {
            Snapshot::delete(repo, &snapshot.id).await?;
        }
        Ok(chosen)
    })
    .await
}
