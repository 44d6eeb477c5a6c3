//! Bandwidth accounting: the bytes the node received and served for each
//! satellite, per action and per day (UTC), from the order limits it
//! honoured, kept in the node's database.
//!
//! Transfers add to an in-memory ledger that is written to the database
//! every `FLUSH_INTERVAL`, before every read and at shutdown: one small
//! transaction now and then instead of one per transfer, which small
//! objects would pay for. A crash loses at most the last interval's figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use archipel_proto::orders::unix_now;
use archipel_proto::pb::PieceAction;
use archipel_proto::NodeId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::PieceStore;

/// How often the ledger is written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
const SECONDS_PER_DAY: i64 = 86_400;

/// What a transfer was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Pieces received from clients.
    Upload,
    /// Pieces served to clients.
    Download,
    /// Pieces served to the satellite's auditor.
    Audit,
    /// Pieces served to a repairer, or received from one.
    Repair,
    /// Pieces handed over in a graceful exit, sent or received.
    Exit,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Upload,
        Action::Download,
        Action::Audit,
        Action::Repair,
        Action::Exit,
    ];

    /// The accounting action of an order limit's action; `None` for those
    /// that move no piece bytes.
    pub fn of(action: PieceAction) -> Option<Action> {
        match action {
            PieceAction::Put => Some(Action::Upload),
            PieceAction::Get => Some(Action::Download),
            PieceAction::GetAudit => Some(Action::Audit),
            PieceAction::GetRepair | PieceAction::PutRepair => Some(Action::Repair),
            PieceAction::PutExit => Some(Action::Exit),
            PieceAction::Delete | PieceAction::Invalid => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Upload => "upload",
            Action::Download => "download",
            Action::Audit => "audit",
            Action::Repair => "repair",
            Action::Exit => "exit",
        }
    }

    fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The UTC day (days since 1970-01-01) of unix time `seconds`.
pub fn day_of(seconds: i64) -> i64 {
    seconds.div_euclid(SECONDS_PER_DAY)
}

/// A day as `YYYY-MM-DD`.
pub fn date_of_day(day: i64) -> String {
    let seconds = u64::try_from(day.saturating_mul(SECONDS_PER_DAY)).unwrap_or(0);
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_string()
}

/// The first day of the month `day` is in.
pub fn month_start(day: i64) -> i64 {
    let date = date_of_day(day);
    let day_of_month: i64 = date[8..10].parse().unwrap_or(1);
    day - (day_of_month - 1)
}

/// Bytes by action.
pub type ByAction = BTreeMap<Action, u64>;

/// One satellite's transfers, day by day.
pub type Days = BTreeMap<i64, ByAction>;

/// Transfers counted in memory, written to the database from time to time.
pub struct Ledger {
    store: PieceStore,
    pending: Mutex<HashMap<(NodeId, Action, i64), u64>>,
    /// Bytes since the process started, for the metrics' counters.
    since_start: Mutex<BTreeMap<(NodeId, Action), u64>>,
}

impl Ledger {
    pub fn new(store: PieceStore) -> Ledger {
        Ledger {
            store,
            pending: Mutex::default(),
            since_start: Mutex::default(),
        }
    }

    /// Counts `bytes` moved for `satellite` by an order limit of `action`.
    pub fn record(&self, satellite: NodeId, action: PieceAction, bytes: u64) {
        let Some(action) = Action::of(action) else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let day = day_of(unix_now());
        *lock(&self.pending)
            .entry((satellite, action, day))
            .or_default() += bytes;
        *lock(&self.since_start)
            .entry((satellite, action))
            .or_default() += bytes;
    }

    /// Bytes per satellite and action since the process started.
    pub fn since_start(&self) -> BTreeMap<(NodeId, Action), u64> {
        lock(&self.since_start).clone()
    }

    /// Writes what is counted in memory to the database.
    pub async fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.is_empty() {
            return Ok(());
        }
        let entries: Vec<(NodeId, Action, i64, u64)> = pending
            .iter()
            .map(|(&(satellite, action, day), &bytes)| (satellite, action, day, bytes))
            .collect();
        let written = self
            .store
            .with_index(move |index| {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|(satellite, action, day, bytes)| {
                        (*satellite, action.name(), *day, *bytes)
                    })
                    .collect();
                index.add_bandwidth(&rows)
            })
            .await;
        if written.is_err() {
            // Counted again at the next flush rather than lost.
            let mut current = lock(&self.pending);
            for (key, bytes) in pending {
                *current.entry(key).or_default() += bytes;
            }
        }
        written
    }

    /// Every satellite's transfers on `since_day` and later.
    pub async fn since(&self, since_day: i64) -> Result<BTreeMap<NodeId, Days>> {
        self.flush().await?;
        let rows = self
            .store
            .with_index(move |index| index.bandwidth_since(since_day))
            .await?;
        let mut out: BTreeMap<NodeId, Days> = BTreeMap::new();
        for (satellite, action, day, bytes) in rows {
            // Rows of actions this version does not know are left out.
            if let Some(action) = Action::from_name(&action) {
                *out.entry(satellite)
                    .or_default()
                    .entry(day)
                    .or_default()
                    .entry(action)
                    .or_default() += bytes;
            }
        }
        Ok(out)
    }

    /// Writes to the database every [`FLUSH_INTERVAL`] and once more when
    /// `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(FLUSH_INTERVAL) => false,
            };
            if let Err(e) = self.flush().await {
                tracing::warn!("cannot write the bandwidth figures to the database: {e}");
            }
            if stop {
                return;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only; a panic elsewhere cannot leave them half updated.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_utc_calendar_days() {
        assert_eq!(date_of_day(0), "1970-01-01");
        let day = day_of(1_796_256_000); // 2026-12-03T00:00:00Z
        assert_eq!(date_of_day(day), "2026-12-03");
        assert_eq!(date_of_day(month_start(day)), "2026-12-01");
        assert_eq!(day_of(1_796_256_000 - 1), day - 1);
        assert_eq!(
            date_of_day(month_start(day_of(1_772_323_200))),
            "2026-03-01"
        );
    }

    #[tokio::test]
    async fn transfers_are_kept_per_satellite_action_and_day_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (
            archipel_proto::Identity::generate().id(),
            archipel_proto::Identity::generate().id(),
        );
        let today = day_of(unix_now());
        {
            let store = PieceStore::open(dir.path().to_path_buf(), 1_000_000)
                .await
                .unwrap();
            let ledger = Ledger::new(store.clone());
            ledger.record(one, PieceAction::Put, 1000);
            ledger.record(one, PieceAction::Put, 24);
            ledger.record(one, PieceAction::GetAudit, 7);
            ledger.record(two, PieceAction::GetRepair, 5);
            ledger.record(two, PieceAction::PutRepair, 6);
            ledger.record(two, PieceAction::Delete, 99);
            ledger.flush().await.unwrap();
            ledger.record(one, PieceAction::Get, 300);
            let cancel = CancellationToken::new();
            cancel.cancel();
            ledger.run(cancel).await;
            assert_eq!(
                ledger.since_start().get(&(one, Action::Upload)),
                Some(&1024)
            );
            store.close().await.unwrap();
        }
        let store = PieceStore::open(dir.path().to_path_buf(), 1_000_000)
            .await
            .unwrap();
        let ledger = Ledger::new(store);
        let all = ledger.since(today).await.unwrap();
        let of_one = &all[&one][&today];
        assert_eq!(of_one[&Action::Upload], 1024);
        assert_eq!(of_one[&Action::Download], 300);
        assert_eq!(of_one[&Action::Audit], 7);
        assert_eq!(all[&two][&today][&Action::Repair], 11);
        assert_eq!(all[&two][&today].len(), 1, "a delete moves no bytes");
        assert!(ledger.since(today + 1).await.unwrap().is_empty());
    }
}
