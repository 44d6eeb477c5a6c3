//! `backup forget`: which snapshots a keep policy keeps. Snapshots are
//! grouped by host and paths (a laptop's policy never removes the server's
//! snapshots); within a group, from the newest, each rule keeps the newest
//! snapshot of each of its last N periods (hours, days, ISO weeks, months,
//! years, in UTC) that have one, `last` keeps the N newest, and a snapshot
//! any rule keeps stays. Snapshots carrying a `tags` tag are always kept.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
    pub tags: Vec<String>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
            && self.tags.is_empty()
    }
}

/// The period a time (seconds since the epoch) falls in, for one rule.
type Period = fn(i64) -> i64;

/// One group's verdict.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    pub host: String,
    pub paths: Vec<String>,
    /// Newest first.
    pub keep: Vec<Snapshot>,
    pub remove: Vec<Snapshot>,
}

/// Applies `policy` to `snapshots`; groups in host and paths order.
pub fn apply(policy: &KeepPolicy, snapshots: &[Snapshot]) -> Vec<Verdict> {
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        groups
            .entry((s.hostname.clone(), s.paths.clone()))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|((host, paths), mut group)| {
            group.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
            let rules: [(usize, Period); 6] = [
                (policy.last, |_| i64::MIN),
                (policy.hourly, |s| s.div_euclid(3600)),
                (policy.daily, |s| s.div_euclid(86400)),
                (policy.weekly, week),
                (policy.monthly, month),
                (policy.yearly, |s| month(s).div_euclid(12)),
            ];
            let mut kept = vec![false; group.len()];
            for (rule, (count, period)) in rules.iter().enumerate() {
                let mut left = *count;
                let mut previous = None;
                for (i, s) in group.iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    // `last` counts every snapshot as its own period.
                    let key = if rule == 0 {
                        i as i64
                    } else {
                        period(seconds(s.time))
                    };
                    if previous != Some(key) {
                        kept[i] = true;
                        left -= 1;
                        previous = Some(key);
                    }
                }
            }
            for (i, s) in group.iter().enumerate() {
                if s.tags.iter().any(|t| policy.tags.contains(t)) {
                    kept[i] = true;
                }
            }
            let (keep, remove): (Vec<_>, Vec<_>) =
                group.into_iter().zip(kept).partition(|(_, keep)| *keep);
            Verdict {
                host,
                paths,
                keep: keep.into_iter().map(|(s, _)| s.clone()).collect(),
                remove: remove.into_iter().map(|(s, _)| s.clone()).collect(),
            }
        })
        .collect()
}

fn seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// ISO weeks start on Monday; 1970-01-01 was a Thursday.
fn week(seconds: i64) -> i64 {
    (seconds.div_euclid(86400) + 3).div_euclid(7)
}

/// Months since year 0 of the UTC date (Howard Hinnant's civil calendar).
fn month(seconds: i64) -> i64 {
    let z = seconds.div_euclid(86400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    y * 12 + (m - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobId;
    use std::time::Duration;

    const DAY: u64 = 86400;

    fn at(id: &str, seconds: u64, host: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            time: UNIX_EPOCH + Duration::from_secs(seconds),
            tree: BlobId([0; 32]),
            paths: vec!["/data".into()],
            hostname: host.into(),
            username: "u".into(),
            tags: vec![],
            parent: None,
            summary: None,
        }
    }

    fn kept(verdict: &Verdict) -> Vec<&str> {
        verdict.keep.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn calendar_periods_are_right() {
        // 2024-02-29T12:00:00Z
        let leap_day = 1_709_208_000;
        assert_eq!(month(leap_day), 2024 * 12 + 1);
        assert_eq!(month(0), 1970 * 12);
        assert_eq!(month(-1), 1969 * 12 + 11);
        // Monday 2024-03-04 starts a new ISO week; Sunday 03-03 ends one.
        assert_eq!(week(1_709_510_400), week(1_709_510_400 + 6 * 86400));
        assert_ne!(week(1_709_510_400), week(1_709_510_400 - 1));
    }

    #[test]
    fn each_rule_keeps_the_newest_of_its_periods() {
        // Two snapshots a day for ten days from 2024-01-01 (a Monday).
        let start = 1_704_067_200;
        let snapshots: Vec<Snapshot> = (0..20)
            .map(|i| {
                at(
                    &format!("{i:02}"),
                    start + (i / 2) * DAY + (i % 2) * 3600,
                    "h",
                )
            })
            .collect();
        let verdicts = apply(
            &KeepPolicy {
                daily: 3,
                ..Default::default()
            },
            &snapshots,
        );
        assert_eq!(kept(&verdicts[0]), ["19", "17", "15"]);
        assert_eq!(verdicts[0].remove.len(), 17);
        let verdicts = apply(
            &KeepPolicy {
                last: 2,
                weekly: 2,
                ..Default::default()
            },
            &snapshots,
        );
        // The newest two, and the newest of the first ISO week (its last
        // day, Sunday 2024-01-07, has snapshots 12 and 13).
        assert_eq!(kept(&verdicts[0]), ["19", "18", "13"]);
    }

    #[test]
    fn groups_are_judged_apart_and_tags_are_kept() {
        let mut tagged = at("t", 10, "a");
        tagged.tags = vec!["keep".into()];
        let snapshots = vec![
            tagged,
            at("a2", 20, "a"),
            at("a3", 30, "a"),
            at("b1", 5, "b"),
        ];
        let verdicts = apply(
            &KeepPolicy {
                last: 1,
                tags: vec!["keep".into()],
                ..Default::default()
            },
            &snapshots,
        );
        assert_eq!(kept(&verdicts[0]), ["a3", "t"]);
        assert_eq!(kept(&verdicts[1]), ["b1"]);
        assert!(KeepPolicy::default().is_empty());
    }
}
