//! S3 versioning on top of the satellite's versions: `versionId` in requests
//! and answers (`null` for a key's null version, and nothing at all in a
//! bucket whose versioning was never enabled, as S3 answers), the bucket's
//! versioning configuration, and the headers that mark delete markers.

use archipel_client::{Project, Version, VersionInfo, Versioning};
use http::{HeaderMap, HeaderValue};
use s3s::dto::{
    BucketVersioningStatus, GetBucketVersioningInput, GetBucketVersioningOutput,
    PutBucketVersioningInput, PutBucketVersioningOutput,
};
use s3s::{s3_error, S3Error, S3Result};

use crate::errors::s3_error;

/// S3's id of a key's null version.
pub(crate) const NULL_VERSION: &str = "null";

/// The version a request's `versionId` names: the current one without it.
pub(crate) fn requested(version_id: Option<&str>) -> S3Result<Version> {
    match version_id {
        None => Ok(Version::Current),
        Some(NULL_VERSION) => Ok(Version::Null),
        Some(text) => text
            .parse()
            .map(Version::Id)
            .map_err(|_| s3_error!(InvalidArgument, "Invalid version id specified")),
    }
}

/// The `versionId` an answer shows for `version`: none in a bucket whose
/// versioning was never enabled, `null` for a null version.
pub(crate) fn shown(version: Option<&VersionInfo>) -> Option<String> {
    let version = version?;
    match (version.bucket_versioning, version.null) {
        (Versioning::Unversioned, _) => None,
        (_, true) => Some(NULL_VERSION.to_string()),
        (_, false) => Some(version.id.to_string()),
    }
}

/// The headers S3 adds to the error answering a read that found a delete
/// marker: `x-amz-delete-marker: true` and the marker's version id.
pub(crate) fn marker_headers(error: &mut S3Error, marker: &VersionInfo) {
    let mut headers = HeaderMap::new();
    headers.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
    if let Some(id) = shown(Some(marker)).and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert("x-amz-version-id", id);
    }
    error.set_headers(headers);
}

pub(crate) async fn get_bucket_versioning(
    project: &Project,
    input: GetBucketVersioningInput,
) -> S3Result<GetBucketVersioningOutput> {
    let bucket = project.bucket(&input.bucket).await.map_err(s3_error)?;
    let status = match bucket.versioning {
        Versioning::Unversioned => None,
        Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
        Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
    };
    Ok(GetBucketVersioningOutput {
        status: status.map(BucketVersioningStatus::from_static),
        ..Default::default()
    })
}

pub(crate) async fn put_bucket_versioning(
    project: &Project,
    input: PutBucketVersioningInput,
) -> S3Result<PutBucketVersioningOutput> {
    let configuration = input.versioning_configuration;
    if configuration
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == "Enabled")
    {
        return Err(s3_error!(
            NotImplemented,
            "MFA delete is not supported: this gateway holds no MFA devices"
        ));
    }
    let versioning = match configuration.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: Status is Enabled or Suspended"
            ))
        }
    };
    project
        .set_versioning(&input.bucket, versioning)
        .await
        .map_err(s3_error)?;
    Ok(PutBucketVersioningOutput::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_client::VersionId;

    #[test]
    fn version_ids_show_as_s3_shows_them() {
        let id = VersionId {
            version: 3,
            stream_id: [9; 16],
        };
        let info = |null, bucket_versioning| VersionInfo {
            id: id.clone(),
            null,
            bucket_versioning,
        };
        assert_eq!(shown(None), None);
        assert_eq!(shown(Some(&info(true, Versioning::Unversioned))), None);
        assert_eq!(
            shown(Some(&info(true, Versioning::Suspended))).as_deref(),
            Some("null")
        );
        assert_eq!(
            shown(Some(&info(false, Versioning::Enabled))),
            Some(id.to_string())
        );
        assert_eq!(requested(None).unwrap(), Version::Current);
        assert_eq!(requested(Some("null")).unwrap(), Version::Null);
        assert_eq!(
            requested(Some(&id.to_string())).unwrap(),
            Version::Id(id.clone())
        );
        assert!(requested(Some("not-a-version")).is_err());
    }
}
