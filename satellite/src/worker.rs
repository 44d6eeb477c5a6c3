//! The one shape of background loop: do one unit of work, sleep while idle
//! (or until woken), stop when told. And the loop's first user: the cleanup of abandoned uploads
//! and of expired objects.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::deletes::PieceDeleter;
use crate::{Metabase, Result};

/// Whether a unit of work found something to do (then the next runs at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Busy,
    Idle,
}

/// One unit of background work.
pub trait Work: Send + 'static {
    fn run_once(&mut self) -> impl std::future::Future<Output = Result<Progress>> + Send;

    /// A signal that ends an idle wait early: new work arrived.
    fn wake_signal(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Runs `work` until `stop` turns true: again at once while busy, after
/// `interval` when idle or failed (failures are logged, never fatal).
pub async fn run_worker(
    name: &'static str,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut work: impl Work,
) {
    let wake = work.wake_signal();
    loop {
        if *stop.borrow() {
            return;
        }
        let progress = tokio::select! {
            result = work.run_once() => result,
            _ = stop.changed() => return,
        };
        let pause = match progress {
            Ok(Progress::Busy) => Duration::ZERO,
            Ok(Progress::Idle) => interval,
            Err(e) => {
                tracing::warn!("{name}: {e}");
                interval
            }
        };
        if !pause.is_zero() {
            let woken = async {
                match &wake {
                    Some(wake) => wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = woken => {}
                _ = stop.changed() => return,
            }
        }
    }
}

const CLEANUP_BATCH: usize = 100;

/// Deletes pending objects older than the expiration, and committed objects
/// past their own expiration, with their pieces. (Nodes drop expired pieces
/// on their own too; the deletes free the space of those that sweep late.)
pub struct Cleanup {
    metabase: Metabase,
    deleter: PieceDeleter,
    expiration: Duration,
    multipart_expiration: Duration,
}

impl Cleanup {
    pub fn new(
        metabase: Metabase,
        deleter: PieceDeleter,
        expiration: Duration,
        multipart_expiration: Duration,
    ) -> Self {
        Cleanup {
            metabase,
            deleter,
            expiration,
            multipart_expiration,
        }
    }
}

fn cutoff(now: i64, age: Duration) -> i64 {
    now.saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
}

impl Work for Cleanup {
    async fn run_once(&mut self) -> Result<Progress> {
        let now = archipel_proto::orders::unix_now();
        let (abandoned, removed) = self
            .metabase
            .delete_pending_before(
                cutoff(now, self.expiration),
                cutoff(now, self.multipart_expiration),
                CLEANUP_BATCH,
            )
            .await?;
        if abandoned > 0 {
            tracing::info!("deleted {abandoned} abandoned uploads");
        }
        self.deleter.removed(&removed);
        let (expired, removed) = self.metabase.delete_expired(now, CLEANUP_BATCH).await?;
        if expired > 0 {
            tracing::info!("deleted {expired} expired objects");
        }
        self.deleter.removed(&removed);
        Ok(if abandoned == CLEANUP_BATCH || expired == CLEANUP_BATCH {
            Progress::Busy
        } else {
            Progress::Idle
        })
    }
}
