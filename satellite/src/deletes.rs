//! Best-effort deletion of the pieces of removed segments: for every piece
//! that no segment lists any more (a server-side copy shares its source's
//! pieces), a DELETE order limit sent to its node in the background. Failures
//! are only logged; pieces left behind are garbage on their nodes.

use std::collections::HashMap;
use std::time::Duration;

use archipel_proto::orders::derive_piece_id;
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{PieceAction, PieceDeleteRequest};
use archipel_proto::NodeId;

use crate::metabase::RemovedSegment;
use crate::orders::OrderSigner;
use crate::Metabase;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct PieceDeleter {
    orders: OrderSigner,
    metabase: Metabase,
}

impl PieceDeleter {
    pub fn new(orders: OrderSigner, metabase: Metabase) -> Self {
        PieceDeleter { orders, metabase }
    }

    /// Starts deleting the pieces of `segments`; returns at once.
    pub fn delete(&self, segments: Vec<RemovedSegment>) {
        if segments.iter().all(|s| s.pieces.is_empty()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.delete_now(segments).await });
    }

    /// Deletes the pieces of `segments` that no segment lists, one task per
    /// node; returns how many pieces the nodes confirmed deleting.
    pub async fn delete_now(&self, segments: Vec<RemovedSegment>) -> usize {
        // Called once the removal is committed, so a copy made before it is
        // seen here, and one made after it could not read these pieces.
        let segments = match self.metabase.unlisted(segments).await {
            Ok(unlisted) => unlisted,
            Err(e) => {
                tracing::warn!("cannot tell which removed pieces are unlisted, keeping them: {e}");
                return 0;
            }
        };
        let mut by_node: HashMap<NodeId, Vec<[u8; 32]>> = HashMap::new();
        for segment in &segments {
            for piece in &segment.pieces {
                by_node.entry(piece.node).or_default().push(derive_piece_id(
                    &segment.root_piece_id,
                    &piece.node,
                    piece.num.into(),
                ));
            }
        }
        let tasks: Vec<_> = by_node
            .into_iter()
            .map(|(node, pieces)| {
                let this = self.clone();
                tokio::spawn(async move { this.delete_on_node(node, pieces).await })
            })
            .collect();
        let mut deleted = 0;
        for task in tasks {
            deleted += task.await.unwrap_or(0);
        }
        deleted
    }

    async fn delete_on_node(&self, node: NodeId, pieces: Vec<[u8; 32]>) -> usize {
        let address = match self.metabase.node(&node).await {
            Ok(Some(row)) => row.address,
            Ok(None) => {
                tracing::debug!("cannot delete pieces on unknown node {node}");
                return 0;
            }
            Err(e) => {
                tracing::warn!("cannot look up node {node} to delete pieces: {e}");
                return 0;
            }
        };
        let connected =
            crate::overlay::connect_piecestore(&address, node, Some(REQUEST_TIMEOUT)).await;
        let mut client = match connected {
            Ok(channel) => PiecestoreClient::new(channel),
            Err(e) => {
                tracing::info!("cannot reach node {node} at {address} to delete pieces: {e}");
                return 0;
            }
        };
        let mut deleted = 0;
        for piece_id in pieces {
            let limit = self.orders.sign(node, &piece_id, PieceAction::Delete, 0, 0);
            match client
                .delete(PieceDeleteRequest { limit: Some(limit) })
                .await
            {
                Ok(_) => deleted += 1,
                Err(e) => tracing::info!("node {node} did not delete a piece: {e}"),
            }
        }
        deleted
    }
}
