//! Conditional writes and deletes: PutObject and CompleteMultipartUpload
//! with `If-None-Match: *` (store only if the key is free) or `If-Match:
//! "etag"` (replace only that content), DeleteObject with `If-Match` (and
//! `x-amz-if-match-last-modified-time`, `x-amz-if-match-size`), and the
//! per-object `ETag` of DeleteObjects.
//!
//! ETags live in the objects' encrypted metadata, which the satellite cannot
//! read, so the gateway checks a condition against the current object and
//! turns it into a [`Precondition`] on that very version (or on the key
//! holding none), which the satellite checks again in the transaction that
//! commits or deletes. A write or delete that raced another therefore
//! changes nothing and answers `PreconditionFailed`; a failed check before
//! the body is read costs no upload.

use std::time::SystemTime;

use archipel_client::{Error, ObjectInfo, Precondition, Project};
use s3s::dto::{
    CompleteMultipartUploadInput, DeleteObjectInput, ETagCondition, PutObjectInput, Timestamp,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::metadata;

/// The write preconditions of one PutObject.
pub(crate) struct WriteCondition {
    if_match: Option<ETagCondition>,
    /// Only `*`: S3 accepts no other value on writes.
    if_none_match: bool,
}

impl WriteCondition {
    /// The request's conditions; `None` when it has none.
    pub(crate) fn from_put(input: &PutObjectInput) -> S3Result<Option<WriteCondition>> {
        WriteCondition::new(input.if_match.as_ref(), input.if_none_match.as_ref())
    }

    /// A CompleteMultipartUpload's conditions, checked just before the
    /// upload is completed.
    pub(crate) fn from_complete(
        input: &CompleteMultipartUploadInput,
    ) -> S3Result<Option<WriteCondition>> {
        WriteCondition::new(input.if_match.as_ref(), input.if_none_match.as_ref())
    }

    fn new(
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<Option<WriteCondition>> {
        let if_none_match = match if_none_match {
            None => false,
            Some(ETagCondition::Any) => true,
            // As S3: a write takes only `*` here.
            Some(ETagCondition::ETag(_)) => {
                return Err(s3_error!(
                    NotImplemented,
                    "A header you provided implies functionality that is not implemented: If-None-Match takes only `*` on a write"
                ))
            }
        };
        if if_match.is_none() && !if_none_match {
            return Ok(None);
        }
        Ok(Some(WriteCondition {
            if_match: if_match.cloned(),
            if_none_match,
        }))
    }

    /// Checks the conditions against the object stored now; returns what
    /// the satellite must find still true when the write commits.
    pub(crate) async fn check(
        &self,
        project: &Project,
        bucket: &str,
        key: &str,
    ) -> S3Result<Precondition> {
        let current = current(project, bucket, key).await?;
        if self.if_none_match && current.is_some() {
            return Err(s3_error!(
                PreconditionFailed,
                "If-None-Match: * and the key already exists"
            ));
        }
        match &self.if_match {
            Some(condition) => matching(condition, current.as_ref(), |_| true),
            // Only If-None-Match (see `new`), which held.
            None => Ok(Precondition::Absent),
        }
    }
}

/// The preconditions of one DeleteObject, or of one object of a
/// DeleteObjects (its `ETag`).
pub(crate) struct DeleteCondition {
    if_match: ETagCondition,
    last_modified: Option<Timestamp>,
    size: Option<i64>,
}

impl DeleteCondition {
    pub(crate) fn from_delete(input: &DeleteObjectInput) -> S3Result<Option<DeleteCondition>> {
        let Some(if_match) = input.if_match.clone() else {
            if input.if_match_last_modified_time.is_some() || input.if_match_size.is_some() {
                return Err(s3_error!(
                    InvalidArgument,
                    "x-amz-if-match-last-modified-time and x-amz-if-match-size need If-Match"
                ));
            }
            return Ok(None);
        };
        Ok(Some(DeleteCondition {
            if_match,
            last_modified: input.if_match_last_modified_time.clone(),
            size: input.if_match_size,
        }))
    }

    /// The condition of one object of a DeleteObjects.
    pub(crate) fn from_etag(etag: Option<&s3s::dto::ETag>) -> Option<DeleteCondition> {
        etag.map(|etag| DeleteCondition {
            if_match: ETagCondition::ETag(etag.clone()),
            last_modified: None,
            size: None,
        })
    }

    /// Checks the condition against the current object; returns what the
    /// satellite must find still true when it deletes.
    pub(crate) async fn check(
        &self,
        project: &Project,
        bucket: &str,
        key: &str,
    ) -> S3Result<Precondition> {
        let current = current(project, bucket, key).await?;
        matching(&self.if_match, current.as_ref(), |info| {
            let seconds = |time: SystemTime| {
                time.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            let time_matches = self.last_modified.as_ref().is_none_or(|wanted| {
                let wanted = time::OffsetDateTime::from(wanted.clone()).unix_timestamp();
                u64::try_from(wanted).is_ok_and(|wanted| wanted == seconds(info.created))
            });
            let size_matches = self
                .size
                .is_none_or(|wanted| u64::try_from(wanted).is_ok_and(|w| w == info.size));
            time_matches && size_matches
        })
    }
}

/// The key's current object, `None` if it holds none.
async fn current(project: &Project, bucket: &str, key: &str) -> S3Result<Option<ObjectInfo>> {
    match project.stat(bucket, key).await {
        Ok(info) => Ok(Some(info)),
        Err(Error::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(s3_error(e)),
    }
}

/// `If-Match` (with `more` of the object's attributes to match) against the
/// current object: the precondition on that version when it holds.
fn matching(
    condition: &ETagCondition,
    current: Option<&ObjectInfo>,
    more: impl FnOnce(&ObjectInfo) -> bool,
) -> S3Result<Precondition> {
    // As S3: If-Match on a key that holds nothing is NoSuchKey.
    let info =
        current.ok_or_else(|| s3_error!(NoSuchKey, "If-Match and the key holds no object"))?;
    let etag_matches = match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(wanted) => {
            metadata::etag(info).is_some_and(|etag| etag.value() == wanted.value())
        }
    };
    if !etag_matches || !more(info) {
        return Err(s3_error!(
            PreconditionFailed,
            "If-Match does not match the stored object"
        ));
    }
    let version = info.version.as_ref().ok_or_else(|| {
        s3_error!(
            InternalError,
            "the satellite named no version of the object"
        )
    })?;
    Ok(Precondition::Current(version.id.clone()))
}
