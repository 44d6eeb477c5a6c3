//! S3 Object Lock on top of the satellite's: the bucket's lock
//! configuration (`?object-lock`), each version's retention (`?retention`)
//! and legal hold (`?legal-hold`), the `x-amz-object-lock-*` headers of
//! writes and reads, and `x-amz-bypass-governance-retention`. The satellite
//! enforces the locks; this module only translates.

use std::time::SystemTime;

use archipel_client::{
    BucketLock, DefaultRetention, Project, Retention, RetentionMode, RetentionPeriod, Version,
    VersionLock,
};
use s3s::dto::{
    self, GetObjectLegalHoldInput, GetObjectLegalHoldOutput, GetObjectLockConfigurationInput,
    GetObjectLockConfigurationOutput, GetObjectRetentionInput, GetObjectRetentionOutput,
    ObjectLockConfiguration, ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus,
    ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule,
    PutObjectLegalHoldInput, PutObjectLegalHoldOutput, PutObjectLockConfigurationInput,
    PutObjectLockConfigurationOutput, PutObjectRetentionInput, PutObjectRetentionOutput, Timestamp,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::versions;

/// The Object Lock a write asks for with its `x-amz-object-lock-mode`,
/// `-retain-until-date` and `-legal-hold` headers (a mode and a date go
/// together).
pub(crate) fn requested(
    mode: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    legal_hold: Option<&ObjectLockLegalHoldStatus>,
) -> S3Result<VersionLock> {
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(mode), Some(until)) => Some(Retention {
            mode: mode_of(mode.as_str())?,
            until: future_date(until)?,
        }),
        _ => {
            return Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        ))
        }
    };
    let legal_hold = match legal_hold {
        None => false,
        Some(status) => hold_of(status.as_str())?,
    };
    Ok(VersionLock {
        retention,
        legal_hold,
    })
}

fn mode_of(mode: &str) -> S3Result<RetentionMode> {
    match mode {
        ObjectLockMode::GOVERNANCE => Ok(RetentionMode::Governance),
        ObjectLockMode::COMPLIANCE => Ok(RetentionMode::Compliance),
        _ => Err(s3_error!(
            InvalidArgument,
            "Unknown wormMode directive: the mode is GOVERNANCE or COMPLIANCE"
        )),
    }
}

fn mode_name(mode: RetentionMode) -> &'static str {
    match mode {
        RetentionMode::Governance => ObjectLockMode::GOVERNANCE,
        RetentionMode::Compliance => ObjectLockMode::COMPLIANCE,
    }
}

fn hold_of(status: &str) -> S3Result<bool> {
    match status {
        ObjectLockLegalHoldStatus::ON => Ok(true),
        ObjectLockLegalHoldStatus::OFF => Ok(false),
        _ => Err(s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema: a legal hold is ON or OFF"
        )),
    }
}

fn hold_name(on: bool) -> &'static str {
    match on {
        true => ObjectLockLegalHoldStatus::ON,
        false => ObjectLockLegalHoldStatus::OFF,
    }
}

/// A retain-until date, which must be in the future.
fn future_date(date: &Timestamp) -> S3Result<SystemTime> {
    let seconds = time::OffsetDateTime::from(date.clone()).unix_timestamp();
    let now = archipel_proto::orders::unix_now();
    if seconds <= now {
        return Err(s3_error!(
            InvalidArgument,
            "The retain until date must be in the future!"
        ));
    }
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds as u64))
}

/// The `x-amz-object-lock-*` headers a read shows for `lock`: the mode
/// and date of its retention, and its legal hold when one is on.
pub(crate) struct LockHeaders {
    pub mode: Option<ObjectLockMode>,
    pub until: Option<Timestamp>,
    pub legal_hold: Option<ObjectLockLegalHoldStatus>,
}

impl LockHeaders {
    pub(crate) fn of(lock: &VersionLock) -> LockHeaders {
        LockHeaders {
            mode: lock
                .retention
                .map(|r| ObjectLockMode::from_static(mode_name(r.mode))),
            until: lock.retention.map(|r| Timestamp::from(r.until)),
            legal_hold: lock
                .legal_hold
                .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON)),
        }
    }
}

/// A bucket's lock, or the answer S3 gives about a bucket without one.
async fn locked_bucket(project: &Project, bucket: &str) -> S3Result<BucketLock> {
    let lock = project.bucket(bucket).await.map_err(s3_error)?.object_lock;
    if !lock.enabled {
        return Err(s3_error!(
            InvalidRequest,
            "Bucket is missing Object Lock Configuration"
        ));
    }
    Ok(lock)
}

pub(crate) async fn get_configuration(
    project: &Project,
    input: GetObjectLockConfigurationInput,
) -> S3Result<GetObjectLockConfigurationOutput> {
    let lock = project
        .bucket(&input.bucket)
        .await
        .map_err(s3_error)?
        .object_lock;
    if !lock.enabled {
        return Err(s3_error!(
            ObjectLockConfigurationNotFoundError,
            "Object Lock configuration does not exist for this bucket"
        ));
    }
    let rule = lock.default_retention.map(|default| {
        let (days, years) = match default.period {
            RetentionPeriod::Days(days) => (Some(days as i32), None),
            RetentionPeriod::Years(years) => (None, Some(years as i32)),
        };
        ObjectLockRule {
            default_retention: Some(dto::DefaultRetention {
                days,
                years,
                mode: Some(ObjectLockRetentionMode::from_static(mode_name(
                    default.mode,
                ))),
            }),
        }
    });
    Ok(GetObjectLockConfigurationOutput {
        object_lock_configuration: Some(ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule,
        }),
    })
}

pub(crate) async fn put_configuration(
    project: &Project,
    input: PutObjectLockConfigurationInput,
) -> S3Result<PutObjectLockConfigurationOutput> {
    let malformed = |why: &str| {
        s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema: {why}"
        )
    };
    let configuration = input
        .object_lock_configuration
        .ok_or_else(|| malformed("the configuration is missing"))?;
    if configuration
        .object_lock_enabled
        .as_ref()
        .map(|e| e.as_str())
        != Some(ObjectLockEnabled::ENABLED)
    {
        return Err(malformed("ObjectLockEnabled must be Enabled"));
    }
    let default_retention = match configuration.rule.and_then(|r| r.default_retention) {
        None => None,
        Some(default) => {
            let mode = default
                .mode
                .ok_or_else(|| malformed("a default retention needs a Mode"))?;
            let count = |n: i32| {
                u32::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                    s3_error!(
                        InvalidArgument,
                        "Default retention period must be a positive integer value"
                    )
                })
            };
            let period = match (default.days, default.years) {
                (Some(days), None) => RetentionPeriod::Days(count(days)?),
                (None, Some(years)) => RetentionPeriod::Years(count(years)?),
                _ => return Err(malformed("a default retention has Days or Years")),
            };
            Some(DefaultRetention {
                mode: mode_of(mode.as_str())?,
                period,
            })
        }
    };
    project
        .set_object_lock(
            &input.bucket,
            BucketLock {
                enabled: true,
                default_retention,
            },
        )
        .await
        .map_err(s3_error)?;
    Ok(PutObjectLockConfigurationOutput::default())
}

pub(crate) async fn get_retention(
    project: &Project,
    input: GetObjectRetentionInput,
) -> S3Result<GetObjectRetentionOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let lock = version_lock(project, &input.bucket, &input.key, &version).await?;
    let Some(retention) = lock.retention else {
        return Err(s3_error!(
            NoSuchObjectLockConfiguration,
            "The specified object does not have a ObjectLock configuration"
        ));
    };
    Ok(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from_static(mode_name(
                retention.mode,
            ))),
            retain_until_date: Some(Timestamp::from(retention.until)),
        }),
    })
}

pub(crate) async fn put_retention(
    project: &Project,
    input: PutObjectRetentionInput,
) -> S3Result<PutObjectRetentionOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let retention = match input.retention {
        // An empty retention removes it (bypassing governance).
        None
        | Some(ObjectLockRetention {
            mode: None,
            retain_until_date: None,
        }) => None,
        Some(ObjectLockRetention {
            mode: Some(mode),
            retain_until_date: Some(until),
        }) => Some(Retention {
            mode: mode_of(mode.as_str())?,
            until: future_date(&until)?,
        }),
        Some(_) => {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: a retention has both a Mode and a RetainUntilDate"
            ))
        }
    };
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    project
        .set_retention(&input.bucket, &input.key, &version, retention, bypass)
        .await
        .map_err(s3_error)?;
    Ok(PutObjectRetentionOutput::default())
}

pub(crate) async fn get_legal_hold(
    project: &Project,
    input: GetObjectLegalHoldInput,
) -> S3Result<GetObjectLegalHoldOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let lock = version_lock(project, &input.bucket, &input.key, &version).await?;
    Ok(GetObjectLegalHoldOutput {
        legal_hold: Some(ObjectLockLegalHold {
            status: Some(ObjectLockLegalHoldStatus::from_static(hold_name(
                lock.legal_hold,
            ))),
        }),
    })
}

pub(crate) async fn put_legal_hold(
    project: &Project,
    input: PutObjectLegalHoldInput,
) -> S3Result<PutObjectLegalHoldOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let status = input
        .legal_hold
        .and_then(|h| h.status)
        .ok_or_else(|| s3_error!(MalformedXML, "The XML you provided was not well-formed or did not validate against our published schema: the legal hold needs a Status"))?;
    project
        .set_legal_hold(
            &input.bucket,
            &input.key,
            &version,
            hold_of(status.as_str())?,
        )
        .await
        .map_err(s3_error)?;
    Ok(PutObjectLegalHoldOutput::default())
}

/// The lock of a version, in a bucket that has Object Lock.
async fn version_lock(
    project: &Project,
    bucket: &str,
    key: &str,
    version: &Version,
) -> S3Result<VersionLock> {
    locked_bucket(project, bucket).await?;
    let info = crate::objects::stat(project, (bucket, key, version)).await?;
    Ok(info.lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_headers_go_together_and_point_ahead() {
        let governance = ObjectLockMode::from_static(ObjectLockMode::GOVERNANCE);
        let tomorrow = Timestamp::from(SystemTime::now() + std::time::Duration::from_secs(86_400));
        let yesterday = Timestamp::from(SystemTime::now() - std::time::Duration::from_secs(86_400));
        let on = ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON);
        assert_eq!(requested(None, None, None).unwrap(), VersionLock::default());
        let lock = requested(Some(&governance), Some(&tomorrow), Some(&on)).unwrap();
        assert_eq!(
            lock.retention.map(|r| r.mode),
            Some(RetentionMode::Governance)
        );
        assert!(lock.legal_hold);
        assert!(requested(Some(&governance), None, None).is_err());
        assert!(requested(None, Some(&tomorrow), None).is_err());
        assert!(requested(Some(&governance), Some(&yesterday), None).is_err());
        let odd = ObjectLockMode::from("SOMETIMES".to_string());
        assert!(requested(Some(&odd), Some(&tomorrow), None).is_err());
        let headers = LockHeaders::of(&lock);
        assert_eq!(
            headers.mode.as_ref().map(|m| m.as_str()),
            Some("GOVERNANCE")
        );
        assert_eq!(headers.legal_hold.as_ref().map(|h| h.as_str()), Some("ON"));
    }
}
