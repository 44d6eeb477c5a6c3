//! Locks as objects with expiry. Backups, forget and check take a *shared*
//! lock, prune an *exclusive* one:
//!
//! - backups never rewrite or delete anything (packs, index objects and
//!   snapshots get fresh random names), so any number run at once from any
//!   number of machines without coordination: the worst case is the same
//!   chunk stored twice, which prune later removes;
//! - prune deletes packs, which a running backup may be deduplicating
//!   against or about to name in its snapshot, so it must run alone.
//!
//! Taking a lock writes `locks/<random id>`, then lists the others: a shared
//! lock gives way to a live exclusive one, an exclusive lock to any live
//! lock. Two that race both see each other and both give way, never both
//! proceed. A holder refreshes its lock every few minutes; a lock not
//! refreshed for [`STALE_AFTER`] (its process was killed) is ignored, and
//! `archipel backup unlock` removes such leftovers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::crypto::random_bytes;
use crate::repo::Repository;
use crate::Error;

const LOCK_AAD: &[u8] = b"archipel backup lock";
/// How often a holder rewrites its lock.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// A lock older than this is a leftover.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    /// Seconds since the Unix epoch of the last refresh.
    pub time: u64,
}

impl LockInfo {
    fn is_stale(&self, now: u64) -> bool {
        now.saturating_sub(self.time) > STALE_AFTER.as_secs()
    }

    fn describe(&self) -> String {
        format!(
            "{} lock for {} by pid {} on {} since {}",
            if self.exclusive { "an exclusive" } else { "a" },
            self.purpose,
            self.pid,
            self.host,
            when(self.time)
        )
    }
}

/// A held lock; released by [`Lock::release`] (a dropped lock stops being
/// refreshed and goes stale).
pub struct Lock {
    repo: Repository,
    name: String,
    refresher: JoinHandle<()>,
}

/// A lock's time for people; a time past what a date can show (a damaged
/// lock) as plain seconds.
fn when(seconds: u64) -> String {
    // 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
    const LAST_DATE: u64 = 253_402_300_799;
    if seconds > LAST_DATE {
        return format!("{seconds} s after 1970");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Lock {
    pub async fn acquire(repo: &Repository, exclusive: bool, purpose: &str) -> Result<Lock, Error> {
        let name = format!("locks/{}", hex::encode(random_bytes::<16>()));
        let mut info = LockInfo {
            exclusive,
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            time: now(),
        };
        write(repo, &name, &info).await?;
        let others = match live_locks(repo).await {
            Ok(others) => others,
            Err(e) => {
                repo.delete(&name).await?;
                return Err(e);
            }
        };
        if let Some(conflict) = others
            .iter()
            .filter(|(other, _)| *other != name)
            .find(|(_, other)| exclusive || other.exclusive)
        {
            repo.delete(&name).await?;
            return Err(Error::Locked(format!(
                "the repository is in use: {} (if that process is gone, its lock expires {} minutes after it was last refreshed; `archipel backup unlock --remove-all` removes it at once)",
                conflict.1.describe(),
                STALE_AFTER.as_secs() / 60
            )));
        }
        let refresher = {
            let repo = repo.clone();
            let name = name.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH_EVERY).await;
                    info.time = now();
                    if let Err(e) = write(&repo, &name, &info).await {
                        tracing::warn!(error = %e, "refreshing the repository lock failed");
                    }
                }
            })
        };
        Ok(Lock {
            repo: repo.clone(),
            name,
            refresher,
        })
    }

    pub async fn release(self) -> Result<(), Error> {
        self.refresher.abort();
        self.repo.delete(&self.name).await
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Runs `work` under a lock, released however `work` ends, including by
/// [`Repository::interrupt`].
pub async fn locked<T>(
    repo: &Repository,
    exclusive: bool,
    purpose: &str,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let lock = Lock::acquire(repo, exclusive, purpose).await?;
    let result = tokio::select! {
        result = work => result,
        _ = repo.interrupted().cancelled() => Err(Error::Interrupted),
    };
    let released = lock.release().await;
    let value = result?;
    released?;
    Ok(value)
}

async fn write(repo: &Repository, name: &str, info: &LockInfo) -> Result<(), Error> {
    let bytes = serde_json::to_vec(info).map_err(|e| Error::Invalid(format!("lock: {e}")))?;
    repo.put_sealed(name, LOCK_AAD, &bytes).await
}

/// Every lock, stale or not, with its name.
pub async fn all_locks(repo: &Repository) -> Result<Vec<(String, LockInfo)>, Error> {
    let mut locks = Vec::new();
    for (name, _) in repo.list("locks/").await? {
        match repo.get_sealed(&name, LOCK_AAD).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(info) => locks.push((name, info)),
                Err(e) => tracing::warn!(lock = %name, error = %e, "an unreadable lock"),
            },
            // Released between the listing and the read.
            Err(Error::Network(archipel_client::Error::ObjectNotFound { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(locks)
}

async fn live_locks(repo: &Repository) -> Result<Vec<(String, LockInfo)>, Error> {
    let now = now();
    Ok(all_locks(repo)
        .await?
        .into_iter()
        .filter(|(_, info)| !info.is_stale(now))
        .collect())
}

/// Removes stale locks (all locks with `all`); returns how many.
pub async fn unlock(repo: &Repository, all: bool) -> Result<usize, Error> {
    let now = now();
    let mut removed = 0;
    for (name, info) in all_locks(repo).await? {
        if all || info.is_stale(now) {
            repo.delete(&name).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
