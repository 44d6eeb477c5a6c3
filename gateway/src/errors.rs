//! Client-library errors as S3 error codes, so S3 clients see the answers
//! they expect (`NoSuchKey`, `BucketNotEmpty`, ...) with our sentence as the
//! message.

use archipel_client::Error;
use s3s::{S3Error, S3ErrorCode};

/// Why an upload's body was refused: its MD5 differs from `Content-MD5`.
#[derive(Debug, thiserror::Error)]
#[error("the body's MD5 digest differs from the Content-MD5 header")]
pub(crate) struct DigestMismatch;

/// Why a reader wrapped around an upload's body refused it at its end (a
/// checksum that differs, a write condition that no longer holds): it travels
/// through the client library as the upload's read error, so the upload
/// aborts before it commits, and reaches the S3 client with its own code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BodyRefused {
    pub code: S3ErrorCode,
    pub message: String,
}

impl BodyRefused {
    pub(crate) fn into_io(code: S3ErrorCode, message: String) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            BodyRefused { code, message },
        )
    }
}

pub(crate) fn s3_error(error: Error) -> S3Error {
    if let Error::Read(io) = &error {
        if let Some(refused) = io.get_ref().and_then(|e| e.downcast_ref::<BodyRefused>()) {
            return S3Error::with_message(refused.code.clone(), refused.message.clone());
        }
    }
    let code = match &error {
        Error::BucketNotFound(_) => S3ErrorCode::NoSuchBucket,
        Error::ObjectNotFound { .. } => S3ErrorCode::NoSuchKey,
        Error::VersionNotFound { .. } => S3ErrorCode::NoSuchVersion,
        Error::IsDeleteMarker { .. } => S3ErrorCode::MethodNotAllowed,
        Error::ConditionFailed(_) => S3ErrorCode::PreconditionFailed,
        Error::UploadNotFound { .. } => S3ErrorCode::NoSuchUpload,
        Error::PartNotFound(_) | Error::PartsChanged(_) => S3ErrorCode::InvalidPart,
        Error::InvalidPartNumber(_) => S3ErrorCode::InvalidArgument,
        Error::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        Error::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        Error::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        Error::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        Error::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        Error::Unauthenticated | Error::PermissionDenied(_) | Error::ObjectLocked(_) => {
            S3ErrorCode::AccessDenied
        }
        Error::InvalidBucketState(_) => S3ErrorCode::InvalidBucketState,
        Error::SatelliteUnreachable { .. } | Error::NotEnoughPieces { .. } => {
            S3ErrorCode::ServiceUnavailable
        }
        Error::Satellite { code, .. } if *code == tonic::Code::InvalidArgument => {
            S3ErrorCode::InvalidArgument
        }
        Error::Read(io) if is_digest_mismatch(io) => S3ErrorCode::BadDigest,
        Error::Read(_) => S3ErrorCode::IncompleteBody,
        _ => S3ErrorCode::InternalError,
    };
    let mut answer = S3Error::with_message(code, error.to_string());
    match &error {
        Error::ObjectNotFound {
            delete_marker: Some(marker),
            ..
        }
        | Error::IsDeleteMarker { marker, .. } => {
            crate::versions::marker_headers(&mut answer, marker)
        }
        _ => {}
    }
    answer
}

fn is_digest_mismatch(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DigestMismatch>().is_some())
}
