//! Listing snapshots: the whole sorted listing that the first page of an S3
//! listing had to compute, kept for a short while so that the next pages of
//! the same walk are cut from it instead of listing and decrypting the whole
//! level again for each page.
//!
//! With encrypted names the satellite's order is not the names' order, so a
//! page can only be cut from a full listing of the level (see `listing`). A
//! snapshot belongs to one access key, bucket, prefix and delimiter, and is
//! found again by where a served page ended (the continuation token's or the
//! marker's key), so requests never see another key's listing. It is a
//! snapshot: objects written or deleted during a walk show up in the next walk,
//! as a walk that started later would see them. Memory is bounded by the
//! number of snapshots and of their entries (the least recently used go
//! first), and a snapshot idle for [`IDLE`] is dropped; a page whose snapshot is
//! gone is cut from a fresh listing, so the cache only ever saves work.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a snapshot stays usable after its last page was served.
pub(crate) const IDLE: Duration = Duration::from_secs(120);
/// Snapshots held at once (walks in progress).
const MAX_SNAPSHOTS: usize = 64;
/// Listing entries held at once over all snapshots (about 150 bytes each).
const MAX_ENTRIES: usize = 2_000_000;

/// What a listing is of: requests with the same scope list the same things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) access_key: String,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) delimiter: Option<String>,
}

struct Snapshot<T> {
    scope: Scope,
    listing: Arc<T>,
    entries: usize,
    /// Where served pages ended: a request resuming after one continues this walk.
    continuations: HashSet<String>,
    used: Instant,
}

/// The snapshots of walks in progress; `T` is the listing.
pub(crate) struct Snapshots<T> {
    /// In the order they were made.
    held: Mutex<Vec<Snapshot<T>>>,
}

impl<T> Default for Snapshots<T> {
    fn default() -> Self {
        Snapshots {
            held: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Snapshots<T> {
    /// The listing of the walk in `scope` that served a page ending at
    /// `after`: the newest such walk, since a walk started again after
    /// changes passes the same keys and must see its own listing.
    pub(crate) fn find(&self, scope: &Scope, after: &str) -> Option<Arc<T>> {
        let now = Instant::now();
        let mut held = self.lock();
        held.retain(|s| now.duration_since(s.used) < IDLE);
        let snapshot = held
            .iter_mut()
            .rev()
            .find(|s| s.scope == *scope && s.continuations.contains(after))?;
        snapshot.used = now;
        Some(Arc::clone(&snapshot.listing))
    }

    /// Remembers that a page of `listing` (of `entries` entries) in `scope`
    /// ended at `last`, so that the page after it is cut from `listing`.
    pub(crate) fn keep(&self, scope: Scope, listing: &Arc<T>, entries: usize, last: &str) {
        if entries > MAX_ENTRIES {
            return;
        }
        let now = Instant::now();
        let mut held = self.lock();
        if let Some(snapshot) = held.iter_mut().find(|s| Arc::ptr_eq(&s.listing, listing)) {
            snapshot.continuations.insert(last.to_string());
            snapshot.used = now;
            return;
        }
        held.retain(|s| now.duration_since(s.used) < IDLE);
        held.push(Snapshot {
            scope,
            listing: Arc::clone(listing),
            entries,
            continuations: HashSet::from([last.to_string()]),
            used: now,
        });
        while held.len() > MAX_SNAPSHOTS
            || held.iter().map(|s| s.entries).sum::<usize>() > MAX_ENTRIES
        {
            let oldest = held
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.used)
                .map(|(i, _)| i);
            // `remove` keeps the others in the order they were made.
            match oldest {
                Some(i) => held.remove(i),
                None => break,
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Snapshot<T>>> {
        // The vector is valid after any panic in the short sections above.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(bucket: &str) -> Scope {
        Scope {
            access_key: "KEY".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            delimiter: Some("/".into()),
        }
    }

    #[test]
    fn snapshots_are_found_by_scope_and_continuation() {
        let snapshots = Snapshots::default();
        let listing = Arc::new(vec!["a", "b", "c"]);
        snapshots.keep(scope("x"), &listing, 3, "a");
        assert!(snapshots.find(&scope("x"), "a").is_some());
        assert!(snapshots.find(&scope("x"), "b").is_none());
        assert!(snapshots.find(&scope("y"), "a").is_none());
        let mut other_key = scope("x");
        other_key.access_key = "OTHER".into();
        assert!(snapshots.find(&other_key, "a").is_none());
        snapshots.keep(scope("x"), &listing, 3, "b");
        let found = snapshots.find(&scope("x"), "b").unwrap();
        assert!(Arc::ptr_eq(&found, &listing));
        // A later walk over the same scope passing the same key wins.
        let again = Arc::new(vec!["a", "b", "c", "d"]);
        snapshots.keep(scope("x"), &again, 4, "b");
        assert!(Arc::ptr_eq(
            &snapshots.find(&scope("x"), "b").unwrap(),
            &again
        ));
    }

    #[test]
    fn the_least_recently_used_go_first_and_huge_listings_are_not_kept() {
        let snapshots = Snapshots::default();
        let listings: Vec<_> = (0..=MAX_SNAPSHOTS).map(Arc::new).collect();
        for (i, listing) in listings.iter().enumerate() {
            snapshots.keep(scope(&format!("b{i}")), listing, 1, "k");
        }
        assert!(snapshots.find(&scope("b0"), "k").is_none());
        assert!(snapshots.find(&scope("b1"), "k").is_some());
        let huge = Arc::new(0);
        snapshots.keep(scope("huge"), &huge, MAX_ENTRIES + 1, "k");
        assert!(snapshots.find(&scope("huge"), "k").is_none());
    }
}
