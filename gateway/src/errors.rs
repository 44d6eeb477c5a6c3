//! Client-library errors as S3 error codes, so S3 clients see the answers
//! they expect (`NoSuchKey`, `BucketNotEmpty`, ...) with our sentence as the
//! message.

use archipel_client::Error;
use s3s::{S3Error, S3ErrorCode};

/// Why an upload's body was refused: its MD5 differs from `Content-MD5`.
#[derive(Debug, thiserror::Error)]
#[error("the body's MD5 digest differs from the Content-MD5 header")]
pub(crate) struct DigestMismatch;

pub(crate) fn s3_error(error: Error) -> S3Error {
    let code = match &error {
        Error::BucketNotFound(_) => S3ErrorCode::NoSuchBucket,
        Error::ObjectNotFound { .. } => S3ErrorCode::NoSuchKey,
        Error::UploadNotFound { .. } => S3ErrorCode::NoSuchUpload,
        Error::PartNotFound(_) => S3ErrorCode::InvalidPart,
        Error::InvalidPartNumber(_) => S3ErrorCode::InvalidArgument,
        Error::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        Error::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        Error::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        Error::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        Error::Unauthenticated => S3ErrorCode::AccessDenied,
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
    S3Error::with_message(code, error.to_string())
}

fn is_digest_mismatch(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DigestMismatch>().is_some())
}
