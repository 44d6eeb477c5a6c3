//! The protocol crate's error type.

/// Everything that can go wrong when checking or building protocol objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid id: expected 32 bytes, got {0}")]
    InvalidIdLength(usize),
    #[error("invalid id text {0:?}: expected 64 hex digits")]
    InvalidIdText(String),
    #[error("invalid public key")]
    InvalidPublicKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("the public key does not belong to id {0}")]
    KeyIdMismatch(crate::NodeId),
    #[error("order limit is for node {actual}, not this node ({expected})")]
    WrongNode {
        expected: crate::NodeId,
        actual: crate::NodeId,
    },
    #[error("order limit is from satellite {0}, which this node does not trust")]
    UntrustedSatellite(crate::NodeId),
    #[error("order limit expired")]
    OrderExpired,
    #[error("order limit is for {actual:?}, not {expected:?}")]
    WrongAction {
        expected: crate::pb::PieceAction,
        actual: crate::pb::PieceAction,
    },
    #[error("transfer of {requested} bytes exceeds the order limit of {limit} bytes")]
    OverLimit { requested: i64, limit: i64 },
    #[error("piece hash is for a different piece")]
    WrongPiece,
    #[error("invalid redundancy scheme: {0}")]
    InvalidRedundancy(String),
    #[error("erasure coding failed: {0}")]
    Erasure(String),
    #[error("hash tree verification failed: {0}")]
    HashTree(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("invalid identity file: {0}")]
    InvalidIdentityFile(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
