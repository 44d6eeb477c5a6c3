//! GetObjectAttributes: what S3 tells about a version without its data —
//! ETag, checksum, size, storage class, and a multipart object's parts
//! (paged, with each part's checksum when the upload had composite ones,
//! which completion seals under `s3:part-checksums`).

use archipel_client::{ObjectInfo, Project};
use s3s::dto::{
    self, GetObjectAttributesInput, GetObjectAttributesOutput, GetObjectAttributesParts,
    ObjectAttributes, ObjectPart, StorageClass,
};
use s3s::{s3_error, S3Result};

use crate::checksums::{Algorithm, Checksum};
use crate::{metadata, objects, versions};

/// The metadata entry holding a multipart object's part checksums, in part
/// order, separated by commas.
const PART_CHECKSUMS: &str = "s3:part-checksums";
/// Parts one answer lists at most (S3's default and limit).
const MAX_PARTS: usize = 1000;

/// The metadata entry recording the checksums of a completed upload's parts.
pub(crate) fn part_checksums_entry(parts: &[&Checksum]) -> Option<(String, String)> {
    let values: Vec<&str> = parts.iter().map(|c| c.value.as_str()).collect();
    (!values.is_empty()).then(|| (PART_CHECKSUMS.to_string(), values.join(",")))
}

/// The stored checksums of a multipart object's parts, if the upload had
/// composite checksums.
fn part_checksums(info: &ObjectInfo, algorithm: Algorithm) -> Vec<Checksum> {
    info.metadata
        .get(PART_CHECKSUMS)
        .map(|text| {
            text.split(',')
                .map(|value| Checksum {
                    algorithm,
                    value: value.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn get(
    project: &Project,
    input: GetObjectAttributesInput,
) -> S3Result<GetObjectAttributesOutput> {
    let mut wanted = Vec::new();
    for attribute in &input.object_attributes {
        match attribute.as_str() {
            name @ (ObjectAttributes::ETAG
            | ObjectAttributes::CHECKSUM
            | ObjectAttributes::OBJECT_PARTS
            | ObjectAttributes::STORAGE_CLASS
            | ObjectAttributes::OBJECT_SIZE) => wanted.push(name.to_string()),
            _ => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Invalid attribute name specified."
                ))
            }
        }
    }
    if wanted.is_empty() {
        return Err(s3_error!(
            InvalidArgument,
            "The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty"
        ));
    }
    let asked = |name: &str| wanted.iter().any(|w| w == name);
    let version = versions::requested(input.version_id.as_deref())?;
    let info = objects::stat(project, (&input.bucket, &input.key, &version)).await?;
    let checksum = metadata::checksum(&info);
    let object_checksum = checksum
        .as_ref()
        .filter(|_| asked(ObjectAttributes::CHECKSUM));
    let object_parts = match asked(ObjectAttributes::OBJECT_PARTS) {
        true => parts_page(&info, checksum.as_ref(), &input)?,
        false => None,
    };
    Ok(GetObjectAttributesOutput {
        e_tag: metadata::etag(&info).filter(|_| asked(ObjectAttributes::ETAG)),
        checksum: object_checksum.map(|c| {
            let mut out = dto::Checksum::default();
            c.set_on(&mut out);
            out
        }),
        object_parts,
        object_size: asked(ObjectAttributes::OBJECT_SIZE)
            .then(|| i64::try_from(info.size).unwrap_or(i64::MAX)),
        storage_class: asked(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        last_modified: metadata::timestamp(info.created),
        version_id: versions::shown(info.version.as_ref()),
        ..Default::default()
    })
}

/// The page of a multipart object's parts after `part-number-marker`, at
/// most `max-parts` of them; none for an object not uploaded in parts.
fn parts_page(
    info: &ObjectInfo,
    checksum: Option<&Checksum>,
    input: &GetObjectAttributesInput,
) -> S3Result<Option<GetObjectAttributesParts>> {
    let spans = objects::part_spans(info);
    if spans.is_empty() {
        return Ok(None);
    }
    let max = match input.max_parts {
        None => MAX_PARTS,
        Some(n) => usize::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "max-parts must be a non-negative integer"))?
            .min(MAX_PARTS),
    };
    let after = match input.part_number_marker {
        None => 0,
        Some(marker) => usize::try_from(marker)
            .map_err(|_| s3_error!(InvalidArgument, "part-number-marker must be a part number"))?,
    };
    let sums = checksum.map_or_else(Vec::new, |c| part_checksums(info, c.algorithm));
    let parts: Vec<ObjectPart> = spans
        .iter()
        .enumerate()
        .skip(after)
        .take(max)
        .map(|(index, (_, size))| {
            let mut part = ObjectPart {
                part_number: i32::try_from(index + 1).ok(),
                size: i64::try_from(*size).ok(),
                ..Default::default()
            };
            if let Some(sum) = sums.get(index) {
                sum.set_on(&mut part);
            }
            part
        })
        .collect();
    let last = after + parts.len();
    let truncated = last < spans.len();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(Some(GetObjectAttributesParts {
        total_parts_count: Some(count(spans.len())),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: truncated.then(|| count(last)),
        max_parts: Some(count(max)),
        is_truncated: Some(truncated),
        parts: Some(parts),
    }))
}
