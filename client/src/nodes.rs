//! Channels to storage nodes, kept for the life of a [`crate::Project`]: one
//! TLS connection per node (id and address), shared by every piece transfer
//! to that node, so that a small object pays no TCP and TLS handshakes and
//! many transfers to one node share one HTTP/2 connection.
//!
//! A channel is made by connecting at once, so that a node that cannot be
//! reached, or proves another identity, fails the transfer that asked with
//! the reason; only a channel that connected is kept. A kept channel
//! reconnects by itself after its connection breaks (a node restarting), and
//! the least recently used channels are closed once more than
//! [`MAX_POOLED_NODES`] nodes were reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use archipel_proto::pb::AddressedOrderLimit;
use archipel_proto::NodeId;
use tonic::transport::Channel;

/// Nodes a pool keeps connections to. Each idle connection costs a socket
/// and a few kilobytes; a client talks to a few hundred nodes at most at once.
const MAX_POOLED_NODES: usize = 1024;

/// Where a node is reached: the identity its certificate must prove, at an
/// address (a node that moves gets a new channel).
type NodeKey = (NodeId, String);

struct Pooled {
    channel: Channel,
    last_used: Instant,
}

/// The channels to storage nodes of one client; cheap to clone (shared).
#[derive(Clone, Default)]
pub(crate) struct NodePool {
    channels: Arc<Mutex<HashMap<NodeKey, Pooled>>>,
}

impl NodePool {
    fn locked(&self) -> MutexGuard<'_, HashMap<NodeKey, Pooled>> {
        // A map of channels stays valid whatever panicked while it was locked.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A channel to the node an order limit is addressed to, refusing any
    /// peer with another identity there.
    pub(crate) async fn channel(&self, limit: &AddressedOrderLimit) -> Result<Channel, String> {
        let order = limit.limit.as_ref().ok_or("the order limit is missing")?;
        let node = NodeId::from_bytes(&order.node_id).map_err(|e| e.to_string())?;
        let key = (node, limit.node_address.clone());
        if let Some(pooled) = self.locked().get_mut(&key) {
            pooled.last_used = Instant::now();
            return Ok(pooled.channel.clone());
        }
        let address = &limit.node_address;
        let channel = crate::metainfo::connect(address, node, None)
            .await
            .map_err(|e| format!("cannot reach node {node} at {address}: {e}"))?;
        let mut channels = self.locked();
        // Another transfer may have connected meanwhile: keep one channel.
        let pooled = channels.entry(key).or_insert(Pooled {
            channel,
            last_used: Instant::now(),
        });
        let channel = pooled.channel.clone();
        if channels.len() > MAX_POOLED_NODES {
            evict_least_recently_used(&mut channels);
        }
        Ok(channel)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locked().len()
    }
}

fn evict_least_recently_used(channels: &mut HashMap<NodeKey, Pooled>) {
    let oldest = channels
        .iter()
        .min_by_key(|(_, pooled)| pooled.last_used)
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        channels.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::pb::OrderLimit;

    fn limit_for(node: NodeId, address: &str) -> AddressedOrderLimit {
        AddressedOrderLimit {
            limit: Some(OrderLimit {
                node_id: node.to_vec(),
                ..Default::default()
            }),
            node_address: address.to_string(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_unreachable_node_is_named_and_not_kept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let node = NodeId([7; 32]);
        let pool = NodePool::default();
        let error = pool.channel(&limit_for(node, &address)).await.unwrap_err();
        assert!(error.contains(&node.to_string()), "{error}");
        assert!(error.contains(&address), "{error}");
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_least_recently_used_channel_goes_first() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _entered = runtime.enter();
        let endpoint = archipel_proto::transport::endpoint("127.0.0.1:1").unwrap();
        let started = Instant::now();
        let mut channels: HashMap<NodeKey, Pooled> = (0..3u8)
            .map(|i| {
                let pooled = Pooled {
                    channel: archipel_proto::transport::connect_lazy(&endpoint, NodeId([i; 32])),
                    last_used: started + std::time::Duration::from_secs(u64::from((i + 1) % 3)),
                };
                ((NodeId([i; 32]), "127.0.0.1:1".to_string()), pooled)
            })
            .collect();
        evict_least_recently_used(&mut channels);
        // Node 2 was used first (offset 0 s).
        assert!(!channels.contains_key(&(NodeId([2; 32]), "127.0.0.1:1".to_string())));
        assert_eq!(channels.len(), 2);
    }
}
