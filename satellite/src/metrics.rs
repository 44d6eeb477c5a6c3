//! The satellite's counters: audits by outcome, repairs, heal-on-read reports,
//! and the figures of the repair checker's last complete pass. Workers count
//! into one shared [`Metrics`]; the admin server renders them (with gauges
//! read from the metabase) for Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::reputation::AuditOutcome;

/// Counters shared by every worker of one satellite process.
#[derive(Debug, Default)]
pub struct Metrics {
    audit_success: AtomicU64,
    audit_failure: AtomicU64,
    audit_offline: AtomicU64,
    audit_unknown: AtomicU64,
    audit_contained: AtomicU64,
    pub repairs_succeeded: AtomicU64,
    pub repairs_failed: AtomicU64,
    /// Repairs whose result was dropped because the segment changed meanwhile
    /// (deleted, overwritten or repaired by someone else).
    pub repairs_superseded: AtomicU64,
    pub repaired_pieces: AtomicU64,
    pub repaired_bytes: AtomicU64,
    /// Bytes downloaded by repairs (k pieces per repaired segment).
    pub repair_download_bytes: AtomicU64,
    /// Bad or missing pieces reported by clients.
    pub bad_piece_reports: AtomicU64,
    checker: Mutex<Option<CheckerPass>>,
}

/// What one complete pass of the repair checker over all segments found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckerPass {
    /// Unix seconds when the pass ended.
    pub finished_at: i64,
    pub duration_ms: u64,
    /// Remote segments looked at.
    pub segments: u64,
    /// Segments by their number of healthy pieces.
    pub healthy_pieces: BTreeMap<u16, u64>,
    /// Segments at or below their repair threshold (lost ones included).
    pub below_repair_threshold: u64,
    /// Segments with fewer healthy pieces than `k`.
    pub lost: u64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts an audit that ended with `outcome`.
    pub fn audited(&self, outcome: AuditOutcome) {
        bump(match outcome {
            AuditOutcome::Success => &self.audit_success,
            AuditOutcome::Failure => &self.audit_failure,
            AuditOutcome::Offline => &self.audit_offline,
            AuditOutcome::Unknown => &self.audit_unknown,
        });
    }

    /// Counts an audit that left (or kept) its node in containment.
    pub fn contained(&self) {
        bump(&self.audit_contained);
    }

    /// Audits so far by outcome label: success, failure, offline, unknown, contained.
    pub fn audits(&self) -> [(&'static str, u64); 5] {
        [
            ("success", read(&self.audit_success)),
            ("failure", read(&self.audit_failure)),
            ("offline", read(&self.audit_offline)),
            ("unknown", read(&self.audit_unknown)),
            ("contained", read(&self.audit_contained)),
        ]
    }

    pub fn set_checker_pass(&self, pass: CheckerPass) {
        *self
            .checker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pass);
    }

    /// The last complete checker pass, if one has finished in this process.
    pub fn checker_pass(&self) -> Option<CheckerPass> {
        self.checker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
