//! The node's counters of transfers by result and of garbage collection.
//! The dashboard renders them, with gauges read from the store and the
//! bandwidth ledger, as Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use archipel_proto::pb::PieceAction;

use crate::bandwidth::Action;
use crate::store::ChangeReport;

/// Which way a transfer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Success,
    Failure,
    /// The peer went away before the transfer ended (a download's long tail).
    Cancelled,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Cancelled => "cancelled",
        }
    }

    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

/// Counters shared by the services of one node process.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Transfers by direction, action (its label; "invalid" when the request
    /// named none the node knows) and outcome.
    transfers: Mutex<BTreeMap<(Direction, &'static str, Outcome), u64>>,
    pub retain_filters: AtomicU64,
    pub retain_pieces_trashed: AtomicU64,
    pub retain_bytes_trashed: AtomicU64,
    pub trash_pieces_removed: AtomicU64,
    pub trash_bytes_removed: AtomicU64,
    pub expired_pieces_removed: AtomicU64,
    pub expired_bytes_removed: AtomicU64,
}

impl NodeMetrics {
    /// Counts a transfer whose order limit named `action` (`None`: no usable
    /// limit) and that ended with `outcome`.
    pub fn transfer(&self, direction: Direction, action: Option<PieceAction>, outcome: Outcome) {
        let label = action.and_then(Action::of).map_or("invalid", Action::name);
        *self
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((direction, label, outcome))
            .or_default() += 1;
    }

    pub fn transfers(&self) -> BTreeMap<(Direction, &'static str, Outcome), u64> {
        self.transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts what a retain filter moved to the trash.
    pub fn retained(&self, pieces: u64, bytes: u64) {
        add(&self.retain_filters, 1);
        add(&self.retain_pieces_trashed, pieces);
        add(&self.retain_bytes_trashed, bytes);
    }

    /// Counts pieces removed from the trash after its retention.
    pub fn trash_emptied(&self, report: &ChangeReport) {
        add(&self.trash_pieces_removed, report.pieces as u64);
        add(&self.trash_bytes_removed, report.bytes);
    }

    /// Counts expired pieces removed.
    pub fn expired(&self, report: &ChangeReport) {
        add(&self.expired_pieces_removed, report.pieces as u64);
        add(&self.expired_bytes_removed, report.bytes);
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
