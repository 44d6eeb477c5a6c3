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
    #[error("invalid node URL {0}")]
    InvalidNodeUrl(String),
    #[error("the peer is {found}, not the expected {expected}")]
    PeerIdentityMismatch {
        expected: crate::NodeId,
        found: crate::NodeId,
    },
    #[error("invalid retain filter: {0}")]
    InvalidFilter(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("invalid version id: {0}")]
    InvalidVersionId(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its chain of causes, since transport errors alone say little
/// ("transport error") and the reason is underneath.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// A gRPC status as a person reads it: its message, and for failures of the
/// connection (a refused peer identity, a timeout) the causes under it.
pub fn status_reason(status: &tonic::Status) -> String {
    with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}

fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
