//! The Archipel protocol: everything two parties must agree on.
//!
//! - [`pb`]: gRPC services and messages generated from `proto/archipel.proto`;
//! - [`identity`]: Ed25519 identities and the ids derived from them;
//! - [`orders`]: signed order limits, piece hashes, check-ins; per-node piece ids;
//! - [`redundancy`]: the redundancy scheme and striping arithmetic;
//! - [`erasure`]: Reed-Solomon coding of stripe batches;
//! - [`hashtree`]: piece hash trees with verified range reads.

pub mod erasure;
mod error;
pub mod hashtree;
pub mod identity;
pub mod orders;
pub mod redundancy;
pub mod signals;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("archipel.v1");
}

pub use error::{Error, Result};
pub use identity::{Identity, NodeId, PeerKey};
pub use redundancy::Redundancy;
