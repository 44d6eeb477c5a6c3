//! CopyObject as a server-side copy: the copy shares the source's pieces on
//! the nodes and only its keys and metadata are new (see
//! [`Project::copy_object`]), so a copy of any size takes one round trip to
//! the satellite. Also what UploadPartCopy shares with it: copy sources,
//! their conditions and read errors (a part copy streams its range through
//! the gateway, as a part is a new upload).

use std::collections::BTreeMap;

use archipel_client::{CannedAcl, CopyMetadata, Error, ObjectInfo, Project, Version};
use s3s::dto::{
    CopyObjectInput, CopyObjectOutput, CopyObjectResult, CopySource, MetadataDirective,
    TaggingDirective,
};
use s3s::{s3_error, S3Result};

use crate::acl;
use crate::checksums::Checksummer;
use crate::errors::s3_error;
use crate::locks;
use crate::metadata::{self, ObjectHeaders};
use crate::objects::Conditions;
use crate::tagging::{self, Tags};
use crate::versions;

/// The bucket, key and version a copy reads from.
pub(crate) fn source(copy_source: &CopySource) -> S3Result<(String, String, Version)> {
    match copy_source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            versions::requested(version_id.as_deref())?,
        )),
        _ => Err(s3_error!(
            NotImplemented,
            "only bucket/key copy sources are supported"
        )),
    }
}

/// Checks the `x-amz-copy-source-if-*` conditions against the source.
pub(crate) fn check_source_conditions(
    info: &ObjectInfo,
    conditions: Conditions<'_>,
) -> S3Result<()> {
    // Failed copy-source conditions are all 412, NotModified included.
    conditions
        .check(metadata::etag(info).as_ref(), info.created)
        .map_err(|e| {
            s3_error!(
                PreconditionFailed,
                "{}",
                e.message().unwrap_or("a copy-source condition failed")
            )
        })
}

/// A failed copy: reading the source is the gateway's side of the copy.
pub(crate) fn source_read_error(error: Error) -> s3s::S3Error {
    match error {
        Error::Read(e) => s3_error!(InternalError, "cannot read the copy source: {e}"),
        e => s3_error(e),
    }
}

/// The metadata of a copy with the REPLACE directive: the request's
/// `headers`, and what describes the bytes (ETag, checksum) from `source`.
fn replaced_metadata(
    mut headers: ObjectHeaders,
    source: &ObjectInfo,
) -> (Option<String>, BTreeMap<String, String>) {
    headers.checksum = metadata::checksum(source).map(Checksummer::stored);
    let mut options = headers.into_upload_options();
    if let Some(late) = options.late_metadata.take() {
        options.metadata.extend(late());
    }
    options
        .metadata
        .extend(metadata::etag(source).map(|etag| metadata::etag_entry(etag.value())));
    (options.content_type, options.metadata)
}

/// The metadata a copy of `source` gets: the source's, or with the REPLACE
/// metadata directive the request's `headers`; the source's tags, or with
/// the REPLACE tagging directive the request's `tags`; and `acl`, the
/// request's, whatever the source's was (as S3).
fn copy_metadata(
    headers: Option<ObjectHeaders>,
    tags: Option<&Tags>,
    acl: CannedAcl,
    source: &ObjectInfo,
) -> CopyMetadata {
    let acl_kept = acl == acl::stored(source);
    let (content_type, mut metadata) = match (headers, tags) {
        (None, None) if acl_kept => return CopyMetadata::Keep,
        (Some(headers), _) => replaced_metadata(headers, source),
        (None, _) => (source.content_type.clone(), source.metadata.clone()),
    };
    let kept = tagging::stored(source);
    tagging::set(&mut metadata, tags.unwrap_or(&kept));
    acl::set(&mut metadata, acl);
    CopyMetadata::Replace {
        content_type,
        metadata,
    }
}

pub(crate) async fn copy(project: &Project, input: CopyObjectInput) -> S3Result<CopyObjectOutput> {
    let (source_bucket, source_key, source_version) = source(&input.copy_source)?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let onto_itself = source_bucket == input.bucket
        && source_key == input.key
        && source_version == Version::Current;
    if onto_itself && !replace {
        return Err(s3_error!(
            InvalidRequest,
            "copying an object onto itself needs the REPLACE metadata directive"
        ));
    }
    let conditions = Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let acl = acl::upload_acl!(project, input).await?;
    let headers = replace.then(|| metadata::request_headers!(input, None));
    let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
        Some(TaggingDirective::REPLACE) => Some(tagging::requested(input.tagging.as_deref())?),
        _ => None,
    };
    let lock = locks::requested(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    )?;
    // Conditions and metadata are decided on the very version copied.
    let mut source_version_id = None;
    let copy = project
        .copy_object_if(
            (&source_bucket, &source_key, &source_version),
            (&input.bucket, &input.key, lock),
            |source| {
                check_source_conditions(source, conditions)?;
                source_version_id = versions::shown(source.version.as_ref());
                Ok::<_, s3s::S3Error>(copy_metadata(headers, tags.as_ref(), acl, source))
            },
        )
        .await
        .map_err(s3_error)??;
    let etag = metadata::etag(&copy);
    Ok(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: etag,
            last_modified: metadata::timestamp(copy.created),
            ..Default::default()
        }),
        copy_source_version_id: source_version_id,
        version_id: versions::shown(copy.version.as_ref()),
        ..Default::default()
    })
}
