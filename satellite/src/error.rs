//! The satellite's error type and its mapping to gRPC status codes.

/// Everything the satellite can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database URL {0:?} is not supported: use sqlite://... or postgres://...")]
    UnsupportedDatabase(String),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("an I/O operation failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a protocol check failed: {0}")]
    Proto(#[from] archipel_proto::Error),
    #[error("the configuration is invalid: {0}")]
    Config(String),
    #[error("the API key is not valid")]
    Unauthenticated,
    #[error("the API key does not allow this: {0}")]
    PermissionDenied(String),
    #[error("the request is invalid: {0}")]
    InvalidArgument(String),
    #[error("{0} was not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("the request cannot be done now: {0}")]
    FailedPrecondition(String),
    #[error("the condition of the request does not hold: {0}")]
    ConditionFailed(String),
    #[error("the object version is locked: {0}")]
    ObjectLocked(String),
    #[error("not enough storage nodes are available: need {need}, have {have}")]
    NotEnoughNodes { need: usize, have: usize },
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("the repair failed: {0}")]
    Repair(String),
    #[error("a storage node could not be reached or refused: {0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Unauthenticated => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::InvalidArgument(_) | Error::Proto(_) => tonic::Status::invalid_argument(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) | Error::ObjectLocked(_) => {
                tonic::Status::failed_precondition(message)
            }
            Error::ConditionFailed(_) => tonic::Status::aborted(message),
            Error::NotEnoughNodes { .. } => tonic::Status::resource_exhausted(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Database(_)
            | Error::Migrate(_)
            | Error::UnsupportedDatabase(_)
            | Error::Transport(_)
            | Error::Io(_)
            | Error::Config(_)
            | Error::Corrupt(_)
            | Error::Repair(_) => {
                tracing::error!("internal error: {message}");
                tonic::Status::internal(message)
            }
        }
    }
}
