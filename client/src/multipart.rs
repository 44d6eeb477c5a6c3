//! Multipart uploads: an object whose parts are uploaded separately — in any
//! order, in parallel, again if need be — and then completed into one object
//! from the parts named, or aborted.
//!
//! The upload is a pending object on the satellite; its id is the stream id
//! the satellite signed. Part `p`'s segments go to positions
//! `p << PART_SHIFT | i` (see `archipel_proto::multipart`), encrypted like any
//! segment under the object's key, so completing moves no data. Each
//! recorded part keeps a caller's tag (the S3 gateway's part ETag), sealed
//! under the object's key. The metadata given at the start is sealed with the
//! pending object and completed with whatever the caller adds at the end.

use std::collections::BTreeMap;
use std::time::SystemTime;

use archipel_proto::multipart::{self, MAX_PART};
use archipel_proto::pb;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tokio::io::AsyncRead;

use crate::crypto::{self, Key};
use crate::upload::{begin_request, ObjectUpload, SealedMetadata, Source};
use crate::{
    from_unix, non_negative, Error, ObjectInfo, Precondition, Project, UploadOptions, VersionInfo,
    VersionLock,
};

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    pub started: SystemTime,
}

/// A recorded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    /// The tag given when the part was uploaded.
    pub tag: String,
    pub uploaded: SystemTime,
    /// The tag as the satellite keeps it: it names this upload of the part
    /// when the upload is completed.
    sealed_tag: Vec<u8>,
}

/// A multipart upload as the satellite describes it (pending, or completed
/// when `first_page.completed`), checked to be the upload of the object the
/// caller named.
struct Pending {
    stream_id: Vec<u8>,
    object_key: Key,
    first_page: pb::ListPartsResponse,
}

impl Pending {
    fn object(&self) -> Result<&pb::Object, Error> {
        self.first_page
            .object
            .as_ref()
            .ok_or_else(|| Error::Protocol("the upload's object is missing from the answer".into()))
    }

    /// The upload's object (as begun, or as completed) under the name `key`.
    fn info(&self, key: &str) -> Result<ObjectInfo, Error> {
        crate::object_info(key, self.object()?, &self.object_key, Vec::new(), None)
    }
}

/// A multipart upload in progress as begun (content type, expiration,
/// metadata) and its recorded parts by part number.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadParts {
    pub upload: ObjectInfo,
    pub parts: Vec<PartInfo>,
}

fn check_part_number(number: u32) -> Result<(), Error> {
    if (1..=MAX_PART).contains(&number) {
        Ok(())
    } else {
        Err(Error::InvalidPartNumber(number))
    }
}

impl Project {
    /// Starts a multipart upload of `bucket`/`key` with the object's
    /// expiration, content type and metadata; returns its upload id.
    pub async fn begin_multipart(
        &self,
        bucket: &str,
        key: &str,
        options: UploadOptions,
    ) -> Result<String, Error> {
        let path = self.object_path(bucket, key).await?;
        let begin = begin_request(&self.metainfo, bucket, path.stored.clone(), &options);
        let metadata = crypto::ObjectMetadata {
            size: 0,
            created: SystemTime::now(),
            content_type: options.content_type,
            metadata: options.metadata,
        };
        let sealed = SealedMetadata::new(&crypto::object_key(&path.key), &metadata);
        let request = pb::BeginObjectRequest {
            multipart: true,
            encrypted_metadata: sealed.data,
            encrypted_metadata_key: sealed.key.encrypted,
            encrypted_metadata_nonce: sealed.key.nonce,
            ..begin
        };
        let begin = self.metainfo.begin_object(request, key).await?;
        Ok(URL_SAFE_NO_PAD.encode(begin.stream_id))
    }

    /// The upload `upload_id` of `bucket`/`key` in progress, with its parts
    /// above `after`.
    async fn pending(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
    ) -> Result<Pending, Error> {
        let upload = self.multipart_upload(bucket, key, upload_id, after).await?;
        if upload.first_page.completed {
            return Err(Error::UploadNotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        Ok(upload)
    }

    /// The upload `upload_id` of `bucket`/`key`, in progress or completed
    /// (then as its object, while that is the object under the key).
    async fn multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
    ) -> Result<Pending, Error> {
        let not_found = || Error::UploadNotFound {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let stream_id = URL_SAFE_NO_PAD.decode(upload_id).map_err(|_| not_found())?;
        let page = match self
            .metainfo
            .list_parts(stream_id.clone(), after, bucket, key)
            .await
        {
            // A malformed or foreign id is as unknown as a finished upload.
            Err(Error::Satellite {
                code: tonic::Code::InvalidArgument,
                ..
            }) => return Err(not_found()),
            other => other?,
        };
        let path = self.object_path(bucket, key).await?;
        let object = page.object.as_ref().ok_or_else(not_found)?;
        if object.bucket != bucket || object.encrypted_object_key != path.stored.as_bytes() {
            return Err(not_found());
        }
        Ok(Pending {
            stream_id,
            object_key: crypto::object_key(&path.key),
            first_page: page,
        })
    }

    /// The object upload `upload_id` was completed into, if it was and that
    /// is still the object under `bucket`/`key`: what a completion retried
    /// after a lost answer finds.
    pub async fn completed_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<ObjectInfo>, Error> {
        let upload = match self
            .multipart_upload(bucket, key, upload_id, MAX_PART)
            .await
        {
            Err(Error::UploadNotFound { .. }) => return Ok(None),
            other => other?,
        };
        if !upload.first_page.completed {
            return Ok(None);
        }
        upload.info(key).map(Some)
    }

    /// The upload in progress as it was begun: its content type, expiration
    /// and the metadata given to [`Project::begin_multipart`].
    pub async fn multipart_info(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<ObjectInfo, Error> {
        // Parts above the last possible one: only the upload's description.
        let pending = self.pending(bucket, key, upload_id, MAX_PART).await?;
        pending.info(key)
    }

    /// Uploads everything `reader` yields as part `number` of the upload,
    /// replacing an earlier upload of that part, and records it with the
    /// tag `tag` gives once all of the part is read.
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        reader: impl AsyncRead + Unpin + Send,
        tag: impl FnOnce() -> String + Send,
    ) -> Result<PartInfo, Error> {
        check_part_number(number)?;
        // Parts above the last possible one: only the upload's description.
        let pending = self.pending(bucket, key, upload_id, MAX_PART).await?;
        let upload = ObjectUpload::new(
            &self.metainfo,
            pending.object_key.clone(),
            pending.stream_id.clone(),
            pending.first_page.redundancy.as_ref(),
            pending.first_page.max_segment_size,
            pending.first_page.inline_threshold,
            None,
        )?;
        let stored = upload
            .segments(
                &mut Source::new(reader),
                |index| multipart::position(number, index),
                None,
                false,
            )
            .await?;
        let tag = tag();
        let sealed_tag = crypto::seal_part_tag(&pending.object_key, number, &tag);
        self.metainfo
            .commit_part(
                pb::CommitPartRequest {
                    header: self.metainfo.header(),
                    stream_id: pending.stream_id,
                    part_number: number,
                    segment_key_nonces: stored.key_nonces,
                    plain_size: i64::try_from(stored.size).unwrap_or(i64::MAX),
                    encrypted_info: sealed_tag.clone(),
                },
                bucket,
                key,
            )
            .await?;
        Ok(PartInfo {
            number,
            size: stored.size,
            tag,
            uploaded: SystemTime::now(),
            sealed_tag,
        })
    }

    /// The upload as begun and its recorded parts, by part number.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<UploadParts, Error> {
        let pending = self.pending(bucket, key, upload_id, 0).await?;
        let mut parts = Vec::new();
        let mut page = pending.first_page.clone();
        loop {
            for part in &page.parts {
                let after = parts.last().map_or(0, |p: &PartInfo| p.number);
                if part.part_number <= after || part.part_number > MAX_PART {
                    return Err(Error::Protocol(
                        "the satellite listed parts out of order".into(),
                    ));
                }
                parts.push(PartInfo {
                    number: part.part_number,
                    size: non_negative(part.plain_size, "a part's size")?,
                    tag: crypto::open_part_tag(
                        &pending.object_key,
                        part.part_number,
                        &part.encrypted_info,
                    )?,
                    uploaded: from_unix(part.created_at),
                    sealed_tag: part.encrypted_info.clone(),
                });
            }
            match parts.last() {
                Some(last) if page.more => {
                    page = self
                        .metainfo
                        .list_parts(pending.stream_id.clone(), last.number, bucket, key)
                        .await?;
                }
                None if page.more => {
                    return Err(Error::Protocol(
                        "a part listing page was empty but claimed more".into(),
                    ))
                }
                _ => {
                    return Ok(UploadParts {
                        upload: pending.info(key)?,
                        parts,
                    })
                }
            }
        }
    }

    /// The multipart uploads in progress in `bucket` whose keys start with
    /// `prefix`, by key and then by start. Uploads whose names do not
    /// decrypt with this access are left out.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<MultipartUpload>, Error> {
        let plain = self.has_plain_names(bucket).await?;
        let mut uploads = Vec::new();
        let mut cursor = Vec::new();
        loop {
            let page = self
                .metainfo
                .list_pending_objects(bucket, cursor.clone())
                .await?;
            for object in &page.objects {
                let key = self
                    .access
                    .keys
                    .reveal(bucket, &object.encrypted_object_key, plain)
                    .map(|components| components.join("/"));
                let Some(key) = key else {
                    continue;
                };
                if key.starts_with(prefix) {
                    uploads.push(MultipartUpload {
                        key,
                        upload_id: URL_SAFE_NO_PAD.encode(&object.stream_id),
                        started: from_unix(object.created_at),
                    });
                }
            }
            match page.objects.last() {
                Some(last) if page.more => cursor = last.stream_id.clone(),
                None if page.more => {
                    return Err(Error::Protocol(
                        "an upload listing page was empty but claimed more".into(),
                    ))
                }
                _ => break,
            }
        }
        uploads.sort_by(|a, b| (&a.key, a.started).cmp(&(&b.key, b.started)));
        Ok(uploads)
    }

    /// Completes the upload into the object made of `parts` (as listed by
    /// [`Project::list_parts`] or returned by [`Project::upload_part`], by
    /// ascending number), with the metadata given at the start plus
    /// `metadata`. A part uploaded again since it was listed fails the
    /// completion ([`Error::PartsChanged`]): the object is made of exactly
    /// the parts named. Parts left out are deleted. A `precondition` on
    /// the key's current object is checked as the upload completes.
    pub async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[PartInfo],
        metadata: BTreeMap<String, String>,
        precondition: Option<&Precondition>,
    ) -> Result<ObjectInfo, Error> {
        if parts.is_empty() || parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(Error::InvalidPartOrder);
        }
        // Parts above the last possible one: only the upload's description.
        let pending = self.pending(bucket, key, upload_id, MAX_PART).await?;
        let size = parts.iter().map(|p| p.size).sum();
        let started = pending.info(key)?;
        let mut user = started.metadata;
        user.extend(metadata);
        let complete = crypto::ObjectMetadata {
            size,
            created: SystemTime::now(),
            content_type: started.content_type,
            metadata: user,
        };
        let upload = ObjectUpload::new(
            &self.metainfo,
            pending.object_key.clone(),
            pending.stream_id.clone(),
            pending.first_page.redundancy.as_ref(),
            pending.first_page.max_segment_size,
            pending.first_page.inline_threshold,
            None,
        )?;
        let named = parts
            .iter()
            .map(|p| (p.number, p.sealed_tag.clone()))
            .collect();
        let committed = match upload.commit(&complete, named, None, precondition).await {
            // A part named is no longer the one recorded, or none is.
            Err(Error::Satellite {
                code: tonic::Code::FailedPrecondition,
                message,
            }) => return Err(Error::PartsChanged(message)),
            other => other?,
        };
        let version = match &committed.object {
            Some(object) => VersionInfo::of(object, committed.versioning)?,
            None => None,
        };
        Ok(ObjectInfo {
            key: key.to_string(),
            size,
            created: complete.created,
            expires: started.expires,
            content_type: complete.content_type,
            metadata: complete.metadata,
            segments: Vec::new(),
            version,
            lock: VersionLock::from_pb(committed.object.as_ref().and_then(|o| o.lock.as_ref())),
        })
    }

    /// Aborts the upload: its parts are deleted.
    pub async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), Error> {
        let pending = self.pending(bucket, key, upload_id, MAX_PART).await?;
        self.metainfo
            .abort_object(pending.stream_id, bucket, key)
            .await
    }
}
