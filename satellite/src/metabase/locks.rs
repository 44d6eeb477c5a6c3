//! Object Lock (S3's write-once-read-many): a bucket's lock configuration
//! and default retention, the retention and legal hold of each version, and
//! the rules that keep a locked version from being removed or its
//! protection weakened. They hold here, in the metabase's transactions, so
//! no gateway or client can get around them.
//!
//! A retention in governance mode yields to a key allowed to bypass
//! governance; one in compliance mode yields to nobody until its date, and
//! can only be extended. A legal hold has no date: it holds until removed.

use super::objects::{version_query, BucketRow};
use super::{BeginWrite, Metabase, Pool};
use crate::metabase::{Bucket, Object, VersionRef, Versioning};
use crate::{Error, Result};
use archipel_proto::orders::unix_now;

/// How strictly a retention holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionMode {
    /// Keys allowed to bypass governance may shorten it or remove the version.
    Governance,
    /// Nobody may shorten it or remove the version before its date.
    Compliance,
}

impl RetentionMode {
    /// The mode stored as `state` (0: none).
    pub(crate) fn from_db(state: i64) -> Result<Option<RetentionMode>> {
        match state {
            0 => Ok(None),
            1 => Ok(Some(RetentionMode::Governance)),
            2 => Ok(Some(RetentionMode::Compliance)),
            other => Err(Error::Corrupt(format!("retention mode {other}"))),
        }
    }

    pub(crate) fn to_db(mode: Option<RetentionMode>) -> i64 {
        match mode {
            None => 0,
            Some(RetentionMode::Governance) => 1,
            Some(RetentionMode::Compliance) => 2,
        }
    }
}

/// A version's retention: kept in `mode` until `until` (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: RetentionMode,
    pub until: i64,
}

/// How long a bucket's default retention keeps new versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionPeriod {
    Days(u32),
    Years(u32),
}

impl RetentionPeriod {
    /// The period in seconds (a year is 365 days, as S3 counts it).
    pub fn seconds(self) -> i64 {
        match self {
            RetentionPeriod::Days(days) => i64::from(days) * 86_400,
            RetentionPeriod::Years(years) => i64::from(years) * 365 * 86_400,
        }
    }
}

/// The retention a bucket gives each new version that asks for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultRetention {
    pub mode: RetentionMode,
    pub period: RetentionPeriod,
}

/// How Object Lock protects one version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VersionLock {
    pub retention: Option<Retention>,
    pub legal_hold: bool,
}

impl VersionLock {
    /// The lock stored in a version's columns.
    pub(super) fn from_db(mode: i64, until: i64, legal_hold: i64) -> Result<VersionLock> {
        Ok(VersionLock {
            retention: RetentionMode::from_db(mode)?.map(|mode| Retention { mode, until }),
            legal_hold: legal_hold != 0,
        })
    }

    /// Whether it protects anything (a retention, over or not, or a hold).
    pub fn is_set(&self) -> bool {
        self.retention.is_some() || self.legal_hold
    }
}

/// Longest default retention a bucket may set: 100 years, as S3.
const MAX_DEFAULT_RETENTION_DAYS: u32 = 36_500;

/// A bucket's Object Lock configuration. Once enabled it stays enabled, and
/// the bucket's versioning cannot be suspended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectLock {
    pub enabled: bool,
    pub default_retention: Option<DefaultRetention>,
}

impl ObjectLock {
    /// The configuration stored in a bucket row.
    pub(super) fn from_row(row: &BucketRow) -> Result<ObjectLock> {
        let period = match (row.lock_days, row.lock_years) {
            (0, 0) => None,
            (days, 0) => Some(RetentionPeriod::Days(stored_count(days)?)),
            (0, years) => Some(RetentionPeriod::Years(stored_count(years)?)),
            _ => {
                return Err(Error::Corrupt(
                    "a default retention in days and years".into(),
                ))
            }
        };
        let default_retention = match (RetentionMode::from_db(row.lock_mode)?, period) {
            (Some(mode), Some(period)) => Some(DefaultRetention { mode, period }),
            (None, None) => None,
            _ => return Err(Error::Corrupt("a default retention half set".into())),
        };
        Ok(ObjectLock {
            enabled: row.object_lock != 0,
            default_retention,
        })
    }

    /// Checks a configuration a request sets.
    fn validate(&self) -> Result<()> {
        if self.default_retention.is_some() && !self.enabled {
            return Err(Error::InvalidArgument(
                "a default retention needs Object Lock enabled".into(),
            ));
        }
        let days = match self.default_retention.map(|d| d.period) {
            None => return Ok(()),
            Some(RetentionPeriod::Days(days)) => days,
            Some(RetentionPeriod::Years(years)) => years.saturating_mul(365),
        };
        if days == 0 || days > MAX_DEFAULT_RETENTION_DAYS {
            return Err(Error::InvalidArgument(
                "a default retention is from 1 day to 100 years".into(),
            ));
        }
        Ok(())
    }
}

fn stored_count(count: i64) -> Result<u32> {
    u32::try_from(count).map_err(|_| Error::Corrupt(format!("a retention period of {count}")))
}

/// Why a version may not be removed at `now`, if it may not: its legal
/// hold, or a retention not yet over (governance mode only if not
/// `bypass_governance`).
pub fn removal_refused(lock: &VersionLock, now: i64, bypass_governance: bool) -> Option<String> {
    if lock.legal_hold {
        return Some("it is under a legal hold".into());
    }
    let retention = lock.retention.filter(|r| r.until > now)?;
    let until = crate::format_unix(retention.until);
    match retention.mode {
        RetentionMode::Compliance => Some(format!("it is retained in compliance mode until {until}")),
        RetentionMode::Governance if !bypass_governance => Some(format!(
            "it is retained in governance mode until {until} (only a request that bypasses governance, with a key allowed to, may remove it)"
        )),
        RetentionMode::Governance => None,
    }
}

/// Gives the new version `object` of a bucket whose lock is `lock` its
/// protection at `now`: the retention and hold it asked for, or else the
/// bucket's default retention. Refuses protection in a bucket without
/// Object Lock, and on a version that expires (it could not be both).
pub(super) fn protect_new_version(object: &mut Object, lock: &ObjectLock, now: i64) -> Result<()> {
    let asked = object.lock()?.is_set();
    if !lock.enabled {
        return match asked {
            true => Err(no_lock_configuration()),
            false => Ok(()),
        };
    }
    if object.retention_mode == 0 {
        if let Some(default) = lock.default_retention {
            object.retention_mode = RetentionMode::to_db(Some(default.mode));
            object.retain_until = now.saturating_add(default.period.seconds());
        }
    }
    if object.expires_at != 0 && object.lock()?.is_set() {
        return Err(Error::InvalidArgument(
            "a version under Object Lock cannot have an expiration time".into(),
        ));
    }
    Ok(())
}

fn no_lock_configuration() -> Error {
    Error::InvalidArgument("the bucket has no Object Lock configuration".into())
}

/// Whether changing a version's retention from `current` to `wanted` at
/// `now` weakens it: removes or shortens one still running, or turns
/// compliance into governance. Such a change needs a bypass of governance
/// (and is refused outright in compliance mode).
fn check_retention_change(
    current: Option<Retention>,
    wanted: Option<Retention>,
    now: i64,
    bypass_governance: bool,
) -> Result<()> {
    let Some(current) = current.filter(|c| c.until > now) else {
        return Ok(());
    };
    let weakens = match wanted {
        None => true,
        Some(wanted) => {
            wanted.until < current.until
                || (current.mode == RetentionMode::Compliance
                    && wanted.mode == RetentionMode::Governance)
        }
    };
    match (weakens, current.mode) {
        (false, _) => Ok(()),
        (true, RetentionMode::Compliance) => Err(Error::ObjectLocked(format!(
            "it is retained in compliance mode until {}, which can only be extended",
            crate::format_unix(current.until)
        ))),
        (true, RetentionMode::Governance) if bypass_governance => Ok(()),
        (true, RetentionMode::Governance) => Err(Error::ObjectLocked(format!(
            "it is retained in governance mode until {}; shortening or removing that takes a request that bypasses governance",
            crate::format_unix(current.until)
        ))),
    }
}

/// A change to one version's protection.
enum LockChange {
    Retention {
        wanted: Option<Retention>,
        bypass_governance: bool,
    },
    LegalHold(bool),
}

impl Metabase {
    /// Sets a bucket's Object Lock configuration: enabling it needs the
    /// bucket's versioning enabled and cannot be undone.
    pub async fn set_object_lock(
        &self,
        project: &[u8],
        name: &str,
        lock: ObjectLock,
    ) -> Result<Bucket> {
        lock.validate()?;
        let current = self.get_bucket(project, name).await?;
        if current.object_lock.enabled && !lock.enabled {
            return Err(Error::InvalidArgument(
                "Object Lock cannot be turned off once enabled".into(),
            ));
        }
        let (mode, days, years) = match lock.default_retention {
            None => (0, 0, 0),
            Some(DefaultRetention { mode, period }) => match period {
                RetentionPeriod::Days(days) => (RetentionMode::to_db(Some(mode)), days, 0),
                RetentionPeriod::Years(years) => (RetentionMode::to_db(Some(mode)), 0, years),
            },
        };
        // The versioning condition in the UPDATE itself: a concurrent
        // suspension cannot slip between the check and the write.
        let updated = on_pool!(self, pool => {
            let _writing = self.writing().await;
            sqlx::query(
                "UPDATE buckets SET object_lock = $1, lock_mode = $2, lock_days = $3, \
                 lock_years = $4 WHERE project_id = $5 AND name = $6 AND versioning = $7",
            )
            .bind(i64::from(lock.enabled))
            .bind(mode)
            .bind(i64::from(days))
            .bind(i64::from(years))
            .bind(project)
            .bind(name)
            .bind(Versioning::Enabled.to_db())
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.updated_bucket(
            project,
            name,
            updated,
            "Object Lock needs the bucket's versioning enabled",
        )
        .await
    }

    /// Sets (or with `None` removes) the retention of a version; weakening
    /// one still running takes `bypass_governance`, and is refused in
    /// compliance mode. Returns the version as changed.
    pub async fn set_retention(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        version: &VersionRef,
        wanted: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<Object> {
        let change = LockChange::Retention {
            wanted,
            bypass_governance,
        };
        self.change_lock(project, bucket, key, version, change)
            .await
    }

    /// Puts a legal hold on a version or lifts it; returns the version.
    pub async fn set_legal_hold(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        version: &VersionRef,
        on: bool,
    ) -> Result<Object> {
        let change = LockChange::LegalHold(on);
        self.change_lock(project, bucket, key, version, change)
            .await
    }

    async fn change_lock(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        version: &VersionRef,
        change: LockChange,
    ) -> Result<Object> {
        let now = unix_now();
        let sql = version_query(version);
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let settings = bucket_in!(tx, project, bucket);
            if !settings.object_lock.enabled {
                return Err(no_lock_configuration());
            }
            let mut query = sqlx::query_as(&sql).bind(project).bind(bucket).bind(key).bind(now);
            if let VersionRef::Exact(id) = version {
                query = query.bind(id.stream_id.as_slice()).bind(id.version);
            }
            let found: Option<Object> = query.fetch_optional(&mut *tx).await?;
            let mut object = found.ok_or_else(|| match version {
                VersionRef::Latest => Error::NotFound("the object".into()),
                _ => Error::NotFound("the object version".into()),
            })?;
            if object.delete_marker != 0 {
                return Err(Error::InvalidArgument(
                    "a delete marker cannot be locked".into(),
                ));
            }
            match change {
                LockChange::Retention { wanted, bypass_governance } => {
                    if wanted.is_some_and(|w| w.until <= now) {
                        return Err(Error::InvalidArgument(
                            "the retain-until date must be in the future".into(),
                        ));
                    }
                    let current = object.lock()?;
                    check_retention_change(current.retention, wanted, now, bypass_governance)?;
                    object.set_lock(VersionLock { retention: wanted, ..current });
                }
                LockChange::LegalHold(on) => object.legal_hold = i64::from(on),
            }
            if object.expires_at != 0 && object.lock()?.is_set() {
                return Err(Error::InvalidArgument(
                    "a version with an expiration time cannot be locked".into(),
                ));
            }
            sqlx::query(
                "UPDATE objects SET retention_mode = $1, retain_until = $2, legal_hold = $3 \
                 WHERE stream_id = $4",
            )
            .bind(object.retention_mode)
            .bind(object.retain_until)
            .bind(object.legal_hold)
            .bind(&object.stream_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(object)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(mode: RetentionMode, until: i64) -> Option<Retention> {
        Some(Retention { mode, until })
    }

    #[test]
    fn retentions_only_weaken_with_a_bypass_and_never_in_compliance() {
        use RetentionMode::{Compliance, Governance};
        let now = 1_000;
        let check = |current, wanted, bypass| check_retention_change(current, wanted, now, bypass);
        // Extending is always allowed; so is anything once the date passed.
        assert!(check(
            retention(Governance, 2_000),
            retention(Governance, 3_000),
            false
        )
        .is_ok());
        assert!(check(
            retention(Compliance, 2_000),
            retention(Compliance, 3_000),
            false
        )
        .is_ok());
        assert!(check(
            retention(Governance, 2_000),
            retention(Compliance, 2_000),
            false
        )
        .is_ok());
        assert!(check(retention(Compliance, 900), None, false).is_ok());
        assert!(check(None, retention(Governance, 1_500), false).is_ok());
        // Shortening or removing governance takes the bypass.
        assert!(check(
            retention(Governance, 2_000),
            retention(Governance, 1_500),
            false
        )
        .is_err());
        assert!(check(retention(Governance, 2_000), None, false).is_err());
        assert!(check(retention(Governance, 2_000), None, true).is_ok());
        // Compliance yields to nobody.
        for bypass in [false, true] {
            assert!(matches!(
                check(
                    retention(Compliance, 2_000),
                    retention(Compliance, 1_500),
                    bypass
                ),
                Err(Error::ObjectLocked(_))
            ));
            assert!(check(
                retention(Compliance, 2_000),
                retention(Governance, 3_000),
                bypass
            )
            .is_err());
            assert!(check(retention(Compliance, 2_000), None, bypass).is_err());
        }
    }

    #[test]
    fn default_retentions_are_bounded() {
        let lock = |days| ObjectLock {
            enabled: true,
            default_retention: Some(DefaultRetention {
                mode: RetentionMode::Governance,
                period: RetentionPeriod::Days(days),
            }),
        };
        assert!(lock(1).validate().is_ok());
        assert!(lock(0).validate().is_err());
        assert!(lock(36_501).validate().is_err());
        let off_with_default = ObjectLock {
            enabled: false,
            ..lock(1)
        };
        assert!(off_with_default.validate().is_err());
    }
}
