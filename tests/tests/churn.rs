//! The churn simulation: no data lost at the default rates on a small network,
//! the same seed gives the same history, and the loss counter does count when
//! churn outruns repair.

use archipel_proto::Redundancy;
use archipel_tests::churn::{simulate, ChurnConfig};

fn small() -> ChurnConfig {
    ChurnConfig {
        nodes: 120,
        networks: 100,
        segments: 150,
        days: 10,
        redundancy: Redundancy::new(8, 20, 25, 30, 256 << 10).expect("a valid scheme"),
        ..ChurnConfig::default()
    }
}

#[test]
fn default_churn_loses_nothing_and_repairs() {
    let report = simulate(small());
    assert_eq!(report.lost_segments, 0, "{report:#?}");
    assert_eq!(report.wrongly_disqualified, 0, "{report:#?}");
    assert!(report.departures > 0 && report.joins == report.departures);
    assert!(
        report.repairs > 0 && report.pieces_rebuilt > 0,
        "{report:#?}"
    );
    assert!(report.min_healthy >= 8, "{report:#?}");
    assert!(report.repair_bytes_per_stored_byte > 0.0);
}

#[test]
fn a_seed_fixes_the_history() {
    let config = small();
    let first = simulate(config.clone());
    assert_eq!(simulate(config.clone()), first);
    assert!(first.pieces_rebuilt > 0);
    let other = simulate(ChurnConfig { seed: 2, ..config });
    assert_ne!(other, first);
}

#[test]
fn churn_faster_than_repair_can_follow_loses_data() {
    let report = simulate(ChurnConfig {
        nodes: 40,
        networks: 40,
        segments: 50,
        days: 5,
        redundancy: Redundancy::new(2, 3, 4, 5, 256 << 10).expect("a valid scheme"),
        departure_per_day: 3.0,
        disk_loss_per_day: 0.5,
        ..ChurnConfig::default()
    });
    assert!(report.lost_segments > 0, "{report:#?}");
}
