//! Repair: the [`checker`] scans every segment and queues those whose healthy
//! pieces fell to the repair threshold (reporting those below `k` as lost); the
//! [`repairer`] workers claim queued segments, rebuild the missing pieces from
//! `k` verified ones and store them on fresh nodes. Which pieces count as
//! healthy is [`crate::health`]'s call.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub mod checker;
pub mod repairer;

/// The repair settings (the `[repair]` section of the satellite's config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    /// Whether this satellite process checks and repairs at all (default true).
    pub enabled: bool,
    /// Pause between two complete passes of the checker (default 30s).
    #[serde(with = "humantime_serde")]
    pub checker_interval: Duration,
    /// Segments the checker reads per query (default 1000).
    pub checker_batch: usize,
    /// Repair workers running at once in this process (default 2).
    pub workers: usize,
    /// How long a worker waits when the queue has nothing for it (default 10s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a claim on a segment lasts; a worker that dies loses its
    /// segment to another after this (default 15m).
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// How long a segment whose repair failed waits before the next try,
    /// doubled for every further failure up to 32 times (default 5m).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Longest a single piece download or upload may take (default 2m).
    #[serde(with = "humantime_serde")]
    pub transfer_timeout: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            enabled: true,
            checker_interval: Duration::from_secs(30),
            checker_batch: 1000,
            workers: 2,
            interval: Duration::from_secs(10),
            claim_lease: Duration::from_secs(15 * 60),
            retry_after: Duration::from_secs(5 * 60),
            transfer_timeout: Duration::from_secs(120),
        }
    }
}

impl RepairConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled
            && (self.checker_interval.is_zero()
                || self.checker_batch == 0
                || self.workers == 0
                || self.interval.is_zero()
                || self.claim_lease.is_zero()
                || self.transfer_timeout.is_zero())
        {
            return Err(Error::Config(
                "repair intervals, batch, workers, lease and timeout must be positive".into(),
            ));
        }
        // A repair downloads, then uploads: a lease shorter than that could
        // run out mid-repair and let a second worker start on the segment.
        if self.enabled && self.claim_lease < self.transfer_timeout * 3 {
            return Err(Error::Config(
                "repair claim_lease must be at least three transfer_timeouts".into(),
            ));
        }
        Ok(())
    }
}
