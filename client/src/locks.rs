//! Object Lock (write once, read many) as the client library shows it: a
//! bucket's [`BucketLock`] and default retention, and each version's
//! [`VersionLock`] (a [`Retention`] and a legal hold). The satellite
//! enforces them: until a retention's date, and while a legal hold is on, no
//! request removes the version, whatever client or gateway sends it.

use std::time::SystemTime;

use archipel_proto::pb;

use crate::{from_unix, to_unix};

/// How strictly a retention holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    /// A request that bypasses governance (with a grant that allows it)
    /// may shorten the retention or remove the version.
    Governance,
    /// Nobody may shorten it or remove the version before its date.
    Compliance,
}

impl RetentionMode {
    fn from_pb(mode: i32) -> Option<RetentionMode> {
        match pb::RetentionMode::try_from(mode) {
            Ok(pb::RetentionMode::Governance) => Some(RetentionMode::Governance),
            Ok(pb::RetentionMode::Compliance) => Some(RetentionMode::Compliance),
            _ => None,
        }
    }

    fn to_pb(mode: Option<RetentionMode>) -> pb::RetentionMode {
        match mode {
            None => pb::RetentionMode::None,
            Some(RetentionMode::Governance) => pb::RetentionMode::Governance,
            Some(RetentionMode::Compliance) => pb::RetentionMode::Compliance,
        }
    }
}

/// A version's retention: kept in `mode` until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    pub mode: RetentionMode,
    #[serde(serialize_with = "crate::rfc3339::required")]
    pub until: SystemTime,
}

impl Retention {
    pub(crate) fn to_pb(self) -> pb::Retention {
        pb::Retention {
            mode: RetentionMode::to_pb(Some(self.mode)).into(),
            retain_until: to_unix(self.until),
        }
    }

    fn from_pb(retention: &pb::Retention) -> Option<Retention> {
        Some(Retention {
            mode: RetentionMode::from_pb(retention.mode)?,
            until: from_unix(retention.retain_until),
        })
    }
}

/// How Object Lock protects one version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VersionLock {
    /// Its retention, if it has one (it may be over).
    pub retention: Option<Retention>,
    /// A legal hold keeps the version, with no date, until it is lifted.
    pub legal_hold: bool,
}

impl VersionLock {
    pub(crate) fn to_pb(self) -> Option<pb::VersionLock> {
        (self != VersionLock::default()).then(|| pb::VersionLock {
            retention: self.retention.map(Retention::to_pb),
            legal_hold: self.legal_hold,
        })
    }

    pub(crate) fn from_pb(lock: Option<&pb::VersionLock>) -> VersionLock {
        VersionLock {
            retention: lock
                .and_then(|l| l.retention.as_ref())
                .and_then(Retention::from_pb),
            legal_hold: lock.is_some_and(|l| l.legal_hold),
        }
    }
}

/// How long a bucket's default retention keeps new versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionPeriod {
    Days(u32),
    /// Years of 365 days.
    Years(u32),
}

/// The retention a bucket gives each new version that asks for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DefaultRetention {
    pub mode: RetentionMode,
    pub period: RetentionPeriod,
}

/// A bucket's Object Lock configuration. Once enabled it stays enabled,
/// and the bucket's versioning cannot be suspended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketLock {
    pub enabled: bool,
    pub default_retention: Option<DefaultRetention>,
}

impl BucketLock {
    pub(crate) fn to_pb(self) -> pb::BucketObjectLock {
        let (days, years) = match self.default_retention.map(|d| d.period) {
            None => (0, 0),
            Some(RetentionPeriod::Days(days)) => (days, 0),
            Some(RetentionPeriod::Years(years)) => (0, years),
        };
        pb::BucketObjectLock {
            enabled: self.enabled,
            default_mode: RetentionMode::to_pb(self.default_retention.map(|d| d.mode)).into(),
            default_days: days,
            default_years: years,
        }
    }

    pub(crate) fn from_pb(lock: Option<&pb::BucketObjectLock>) -> BucketLock {
        let Some(lock) = lock else {
            return BucketLock::default();
        };
        let period = match (lock.default_days, lock.default_years) {
            (0, 0) => None,
            (days, 0) => Some(RetentionPeriod::Days(days)),
            (_, years) => Some(RetentionPeriod::Years(years)),
        };
        let default_retention = match (RetentionMode::from_pb(lock.default_mode), period) {
            (Some(mode), Some(period)) => Some(DefaultRetention { mode, period }),
            _ => None,
        };
        BucketLock {
            enabled: lock.enabled,
            default_retention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_survive_the_wire() {
        let bucket = BucketLock {
            enabled: true,
            default_retention: Some(DefaultRetention {
                mode: RetentionMode::Compliance,
                period: RetentionPeriod::Years(7),
            }),
        };
        assert_eq!(BucketLock::from_pb(Some(&bucket.to_pb())), bucket);
        assert_eq!(BucketLock::from_pb(None), BucketLock::default());
        let version = VersionLock {
            retention: Some(Retention {
                mode: RetentionMode::Governance,
                until: from_unix(2_000_000_000),
            }),
            legal_hold: true,
        };
        assert_eq!(VersionLock::from_pb(version.to_pb().as_ref()), version);
        assert_eq!(VersionLock::default().to_pb(), None);
    }
}
