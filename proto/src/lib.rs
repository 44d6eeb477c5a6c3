//! The Archipel protocol: everything two parties must agree on.
//!
//! - [`pb`]: gRPC services and messages generated from `proto/archipel.proto`;
//! - [`identity`]: Ed25519 identities and the ids derived from them;
//! - [`orders`]: signed order limits, piece hashes, check-ins, retain filters
//!   and trash restores; per-node piece ids;
//! - [`bloom`]: Bloom filters of piece ids for garbage collection;
//! - [`redundancy`]: the redundancy scheme and striping arithmetic;
//! - [`erasure`]: Reed-Solomon coding of stripe batches;
//! - [`hashtree`]: piece hash trees with verified range reads;
//! - [`multipart`]: segment positions of multipart uploads' parts;
//! - [`transport`]: TLS with pinned identities and server limits on every hop;
//! - [`daemon`]: logging and shutdown shared by the daemons;
//! - [`latency`]: request latency histograms and the layer that records gRPC calls;
//! - `hostile` (tests, and the `testing` feature): hostile inputs for the
//!   property tests of every decoder of network or disk input.

pub mod bloom;
pub mod daemon;
pub mod erasure;
mod error;
pub mod exposition;
pub mod hashtree;
#[cfg(any(test, feature = "testing"))]
pub mod hostile;
pub mod identity;
pub mod latency;
pub mod macaroon;
pub mod multipart;
pub mod orders;
pub mod redundancy;
pub mod transport;
pub mod version;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("archipel.v1");
}

pub use error::{error_chain, status_reason, Error, Result};

/// HTTP/2 flow-control window of one piece stream, for both ends of a piece
/// transfer: the 64 KiB default makes a sender wait a round trip every 64 KiB.
pub const PIECE_STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 flow-control window of a whole connection carrying piece streams.
pub const PIECE_CONNECTION_WINDOW: u32 = 8 << 20;
pub use identity::{Identity, NodeId, NodeUrl, PeerKey};
/// The identity difficulty (trailing zero bits of a node id) new satellites
/// require and `archipel-node setup` generates: about 2^20 key generations,
/// some seconds of CPU for one node, hours for thousands.
pub const DEFAULT_IDENTITY_DIFFICULTY: u32 = 20;
pub use redundancy::Redundancy;
