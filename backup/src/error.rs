//! The backup engine's one error type. Library errors keep their sentence;
//! repository problems say which object and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Network(#[from] archipel_client::Error),
    #[error("no backup repository at {0} (create one with `archipel backup init`)")]
    NoRepository(String),
    #[error("a backup repository already exists at {0}")]
    RepositoryExists(String),
    #[error("repository format {0} is newer than this program understands (1); upgrade archipel")]
    UnknownFormat(u32),
    #[error("wrong key: {0}")]
    WrongKey(String),
    #[error("the repository's {what} is damaged: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("no snapshot matches {0:?}")]
    NoSnapshot(String),
    #[error("{0:?} matches several snapshots; give more of its id")]
    AmbiguousSnapshot(String),
    #[error("{0}")]
    Locked(String),
    #[error("invalid pattern {pattern:?}: {detail}")]
    Pattern { pattern: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "interrupted; the repository is consistent and the next run goes on from what was stored"
    )]
    Interrupted,
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
