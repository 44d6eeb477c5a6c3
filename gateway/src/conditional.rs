//! Conditional writes: PutObject and CompleteMultipartUpload with
//! `If-None-Match: *` (store only if the key is free) or `If-Match: "etag"`
//! (replace only that content).
//!
//! The satellite has no compare-and-swap commit, so the condition is checked
//! twice: before the body is read (a failure costs no upload) and again when
//! the body has ended, just before the client library uploads the last of it
//! and commits (see [`WriteCondition::gate`]). A concurrent writer that
//! commits between that second check and this upload's commit still wins
//! silently or is overwritten: the window is the last segment's upload plus
//! the commit, never the whole transfer. A completion moves no data: its
//! condition is checked once, just before the commit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use archipel_client::{Error, ObjectInfo, Project};
use futures::ready;
use s3s::dto::{CompleteMultipartUploadInput, ETagCondition, PutObjectInput};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};
use tokio::io::{AsyncRead, ReadBuf};

use crate::errors::{s3_error, BodyRefused};
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
            Some(ETagCondition::ETag(_)) => {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on a write only takes `*`"
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

    /// Checks the conditions against the object stored now.
    pub(crate) async fn check(&self, project: &Project, bucket: &str, key: &str) -> S3Result<()> {
        let current = match project.stat(bucket, key).await {
            Ok(info) => Some(info),
            Err(Error::ObjectNotFound { .. }) => None,
            Err(e) => return Err(s3_error(e)),
        };
        self.evaluate(current.as_ref())
    }

    fn evaluate(&self, current: Option<&ObjectInfo>) -> S3Result<()> {
        if self.if_none_match && current.is_some() {
            return Err(s3_error!(
                PreconditionFailed,
                "If-None-Match: * and the key already exists"
            ));
        }
        if let Some(condition) = &self.if_match {
            // As S3: If-Match on a key that holds nothing is NoSuchKey.
            let info = current
                .ok_or_else(|| s3_error!(NoSuchKey, "If-Match and the key holds no object"))?;
            let matches = match condition {
                ETagCondition::Any => true,
                ETagCondition::ETag(wanted) => {
                    metadata::etag(info).is_some_and(|etag| etag.value() == wanted.value())
                }
            };
            if !matches {
                return Err(s3_error!(
                    PreconditionFailed,
                    "If-Match does not match the stored ETag"
                ));
            }
        }
        Ok(())
    }

    /// Reads `inner` and, at its end, checks the conditions again before
    /// the end reaches the upload; a condition that stopped holding meanwhile
    /// fails the read with `ConditionalRequestConflict`, as S3 answers a
    /// write that raced another.
    pub(crate) fn gate<R>(
        self,
        project: Project,
        bucket: String,
        key: String,
        inner: R,
    ) -> GateReader<R> {
        GateReader {
            inner,
            state: GateState::Reading(Box::new(Recheck {
                condition: self,
                project,
                bucket,
                key,
            })),
        }
    }
}

type Check = Pin<Box<dyn Future<Output = S3Result<()>> + Send>>;

/// See [`WriteCondition::gate`].
pub(crate) struct GateReader<R> {
    inner: R,
    state: GateState,
}

/// What the check at the end of the body needs.
struct Recheck {
    condition: WriteCondition,
    project: Project,
    bucket: String,
    key: String,
}

enum GateState {
    Reading(Box<Recheck>),
    Checking(Check),
    Passed,
    Refused(S3ErrorCode, String),
}

fn conflict(error: &S3Error) -> (S3ErrorCode, String) {
    let code = match error.code() {
        S3ErrorCode::PreconditionFailed | S3ErrorCode::NoSuchKey => {
            S3ErrorCode::ConditionalRequestConflict
        }
        other => other.clone(),
    };
    let message = format!(
        "the key changed during the upload: {}",
        error
            .message()
            .unwrap_or("a write condition no longer holds")
    );
    (code, message)
}

impl<R: AsyncRead + Unpin> AsyncRead for GateReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                GateState::Reading(_) => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    if buf.filled().len() > before || buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // The body ended: check again before reporting it.
                    if let GateState::Reading(recheck) =
                        std::mem::replace(&mut this.state, GateState::Passed)
                    {
                        this.state = GateState::Checking(Box::pin(async move {
                            let Recheck {
                                condition,
                                project,
                                bucket,
                                key,
                            } = *recheck;
                            condition.check(&project, &bucket, &key).await
                        }));
                    }
                }
                GateState::Checking(check) => {
                    this.state = match ready!(check.as_mut().poll(cx)) {
                        Ok(()) => GateState::Passed,
                        Err(e) => {
                            let (code, message) = conflict(&e);
                            GateState::Refused(code, message)
                        }
                    };
                }
                GateState::Passed => return Poll::Ready(Ok(())),
                GateState::Refused(code, message) => {
                    return Poll::Ready(Err(BodyRefused::into_io(code.clone(), message.clone())))
                }
            }
        }
    }
}
