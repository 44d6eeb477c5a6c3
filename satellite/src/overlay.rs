//! The node registry's rules: the network a node's address belongs to, the
//! choice of nodes for a new segment's pieces, and how to reach a node.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use archipel_proto::{transport, NodeId};
use tonic::transport::Channel;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::metabase::Node;
use crate::{health, size_i64, Config, Metabase};

/// The /24 (IPv4) or /64 (IPv6) network of an IP, as text.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Dials a node that checked in back at the address it announced and
/// completes a TLS handshake pinned to its id (Storj's ping-back): only a node
/// that holds its key and is reachable where it says gets recorded. Returns
/// the IP reached, whose network is the node's for diversity, so a node
/// cannot pick its subnet by announcing someone else's address.
pub async fn ping_back(address: &str, id: NodeId) -> std::result::Result<IpAddr, String> {
    // 0.0.0.0 would reach the satellite's own host, not the node.
    if address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
    {
        return Err(format!(
            "{address} is not an address others can reach; announce a reachable one"
        ));
    }
    let stream = tokio::time::timeout(NODE_CONNECT_TIMEOUT, transport::dial(address, id))
        .await
        .map_err(|_| format!("no TLS handshake within {NODE_CONNECT_TIMEOUT:?}"))?
        .map_err(|e| archipel_proto::error_chain(&e))?;
    let reached = stream
        .get_ref()
        .0
        .get_ref()
        .peer_addr()
        .map_err(|e| format!("the connection has no peer address: {e}"))?;
    Ok(reached.ip())
}

/// Longest wait for a TCP connection and TLS handshake with a node.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the piecestore of node `id` at `address` over TLS, refusing
/// any peer with another identity; `request_timeout` bounds each call.
pub async fn connect_piecestore(
    address: &str,
    id: NodeId,
    request_timeout: Option<Duration>,
) -> std::result::Result<Channel, String> {
    let mut endpoint = transport::endpoint(address)
        .map_err(|e| e.to_string())?
        .connect_timeout(NODE_CONNECT_TIMEOUT);
    if let Some(timeout) = request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    transport::connect(&endpoint, id)
        .await
        .map_err(|e| format!("cannot connect: {}", archipel_proto::error_chain(&e)))
}

/// The nodes that may take a new piece of `piece_size` bytes at `now`
/// (online, room for it, in good standing), split into vetted and unvetted:
/// the candidates of both uploads and repairs.
pub async fn eligible_nodes(
    metabase: &Metabase,
    config: &Config,
    piece_size: u64,
    now: i64,
) -> crate::Result<(Vec<Node>, Vec<Node>)> {
    metabase
        .eligible_nodes_by_vetting(
            health::online_since(config.node_online_window, now),
            size_i64(piece_size),
            config.reputation.vetting_audits,
        )
        .await
}

/// Picks up to `count` nodes at random from `eligible`, at most one per network
/// when `distinct_subnets`.
pub fn select(
    rng: &mut impl Rng,
    eligible: Vec<Node>,
    count: usize,
    distinct_subnets: bool,
) -> Vec<Node> {
    let mut chosen = Vec::with_capacity(count);
    pick_into(
        rng,
        &mut chosen,
        &mut HashSet::new(),
        eligible,
        count,
        distinct_subnets,
    );
    chosen
}

/// Picks up to `count` nodes for a new segment: unvetted nodes get at most
/// `unvetted_share` of them (rounded down), vetted nodes the rest. Only when the
/// vetted nodes are too few do unvetted ones fill the gap: a young network has
/// no vetted node at all, and could otherwise store nothing and vet nobody.
/// `rng` decides the order (seeded in simulations).
pub fn select_vetted(
    rng: &mut impl Rng,
    vetted: Vec<Node>,
    mut unvetted: Vec<Node>,
    count: usize,
    unvetted_share: f64,
    distinct_subnets: bool,
) -> Vec<Node> {
    let share = (count as f64 * unvetted_share).floor() as usize;
    let mut chosen = Vec::with_capacity(count);
    let mut networks = HashSet::new();
    unvetted.shuffle(rng);
    let spare = unvetted.split_off(unvetted.len().min(share));
    pick_into(
        rng,
        &mut chosen,
        &mut networks,
        unvetted,
        share,
        distinct_subnets,
    );
    pick_into(
        rng,
        &mut chosen,
        &mut networks,
        vetted,
        count,
        distinct_subnets,
    );
    pick_into(
        rng,
        &mut chosen,
        &mut networks,
        spare,
        count,
        distinct_subnets,
    );
    chosen
}

/// Adds nodes of `candidates` in random order to `chosen` until it holds
/// `count`, skipping networks already used when `distinct_subnets`.
fn pick_into(
    rng: &mut impl Rng,
    chosen: &mut Vec<Node>,
    networks: &mut HashSet<String>,
    mut candidates: Vec<Node>,
    count: usize,
    distinct_subnets: bool,
) {
    candidates.shuffle(rng);
    for node in candidates {
        if chosen.len() >= count {
            break;
        }
        if distinct_subnets && !networks.insert(node.last_net.clone()) {
            continue;
        }
        chosen.push(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, net: &str) -> Node {
        Node {
            id: vec![id; 32],
            public_key: vec![id; 32],
            address: format!("{net}:1"),
            last_net: net.into(),
            capacity_bytes: 1,
            free_bytes: 1,
            version: String::new(),
            last_contact: 0,
            created_at: 0,
        }
    }

    #[test]
    fn networks() {
        assert_eq!(network_of("10.1.2.3".parse().unwrap()), "10.1.2.0/24");
        assert_eq!(
            network_of("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            network_of("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.0/24"
        );
    }

    #[test]
    fn selection_takes_one_node_per_network_when_asked() {
        let mut rng = rand::thread_rng();
        let nodes = vec![node(1, "a"), node(2, "a"), node(3, "b"), node(4, "c")];
        for _ in 0..20 {
            let chosen = select(&mut rng, nodes.clone(), 4, true);
            assert_eq!(chosen.len(), 3);
            let nets: HashSet<_> = chosen.iter().map(|n| n.last_net.clone()).collect();
            assert_eq!(nets.len(), 3);
        }
        assert_eq!(select(&mut rng, nodes.clone(), 4, false).len(), 4);
        assert_eq!(select(&mut rng, nodes, 2, false).len(), 2);
    }

    #[test]
    fn unvetted_nodes_get_their_share_and_fill_gaps() {
        let mut rng = rand::thread_rng();
        let vetted: Vec<Node> = (0..20).map(|i| node(i, &format!("v{i}"))).collect();
        let unvetted: Vec<Node> = (100..120).map(|i| node(i, &format!("u{i}"))).collect();
        let is_unvetted = |n: &Node| n.id[0] >= 100;
        for _ in 0..20 {
            let chosen = select_vetted(&mut rng, vetted.clone(), unvetted.clone(), 10, 0.2, true);
            assert_eq!(chosen.len(), 10);
            assert_eq!(chosen.iter().filter(|n| is_unvetted(n)).count(), 2);
            // 5 % of 10 rounds down to none.
            let chosen = select_vetted(&mut rng, vetted.clone(), unvetted.clone(), 10, 0.05, true);
            assert!(!chosen.iter().any(is_unvetted));
        }
        // Too few vetted nodes: unvetted ones make up the difference.
        let chosen = select_vetted(
            &mut rng,
            vetted[..3].to_vec(),
            unvetted.clone(),
            10,
            0.05,
            true,
        );
        assert_eq!(chosen.len(), 10);
        assert_eq!(chosen.iter().filter(|n| is_unvetted(n)).count(), 7);
        // Networks stay distinct across both kinds.
        let shared = vec![node(200, "v0")];
        let chosen = select_vetted(&mut rng, vetted[..1].to_vec(), shared, 2, 1.0, true);
        assert_eq!(chosen.len(), 1);
    }
}
