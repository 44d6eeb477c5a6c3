//! S3 object tagging: a version's tags live in its sealed metadata under
//! the reserved `s3:tagging` entry (as the URL-encoded query text the
//! `x-amz-tagging` header uses), so the satellite never sees them. PUT,
//! CreateMultipartUpload and CopyObject set them from `x-amz-tagging`;
//! `?tagging` reads, replaces and deletes them in place, adding no version.
//! A bucket's tags are kept by the satellite with the bucket, unencrypted
//! like its name.

use std::collections::BTreeMap;

use archipel_client::{ObjectInfo, Project};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::dto::{
    DeleteBucketTaggingInput, DeleteBucketTaggingOutput, DeleteObjectTaggingInput,
    DeleteObjectTaggingOutput, GetBucketTaggingInput, GetBucketTaggingOutput,
    GetObjectTaggingInput, GetObjectTaggingOutput, PutBucketTaggingInput, PutBucketTaggingOutput,
    PutObjectTaggingInput, PutObjectTaggingOutput, Tag, TagCount, Tagging,
};
use s3s::{s3_error, S3Result};

use crate::errors::s3_error;
use crate::{objects, versions};

/// The metadata entry holding a version's tags.
const TAGGING: &str = "s3:tagging";
/// S3's limits: tags per object and per bucket, characters per key and per
/// value.
const MAX_TAGS: usize = 10;
const MAX_BUCKET_TAGS: usize = 50;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 256;

/// Characters kept as they are in the stored query text (RFC 3986's
/// unreserved ones), as S3 encodes tags.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A version's tags, in the order given.
pub(crate) type Tags = Vec<(String, String)>;

/// Checks tags against S3's rules (`InvalidTag`), with at most `max`.
fn validate(tags: &Tags, max: usize) -> S3Result<()> {
    if tags.len() > max {
        return Err(s3_error!(InvalidTag, "Tags cannot be more than {max}"));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid: 1 to {MAX_KEY_CHARS} characters"
            ));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is too long: at most {MAX_VALUE_CHARS} characters"
            ));
        }
        if key.starts_with("aws:") {
            return Err(s3_error!(
                InvalidTag,
                "Your TagKey cannot be prefixed with aws:"
            ));
        }
        if tags[..i].iter().any(|(earlier, _)| earlier == key) {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
pub(crate) fn from_header(text: &str) -> S3Result<Tags> {
    let decode = |part: &str| {
        percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| s3_error!(InvalidArgument, "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters without tag name duplicates."))
    };
    let tags = text
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect::<S3Result<Tags>>()?;
    validate(&tags, MAX_TAGS)?;
    Ok(tags)
}

fn to_text(tags: &Tags) -> String {
    tags.iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                utf8_percent_encode(key, QUERY_VALUE),
                utf8_percent_encode(value, QUERY_VALUE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The metadata entry storing `tags`; none for no tags.
fn entry(tags: &Tags) -> Option<(String, String)> {
    (!tags.is_empty()).then(|| (TAGGING.to_string(), to_text(tags)))
}

/// Sets the tags in a version's `metadata`, replacing any it had.
pub(crate) fn set(metadata: &mut BTreeMap<String, String>, tags: &Tags) {
    metadata.remove(TAGGING);
    metadata.extend(entry(tags));
}

/// The tags an upload's `x-amz-tagging` header asks for (none without it).
pub(crate) fn requested(header: Option<&str>) -> S3Result<Tags> {
    header.map_or(Ok(Vec::new()), from_header)
}

/// The tags stored with a version (ones that fail to decode are skipped:
/// they were stored by this module, so that is damage, not input).
pub(crate) fn stored(info: &ObjectInfo) -> Tags {
    let Some(text) = info.metadata.get(TAGGING) else {
        return Vec::new();
    };
    text.split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = percent_decode_str(key).decode_utf8().ok()?;
            let value = percent_decode_str(value).decode_utf8().ok()?;
            Some((key.into_owned(), value.into_owned()))
        })
        .collect()
}

/// The `x-amz-tagging-count` a GET answers: the number of tags, if any.
pub(crate) fn count(info: &ObjectInfo) -> Option<TagCount> {
    let tags = stored(info).len();
    (tags > 0).then(|| TagCount::try_from(tags).unwrap_or(TagCount::MAX))
}

/// Replaces the tags of a version in place; returns its shown version id.
async fn replace(
    project: &Project,
    (bucket, key, version_id): (&str, &str, Option<&str>),
    tags: Tags,
) -> S3Result<Option<String>> {
    let version = versions::requested(version_id)?;
    let updated = project
        .update_metadata(bucket, key, &version, |metadata| set(metadata, &tags))
        .await
        .map_err(s3_error)?;
    Ok(versions::shown(updated.version.as_ref()))
}

/// The tags of a `<Tagging>` body, checked with at most `max` of them.
fn from_body(tagging: Tagging, max: usize) -> S3Result<Tags> {
    let tags = tagging
        .tag_set
        .into_iter()
        .map(|tag| (tag.key.unwrap_or_default(), tag.value.unwrap_or_default()))
        .collect();
    validate(&tags, max)?;
    Ok(tags)
}

fn tag_set(tags: Tags) -> Vec<Tag> {
    tags.into_iter()
        .map(|(key, value)| Tag {
            key: Some(key),
            value: Some(value),
        })
        .collect()
}

pub(crate) async fn put(
    project: &Project,
    input: PutObjectTaggingInput,
) -> S3Result<PutObjectTaggingOutput> {
    let tags = from_body(input.tagging, MAX_TAGS)?;
    let target = (
        input.bucket.as_str(),
        input.key.as_str(),
        input.version_id.as_deref(),
    );
    Ok(PutObjectTaggingOutput {
        version_id: replace(project, target, tags).await?,
    })
}

pub(crate) async fn get(
    project: &Project,
    input: GetObjectTaggingInput,
) -> S3Result<GetObjectTaggingOutput> {
    let version = versions::requested(input.version_id.as_deref())?;
    let info = objects::stat(project, (&input.bucket, &input.key, &version)).await?;
    Ok(GetObjectTaggingOutput {
        tag_set: tag_set(stored(&info)),
        version_id: versions::shown(info.version.as_ref()),
    })
}

pub(crate) async fn delete(
    project: &Project,
    input: DeleteObjectTaggingInput,
) -> S3Result<DeleteObjectTaggingOutput> {
    let target = (
        input.bucket.as_str(),
        input.key.as_str(),
        input.version_id.as_deref(),
    );
    Ok(DeleteObjectTaggingOutput {
        version_id: replace(project, target, Vec::new()).await?,
    })
}

pub(crate) async fn put_bucket(
    project: &Project,
    input: PutBucketTaggingInput,
) -> S3Result<PutBucketTaggingOutput> {
    let tags = from_body(input.tagging, MAX_BUCKET_TAGS)?;
    project
        .set_bucket_tags(&input.bucket, &tags)
        .await
        .map_err(s3_error)?;
    Ok(PutBucketTaggingOutput::default())
}

pub(crate) async fn get_bucket(
    project: &Project,
    input: GetBucketTaggingInput,
) -> S3Result<GetBucketTaggingOutput> {
    let tags = project.bucket(&input.bucket).await.map_err(s3_error)?.tags;
    if tags.is_empty() {
        return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
    }
    Ok(GetBucketTaggingOutput {
        tag_set: tag_set(tags),
    })
}

pub(crate) async fn delete_bucket(
    project: &Project,
    input: DeleteBucketTaggingInput,
) -> S3Result<DeleteBucketTaggingOutput> {
    project
        .set_bucket_tags(&input.bucket, &[])
        .await
        .map_err(s3_error)?;
    Ok(DeleteBucketTaggingOutput::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn headers_decode_and_stored_text_round_trips() {
        let parsed = from_header("project=blue%20sky&empty=&a+b=c%26d").unwrap();
        assert_eq!(
            parsed,
            tags(&[("project", "blue sky"), ("empty", ""), ("a b", "c&d")])
        );
        let (name, text) = entry(&parsed).unwrap();
        assert_eq!(name, TAGGING);
        let info = ObjectInfo {
            key: "k".into(),
            size: 0,
            created: std::time::SystemTime::UNIX_EPOCH,
            expires: None,
            content_type: None,
            metadata: [(name, text)].into(),
            segments: Vec::new(),
            version: None,
            lock: Default::default(),
        };
        assert_eq!(stored(&info), parsed);
        assert_eq!(count(&info), Some(3));
        assert_eq!(entry(&Vec::new()), None);
    }

    #[test]
    fn s3_limits_hold() {
        let many: Tags = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate(&many, MAX_TAGS).is_err());
        assert!(validate(&many, MAX_BUCKET_TAGS).is_ok());
        assert!(validate(&many[..10].to_vec(), MAX_TAGS).is_ok());
        for bad in [
            tags(&[("", "v")]),
            tags(&[(&"k".repeat(129), "v")]),
            tags(&[("k", &"v".repeat(257))]),
            tags(&[("k", "1"), ("k", "2")]),
            tags(&[("aws:owner", "x")]),
        ] {
            assert!(validate(&bad, MAX_TAGS).is_err(), "{bad:?}");
        }
        assert!(from_header("k=%FF").is_err());
    }
}
