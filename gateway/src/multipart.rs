//! Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort,
//! ListParts and ListMultipartUploads over the client library's multipart
//! uploads. Parts stream straight to the network (their MD5, the part ETag,
//! is computed on the way and kept sealed with the part, as is its checksum),
//! so a part is never held in memory or on disk; completing moves no data.
//! The object's ETag is S3's: the MD5 of the parts' binary MD5s, a dash and
//! the number of parts; its checksum is made from the parts' (see
//! `part_checksums`).

use std::collections::{BTreeMap, BTreeSet};

use archipel_client::{ByteRange, Error, MultipartUpload, PartInfo, Project, UploadParts};
use md5::{Digest, Md5};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, ChecksumType, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CompletedPart, CopyPartResult,
    CreateMultipartUploadInput, CreateMultipartUploadOutput, ETag, ListMultipartUploadsInput,
    ListMultipartUploadsOutput, ListPartsInput, ListPartsOutput, Part, UploadPartCopyInput,
    UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{s3_error, S3Result};
use tokio::io::AsyncRead;

use crate::acl;
use crate::attributes;
use crate::checksums::{checksum_request, Algorithm, Checksum, Checksummer};
use crate::conditional::WriteCondition;
use crate::copy;
use crate::errors::s3_error;
use crate::locks;
use crate::metadata;
use crate::objects::{self, DownloadStream, Md5Reader};
use crate::part_checksums::{Combination, PartTag, UploadChecksum};
use crate::tagging;

/// S3's smallest part, except for the last one.
const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's default and largest page of parts and of uploads.
const MAX_PAGE: usize = 1000;

pub(crate) async fn create(
    project: &Project,
    input: CreateMultipartUploadInput,
) -> S3Result<CreateMultipartUploadOutput> {
    let checksum = UploadChecksum::from_create(
        input.checksum_algorithm.as_ref(),
        input.checksum_type.as_ref(),
    )?;
    // The object's checksum is made from the parts' at completion.
    let mut headers = metadata::request_headers!(input, None);
    headers.tags = tagging::requested(input.tagging.as_deref())?;
    headers.acl = acl::upload_acl!(project, input).await?;
    let mut options = headers.into_upload_options();
    options
        .metadata
        .extend(checksum.map(metadata::upload_checksum_entry));
    options.lock = locks::requested(
        input.object_lock_mode.as_ref(),
        input.object_lock_retain_until_date.as_ref(),
        input.object_lock_legal_hold_status.as_ref(),
    )?;
    let upload_id = project
        .begin_multipart(&input.bucket, &input.key, options)
        .await
        .map_err(s3_error)?;
    Ok(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        checksum_algorithm: checksum.map(UploadChecksum::algorithm_name),
        checksum_type: checksum.map(UploadChecksum::type_name),
        ..Default::default()
    })
}

pub(crate) fn part_number(number: i32) -> S3Result<u32> {
    u32::try_from(number)
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

/// Uploads `body` (read through `checksum`'s reader, if any, by the caller)
/// as part `number`; returns its tag: ETag (hex MD5) and checksum.
async fn store_part(
    project: &Project,
    (bucket, key, upload_id): (&str, &str, &str),
    number: u32,
    body: impl AsyncRead + Unpin + Send,
    expected_md5: Option<[u8; 16]>,
    checksum: Option<Checksummer>,
) -> Result<PartTag, archipel_client::Error> {
    let reader = Md5Reader::md5(body, expected_md5);
    let digest = reader.digest_slot();
    let part = project
        .upload_part(bucket, key, upload_id, number, reader, move || {
            PartTag {
                etag: digest.get().map(hex::encode).unwrap_or_default(),
                checksum: checksum.and_then(|c| c.value()),
            }
            .to_text()
        })
        .await?;
    Ok(PartTag::parse(&part.tag))
}

/// The checksum a part of the upload gets (see
/// [`UploadChecksum::for_part`]).
async fn part_checksum(
    project: &Project,
    (bucket, key, upload_id): (&str, &str, &str),
    given: Option<Checksummer>,
) -> S3Result<Option<Checksummer>> {
    let upload = project
        .multipart_info(bucket, key, upload_id)
        .await
        .map_err(s3_error)?;
    UploadChecksum::for_part(metadata::upload_checksum(&upload), given)
}

/// Uploads a part; with a `checksum`, the body must match it. The answer
/// carries the part's checksum: the request's, or the upload's algorithm's.
pub(crate) async fn upload_part(
    project: &Project,
    input: UploadPartInput,
    checksum: Option<Checksummer>,
) -> S3Result<UploadPartOutput> {
    let number = part_number(input.part_number)?;
    let expected_md5 = objects::expected_md5(input.content_md5.as_deref())?;
    let upload = (
        input.bucket.as_str(),
        input.key.as_str(),
        input.upload_id.as_str(),
    );
    let checksum = part_checksum(project, upload, checksum).await?;
    let body = objects::upload_body(input.body, checksum.as_ref());
    let tag = store_part(project, upload, number, body, expected_md5, checksum)
        .await
        .map_err(s3_error)?;
    let mut output = UploadPartOutput {
        e_tag: Some(ETag::Strong(tag.etag)),
        ..Default::default()
    };
    if let Some(checksum) = tag.checksum {
        checksum.set_on(&mut output);
    }
    Ok(output)
}

pub(crate) async fn upload_part_copy(
    project: &Project,
    input: UploadPartCopyInput,
) -> S3Result<UploadPartCopyOutput> {
    let number = part_number(input.part_number)?;
    let (source_bucket, source_key, source_version) = copy::source(&input.copy_source)?;
    let source = objects::open(project, (&source_bucket, &source_key, &source_version), 0).await?;
    let info = source.info();
    copy::check_source_conditions(
        info,
        objects::Conditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        },
    )?;
    let range = match &input.copy_source_range {
        Some(text) => Some(copy_range(text, info.size)?),
        None => None,
    };
    let upload = (
        input.bucket.as_str(),
        input.key.as_str(),
        input.upload_id.as_str(),
    );
    let checksum = part_checksum(project, upload, None).await?;
    let source = objects::checked(
        DownloadStream::start(source, range).into_reader(),
        checksum.as_ref(),
    );
    let tag = store_part(project, upload, number, source, None, checksum)
        .await
        .map_err(copy::source_read_error)?;
    let mut result = CopyPartResult {
        e_tag: Some(ETag::Strong(tag.etag)),
        last_modified: metadata::timestamp(std::time::SystemTime::now()),
        ..Default::default()
    };
    if let Some(checksum) = tag.checksum {
        checksum.set_on(&mut result);
    }
    Ok(UploadPartCopyOutput {
        copy_part_result: Some(result),
        ..Default::default()
    })
}

/// `x-amz-copy-source-range`: `bytes=first-last`, both inclusive, within the source.
fn copy_range(text: &str, size: u64) -> S3Result<ByteRange> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last"
        )
    };
    let (first, last) = text
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let first: u64 = first.trim().parse().map_err(|_| invalid())?;
    let last: u64 = last.trim().parse().map_err(|_| invalid())?;
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "the range {text} is not within the {size}-byte source object"
        ));
    }
    Ok(ByteRange {
        offset: first,
        length: Some(last - first + 1),
    })
}

/// S3's multipart ETag: MD5 of the concatenated binary part MD5s, `-N`.
/// Part tags that are not hex MD5s (parts stored by other tools) count as
/// their bytes.
fn multipart_etag(part_md5s: &[&str]) -> String {
    let mut hasher = Md5::new();
    for tag in part_md5s {
        match hex::decode(tag) {
            Ok(bytes) => hasher.update(bytes),
            Err(_) => hasher.update(tag.as_bytes()),
        }
    }
    format!("{}-{}", hex::encode(hasher.finalize()), part_md5s.len())
}

pub(crate) async fn complete(
    project: &Project,
    input: CompleteMultipartUploadInput,
) -> S3Result<CompleteMultipartUploadOutput> {
    let given = input
        .multipart_upload
        .as_ref()
        .and_then(|u| u.parts.clone())
        .filter(|parts| !parts.is_empty())
        .ok_or_else(|| {
            s3_error!(
                MalformedXML,
                "the request names no parts to complete the upload with"
            )
        })?;
    let condition = WriteCondition::from_complete(&input)?;
    let whole_given = checksum_request!(input, values only).given()?;
    let recorded = match project
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
    {
        Err(gone @ Error::UploadNotFound { .. }) => {
            let upload = (input.bucket, input.key, input.upload_id);
            return completed_before(project, upload, &given, gone).await;
        }
        other => other.map_err(s3_error)?,
    };
    let upload_checksum = metadata::upload_checksum(&recorded.upload);
    let chosen = choose_parts(&given, &recorded.parts, upload_checksum)?;
    let size: u64 = chosen.iter().map(|(part, _)| part.size).sum();
    if let Some(expected) = input.mpu_object_size {
        if u64::try_from(expected).ok() != Some(size) {
            return Err(s3_error!(
                InvalidRequest,
                "x-amz-mp-object-size is {expected} but the parts make {size} bytes"
            ));
        }
    }
    let checksum = object_checksum(
        upload_checksum,
        &chosen,
        input.checksum_type.as_ref(),
        whole_given,
    )?;
    let tags: Vec<&str> = chosen.iter().map(|(_, tag)| tag.etag.as_str()).collect();
    let etag = multipart_etag(&tags);
    let precondition = match condition {
        Some(condition) => Some(condition.check(project, &input.bucket, &input.key).await?),
        None => None,
    };
    let mut entries = BTreeMap::from([metadata::etag_entry(&etag)]);
    entries.extend(checksum.as_ref().map(metadata::checksum_entry));
    if upload_checksum.is_some_and(|u| u.combination == Combination::Composite) {
        let sums: Vec<&Checksum> = chosen
            .iter()
            .filter_map(|(_, tag)| tag.checksum.as_ref())
            .collect();
        entries.extend(attributes::part_checksums_entry(&sums));
    }
    let parts: Vec<PartInfo> = chosen.into_iter().map(|(part, _)| part).collect();
    let completed = project
        .complete_multipart(
            &input.bucket,
            &input.key,
            &input.upload_id,
            &parts,
            entries,
            precondition.as_ref(),
        )
        .await
        .map_err(s3_error)?;
    let mut output = CompleteMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: Some(ETag::Strong(etag)),
        version_id: crate::versions::shown(completed.version.as_ref()),
        ..Default::default()
    };
    if let Some(checksum) = checksum {
        checksum.set_on(&mut output);
    }
    Ok(output)
}

/// The recorded parts a completion names, in order, with their tags: each
/// must have been uploaded with the ETag named and, where the request gives
/// a part checksum, with that checksum. An upload created with a checksum
/// needs every part to carry one of its algorithm, and a composite one needs
/// the request to name each part's (S3's rules).
fn choose_parts(
    given: &[CompletedPart],
    recorded: &[PartInfo],
    upload: Option<UploadChecksum>,
) -> S3Result<Vec<(PartInfo, PartTag)>> {
    let mut chosen: Vec<(PartInfo, PartTag)> = Vec::with_capacity(given.len());
    for part in given {
        let number = part
            .part_number
            .ok_or_else(|| s3_error!(InvalidPart, "a part has no part number"))
            .and_then(part_number)?;
        if chosen.last().is_some_and(|(last, _)| number <= last.number) {
            return Err(s3_error!(
                InvalidPartOrder,
                "the list of parts was not in ascending order"
            ));
        }
        let found = recorded
            .iter()
            .find(|p| p.number == number)
            .map(|p| (p, PartTag::parse(&p.tag)))
            .filter(|(_, tag)| part.e_tag.as_ref().is_some_and(|e| e.value() == tag.etag));
        let Some((found, tag)) = found else {
            return Err(s3_error!(
                InvalidPart,
                "part {number} was not uploaded or its ETag differs"
            ));
        };
        match (checksum_request!(part, values only).value()?, &tag.checksum) {
            (Some(named), Some(stored)) if named.same_digest(stored) => {}
            // Nothing to check a named checksum against: a part uploaded
            // without one to an upload created without one (or before the
            // gateway kept part checksums); the object gets no checksum.
            (Some(_), None) if upload.is_none() => {}
            (Some(named), _) => {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} was not uploaded with the {} checksum named",
                    named.algorithm.name()
                ))
            }
            (None, _) => {
                if let Some(upload) = upload.filter(|u| u.combination == Combination::Composite) {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request.",
                        upload.algorithm.name().to_ascii_lowercase()
                    ));
                }
            }
        }
        if let Some(upload) = upload {
            if tag.checksum.as_ref().map(|c| c.algorithm) != Some(upload.algorithm) {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number} was uploaded without a {} checksum",
                    upload.algorithm.name()
                ));
            }
        }
        chosen.push((found.clone(), tag));
    }
    let all_but_last = chosen.split_last().map_or(&[][..], |(_, rest)| rest);
    if let Some((small, _)) = all_but_last.iter().find(|(p, _)| p.size < MIN_PART_SIZE) {
        return Err(s3_error!(
            EntityTooSmall,
            "part {} is {} bytes; every part but the last must be at least {MIN_PART_SIZE}",
            small.number,
            small.size
        ));
    }
    Ok(chosen)
}

/// The completed object's checksum, made from the `chosen` parts' as the
/// upload was created to; a whole-object checksum or type the request
/// names must agree with it.
fn object_checksum(
    upload: Option<UploadChecksum>,
    chosen: &[(PartInfo, PartTag)],
    type_given: Option<&ChecksumType>,
    whole_given: Option<(Algorithm, &str)>,
) -> S3Result<Option<Checksum>> {
    let Some(upload) = upload else {
        if type_given.is_some() || whole_given.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "the upload was created without a checksum algorithm"
            ));
        }
        return Ok(None);
    };
    if let Some(kind) = type_given {
        if !kind
            .as_str()
            .eq_ignore_ascii_case(upload.type_name().as_str())
        {
            return Err(s3_error!(
                InvalidRequest,
                "the checksum type {} differs from the upload's {}",
                kind.as_str(),
                upload.type_name().as_str()
            ));
        }
    }
    let parts: Vec<(&Checksum, u64)> = chosen
        .iter()
        .filter_map(|(part, tag)| tag.checksum.as_ref().map(|c| (c, part.size)))
        .collect();
    let computed = upload
        .object_checksum(&parts)
        .filter(|_| parts.len() == chosen.len())
        .ok_or_else(|| {
            s3_error!(
                InvalidPart,
                "a part's stored checksum is not a {} checksum",
                upload.algorithm.name()
            )
        })?;
    if let Some((algorithm, value)) = whole_given {
        if algorithm != upload.algorithm {
            return Err(s3_error!(
                InvalidRequest,
                "the upload was created using a {} checksum, not {}",
                upload.algorithm.name(),
                algorithm.name()
            ));
        }
        if !computed.matches_text(value) {
            return Err(s3_error!(
                BadDigest,
                "the {} you specified did not match the calculated checksum",
                algorithm.name()
            ));
        }
    }
    Ok(Some(computed))
}

/// A completion retried after its answer was lost: if the upload was
/// completed into the object still under its key, from the parts `given`
/// (same ETag), S3 answers the retry as the first; otherwise the upload is
/// `gone`.
async fn completed_before(
    project: &Project,
    (bucket, key, upload_id): (String, String, String),
    given: &[CompletedPart],
    gone: Error,
) -> S3Result<CompleteMultipartUploadOutput> {
    let tags: Vec<&str> = given
        .iter()
        .map(|p| p.e_tag.as_ref().map_or("", |e| e.value()))
        .collect();
    let etag = multipart_etag(&tags);
    let completed = project
        .completed_multipart(&bucket, &key, &upload_id)
        .await
        .map_err(s3_error)?;
    match completed {
        Some(object) if metadata::etag(&object).is_some_and(|e| e.value() == etag) => {
            let mut output = CompleteMultipartUploadOutput {
                bucket: Some(bucket),
                key: Some(key),
                e_tag: Some(ETag::Strong(etag)),
                ..Default::default()
            };
            if let Some(checksum) = metadata::checksum(&object) {
                checksum.set_on(&mut output);
            }
            Ok(output)
        }
        _ => Err(s3_error(gone)),
    }
}

pub(crate) async fn abort(
    project: &Project,
    input: AbortMultipartUploadInput,
) -> S3Result<AbortMultipartUploadOutput> {
    project
        .abort_multipart(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(s3_error)?;
    Ok(AbortMultipartUploadOutput::default())
}

/// The page a request asks for, at least one entry so that a truncated page
/// always has a next marker.
fn page_size(requested: Option<i32>) -> usize {
    requested.map_or(MAX_PAGE, |n| {
        usize::try_from(n).unwrap_or(0).clamp(1, MAX_PAGE)
    })
}

pub(crate) async fn list_parts(
    project: &Project,
    input: ListPartsInput,
) -> S3Result<ListPartsOutput> {
    let UploadParts { upload, parts } = project
        .list_parts(&input.bucket, &input.key, &input.upload_id)
        .await
        .map_err(s3_error)?;
    let checksum = metadata::upload_checksum(&upload);
    let marker = input.part_number_marker.unwrap_or(0);
    let max = page_size(input.max_parts);
    let after: Vec<&PartInfo> = parts
        .iter()
        .filter(|p| i64::from(p.number) > i64::from(marker))
        .collect();
    let page = &after[..after.len().min(max)];
    let truncated = after.len() > page.len();
    Ok(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: page
            .last()
            .filter(|_| truncated)
            .and_then(|p| i32::try_from(p.number).ok()),
        max_parts: i32::try_from(max).ok(),
        is_truncated: Some(truncated),
        checksum_algorithm: checksum.map(UploadChecksum::algorithm_name),
        checksum_type: checksum.map(UploadChecksum::type_name),
        parts: Some(page.iter().map(|p| listed_part(p)).collect()),
        ..Default::default()
    })
}

fn listed_part(part: &PartInfo) -> Part {
    let tag = PartTag::parse(&part.tag);
    let mut listed = Part {
        part_number: i32::try_from(part.number).ok(),
        e_tag: Some(ETag::Strong(tag.etag)),
        size: i64::try_from(part.size).ok(),
        last_modified: metadata::timestamp(part.uploaded),
        ..Default::default()
    };
    if let Some(checksum) = tag.checksum {
        checksum.set_on(&mut listed);
    }
    listed
}

/// One page of uploads: those after the markers, with keys rolled up to
/// common prefixes at the delimiter.
struct UploadsPage {
    uploads: Vec<MultipartUpload>,
    prefixes: BTreeSet<String>,
    truncated: bool,
    next: Option<(String, String)>,
}

fn paginate_uploads(
    all: Vec<MultipartUpload>,
    prefix: &str,
    delimiter: Option<&str>,
    marker: (Option<&str>, Option<&str>),
    max: usize,
) -> UploadsPage {
    let mut page = UploadsPage {
        uploads: Vec::new(),
        prefixes: BTreeSet::new(),
        truncated: false,
        next: None,
    };
    // `all` is in (key, start) order, the order the markers refer to.
    let start = match marker {
        (Some(key), Some(id)) => all
            .iter()
            .position(|u| u.key == key && u.upload_id == id)
            .map(|at| at + 1)
            .unwrap_or_else(|| all.partition_point(|u| u.key.as_str() <= key)),
        // A marker that is a common prefix (the last entry of a rolled-up
        // page) also skips the keys it stood for.
        (Some(key), None) => all.partition_point(|u| {
            u.key.as_str() <= key
                || (delimiter.is_some_and(|d| key.ends_with(d)) && u.key.starts_with(key))
        }),
        (None, _) => 0,
    };
    for upload in all[start..].iter().filter(|u| u.key.starts_with(prefix)) {
        let common = delimiter.and_then(|d| {
            let rest = upload.key.get(prefix.len()..)?;
            rest.find(d)
                .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
        });
        if let Some(common) = &common {
            if page.prefixes.contains(common) {
                continue;
            }
        }
        if page.uploads.len() + page.prefixes.len() >= max {
            page.truncated = true;
            break;
        }
        page.next = Some(match &common {
            Some(common) => (common.clone(), String::new()),
            None => (upload.key.clone(), upload.upload_id.clone()),
        });
        match common {
            Some(common) => {
                page.prefixes.insert(common);
            }
            None => page.uploads.push(upload.clone()),
        }
    }
    page
}

pub(crate) async fn list_uploads(
    project: &Project,
    input: ListMultipartUploadsInput,
) -> S3Result<ListMultipartUploadsOutput> {
    let prefix = input.prefix.clone().unwrap_or_default();
    let all = project
        .list_multipart_uploads(&input.bucket, &prefix)
        .await
        .map_err(s3_error)?;
    let max = page_size(input.max_uploads);
    let page = paginate_uploads(
        all,
        &prefix,
        input.delimiter.as_deref().filter(|d| !d.is_empty()),
        (
            input.key_marker.as_deref(),
            input
                .upload_id_marker
                .as_deref()
                .filter(|id| !id.is_empty()),
        ),
        max,
    );
    let (next_key, next_id) = match page.next.filter(|_| page.truncated) {
        Some((key, id)) => (Some(key), Some(id).filter(|id| !id.is_empty())),
        None => (None, None),
    };
    Ok(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        delimiter: input.delimiter,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: i32::try_from(max).ok(),
        is_truncated: Some(page.truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        common_prefixes: Some(
            page.prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
        uploads: Some(
            page.uploads
                .into_iter()
                .map(|u| s3s::dto::MultipartUpload {
                    initiated: metadata::timestamp(u.started),
                    key: Some(u.key),
                    upload_id: Some(u.upload_id),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn multipart_etags_are_s3s() {
        // Two parts: "hello " and "world", as S3 computes it.
        let a = hex::encode(Md5::digest(b"hello "));
        let b = hex::encode(Md5::digest(b"world"));
        let mut both = Md5::digest(b"hello ").to_vec();
        both.extend_from_slice(&Md5::digest(b"world"));
        let expected = format!("{}-2", hex::encode(Md5::digest(&both)));
        assert_eq!(multipart_etag(&[&a, &b]), expected);
        assert!(multipart_etag(&[&a]).ends_with("-1"));
    }

    #[test]
    fn copy_ranges_are_inclusive_and_within_the_source() {
        let r = copy_range("bytes=0-9", 10).unwrap();
        assert_eq!((r.offset, r.length), (0, Some(10)));
        let r = copy_range("bytes=5-5", 10).unwrap();
        assert_eq!((r.offset, r.length), (5, Some(1)));
        assert_eq!(
            copy_range("bytes=5-10", 10).unwrap_err().code().as_str(),
            "InvalidRange"
        );
        assert_eq!(
            copy_range("bytes=6-5", 10).unwrap_err().code().as_str(),
            "InvalidRange"
        );
        for bad in ["0-9", "bytes=-5", "bytes=a-b", "bytes=5"] {
            assert_eq!(
                copy_range(bad, 10).unwrap_err().code().as_str(),
                "InvalidArgument",
                "{bad}"
            );
        }
    }

    #[test]
    fn upload_pages_follow_markers_and_roll_up_prefixes() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let upload = |key: &str, id: &str, s| MultipartUpload {
            key: key.into(),
            upload_id: id.into(),
            started: at(s),
        };
        let all = vec![
            upload("a", "1", 1),
            upload("a", "2", 2),
            upload("b/x", "3", 3),
            upload("b/y", "4", 4),
            upload("c", "5", 5),
        ];
        let keys = |p: &UploadsPage| -> Vec<String> {
            p.uploads
                .iter()
                .map(|u| format!("{}#{}", u.key, u.upload_id))
                .collect()
        };
        let page = paginate_uploads(all.clone(), "", None, (None, None), 2);
        assert_eq!(keys(&page), ["a#1", "a#2"]);
        assert!(page.truncated);
        assert_eq!(page.next, Some(("a".into(), "2".into())));
        let page = paginate_uploads(all.clone(), "", None, (Some("a"), Some("1")), 2);
        assert_eq!(keys(&page), ["a#2", "b/x#3"]);
        let page = paginate_uploads(all.clone(), "", None, (Some("a"), None), 10);
        assert_eq!(keys(&page), ["b/x#3", "b/y#4", "c#5"]);
        assert!(!page.truncated);
        let page = paginate_uploads(all.clone(), "", Some("/"), (None, None), 10);
        assert_eq!(keys(&page), ["a#1", "a#2", "c#5"]);
        assert_eq!(page.prefixes, BTreeSet::from(["b/".to_string()]));
        let page = paginate_uploads(all.clone(), "b/", Some("/"), (None, None), 10);
        assert_eq!(keys(&page), ["b/x#3", "b/y#4"]);
        // A page ending on a common prefix continues after all of its keys.
        let page = paginate_uploads(all.clone(), "", Some("/"), (None, None), 3);
        assert_eq!(keys(&page), ["a#1", "a#2"]);
        assert!(page.truncated);
        assert_eq!(page.next, Some(("b/".into(), String::new())));
        let page = paginate_uploads(all, "", Some("/"), (Some("b/"), None), 3);
        assert_eq!(keys(&page), ["c#5"]);
        assert!(page.prefixes.is_empty() && !page.truncated);
    }

    /// An x-amz-copy-source-range header and a part number as a client sends
    /// them, and part tags as stored (other tools may have written them):
    /// refused, or a non-empty range within the source and a part number S3
    /// allows; a multipart ETag of any tags.
    fn part_request_is_checked(
        (range, size, number, tags): (String, u64, i32, Vec<String>),
    ) -> Result<(), TestCaseError> {
        if let Ok(range) = copy_range(&range, size) {
            let length = range.length.unwrap_or(0);
            prop_assert!(length > 0);
            prop_assert!(range
                .offset
                .checked_add(length)
                .is_some_and(|end| end <= size));
        }
        if let Ok(number) = part_number(number) {
            prop_assert!((1..=10_000).contains(&number));
        }
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let etag = multipart_etag(&tags);
        let parts = format!("-{}", tags.len());
        prop_assert!(etag.ends_with(&parts), "{etag}");
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_copy_ranges_part_numbers_and_part_tags_are_refused_or_valid: (
            prop_oneof![
                hostile::text_or_mutated("bytes=0-9".into()),
                (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
            ],
            prop_oneof![0u64..20, any::<u64>()],
            prop_oneof![-2i32..10_003, any::<i32>()],
            prop::collection::vec(
                hostile::text_or_mutated("5d41402abc4b2a76b9719d911017c592".into()),
                0..4,
            ),
        ) => part_request_is_checked;
    }
}
