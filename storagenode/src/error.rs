//! The storage node's one error type, and how each error reads to a gRPC peer.

use std::path::PathBuf;

use archipel_proto::NodeId;
use tonic::{Code, Status};

/// Everything the storage node can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the storage directory {path} is in use by another process (is the node running?): {reason}")]
    StorageInUse { path: PathBuf, reason: String },
    #[error("the node's database failed: {0}")]
    Database(#[source] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the disk is full ({context}): {source}")]
    DiskFull {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the node's dashboard at {address} (is the node running, with this dashboard_address?): {reason}")]
    DashboardUnreachable { address: String, reason: String },
    #[error("the node refused the request: {0}")]
    NodeRefused(String),
    #[error("the node takes no uploads because its disk failed a write probe: {0}")]
    DiskUnhealthy(String),
    #[error("not enough space: the upload may need {requested} bytes but only {available} are available")]
    NotEnoughSpace { requested: u64, available: u64 },
    #[error("piece {0} is not stored on this node")]
    PieceNotFound(String),
    #[error("piece {0} has expired")]
    PieceExpired(String),
    #[error("piece {0} is already stored on this node, and a stored piece is never replaced")]
    PieceExists(String),
    #[error("piece file {path} is damaged: {reason}")]
    DamagedPiece { path: PathBuf, reason: String },
    #[error("the requested range {offset}..{end} is outside the piece of {piece_size} bytes")]
    RangeOutOfBounds {
        offset: u64,
        end: u64,
        piece_size: u64,
    },
    #[error("the order limit was refused: {0}")]
    Order(#[from] archipel_proto::Error),
    #[error("this node does not trust satellite {0}")]
    UntrustedSatellite(NodeId),
    #[error("the public key of satellite {0} is not known yet because the node has not reached it; try again later")]
    SatelliteKeyUnknown(NodeId),
    #[error("the order limit with serial number {0} was already used")]
    ReplayedSerial(String),
    #[error("the log of used order serials {path} is unreadable ({reason}); move it away to start the node, knowing that order limits still valid could then be honoured once more")]
    SerialLog { path: PathBuf, reason: String },
    #[error(
        "check-in with satellite {satellite} failed: {}",
        archipel_proto::status_reason(status)
    )]
    CheckIn {
        satellite: NodeId,
        #[source]
        status: tonic::Status,
    },
    #[error("satellite {satellite} presented a public key that is not its own: {source}")]
    SatelliteKey {
        satellite: NodeId,
        #[source]
        source: archipel_proto::Error,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the upload ended before its last message (done = true); nothing was stored")]
    UploadIncomplete,
    #[error("the upload sent nothing for {0:?} and was abandoned")]
    UploadIdle(std::time::Duration),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read the configuration file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse the configuration file {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot load the node identity from {path}: {source}")]
    Identity {
        path: PathBuf,
        #[source]
        source: archipel_proto::Error,
    },
    #[error("an identity already exists at {0}; refusing to overwrite it")]
    IdentityExists(PathBuf),
    #[error("the gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("cannot serve TLS with the node's identity: {0}")]
    Tls(#[source] archipel_proto::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the node was doing, telling a full disk
    /// apart because the peer should see "no space" rather than an internal error.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        move |source| {
            let context = context.into();
            match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    Error::DiskFull { context, source }
                }
                _ => Error::Io { context, source },
            }
        }
    }

    fn code(&self) -> Code {
        use archipel_proto::Error as P;
        match self {
            Error::DiskFull { .. } | Error::NotEnoughSpace { .. } => Code::ResourceExhausted,
            Error::Database(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => {
                Code::ResourceExhausted
            }
            Error::PieceNotFound(_) | Error::PieceExpired(_) => Code::NotFound,
            Error::PieceExists(_) => Code::AlreadyExists,
            Error::DamagedPiece { .. } => Code::DataLoss,
            Error::RangeOutOfBounds { .. } => Code::OutOfRange,
            Error::UntrustedSatellite(_) | Error::ReplayedSerial(_) => Code::PermissionDenied,
            Error::SatelliteKeyUnknown(_) | Error::DiskUnhealthy(_) => Code::Unavailable,
            Error::InvalidRequest(_) | Error::UploadIncomplete => Code::InvalidArgument,
            Error::UploadIdle(_) => Code::DeadlineExceeded,
            Error::Order(inner) => match inner {
                P::BadSignature
                | P::KeyIdMismatch(_)
                | P::WrongNode { .. }
                | P::UntrustedSatellite(_)
                | P::OrderExpired
                | P::WrongAction { .. }
                | P::OverLimit { .. } => Code::PermissionDenied,
                P::InvalidIdLength(_)
                | P::InvalidIdText(_)
                | P::InvalidPublicKey
                | P::MissingField(_) => Code::InvalidArgument,
                _ => Code::Internal,
            },
            Error::Io { .. }
            | Error::Database(_)
            | Error::StorageInUse { .. }
            | Error::SerialLog { .. }
            | Error::CheckIn { .. }
            | Error::DashboardUnreachable { .. }
            | Error::NodeRefused(_)
            | Error::SatelliteKey { .. }
            | Error::Config(_)
            | Error::ConfigRead { .. }
            | Error::ConfigParse { .. }
            | Error::Identity { .. }
            | Error::IdentityExists(_)
            | Error::Server(_)
            | Error::Tls(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_reads_as_no_space_and_other_io_as_internal() {
        let full =
            Error::io("writing piece data")(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(full, Error::DiskFull { .. }));
        let status = Status::from(full);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("disk is full"),
            "{}",
            status.message()
        );

        let other = Error::io("writing piece data")(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        assert_eq!(Status::from(other).code(), Code::Internal);
    }

    #[test]
    fn order_problems_map_to_permission_or_argument_errors() {
        let denied = Error::from(archipel_proto::Error::OrderExpired);
        assert_eq!(Status::from(denied).code(), Code::PermissionDenied);
        let malformed = Error::from(archipel_proto::Error::InvalidIdLength(3));
        assert_eq!(Status::from(malformed).code(), Code::InvalidArgument);
    }
}
