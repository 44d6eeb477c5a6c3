//! The satellite's order limits: every transfer it authorizes — uploads,
//! downloads, audits, deletes — gets its signed limit here, so serials,
//! creation and expiration times are made one way everywhere.

use std::time::Duration;

use archipel_proto::orders::{new_serial, sign_order_limit, unix_now};
use archipel_proto::pb::{OrderLimit, PieceAction};
use archipel_proto::{Identity, NodeId};

/// Signs order limits with the satellite's identity; cheap to clone.
#[derive(Clone, Debug)]
pub struct OrderSigner {
    identity: Identity,
    /// How long a limit stays valid after it is made.
    lifetime: Duration,
}

impl OrderSigner {
    pub fn new(identity: Identity, lifetime: Duration) -> Self {
        OrderSigner { identity, lifetime }
    }

    /// A limit for `action` on `piece_id` at `node`, of at most `limit` bytes,
    /// for a piece kept until `piece_expiration` (unix seconds; 0 = never).
    pub fn sign(
        &self,
        node: NodeId,
        piece_id: &[u8; 32],
        action: PieceAction,
        limit: i64,
        piece_expiration: i64,
    ) -> OrderLimit {
        let now = unix_now();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        sign_order_limit(
            &self.identity,
            OrderLimit {
                serial_number: new_serial(),
                node_id: node.to_vec(),
                piece_id: piece_id.to_vec(),
                action: action as i32,
                limit,
                piece_expiration,
                order_expiration: now.saturating_add(lifetime),
                order_creation: now,
                ..Default::default()
            },
        )
    }
}
