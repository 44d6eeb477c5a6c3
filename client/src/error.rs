//! The client library's error type: every failure a user can meet, worded as a
//! sentence that makes sense without knowing the protocol.

use tonic::Code;

/// Everything the client library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the satellite at {address}: {reason}")]
    SatelliteUnreachable { address: String, reason: String },
    #[error("the satellite rejected the API key (unknown, damaged or revoked)")]
    Unauthenticated,
    #[error("the access grant does not allow this: {0}")]
    PermissionDenied(String),
    #[error("bucket {0:?} does not exist")]
    BucketNotFound(String),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("{0}")]
    InvalidBucketName(String),
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("object {key:?} not found in bucket {bucket:?}")]
    ObjectNotFound {
        bucket: String,
        key: String,
        /// The key's current version is this delete marker (a versioned
        /// bucket); `None` when the key holds nothing at all.
        delete_marker: Option<crate::VersionInfo>,
    },
    #[error("version {version_id} of object {key:?} in bucket {bucket:?} does not exist")]
    VersionNotFound {
        bucket: String,
        key: String,
        version_id: String,
    },
    #[error("version {} of object {key:?} in bucket {bucket:?} is a delete marker, which has no data", marker.id)]
    IsDeleteMarker {
        bucket: String,
        key: String,
        marker: crate::VersionInfo,
    },
    #[error("the condition does not hold: {0}")]
    ConditionFailed(String),
    #[error("the object version is locked: {0}")]
    ObjectLocked(String),
    #[error("the bucket's state does not allow this: {0}")]
    InvalidBucketState(String),
    #[error("no multipart upload of {key:?} in bucket {bucket:?} has this upload id")]
    UploadNotFound { bucket: String, key: String },
    #[error("part {0} of the multipart upload was not uploaded")]
    PartNotFound(u32),
    #[error("the parts named are not the ones recorded now (uploaded again since they were listed?): {0}")]
    PartsChanged(String),
    #[error("part number {0} is not between 1 and 10000")]
    InvalidPartNumber(u32),
    #[error("a multipart upload is completed with at least one part, in ascending order")]
    InvalidPartOrder,
    #[error("the satellite refused the request ({code}): {message}")]
    Satellite { code: Code, message: String },
    #[error("the satellite sent an invalid answer: {0}")]
    Protocol(String),
    #[error("not enough storage nodes answered: {got} of the {needed} needed pieces arrived{}", last_error.as_ref().map(|e| format!(" (last failure: {e})")).unwrap_or_default())]
    NotEnoughPieces {
        got: usize,
        needed: usize,
        last_error: Option<String>,
    },
    #[error("not enough storage nodes stored the upload: {stored} of the {needed} needed pieces were stored{}", last_error.as_ref().map(|e| format!(" (last failure: {e})")).unwrap_or_default())]
    UploadFailed {
        stored: usize,
        needed: usize,
        last_error: Option<String>,
    },
    #[error("the range starting at byte {offset} lies past the end of the {size}-byte object")]
    InvalidRange { offset: u64, size: u64 },
    #[error("the access grant is invalid: {0}")]
    InvalidAccess(String),
    #[error("decryption failed: {0} (wrong passphrase, or the data was tampered with)")]
    Decryption(&'static str),
    #[error("the object's data is inconsistent: {0}")]
    Corrupt(String),
    #[error("cannot read the data to upload: {0}")]
    Read(std::io::Error),
    #[error("cannot write the downloaded data: {0}")]
    Write(std::io::Error),
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
}

/// What a satellite call was about, so that "not found" names the right thing.
pub(crate) enum Subject<'a> {
    /// A call with no bucket or object in it.
    Project,
    Bucket(&'a str),
    Object {
        bucket: &'a str,
        key: &'a str,
    },
    /// A multipart upload of an object.
    Upload {
        bucket: &'a str,
        key: &'a str,
    },
}

impl Error {
    /// Turns a satellite's gRPC status into a sentence about `subject`.
    pub(crate) fn from_status(status: tonic::Status, address: &str, subject: Subject<'_>) -> Error {
        let message = archipel_proto::status_reason(&status);
        let mentions_bucket = message.to_ascii_lowercase().contains("bucket");
        match (status.code(), subject) {
            (Code::Unauthenticated, _) => Error::Unauthenticated,
            (Code::PermissionDenied, _) => Error::PermissionDenied(
                message
                    .strip_prefix("the API key does not allow this: ")
                    .unwrap_or(&message)
                    .to_string(),
            ),
            (Code::Unavailable, _) => Error::SatelliteUnreachable {
                address: address.to_string(),
                reason: if message.is_empty() {
                    "the service is unavailable".into()
                } else {
                    message
                },
            },
            (Code::NotFound, Subject::Bucket(bucket)) => Error::BucketNotFound(bucket.to_string()),
            (Code::NotFound, Subject::Object { bucket, .. }) if mentions_bucket => {
                Error::BucketNotFound(bucket.to_string())
            }
            (Code::NotFound, Subject::Object { bucket, key }) => Error::ObjectNotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
                delete_marker: None,
            },
            (Code::NotFound, Subject::Upload { bucket, .. }) if mentions_bucket => {
                Error::BucketNotFound(bucket.to_string())
            }
            (Code::NotFound, Subject::Upload { bucket, key }) => Error::UploadNotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
            },
            (Code::Aborted, _) => Error::ConditionFailed(
                message
                    .strip_prefix("the condition of the request does not hold: ")
                    .unwrap_or(&message)
                    .to_string(),
            ),
            (Code::InvalidArgument, Subject::Bucket(_)) if message.contains("bucket name") => {
                Error::InvalidBucketName(
                    message
                        .strip_prefix("the request is invalid: ")
                        .unwrap_or(&message)
                        .to_string(),
                )
            }
            (Code::AlreadyExists, Subject::Bucket(bucket)) => {
                Error::BucketExists(bucket.to_string())
            }
            (Code::FailedPrecondition, Subject::Bucket(bucket))
                if message.to_ascii_lowercase().contains("empty") =>
            {
                Error::BucketNotEmpty(bucket.to_string())
            }
            (Code::FailedPrecondition, Subject::Bucket(_)) => Error::InvalidBucketState(
                message
                    .strip_prefix("the request cannot be done now: ")
                    .unwrap_or(&message)
                    .to_string(),
            ),
            (Code::FailedPrecondition, Subject::Object { .. })
                if message.starts_with("the object version is locked: ") =>
            {
                Error::ObjectLocked(
                    message
                        .strip_prefix("the object version is locked: ")
                        .unwrap_or(&message)
                        .to_string(),
                )
            }
            (code, _) => Error::Satellite { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_sentences() {
        let e = Error::from_status(
            tonic::Status::not_found("no such object"),
            "sat:1",
            Subject::Object {
                bucket: "b",
                key: "k/x",
            },
        );
        assert_eq!(e.to_string(), "object \"k/x\" not found in bucket \"b\"");
        let e = Error::from_status(
            tonic::Status::not_found("bucket missing"),
            "sat:1",
            Subject::Object {
                bucket: "b",
                key: "k",
            },
        );
        assert_eq!(e.to_string(), "bucket \"b\" does not exist");
        let e = Error::from_status(
            tonic::Status::unauthenticated("bad key"),
            "sat:1",
            Subject::Project,
        );
        assert_eq!(
            e.to_string(),
            "the satellite rejected the API key (unknown, damaged or revoked)"
        );
        let e = Error::from_status(
            tonic::Status::permission_denied("the API key does not allow this: it expired"),
            "sat:1",
            Subject::Project,
        );
        assert_eq!(
            e.to_string(),
            "the access grant does not allow this: it expired"
        );
        let e = Error::from_status(
            tonic::Status::unavailable("connection refused"),
            "sat:1",
            Subject::Project,
        );
        assert_eq!(
            e.to_string(),
            "cannot reach the satellite at sat:1: connection refused"
        );
        let e = Error::NotEnoughPieces {
            got: 3,
            needed: 4,
            last_error: None,
        };
        assert_eq!(
            e.to_string(),
            "not enough storage nodes answered: 3 of the 4 needed pieces arrived"
        );
        let e = Error::NotEnoughPieces {
            got: 3,
            needed: 4,
            last_error: Some("the node at n:1 stalled".into()),
        };
        assert_eq!(
            e.to_string(),
            "not enough storage nodes answered: 3 of the 4 needed pieces arrived \
             (last failure: the node at n:1 stalled)"
        );
    }
}
