//! The satellite's counters: audits by outcome, repairs, heal-on-read reports,
//! and the figures of the repair checker's last complete pass. Workers count
//! into one shared [`Metrics`]; the admin server renders them (with
//! [`Gauges`] read from the metabase) in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use archipel_proto::latency::Latencies;

use archipel_proto::exposition::Exposition;

use crate::health::NodeStatus;
use crate::reputation::AuditOutcome;

/// Counters shared by every worker of one satellite process.
#[derive(Debug, Default)]
pub struct Metrics {
    audit_success: AtomicU64,
    audit_failure: AtomicU64,
    audit_offline: AtomicU64,
    audit_unknown: AtomicU64,
    audit_contained: AtomicU64,
    pub repairs_succeeded: AtomicU64,
    pub repairs_failed: AtomicU64,
    /// Repairs whose result was dropped because the segment changed meanwhile
    /// (deleted, overwritten or repaired by someone else).
    pub repairs_superseded: AtomicU64,
    pub repaired_pieces: AtomicU64,
    pub repaired_bytes: AtomicU64,
    /// Bytes downloaded by repairs (k pieces per repaired segment).
    pub repair_download_bytes: AtomicU64,
    /// Bad or missing pieces reported by clients.
    pub bad_piece_reports: AtomicU64,
    /// Piece deletions nodes confirmed, and sends that failed (to be retried).
    pub pieces_deleted: AtomicU64,
    pub piece_deletes_failed: AtomicU64,
    /// Retain filters nodes applied, and those they did not take.
    pub retain_filters_sent: AtomicU64,
    pub retain_filters_failed: AtomicU64,
    /// What nodes reported moving to their trash on retain filters.
    pub retain_pieces_trashed: AtomicU64,
    pub retain_bytes_trashed: AtomicU64,
    checker: Mutex<Option<CheckerPass>>,
    /// How long each gRPC call took, by method.
    pub rpc_latencies: Arc<Latencies>,
}

/// What one complete pass of the repair checker over all segments found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckerPass {
    /// Unix seconds when the pass ended.
    pub finished_at: i64,
    pub duration_ms: u64,
    /// Remote segments looked at.
    pub segments: u64,
    /// Segments by their number of healthy pieces.
    pub healthy_pieces: BTreeMap<u16, u64>,
    /// Segments at or below their repair threshold (lost ones included).
    pub below_repair_threshold: u64,
    /// Segments with fewer healthy pieces than `k`.
    pub lost: u64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    /// Counts an audit that ended with `outcome`.
    pub fn audited(&self, outcome: AuditOutcome) {
        bump(match outcome {
            AuditOutcome::Success => &self.audit_success,
            AuditOutcome::Failure => &self.audit_failure,
            AuditOutcome::Offline => &self.audit_offline,
            AuditOutcome::Unknown => &self.audit_unknown,
        });
    }

    /// Counts an audit that left (or kept) its node in containment.
    pub fn contained(&self) {
        bump(&self.audit_contained);
    }

    /// Audits so far by outcome label: success, failure, offline, unknown, contained.
    pub fn audits(&self) -> [(&'static str, u64); 5] {
        [
            ("success", read(&self.audit_success)),
            ("failure", read(&self.audit_failure)),
            ("offline", read(&self.audit_offline)),
            ("unknown", read(&self.audit_unknown)),
            ("contained", read(&self.audit_contained)),
        ]
    }

    pub fn set_checker_pass(&self, pass: CheckerPass) {
        *self
            .checker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(pass);
    }

    /// The last complete checker pass, if one has finished in this process.
    pub fn checker_pass(&self) -> Option<CheckerPass> {
        self.checker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Figures read from the metabase when the metrics are scraped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Known nodes by status; statuses missing here count zero.
    pub nodes: BTreeMap<NodeStatus, u64>,
    /// Segments in the repair queue, lost ones included.
    pub repair_queue_length: u64,
    /// Queued segments with fewer healthy pieces than `k`.
    pub segments_lost: u64,
    /// Pieces waiting to be deleted from their nodes.
    pub deletion_queue_length: u64,
}

/// Every node status with its `status` label, healthiest first.
const NODE_STATUSES: [(NodeStatus, &str); 6] = [
    (NodeStatus::Healthy, "healthy"),
    (NodeStatus::Offline, "offline"),
    (NodeStatus::Suspended, "suspended"),
    (NodeStatus::Exiting, "exiting"),
    (NodeStatus::Disqualified, "disqualified"),
    (NodeStatus::Exited, "exited"),
];

impl Metrics {
    /// The counters, `gauges` and the last checker pass in the Prometheus
    /// text format. The checker's figures are left out until a pass has
    /// finished in this process: absent rather than a misleading zero.
    pub fn render_prometheus(&self, gauges: &Gauges) -> String {
        let mut out = Exposition::default();
        out.family("archipel_nodes", "gauge", "Known storage nodes by status.");
        for (status, label) in NODE_STATUSES {
            let count = gauges.nodes.get(&status).copied().unwrap_or(0);
            out.sample("archipel_nodes", &[("status", label)], count);
        }
        out.family(
            "archipel_audits_total",
            "counter",
            "Audits by outcome; contained counts audits that left their node contained.",
        );
        for (outcome, count) in self.audits() {
            out.sample("archipel_audits_total", &[("outcome", outcome)], count);
        }
        out.family(
            "archipel_repairs_total",
            "counter",
            "Segment repairs by result; superseded ones were dropped because the segment changed.",
        );
        for (result, counter) in [
            ("succeeded", &self.repairs_succeeded),
            ("failed", &self.repairs_failed),
            ("superseded", &self.repairs_superseded),
        ] {
            out.sample(
                "archipel_repairs_total",
                &[("result", result)],
                read(counter),
            );
        }
        out.single(
            "archipel_repaired_pieces_total",
            "counter",
            "Pieces stored by repairs.",
            read(&self.repaired_pieces),
        );
        out.single(
            "archipel_repaired_bytes_total",
            "counter",
            "Bytes of pieces stored by repairs.",
            read(&self.repaired_bytes),
        );
        out.single(
            "archipel_repair_download_bytes_total",
            "counter",
            "Bytes downloaded by repairs.",
            read(&self.repair_download_bytes),
        );
        out.single(
            "archipel_bad_piece_reports_total",
            "counter",
            "Bad or missing pieces reported by clients.",
            read(&self.bad_piece_reports),
        );
        out.family(
            "archipel_piece_deletes_total",
            "counter",
            "Piece deletions sent to nodes, by result; failed ones are retried.",
        );
        for (result, counter) in [
            ("deleted", &self.pieces_deleted),
            ("failed", &self.piece_deletes_failed),
        ] {
            out.sample(
                "archipel_piece_deletes_total",
                &[("result", result)],
                read(counter),
            );
        }
        out.single(
            "archipel_piece_deletion_queue_length",
            "gauge",
            "Pieces waiting to be deleted from their nodes.",
            gauges.deletion_queue_length,
        );
        out.family(
            "archipel_retain_filters_total",
            "counter",
            "Retain filters sent to nodes, by result.",
        );
        for (result, counter) in [
            ("applied", &self.retain_filters_sent),
            ("failed", &self.retain_filters_failed),
        ] {
            out.sample(
                "archipel_retain_filters_total",
                &[("result", result)],
                read(counter),
            );
        }
        out.single(
            "archipel_retain_trashed_pieces_total",
            "counter",
            "Pieces nodes moved to their trash on this satellite's retain filters.",
            read(&self.retain_pieces_trashed),
        );
        out.single(
            "archipel_retain_trashed_bytes_total",
            "counter",
            "Bytes of pieces nodes moved to their trash on this satellite's retain filters.",
            read(&self.retain_bytes_trashed),
        );
        out.single(
            "archipel_repair_queue_length",
            "gauge",
            "Segments waiting for repair, lost ones included.",
            gauges.repair_queue_length,
        );
        out.single(
            "archipel_segments_lost",
            "gauge",
            "Queued segments with fewer healthy pieces than needed to rebuild them.",
            gauges.segments_lost,
        );
        if let Some(pass) = self.checker_pass() {
            out.histogram(
                "archipel_segment_healthy_pieces",
                "Segments by healthy pieces in the last complete checker pass.",
                &pass.healthy_pieces,
            );
            out.single(
                "archipel_checker_last_pass_timestamp_seconds",
                "gauge",
                "When the last complete checker pass ended, in Unix seconds.",
                pass.finished_at,
            );
            out.single(
                "archipel_checker_segments",
                "gauge",
                "Remote segments the last complete checker pass looked at.",
                pass.segments,
            );
        }
        let mut text = out.finish();
        self.rpc_latencies.render(
            "archipel_satellite_rpc_duration_seconds",
            "method",
            "Time from a gRPC request's arrival to its response, by method.",
            &mut text,
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.audited(AuditOutcome::Success);
        metrics.audited(AuditOutcome::Success);
        metrics.audited(AuditOutcome::Offline);
        bump(&metrics.repairs_succeeded);
        add(&metrics.repaired_bytes, 4096);
        let gauges = Gauges {
            nodes: BTreeMap::from([(NodeStatus::Healthy, 12), (NodeStatus::Offline, 2)]),
            repair_queue_length: 3,
            segments_lost: 1,
            deletion_queue_length: 5,
        };
        metrics
            .rpc_latencies
            .record("BeginObject", std::time::Duration::from_millis(2));
        let text = metrics.render_prometheus(&gauges);
        for line in [
            "# HELP archipel_nodes Known storage nodes by status.",
            "# TYPE archipel_nodes gauge",
            "archipel_nodes{status=\"healthy\"} 12",
            "archipel_nodes{status=\"offline\"} 2",
            "archipel_nodes{status=\"disqualified\"} 0",
            "# TYPE archipel_audits_total counter",
            "archipel_audits_total{outcome=\"success\"} 2",
            "archipel_audits_total{outcome=\"offline\"} 1",
            "archipel_piece_deletion_queue_length 5",
            "archipel_audits_total{outcome=\"contained\"} 0",
            "archipel_repairs_total{result=\"succeeded\"} 1",
            "# TYPE archipel_satellite_rpc_duration_seconds histogram",
            "archipel_satellite_rpc_duration_seconds_bucket{method=\"BeginObject\",le=\"0.001\"} 0",
            "archipel_satellite_rpc_duration_seconds_bucket{method=\"BeginObject\",le=\"0.0025\"} 1",
            "archipel_satellite_rpc_duration_seconds_count{method=\"BeginObject\"} 1",
            "archipel_repairs_total{result=\"superseded\"} 0",
            "archipel_repaired_bytes_total 4096",
            "archipel_repair_queue_length 3",
            "archipel_segments_lost 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("archipel_checker"), "no pass yet:\n{text}");

        metrics.set_checker_pass(CheckerPass {
            finished_at: 1_700_000_000,
            segments: 6,
            healthy_pieces: BTreeMap::from([(3, 1), (8, 2), (10, 3)]),
            ..CheckerPass::default()
        });
        metrics
            .rpc_latencies
            .record("BeginObject", std::time::Duration::from_millis(2));
        let text = metrics.render_prometheus(&gauges);
        let histogram: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# HELP archipel_segment_healthy_pieces"))
            .take(9)
            .collect();
        assert_eq!(
            histogram,
            [
                "# HELP archipel_segment_healthy_pieces Segments by healthy pieces in the last complete checker pass.",
                "# TYPE archipel_segment_healthy_pieces histogram",
                "archipel_segment_healthy_pieces_bucket{le=\"0\"} 0",
                "archipel_segment_healthy_pieces_bucket{le=\"3\"} 1",
                "archipel_segment_healthy_pieces_bucket{le=\"8\"} 3",
                "archipel_segment_healthy_pieces_bucket{le=\"10\"} 6",
                "archipel_segment_healthy_pieces_bucket{le=\"+Inf\"} 6",
                "archipel_segment_healthy_pieces_sum 49",
                "archipel_segment_healthy_pieces_count 6",
            ]
        );
        assert!(text.contains("\narchipel_checker_last_pass_timestamp_seconds 1700000000\n"));
        assert!(text.contains("\narchipel_checker_segments 6\n"));
        // Every sample belongs to a family announced just before.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line:?} outside {family}");
            }
        }
    }
}
