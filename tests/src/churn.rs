//! A seeded churn simulation of the durability loop. Hundreds of virtual nodes
//! join, leave for good, drop offline for hours and lose their disks over
//! simulated days on a fast clock (one step per simulated checker pass), while
//! the satellite's own rules decide: segment health
//! ([`archipel_satellite::health`]), the checker's verdict, the repairer's
//! choice of piece numbers, of fresh nodes and of the resulting piece list
//! ([`archipel_satellite::repair`]), placement of new segments
//! ([`archipel_satellite::overlay`]) and the beta reputation that disqualifies
//! nodes failing audits ([`archipel_satellite::reputation`]).
//!
//! Bytes are not moved: a repair counts what it would download (`k` pieces)
//! and upload (the rebuilt pieces). A repair reads only from nodes that still
//! hold the data; a node that lost its disk answers with bad pieces, which the
//! repair drops and replaces, as the real repairer does after verification.
//! Data is lost for good when fewer than `k` of a segment's pieces remain on
//! nodes that still have them and are not disqualified.

use std::collections::{HashMap, HashSet};

use archipel_proto::{NodeId, Redundancy};
use archipel_satellite::health::{NetworkView, PieceHealth};
use archipel_satellite::metabase::{Node, NodeStanding, Piece};
use archipel_satellite::overlay;
use archipel_satellite::repair::checker::{verdict, Verdict};
use archipel_satellite::repair::repairer::{
    merge_pieces, plan_pieces, repair_sources, select_repair_nodes,
};
use archipel_satellite::reputation::{Beta, NodeHealth, ReputationConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What to simulate.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnConfig {
    pub seed: u64,
    /// Nodes at the start; departures are replaced by new nodes.
    pub nodes: usize,
    /// The /24 networks the nodes are spread over (some share one).
    pub networks: usize,
    pub segments: usize,
    pub days: u32,
    /// Simulated minutes per step: one checker pass and its repairs.
    pub step_minutes: u32,
    #[serde(serialize_with = "redundancy_text")]
    pub redundancy: Redundancy,
    /// Encrypted bytes per segment.
    pub segment_size: u64,
    /// Chance per node per day of leaving for good (without notice).
    pub departure_per_day: f64,
    /// Chance per online node per day of going offline for a while.
    pub outage_per_day: f64,
    /// Mean length of an outage (exponentially distributed).
    pub mean_outage_hours: f64,
    /// Chance per node per day of losing its disk (it stays online, serving
    /// nothing valid, until audits disqualify it).
    pub disk_loss_per_day: f64,
    /// Audits per node per day (only nodes holding pieces are audited).
    pub audits_per_node_per_day: f64,
    /// A node is offline for the checker this long after its last check-in.
    pub online_window_minutes: u32,
    pub distinct_subnets: bool,
    #[serde(skip)]
    pub reputation: ReputationConfig,
}

fn redundancy_text<S: serde::Serializer>(r: &Redundancy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.to_string())
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            seed: 1,
            nodes: 300,
            networks: 250,
            segments: 1000,
            days: 90,
            step_minutes: 60,
            redundancy: archipel_satellite::default_redundancy(),
            segment_size: 64 << 20,
            departure_per_day: 0.02,
            outage_per_day: 0.1,
            mean_outage_hours: 6.0,
            disk_loss_per_day: 0.002,
            audits_per_node_per_day: 24.0,
            online_window_minutes: 4 * 60,
            distinct_subnets: true,
            reputation: ReputationConfig::default(),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ChurnReport {
    pub steps: u64,
    pub departures: u64,
    pub joins: u64,
    pub outages: u64,
    pub disk_losses: u64,
    pub audits: u64,
    pub disqualified: u64,
    /// Disqualified nodes that had not lost their disk (must stay 0).
    pub wrongly_disqualified: u64,
    pub repairs: u64,
    /// Repairs that found fewer than `k` readable pieces at the time.
    pub repairs_failed: u64,
    pub pieces_rebuilt: u64,
    /// Bad pieces met by repairs (nodes that lost their disk, not yet disqualified).
    pub bad_pieces_met: u64,
    pub repair_download_bytes: u64,
    pub repair_upload_bytes: u64,
    /// Encrypted bytes stored by clients (segments × segment size).
    pub stored_bytes: u64,
    /// Repair traffic (down + up) per stored byte over the whole run.
    pub repair_bytes_per_stored_byte: f64,
    /// Segment-steps spent below `k` healthy pieces (unreadable for a while).
    pub unavailable_segment_steps: u64,
    /// The fewest healthy pieces any segment had at any step.
    pub min_healthy: u16,
    /// Segments lost for good.
    pub lost_segments: u64,
    pub nodes_at_end: usize,
}

struct SimNode {
    id: NodeId,
    network: String,
    /// Left for good: offline forever.
    gone: bool,
    /// Lost its disk: its pieces are worthless.
    disk_lost: bool,
    offline_until: Option<u64>,
    last_contact: i64,
    audit: Beta,
    audit_success: i64,
    audit_total: i64,
    disqualified_at: Option<i64>,
}

struct Simulation {
    config: ChurnConfig,
    rng: StdRng,
    nodes: Vec<SimNode>,
    index: HashMap<NodeId, usize>,
    segments: Vec<Vec<Piece>>,
    lost: Vec<bool>,
    report: ChurnReport,
    piece_size: u64,
}

/// Runs the simulation described by `config`.
pub fn simulate(config: ChurnConfig) -> ChurnReport {
    let mut sim = Simulation::new(config);
    let steps = u64::from(sim.config.days) * 24 * 60 / u64::from(sim.config.step_minutes.max(1));
    for step in 0..steps {
        sim.step(step);
    }
    sim.finish()
}

impl Simulation {
    fn new(config: ChurnConfig) -> Self {
        let piece_size = config.redundancy.piece_size(config.segment_size);
        let mut sim = Simulation {
            rng: StdRng::seed_from_u64(config.seed),
            nodes: Vec::new(),
            index: HashMap::new(),
            segments: Vec::with_capacity(config.segments),
            lost: vec![false; config.segments],
            report: ChurnReport {
                min_healthy: u16::MAX,
                stored_bytes: config.segment_size * config.segments as u64,
                ..Default::default()
            },
            piece_size,
            config,
        };
        for _ in 0..sim.config.nodes {
            sim.add_node(0, true);
        }
        let (vetted, unvetted) = sim.eligible(0);
        for _ in 0..sim.config.segments {
            let chosen = overlay::select_vetted(
                &mut sim.rng,
                vetted.clone(),
                unvetted.clone(),
                usize::from(sim.config.redundancy.total),
                sim.config.reputation.unvetted_share,
                sim.config.distinct_subnets,
            );
            let pieces = chosen
                .iter()
                .enumerate()
                .filter_map(|(num, node)| {
                    Some(Piece {
                        num: u16::try_from(num).ok()?,
                        node: NodeId::from_bytes(&node.id).ok()?,
                        root: [0; 32],
                    })
                })
                .collect();
            sim.segments.push(pieces);
        }
        sim
    }

    fn now(&self, step: u64) -> i64 {
        i64::try_from(step * u64::from(self.config.step_minutes) * 60).unwrap_or(i64::MAX)
    }

    /// A new node; `vetted` ones start with a history of successful audits.
    fn add_node(&mut self, now: i64, vetted: bool) {
        let n = self.nodes.len() as u64;
        let id = NodeId(
            *blake3::Hasher::new()
                .update(&self.config.seed.to_le_bytes())
                .update(&n.to_le_bytes())
                .finalize()
                .as_bytes(),
        );
        let network = format!(
            "10.{}.0.0/24",
            self.rng.gen_range(0..self.config.networks.max(1))
        );
        let mut audit = self.config.reputation.initial();
        let mut audit_success = 0;
        if vetted {
            for _ in 0..self.config.reputation.vetting_audits {
                audit = audit.updated(true, &self.config.reputation);
            }
            audit_success = i64::try_from(self.config.reputation.vetting_audits).unwrap_or(0);
        }
        self.index.insert(id, self.nodes.len());
        self.nodes.push(SimNode {
            id,
            network,
            gone: false,
            disk_lost: false,
            offline_until: None,
            last_contact: now,
            audit,
            audit_success,
            audit_total: audit_success,
            disqualified_at: None,
        });
    }

    /// Chance of an event with `per_day` daily probability within one step.
    fn chance(&mut self, per_day: f64) -> bool {
        let per_step = per_day * f64::from(self.config.step_minutes) / (24.0 * 60.0);
        self.rng.gen_bool(per_step.clamp(0.0, 1.0))
    }

    fn step(&mut self, step: u64) {
        let now = self.now(step);
        self.report.steps += 1;
        self.churn(step, now);
        self.audit(now);
        self.check_and_repair(now);
    }

    /// Departures (replaced by newcomers), outages and their ends, disk losses.
    fn churn(&mut self, step: u64, now: i64) {
        let mut departed = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].gone {
                continue;
            }
            if self.chance(self.config.departure_per_day) {
                self.nodes[i].gone = true;
                departed += 1;
                continue;
            }
            match self.nodes[i].offline_until {
                Some(until) if until <= step => self.nodes[i].offline_until = None,
                Some(_) => {}
                None => {
                    if self.chance(self.config.outage_per_day) {
                        let hours =
                            -self.rng.gen::<f64>().max(1e-12).ln() * self.config.mean_outage_hours;
                        let steps = (hours * 60.0 / f64::from(self.config.step_minutes)).ceil();
                        self.nodes[i].offline_until = Some(step + (steps as u64).max(1));
                        self.report.outages += 1;
                    }
                }
            }
            if !self.nodes[i].disk_lost && self.chance(self.config.disk_loss_per_day) {
                self.nodes[i].disk_lost = true;
                self.report.disk_losses += 1;
            }
            if self.nodes[i].offline_until.is_none() {
                self.nodes[i].last_contact = now;
            }
        }
        self.report.departures += departed;
        for _ in 0..departed {
            self.add_node(now, false);
            self.report.joins += 1;
        }
    }

    /// Audits online nodes that hold pieces; a node that lost its disk fails.
    fn audit(&mut self, now: i64) {
        let mut holding: HashSet<NodeId> = HashSet::new();
        for pieces in &self.segments {
            holding.extend(pieces.iter().map(|p| p.node));
        }
        let per_step = self.config.audits_per_node_per_day * f64::from(self.config.step_minutes)
            / (24.0 * 60.0);
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.gone
                || node.offline_until.is_some()
                || node.disqualified_at.is_some()
                || !holding.contains(&node.id)
            {
                continue;
            }
            let mut audits = per_step.floor() as u64;
            if self
                .rng
                .gen_bool((per_step - per_step.floor()).clamp(0.0, 1.0))
            {
                audits += 1;
            }
            for _ in 0..audits {
                let node = &mut self.nodes[i];
                let good = !node.disk_lost;
                node.audit = node.audit.updated(good, &self.config.reputation);
                node.audit_total += 1;
                if good {
                    node.audit_success += 1;
                }
                self.report.audits += 1;
                let health = NodeHealth {
                    audit: node.audit,
                    unknown: self.config.reputation.initial(),
                    audit_total: node.audit_total,
                    audit_success: node.audit_success,
                    vetted_at: None,
                    disqualified_at: None,
                    suspended_at: None,
                    last_contact_success: now,
                    last_contact_failure: 0,
                };
                if health.verdict(&self.config.reputation).disqualify {
                    node.disqualified_at = Some(now);
                    self.report.disqualified += 1;
                    if !node.disk_lost {
                        self.report.wrongly_disqualified += 1;
                    }
                    break;
                }
            }
        }
    }

    /// The registry as the satellite sees it.
    fn view(&self, now: i64) -> NetworkView {
        let standings: Vec<NodeStanding> = self
            .nodes
            .iter()
            .map(|n| NodeStanding {
                id: n.id,
                last_net: n.network.clone(),
                last_contact: n.last_contact,
                disqualified_at: n.disqualified_at,
                suspended_at: None,
                exiting_at: None,
                exited_at: None,
            })
            .collect();
        let online_since = now - i64::from(self.config.online_window_minutes) * 60;
        NetworkView::from_standings(&standings, online_since, self.config.distinct_subnets)
    }

    /// Nodes a segment's pieces may go to, as registry rows: vetted, unvetted.
    fn eligible(&self, now: i64) -> (Vec<Node>, Vec<Node>) {
        let online_since = now - i64::from(self.config.online_window_minutes) * 60;
        let needed = i64::try_from(self.config.reputation.vetting_audits).unwrap_or(i64::MAX);
        self.nodes
            .iter()
            .filter(|n| n.disqualified_at.is_none() && n.last_contact >= online_since)
            .map(|n| {
                (
                    Node {
                        id: n.id.to_vec(),
                        public_key: Vec::new(),
                        address: String::new(),
                        last_net: n.network.clone(),
                        capacity_bytes: i64::MAX,
                        free_bytes: i64::MAX,
                        version: String::new(),
                        last_contact: n.last_contact,
                        created_at: 0,
                    },
                    n.audit_success >= needed,
                )
            })
            .fold(
                (Vec::new(), Vec::new()),
                |(mut vetted, mut unvetted), (node, ok)| {
                    if ok {
                        vetted.push(node);
                    } else {
                        unvetted.push(node);
                    }
                    (vetted, unvetted)
                },
            )
    }

    /// Whether the node of `piece` would serve it right now, and correctly.
    fn readable(&self, piece: &Piece) -> Option<bool> {
        let node = &self.nodes[*self.index.get(&piece.node)?];
        if node.gone || node.offline_until.is_some() || node.disqualified_at.is_some() {
            return None;
        }
        Some(!node.disk_lost)
    }

    /// Whether the data of `piece` still exists on a node the satellite uses.
    fn survives(&self, piece: &Piece) -> bool {
        self.index.get(&piece.node).is_some_and(|&i| {
            let node = &self.nodes[i];
            !node.gone && !node.disk_lost && node.disqualified_at.is_none()
        })
    }

    /// One checker pass, and a repair of every segment it queues.
    fn check_and_repair(&mut self, now: i64) {
        let view = self.view(now);
        let (vetted, unvetted) = self.eligible(now);
        let redundancy = self.config.redundancy;
        for s in 0..self.segments.len() {
            if self.lost[s] {
                continue;
            }
            let survivors = self.segments[s].iter().filter(|p| self.survives(p)).count();
            if survivors < usize::from(redundancy.required) {
                self.lost[s] = true;
                self.report.lost_segments += 1;
                continue;
            }
            let health = view.classify(&self.segments[s]);
            let healthy = health.healthy_count();
            self.report.min_healthy = self.report.min_healthy.min(healthy);
            match verdict(healthy, &redundancy) {
                Verdict::Healthy => {}
                Verdict::Lost => {
                    self.report.unavailable_segment_steps += 1;
                    self.repair(s, &view, &health, &vetted, &unvetted);
                }
                Verdict::NeedsRepair => self.repair(s, &view, &health, &vetted, &unvetted),
            }
        }
    }

    /// What the repairer does to segment `s`, with the transfers counted.
    fn repair(
        &mut self,
        s: usize,
        view: &NetworkView,
        health: &PieceHealth,
        vetted: &[Node],
        unvetted: &[Node],
    ) {
        let redundancy = self.config.redundancy;
        let k = usize::from(redundancy.required);
        self.report.repairs += 1;
        // Sources in the repairer's order: healthy, then other reachable pieces.
        let mut good = 0;
        let mut bad = HashSet::new();
        for piece in repair_sources(view, health) {
            if good == k {
                break;
            }
            match self.readable(&piece) {
                Some(true) => good += 1,
                Some(false) => {
                    bad.insert(piece.num);
                    self.report.bad_pieces_met += 1;
                }
                None => {}
            }
        }
        if good < k {
            self.report.repairs_failed += 1;
            return;
        }
        let plan = plan_pieces(health, &bad, &redundancy);
        let holders: HashSet<NodeId> = self.segments[s].iter().map(|p| p.node).collect();
        let taken_networks = view.networks_of(&health.healthy);
        let targets = select_repair_nodes(
            &mut self.rng,
            vetted.to_vec(),
            unvetted.to_vec(),
            &holders,
            &taken_networks,
            plan.len(),
            self.config.reputation.unvetted_share,
            self.config.distinct_subnets,
        );
        let stored: Vec<Piece> = targets
            .iter()
            .zip(&plan)
            .filter_map(|(node, &num)| {
                Some(Piece {
                    num,
                    node: NodeId::from_bytes(&node.id).ok()?,
                    root: [0; 32],
                })
            })
            .collect();
        if stored.is_empty() {
            self.report.repairs_failed += 1;
            return;
        }
        let (pieces, _replaced) = merge_pieces(health, &bad, &stored);
        self.segments[s] = pieces;
        self.report.pieces_rebuilt += stored.len() as u64;
        self.report.repair_download_bytes += self.piece_size * k as u64;
        self.report.repair_upload_bytes += self.piece_size * stored.len() as u64;
    }

    fn finish(mut self) -> ChurnReport {
        self.report.repair_bytes_per_stored_byte =
            (self.report.repair_download_bytes + self.report.repair_upload_bytes) as f64
                / self.report.stored_bytes.max(1) as f64;
        self.report.nodes_at_end = self.nodes.iter().filter(|n| !n.gone).count();
        self.report
    }
}
