//! Segment health: which of a segment's pieces still count, given what the
//! satellite knows of their nodes right now. One set of rules for the repair
//! checker, the repairer, the piece counts clients see in `stat`, and the
//! churn simulation.
//!
//! A piece is *healthy* when its node is online (checked in within the online
//! window), not disqualified, not suspended, not exiting, and — when pieces must
//! sit in distinct subnets — no healthier piece of the segment already counts
//! for the node's subnet: pieces clumped in one network fail together.
//! Pieces on disqualified or unknown nodes are *lost*: never read, dropped
//! from the piece list at the next repair. Everything else is *retrievable*
//! but not healthy (offline nodes may come back; suspended, exiting and
//! clumped ones still serve reads).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use archipel_proto::NodeId;

use crate::metabase::{NodeStanding, Piece};
use crate::{Config, Metabase, Result};

/// Where a node stands, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Disqualified, or not in the registry at all: its pieces are lost.
    Disqualified,
    /// Its graceful exit ended (either way): its pieces count as lost.
    Exited,
    Offline,
    Suspended,
    Exiting,
    Healthy,
}

impl NodeStatus {
    /// The status of a registry row at `now`, with `online_since` the oldest
    /// check-in that still counts as online.
    pub fn of(standing: &NodeStanding, online_since: i64) -> NodeStatus {
        if standing.disqualified_at.is_some() {
            NodeStatus::Disqualified
        } else if standing.exited_at.is_some() {
            NodeStatus::Exited
        } else if standing.last_contact < online_since {
            NodeStatus::Offline
        } else if standing.suspended_at.is_some() {
            NodeStatus::Suspended
        } else if standing.exiting_at.is_some() {
            NodeStatus::Exiting
        } else {
            NodeStatus::Healthy
        }
    }
}

/// A snapshot of every node's status and network.
#[derive(Clone, Debug, Default)]
pub struct NetworkView {
    nodes: HashMap<NodeId, (NodeStatus, String)>,
    distinct_subnets: bool,
}

/// A segment's pieces sorted by what they are still good for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PieceHealth {
    /// Count towards the segment's health.
    pub healthy: Vec<Piece>,
    /// Not healthy, but their nodes are known and not disqualified.
    pub retrievable: Vec<Piece>,
    /// On disqualified or unknown nodes.
    pub lost: Vec<Piece>,
}

impl PieceHealth {
    pub fn healthy_count(&self) -> u16 {
        u16::try_from(self.healthy.len()).unwrap_or(u16::MAX)
    }
}

impl NetworkView {
    pub fn new(distinct_subnets: bool) -> Self {
        NetworkView {
            nodes: HashMap::new(),
            distinct_subnets,
        }
    }

    /// The view of the registry rows `standings` at `online_since`.
    pub fn from_standings(
        standings: &[NodeStanding],
        online_since: i64,
        distinct_subnets: bool,
    ) -> Self {
        let mut view = NetworkView::new(distinct_subnets);
        for standing in standings {
            view.set(
                standing.id,
                NodeStatus::of(standing, online_since),
                standing.last_net.clone(),
            );
        }
        view
    }

    pub fn set(&mut self, node: NodeId, status: NodeStatus, network: String) {
        self.nodes.insert(node, (status, network));
    }

    pub fn status(&self, node: &NodeId) -> NodeStatus {
        self.nodes
            .get(node)
            .map_or(NodeStatus::Disqualified, |(status, _)| *status)
    }

    pub fn network(&self, node: &NodeId) -> Option<&str> {
        self.nodes.get(node).map(|(_, net)| net.as_str())
    }

    /// The networks `pieces` occupy, when pieces must sit in distinct
    /// networks (else none): where new pieces of their segment may not go.
    pub fn networks_of(&self, pieces: &[Piece]) -> HashSet<String> {
        if !self.distinct_subnets {
            return HashSet::new();
        }
        pieces
            .iter()
            .filter_map(|p| self.network(&p.node))
            .map(str::to_string)
            .collect()
    }

    /// Sorts `pieces` into healthy, retrievable and lost.
    pub fn classify(&self, pieces: &[Piece]) -> PieceHealth {
        let mut health = PieceHealth::default();
        let mut networks = HashSet::new();
        for piece in pieces {
            match self.nodes.get(&piece.node) {
                None | Some((NodeStatus::Disqualified | NodeStatus::Exited, _)) => {
                    health.lost.push(*piece)
                }
                Some((NodeStatus::Healthy, net))
                    if !self.distinct_subnets || networks.insert(net.as_str()) =>
                {
                    health.healthy.push(*piece)
                }
                Some(_) => health.retrievable.push(*piece),
            }
        }
        health
    }
}

/// The oldest check-in that still counts as online at `now` with an online
/// window of `window`.
pub fn online_since(window: Duration, now: i64) -> i64 {
    now.saturating_sub(i64::try_from(window.as_secs()).unwrap_or(i64::MAX))
}

/// The registry as it stands at `now`, under `config`'s online window and
/// subnet rule.
pub async fn current_view(metabase: &Metabase, config: &Config, now: i64) -> Result<NetworkView> {
    Ok(NetworkView::from_standings(
        &metabase.node_standings().await?,
        online_since(config.node_online_window, now),
        config.distinct_subnets,
    ))
}

/// The part of the registry that `pieces` live on, at `now`: enough to
/// classify them, without reading every node.
pub async fn view_of<'a>(
    metabase: &Metabase,
    config: &Config,
    now: i64,
    pieces: impl IntoIterator<Item = &'a Piece>,
) -> Result<NetworkView> {
    let ids: Vec<NodeId> = pieces
        .into_iter()
        .map(|p| p.node)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    Ok(NetworkView::from_standings(
        &metabase.node_standings_of(&ids).await?,
        online_since(config.node_online_window, now),
        config.distinct_subnets,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(num: u16, node: u8) -> Piece {
        Piece {
            num,
            node: NodeId([node; 32]),
            root: [num as u8; 32],
        }
    }

    fn standing(node: u8, net: &str) -> NodeStanding {
        NodeStanding {
            id: NodeId([node; 32]),
            last_net: net.into(),
            last_contact: 100,
            disqualified_at: None,
            suspended_at: None,
            exiting_at: None,
            exited_at: None,
        }
    }

    #[test]
    fn status_follows_the_worst_fact() {
        let mut s = standing(1, "a");
        assert_eq!(NodeStatus::of(&s, 50), NodeStatus::Healthy);
        assert_eq!(NodeStatus::of(&s, 101), NodeStatus::Offline);
        s.exiting_at = Some(1);
        assert_eq!(NodeStatus::of(&s, 50), NodeStatus::Exiting);
        s.exited_at = Some(2);
        assert_eq!(NodeStatus::of(&s, 101), NodeStatus::Exited);
        s.exited_at = None;
        s.suspended_at = Some(1);
        assert_eq!(NodeStatus::of(&s, 50), NodeStatus::Suspended);
        assert_eq!(NodeStatus::of(&s, 101), NodeStatus::Offline);
        s.disqualified_at = Some(1);
        assert_eq!(NodeStatus::of(&s, 50), NodeStatus::Disqualified);
    }

    #[test]
    fn pieces_are_sorted_by_their_nodes() {
        let mut standings: Vec<NodeStanding> =
            (1..=6).map(|i| standing(i, &format!("net{i}"))).collect();
        standings[1].last_contact = 10; // node 2 offline
        standings[2].disqualified_at = Some(5); // node 3 disqualified
        standings[3].last_net = "net1".into(); // node 4 shares node 1's network
        standings[4].exiting_at = Some(5); // node 5 exiting
        let pieces: Vec<Piece> = (1..=7).map(|i| piece(u16::from(i), i)).collect();

        let view = NetworkView::from_standings(&standings, 50, true);
        let health = view.classify(&pieces);
        let nums = |ps: &[Piece]| ps.iter().map(|p| p.num).collect::<Vec<_>>();
        assert_eq!(nums(&health.healthy), [1, 6]);
        assert_eq!(nums(&health.retrievable), [2, 4, 5]);
        // Node 7 is not in the registry at all.
        assert_eq!(nums(&health.lost), [3, 7]);
        assert_eq!(health.healthy_count(), 2);

        let view = NetworkView::from_standings(&standings, 50, false);
        assert_eq!(nums(&view.classify(&pieces).healthy), [1, 4, 6]);
    }

    #[test]
    fn an_offline_piece_does_not_take_its_networks_slot() {
        let mut standings = vec![standing(1, "a"), standing(2, "a")];
        standings[0].last_contact = 0;
        let view = NetworkView::from_standings(&standings, 50, true);
        let health = view.classify(&[piece(0, 1), piece(1, 2)]);
        assert_eq!(health.healthy, [piece(1, 2)]);
    }
}
