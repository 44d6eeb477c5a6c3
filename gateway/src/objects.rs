//! Object operations: PUT (streamed, with the MD5 ETag), GET and HEAD (ranges,
//! single parts of multipart objects, conditional headers), DELETE and
//! multi-object DELETE. Bodies stream in
//! both directions through bounded buffers, never whole objects in memory
//! (the MD5 ETag is computed on the way and sealed at commit, see `store`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use archipel_client::{
    ByteRange, DeleteOptions, Error, ObjectDownload, ObjectInfo, Precondition, Project, Version,
    VersionLock,
};
use base64::Engine;
use bytes::Bytes;
use futures::{ready, Stream, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::{
    DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput, DeletedObject,
    ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    PutObjectInput, PutObjectOutput, Range, StreamingBlob, Timestamp,
};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::StreamReader;
use tokio_util::sync::PollSender;

use crate::acl;
use crate::buckets;
use crate::checksums::{Checksum, Checksummer};
use crate::conditional::DeleteCondition;
use crate::errors::{s3_error, DigestMismatch};
use crate::locks::{self, LockHeaders};
use crate::metadata::{self, ObjectHeaders};
use crate::tagging;
use crate::versions;

/// The largest body frame a download sends; with [`FRAMES_QUEUED`], how many
/// downloaded bytes may wait for a slow HTTP client (one more frame is with
/// the connection).
const FRAME_SIZE: usize = 256 * 1024;
const FRAMES_QUEUED: usize = 1;

/// Stores the object; with a `checksum`, the body must match it, and with a
/// `precondition` (see [`crate::conditional`]), the key must still satisfy
/// it when the object commits.
pub(crate) async fn put(
    project: &Project,
    input: PutObjectInput,
    checksum: Option<Checksummer>,
    precondition: Option<Precondition>,
) -> S3Result<PutObjectOutput> {
    let expected_md5 = expected_md5(input.content_md5.as_deref())?;
    let mut headers = metadata::request_headers!(input, checksum.clone());
    headers.tags = tagging::requested(input.tagging.as_deref())?;
    headers.acl = acl::upload_acl!(project, input).await?;
    let lock = locks::requested(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    )?;
    let body = upload_body(input.body, checksum.as_ref());
    let (etag, stored) = store(
        project,
        (&input.bucket, &input.key),
        body,
        headers,
        expected_md5,
        (precondition, lock),
    )
    .await
    .map_err(s3_error)?;
    let mut output = PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        version_id: versions::shown(stored.version.as_ref()),
        ..Default::default()
    };
    if let Some(checksum) = checksum.and_then(|c| c.value()) {
        checksum.set_on(&mut output);
    }
    Ok(output)
}

/// Uploads everything `body` yields to (bucket, key) with `headers`;
/// returns the ETag (hex MD5 of the content) and what was stored. The digest
/// is computed as the body streams by and sealed with the object's metadata
/// at commit; a body that differs from `expected_md5` fails before the
/// upload commits, and so does a `precondition` that no longer holds. The
/// new version gets `lock`.
async fn store(
    project: &Project,
    (bucket, key): (&str, &str),
    body: impl AsyncRead + Unpin + Send,
    headers: ObjectHeaders,
    expected_md5: Option<[u8; 16]>,
    (precondition, lock): (Option<Precondition>, VersionLock),
) -> Result<(String, ObjectInfo), Error> {
    let reader = Md5Reader::md5(body, expected_md5);
    let digest = reader.digest_slot();
    let mut options = headers.into_upload_options();
    options.precondition = precondition;
    options.lock = lock;
    let headers_at_commit = options.late_metadata.take();
    let at_commit = digest.clone();
    options.late_metadata = Some(Arc::new(move || {
        let mut entries = headers_at_commit.as_ref().map(|f| f()).unwrap_or_default();
        entries.extend(
            at_commit
                .get()
                .map(|md5| metadata::etag_entry(&hex::encode(md5))),
        );
        entries
    }));
    let stored = project.upload(bucket, key, reader, options).await?;
    let etag = digest
        .get()
        .map(hex::encode)
        .ok_or_else(|| Error::Interrupted("the upload ended before its body did".into()))?;
    Ok((etag, stored))
}

/// An upload's body, read through its checksum check when it has one.
pub(crate) fn upload_body(
    body: Option<StreamingBlob>,
    checksum: Option<&Checksummer>,
) -> Box<dyn AsyncRead + Unpin + Send> {
    checked(StreamReader::new(body_stream(body)), checksum)
}

/// `reader` read through `checksum`'s check when there is one.
pub(crate) fn checked(
    reader: impl AsyncRead + Unpin + Send + 'static,
    checksum: Option<&Checksummer>,
) -> Box<dyn AsyncRead + Unpin + Send> {
    match checksum {
        Some(checksum) => Box::new(checksum.reader(reader)),
        None => Box::new(reader),
    }
}

/// The digest a `Content-MD5` header announces, if there is one.
pub(crate) fn expected_md5(content_md5: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    content_md5.map(decode_md5).transpose()
}

/// A request body as a stream of bytes (none: empty).
fn body_stream(
    body: Option<StreamingBlob>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin {
    body.unwrap_or_else(|| StreamingBlob::wrap(futures::stream::empty::<io::Result<Bytes>>()))
        .map_err(io::Error::other)
}

fn decode_md5(text: &str) -> S3Result<[u8; 16]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5 digest"))
}

/// A check of an upload's body as it streams by (a digest to compare, say).
pub(crate) trait BodyCheck {
    fn update(&mut self, data: &[u8]);
    /// Called at the end of the data; an error fails that read, so the
    /// upload aborts instead of committing.
    fn end(&mut self) -> io::Result<()>;
}

/// A body read through a [`BodyCheck`].
pub(crate) struct CheckedBody<R, C> {
    inner: R,
    check: C,
}

impl<R, C> CheckedBody<R, C> {
    pub(crate) fn new(inner: R, check: C) -> Self {
        CheckedBody { inner, check }
    }
}

impl<R: AsyncRead + Unpin, C: BodyCheck + Unpin> AsyncRead for CheckedBody<R, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.check.update(new);
        } else if buf.remaining() > 0 {
            this.check.end()?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Hashes the body; at its end, publishes the digest (see
/// [`Md5Check::digest_slot`]) and, with an expected digest, refuses a body
/// that differs.
pub(crate) struct Md5Check {
    hasher: Md5,
    expected: Option<[u8; 16]>,
    digest: Arc<OnceLock<[u8; 16]>>,
}

/// A body with its MD5 computed (and checked) on the way.
pub(crate) type Md5Reader<R> = CheckedBody<R, Md5Check>;

impl<R> Md5Reader<R> {
    pub(crate) fn md5(inner: R, expected: Option<[u8; 16]>) -> Self {
        CheckedBody::new(
            inner,
            Md5Check {
                hasher: Md5::new(),
                expected,
                digest: Arc::new(OnceLock::new()),
            },
        )
    }

    /// Where the digest of all the data appears once the end is read.
    pub(crate) fn digest_slot(&self) -> Arc<OnceLock<[u8; 16]>> {
        self.check.digest.clone()
    }
}

impl BodyCheck for Md5Check {
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    fn end(&mut self) -> io::Result<()> {
        let digest: [u8; 16] = self.hasher.clone().finalize().into();
        if self.expected.is_some_and(|md5| md5 != digest) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, DigestMismatch));
        }
        let _ = self.digest.set(digest);
        Ok(())
    }
}

/// The conditional request headers of GET and HEAD.
pub(crate) struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

impl Conditions<'_> {
    /// Evaluates them in RFC 9110 order: If-Match, else If-Unmodified-Since;
    /// then If-None-Match, else If-Modified-Since. HTTP dates have whole
    /// seconds, so times compare in seconds.
    pub(crate) fn check(&self, etag: Option<&ETag>, last_modified: SystemTime) -> S3Result<()> {
        let modified = unix_seconds(last_modified);
        if let Some(condition) = self.if_match {
            if !matches(condition, etag) {
                return Err(s3_error!(PreconditionFailed, "If-Match does not match"));
            }
        } else if let Some(since) = self.if_unmodified_since {
            if modified > timestamp_seconds(since) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "the object was modified after If-Unmodified-Since"
                ));
            }
        }
        let unchanged = match (self.if_none_match, self.if_modified_since) {
            (Some(condition), _) => matches(condition, etag),
            (None, Some(since)) => modified <= timestamp_seconds(since),
            (None, None) => false,
        };
        if unchanged {
            return Err(not_modified(etag, last_modified));
        }
        Ok(())
    }
}

/// A 304 as HTTP has it: with the ETag and Last-Modified of what the
/// client already holds.
fn not_modified(etag: Option<&ETag>, last_modified: SystemTime) -> S3Error {
    let mut error = s3_error!(NotModified);
    let mut headers = http::HeaderMap::new();
    if let Some(value) = etag.and_then(|etag| etag.to_http_header().ok()) {
        headers.insert(http::header::ETAG, value);
    }
    if let Ok(value) = http::HeaderValue::from_str(&httpdate::fmt_http_date(last_modified)) {
        headers.insert(http::header::LAST_MODIFIED, value);
    }
    error.set_headers(headers);
    error
}

fn matches(condition: &ETagCondition, etag: Option<&ETag>) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(wanted) => etag.is_some_and(|etag| etag.value() == wanted.value()),
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn timestamp_seconds(time: &Timestamp) -> i64 {
    time::OffsetDateTime::from(time.clone()).unix_timestamp()
}

/// The part of an object a request reads, and its Content-Range.
struct Selection {
    offset: u64,
    length: u64,
    content_range: Option<String>,
    /// Whether it is the whole object (no range, no part): only then does
    /// the object's checksum describe the bytes.
    whole: bool,
    /// For a read of one part of a multipart object: how many it has.
    parts_count: Option<i32>,
}

/// What a GET or HEAD reads: one part (`partNumber`), a range, or all of it.
fn selection(
    range: Option<&Range>,
    part_number: Option<i32>,
    info: &ObjectInfo,
) -> S3Result<Selection> {
    let Some(number) = part_number else {
        return select(range, info.size);
    };
    if range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    let number = crate::multipart::part_number(number)?;
    let spans = part_spans(info);
    let multipart = !spans.is_empty();
    let spans = if multipart {
        spans
    } else {
        vec![(0, info.size)]
    };
    let (offset, length) = usize::try_from(number)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|index| spans.get(index))
        .copied()
        .ok_or_else(|| {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("InvalidPartNumber".into()),
                format!(
                    "the requested part number {number} is not satisfiable: the object has {} part(s)",
                    spans.len()
                ),
            );
            if let Some(status) = S3ErrorCode::InvalidRange.status_code() {
                error.set_status_code(status);
            }
            error
        })?;
    Ok(Selection {
        offset,
        length,
        content_range: (length > 0)
            .then(|| format!("bytes {offset}-{}/{}", offset + length - 1, info.size)),
        whole: false,
        parts_count: multipart.then(|| i32::try_from(spans.len()).unwrap_or(i32::MAX)),
    })
}

/// The byte spans (offset, length) of a multipart object's parts in order,
/// from its segments' positions; none for any other object.
pub(crate) fn part_spans(info: &ObjectInfo) -> Vec<(u64, u64)> {
    let mut segments: Vec<(u32, u64)> = info
        .segments
        .iter()
        .map(|s| (s.position, s.plain_size))
        .collect();
    segments.sort_unstable();
    let mut spans: Vec<(u32, u64, u64)> = Vec::new();
    let mut offset = 0;
    for (position, size) in segments {
        let part = archipel_proto::multipart::part_of(position);
        match spans.last_mut() {
            Some((last, _, length)) if *last == part => *length += size,
            _ => spans.push((part, offset, size)),
        }
        offset += size;
    }
    if spans.iter().all(|(part, _, _)| *part == 0) {
        return Vec::new();
    }
    spans
        .into_iter()
        .map(|(_, offset, length)| (offset, length))
        .collect()
}

fn select(range: Option<&Range>, size: u64) -> S3Result<Selection> {
    let Some(range) = range else {
        return Ok(Selection {
            offset: 0,
            length: size,
            content_range: None,
            whole: true,
            parts_count: None,
        });
    };
    // s3s answers a suffix range on an empty object with an empty range
    // instead of an error; S3 answers InvalidRange.
    let bytes = range
        .check(size)
        .ok()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            s3_error!(
                InvalidRange,
                "the range {} is not satisfiable for a {size}-byte object",
                range.to_header_string()
            )
        })?;
    Ok(Selection {
        offset: bytes.start,
        length: bytes.end - bytes.start,
        content_range: Some(format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1)),
        whole: false,
        parts_count: None,
    })
}

fn content_length(length: u64) -> S3Result<i64> {
    i64::try_from(length).map_err(|_| s3_error!(InternalError, "the object is too large"))
}

pub(crate) async fn get(project: &Project, input: GetObjectInput) -> S3Result<GetObjectOutput> {
    // The segment a plain `bytes=N-` range starts in comes with the object.
    let offset = match &input.range {
        Some(Range::Int { first, .. }) if input.part_number.is_none() => *first,
        _ => 0,
    };
    let version = versions::requested(input.version_id.as_deref())?;
    let object = open(project, (&input.bucket, &input.key, &version), offset).await?;
    let info = object.info();
    let etag = metadata::etag(info);
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check(etag.as_ref(), info.created)?;
    let selection = selection(input.range.as_ref(), input.part_number, info)?;
    let headers = ObjectHeaders::from_object(info);
    let checksum = Checksum::for_read(
        metadata::checksum(info),
        input.checksum_mode.as_ref(),
        selection.whole,
    );
    let created = info.created;
    let version_id = versions::shown(info.version.as_ref());
    let lock = LockHeaders::of(&info.lock);
    let tag_count = tagging::count(info);
    let body = (selection.length > 0).then(|| {
        download_body(
            object,
            ByteRange {
                offset: selection.offset,
                length: Some(selection.length),
            },
        )
    });
    let mut output = GetObjectOutput {
        body,
        accept_ranges: Some("bytes".into()),
        content_length: Some(content_length(selection.length)?),
        content_range: selection.content_range,
        parts_count: selection.parts_count,
        e_tag: etag,
        last_modified: crate::metadata::timestamp(created),
        content_type: input.response_content_type.or(headers.content_type),
        content_encoding: input.response_content_encoding.or(headers.content_encoding),
        content_disposition: input
            .response_content_disposition
            .or(headers.content_disposition),
        cache_control: input.response_cache_control.or(headers.cache_control),
        expires: input.response_expires.or(headers.expires),
        metadata: headers.user,
        tag_count,
        version_id,
        object_lock_mode: lock.mode,
        object_lock_retain_until_date: lock.until,
        object_lock_legal_hold_status: lock.legal_hold,
        ..Default::default()
    };
    if let Some(checksum) = checksum {
        checksum.set_on(&mut output);
    }
    Ok(output)
}

pub(crate) async fn head(project: &Project, input: HeadObjectInput) -> S3Result<HeadObjectOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let info = stat(project, (&input.bucket, &input.key, &version)).await?;
    let etag = metadata::etag(&info);
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check(etag.as_ref(), info.created)?;
    let selection = selection(input.range.as_ref(), input.part_number, &info)?;
    let headers = ObjectHeaders::from_object(&info);
    let checksum = Checksum::for_read(
        metadata::checksum(&info),
        input.checksum_mode.as_ref(),
        selection.whole,
    );
    let lock = LockHeaders::of(&info.lock);
    let mut output = HeadObjectOutput {
        accept_ranges: Some("bytes".into()),
        content_length: Some(content_length(selection.length)?),
        content_range: selection.content_range,
        parts_count: selection.parts_count,
        e_tag: etag,
        last_modified: crate::metadata::timestamp(info.created),
        content_type: headers.content_type,
        content_encoding: headers.content_encoding,
        content_disposition: headers.content_disposition,
        cache_control: headers.cache_control,
        expires: headers.expires,
        metadata: headers.user,
        version_id: versions::shown(info.version.as_ref()),
        object_lock_mode: lock.mode,
        object_lock_retain_until_date: lock.until,
        object_lock_legal_hold_status: lock.legal_hold,
        ..Default::default()
    };
    if let Some(checksum) = checksum {
        checksum.set_on(&mut output);
    }
    Ok(output)
}

/// Streams `range` of the object as a response body.
fn download_body(object: ObjectDownload, range: ByteRange) -> StreamingBlob {
    StreamingBlob::wrap(DownloadStream::start(object, Some(range)))
}

/// Reads an object as a stream of body frames: a task downloads into a
/// bounded channel, each write becoming one frame, so the bytes are copied
/// once on their way to the HTTP connection (a pipe read in small buffers
/// copied them twice and cut them into 4 KiB frames). At the end of the
/// channel it waits for the task, so a failed download is a stream error,
/// never a silently short object.
pub(crate) struct DownloadStream {
    frames: mpsc::Receiver<Bytes>,
    task: JoinHandle<Result<u64, Error>>,
    finished: bool,
}

impl DownloadStream {
    pub(crate) fn start(object: ObjectDownload, range: Option<ByteRange>) -> DownloadStream {
        let (sender, frames) = mpsc::channel(FRAMES_QUEUED);
        let writer = FrameWriter(PollSender::new(sender));
        let task = tokio::spawn(object.download(range, writer, None));
        DownloadStream {
            frames,
            task,
            finished: false,
        }
    }

    /// The stream as a reader, for copies that upload what they read.
    pub(crate) fn into_reader(self) -> impl AsyncRead + Send + Unpin {
        StreamReader::new(self)
    }
}

impl Stream for DownloadStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(frame) = ready!(this.frames.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(frame)));
        }
        // The channel ended: the download is over, one way or the other.
        let outcome = ready!(Pin::new(&mut this.task).poll(cx));
        this.finished = true;
        Poll::Ready(match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(Err(io::Error::other(e.to_string()))),
            Err(e) => Some(Err(io::Error::other(format!(
                "the download task failed: {e}"
            )))),
        })
    }
}

impl Drop for DownloadStream {
    // A stream given up early (the HTTP client went away) stops its download.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The download's writer: every write of up to [`FRAME_SIZE`] bytes is sent
/// as one frame, once the channel has room.
struct FrameWriter(PollSender<Bytes>);

impl FrameWriter {
    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the response body was dropped")
    }
}

impl AsyncWrite for FrameWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.0.poll_reserve(cx)).map_err(|_| Self::gone())?;
        let frame = &buf[..buf.len().min(FRAME_SIZE)];
        self.0
            .send_item(Bytes::copy_from_slice(frame))
            .map_err(|_| Self::gone())?;
        Poll::Ready(Ok(frame.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

/// The description of a version of an object (bucket, key, version); a
/// missing object in a missing bucket is `NoSuchBucket`, which the
/// satellite's answer alone does not tell apart.
pub(crate) async fn stat(
    project: &Project,
    (bucket, key, version): (&str, &str, &Version),
) -> S3Result<ObjectInfo> {
    let stat = project.stat_version(bucket, key, version).await;
    in_existing_bucket(project, bucket, stat).await
}

/// A version of an object (bucket, key, version) opened for reading at
/// plaintext `offset`, with one satellite round trip; errors as [`stat`]'s.
pub(crate) async fn open(
    project: &Project,
    (bucket, key, version): (&str, &str, &Version),
    offset: u64,
) -> S3Result<ObjectDownload> {
    let opened = project.open_version(bucket, key, version, offset).await;
    in_existing_bucket(project, bucket, opened).await
}

/// `result` as S3 answers it: an object not found is `NoSuchBucket` when the
/// bucket is missing too.
async fn in_existing_bucket<T>(
    project: &Project,
    bucket: &str,
    result: Result<T, Error>,
) -> S3Result<T> {
    match result {
        Ok(found) => Ok(found),
        Err(e @ (Error::ObjectNotFound { .. } | Error::VersionNotFound { .. })) => {
            buckets::ensure_exists(project, bucket).await?;
            Err(s3_error(e))
        }
        Err(e) => Err(s3_error(e)),
    }
}

/// S3 answers 204 for a key that is already gone; only a missing bucket is
/// an error.
pub(crate) async fn delete(
    project: &Project,
    input: DeleteObjectInput,
) -> S3Result<DeleteObjectOutput> {
    let condition = DeleteCondition::from_delete(&input)?;
    let version = versions::requested(input.version_id.as_deref())?;
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    let deleted = delete_one(
        project,
        (&input.bucket, &input.key, version),
        condition,
        bypass,
    )
    .await?;
    Ok(DeleteObjectOutput {
        delete_marker: deleted.delete_marker,
        version_id: deleted.version_id,
        ..Default::default()
    })
}

/// The most keys one DeleteObjects may name (S3's limit).
const MAX_DELETE_OBJECTS: usize = 1000;

/// What S3 reports of one delete.
#[derive(Default)]
struct DeleteReport {
    /// The version deleted or the delete marker added is a delete marker.
    delete_marker: Option<bool>,
    /// The version deleted or the delete marker added.
    version_id: Option<String>,
}

/// Deletes as [`Project::delete`] does (removing a version whose
/// governance retention holds if `bypass_governance`).
async fn delete_one(
    project: &Project,
    (bucket, key, version): (&str, &str, Version),
    condition: Option<DeleteCondition>,
    bypass_governance: bool,
) -> S3Result<DeleteReport> {
    let precondition = match condition {
        Some(condition) => Some(condition.check(project, bucket, key).await?),
        None => None,
    };
    let named = !matches!(version, Version::Current);
    let options = DeleteOptions {
        version,
        precondition,
        bypass_governance,
    };
    match project.delete(bucket, key, &options).await {
        Ok(deleted) => {
            if let Some(marker) = &deleted.marker {
                return Ok(DeleteReport {
                    delete_marker: Some(true),
                    version_id: versions::shown(Some(marker)),
                });
            }
            // A version named and deleted: S3 echoes it and says whether
            // it was a delete marker.
            let removed = deleted.removed.filter(|_| named);
            Ok(DeleteReport {
                delete_marker: removed.as_ref().map(|_| deleted.removed_delete_marker),
                version_id: removed.as_ref().and_then(|v| versions::shown(Some(v))),
            })
        }
        Err(Error::ObjectNotFound { .. } | Error::VersionNotFound { .. }) => {
            buckets::ensure_exists(project, bucket).await?;
            Ok(DeleteReport::default())
        }
        Err(e) => Err(s3_error(e)),
    }
}

pub(crate) async fn delete_many(
    project: &Project,
    input: DeleteObjectsInput,
) -> S3Result<DeleteObjectsOutput> {
    if input.delete.objects.len() > MAX_DELETE_OBJECTS {
        return Err(s3_error!(
            MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema: at most {MAX_DELETE_OBJECTS} keys per request"
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let bypass = input.bypass_governance_retention.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in input.delete.objects {
        let outcome = match versions::requested(object.version_id.as_deref()) {
            Ok(version) => {
                let condition = DeleteCondition::from_etag(object.e_tag.as_ref());
                let target = (input.bucket.as_str(), object.key.as_str(), version);
                delete_one(project, target, condition, bypass).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(_) if quiet => {}
            Ok(report) => {
                let marker = report.delete_marker == Some(true);
                deleted.push(DeletedObject {
                    key: Some(object.key),
                    // S3 echoes the version named; a delete marker, added or
                    // deleted, is also named apart.
                    version_id: object.version_id.clone(),
                    delete_marker: report.delete_marker,
                    delete_marker_version_id: marker.then_some(report.version_id).flatten(),
                })
            }
            Err(e) => errors.push(s3s::dto::Error {
                code: Some(e.code().as_str().to_string()),
                message: e.message().map(str::to_string),
                key: Some(object.key),
                version_id: object.version_id,
            }),
        }
    }
    Ok(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn md5_reader_hashes_and_checks() {
        let data = b"hello world";
        let md5: [u8; 16] = Md5::digest(data).into();
        assert_eq!(hex::encode(md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");

        let mut reader = Md5Reader::md5(&data[..], None);
        let digest = reader.digest_slot();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(digest.get(), Some(&md5));

        let mut good = Md5Reader::md5(&data[..], Some(md5));
        good.read_to_end(&mut Vec::new()).await.unwrap();

        let mut bad = Md5Reader::md5(&data[..], Some([0; 16]));
        let published = bad.digest_slot();
        let error = bad.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(published.get().is_none(), "a refused body has no digest");
        assert!(error.get_ref().unwrap().is::<DigestMismatch>());
    }

    #[test]
    fn conditions_follow_rfc_order() {
        let etag = ETag::Strong("abc".into());
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let at = |s: i64| Timestamp::from(time::OffsetDateTime::from_unix_timestamp(s).unwrap());
        let same = ETagCondition::ETag(etag.clone());
        let other = ETagCondition::ETag(ETag::Strong("xyz".into()));
        let (before, after) = (at(999), at(1000));
        let code = |c: Conditions<'_>| {
            c.check(Some(&etag), modified)
                .err()
                .map(|e| e.code().as_str().to_string())
        };
        let none = || Conditions {
            if_match: None,
            if_none_match: None,
            if_modified_since: None,
            if_unmodified_since: None,
        };
        assert_eq!(code(none()), None);
        assert_eq!(
            code(Conditions {
                if_match: Some(&other),
                ..none()
            })
            .as_deref(),
            Some("PreconditionFailed")
        );
        // A matching If-Match overrides a failing If-Unmodified-Since.
        assert_eq!(
            code(Conditions {
                if_match: Some(&same),
                if_unmodified_since: Some(&before),
                ..none()
            }),
            None
        );
        assert_eq!(
            code(Conditions {
                if_unmodified_since: Some(&before),
                ..none()
            })
            .as_deref(),
            Some("PreconditionFailed")
        );
        assert_eq!(
            code(Conditions {
                if_none_match: Some(&same),
                ..none()
            })
            .as_deref(),
            Some("NotModified")
        );
        assert_eq!(
            code(Conditions {
                if_none_match: Some(&ETagCondition::Any),
                ..none()
            })
            .as_deref(),
            Some("NotModified")
        );
        // A differing If-None-Match overrides If-Modified-Since.
        assert_eq!(
            code(Conditions {
                if_none_match: Some(&other),
                if_modified_since: Some(&after),
                ..none()
            }),
            None
        );
        assert_eq!(
            code(Conditions {
                if_modified_since: Some(&after),
                ..none()
            })
            .as_deref(),
            Some("NotModified")
        );
        assert_eq!(
            code(Conditions {
                if_modified_since: Some(&before),
                ..none()
            }),
            None
        );
    }

    #[test]
    fn ranges_select_bytes_and_reject_unsatisfiable_ones() {
        let range = |s: &str| Range::parse(s).unwrap();
        let s = select(Some(&range("bytes=2-5")), 10).unwrap();
        assert_eq!((s.offset, s.length), (2, 4));
        assert_eq!(s.content_range.as_deref(), Some("bytes 2-5/10"));
        let s = select(Some(&range("bytes=7-")), 10).unwrap();
        assert_eq!((s.offset, s.length), (7, 3));
        let s = select(Some(&range("bytes=-4")), 10).unwrap();
        assert_eq!((s.offset, s.length), (6, 4));
        let s = select(Some(&range("bytes=-40")), 10).unwrap();
        assert_eq!((s.offset, s.length), (0, 10));
        let s = select(Some(&range("bytes=8-100")), 10).unwrap();
        assert_eq!(s.content_range.as_deref(), Some("bytes 8-9/10"));
        let e = select(Some(&range("bytes=10-")), 10).err().unwrap();
        assert_eq!(e.code().as_str(), "InvalidRange");
        assert!(select(Some(&range("bytes=0-")), 0).is_err());
        assert!(
            select(Some(&range("bytes=-5")), 0).is_err(),
            "a suffix range of an empty object"
        );
        let s = select(None, 10).unwrap();
        assert_eq!((s.offset, s.length, s.content_range), (0, 10, None));
    }

    /// A healthy segment of `plain_size` bytes, segment `index` of `part`.
    fn segment(part: u32, index: u32, plain_size: u64) -> archipel_client::SegmentStat {
        archipel_client::SegmentStat {
            position: part << archipel_proto::multipart::PART_SHIFT | index,
            plain_size,
            encrypted_size: plain_size,
            inline: false,
            redundancy: None,
            piece_count: 0,
            healthy_pieces: 0,
            health: archipel_client::SegmentHealth::Healthy,
        }
    }

    /// An object made of `segments`.
    fn object(segments: Vec<archipel_client::SegmentStat>) -> ObjectInfo {
        ObjectInfo {
            key: "k".into(),
            size: segments.iter().map(|s| s.plain_size).sum(),
            created: SystemTime::UNIX_EPOCH,
            expires: None,
            content_type: None,
            metadata: Default::default(),
            segments,
            version: None,
            lock: Default::default(),
        }
    }

    #[test]
    fn part_numbers_select_whole_parts() {
        // Parts 1 (two segments), 3 and 4, listed out of order.
        let multipart = object(vec![
            segment(3, 0, 7),
            segment(1, 1, 5),
            segment(1, 0, 10),
            segment(4, 0, 1),
        ]);
        let read = |number| selection(None, Some(number), &multipart);
        let s = read(1).unwrap();
        assert_eq!((s.offset, s.length, s.parts_count), (0, 15, Some(3)));
        assert!(!s.whole);
        assert_eq!(s.content_range.as_deref(), Some("bytes 0-14/23"));
        let s = read(2).unwrap();
        assert_eq!((s.offset, s.length), (15, 7));
        let s = read(3).unwrap();
        assert_eq!(s.content_range.as_deref(), Some("bytes 22-22/23"));
        let error = read(4).err().unwrap();
        assert_eq!(error.code().as_str(), "InvalidPartNumber");
        assert_eq!(error.status_code().map(|s| s.as_u16()), Some(416));
        for invalid in [0, -1, 10_001] {
            let error = read(invalid).err().unwrap();
            assert_eq!(error.code().as_str(), "InvalidArgument");
        }
        let range = Range::parse("bytes=0-1").unwrap();
        let error = selection(Some(&range), Some(1), &multipart).err().unwrap();
        assert_eq!(error.code().as_str(), "InvalidRequest");
        // A single upload is its one part.
        let single = object(vec![segment(0, 0, 8), segment(0, 1, 2)]);
        let s = selection(None, Some(1), &single).unwrap();
        assert_eq!((s.offset, s.length, s.parts_count), (0, 10, None));
        assert!(selection(None, Some(2), &single).is_err());
    }

    /// A Content-MD5 header: refused as an invalid digest, or decoded into
    /// the 16 bytes it encodes; intact, into the digest it was made of.
    fn content_md5_is_checked((digest, text): ([u8; 16], String)) -> Result<(), TestCaseError> {
        let encode = |digest: &[u8]| base64::engine::general_purpose::STANDARD.encode(digest);
        match decode_md5(&text) {
            Ok(decoded) => prop_assert_eq!(decode_md5(&encode(&decoded)).unwrap(), decoded),
            Err(error) => prop_assert_eq!(error.code().as_str(), "InvalidDigest"),
        }
        if text == encode(&digest) {
            prop_assert_eq!(expected_md5(Some(&text)).unwrap(), Some(digest));
        }
        Ok(())
    }

    /// Range headers a client may send, damaged, and ones with extreme numbers.
    fn range_headers() -> impl Strategy<Value = String> {
        prop_oneof![
            hostile::text_or_mutated("bytes=2-5".into()),
            hostile::text_or_mutated("bytes=-4".into()),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
            any::<u64>().prop_map(|a| format!("bytes={a}-")),
            any::<u64>().prop_map(|a| format!("bytes=-{a}")),
        ]
    }

    /// A GET's Range header and partNumber against an object of up to eight
    /// segments in up to four parts (or a single upload), of sizes the
    /// satellite can hold: refused, or a selection within the object.
    fn read_is_checked(
        (range, part_number, segments): (String, Option<i32>, Vec<(u32, u32, u64)>),
    ) -> Result<(), TestCaseError> {
        let info = object(
            segments
                .into_iter()
                .map(|(part, index, plain_size)| segment(part, index, plain_size))
                .collect(),
        );
        let range = Range::parse(&range).ok();
        if let Ok(selected) = selection(range.as_ref(), part_number, &info) {
            let end = selected.offset.checked_add(selected.length);
            prop_assert!(end.is_some_and(|end| end <= info.size), "{end:?}");
            prop_assert!(range.is_none() || selected.length > 0);
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_content_md5s_are_refused_or_decoded:
            any::<[u8; 16]>().prop_flat_map(|digest| {
                let text = base64::engine::general_purpose::STANDARD.encode(digest);
                (Just(digest), hostile::text_or_mutated(text))
            })
            => content_md5_is_checked;
        hostile_ranges_and_part_numbers_are_refused_or_select_within_the_object: (
            range_headers(),
            prop_oneof![Just(None), (-2i32..6).prop_map(Some), any::<i32>().prop_map(Some)],
            prop::collection::vec((0u32..5, 0u32..3, 0u64..1 << 40), 0..8),
        ) => read_is_checked;
    }
}
