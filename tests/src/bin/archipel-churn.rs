//! `archipel-churn`: the seeded churn simulation of the durability loop (see
//! [`archipel_tests::churn`]); prints what happened, as a table or JSON.

use std::process::ExitCode;

use archipel_proto::Redundancy;
use archipel_tests::churn::{simulate, ChurnConfig};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "archipel-churn",
    about = "Simulate nodes joining, leaving and failing over days, with the satellite's real repair rules"
)]
struct Cli {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes at the start (departures are replaced by new nodes).
    #[arg(long, default_value_t = 300)]
    nodes: usize,
    /// /24 networks the nodes are spread over.
    #[arg(long, default_value_t = 250)]
    networks: usize,
    #[arg(long, default_value_t = 1000)]
    segments: usize,
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Simulated minutes per checker pass.
    #[arg(long, default_value_t = 60)]
    step_minutes: u32,
    /// k/repair/success/total[/share_size].
    #[arg(long, default_value = "29/35/80/110")]
    redundancy: Redundancy,
    #[arg(long, default_value_t = 0.02)]
    departure_per_day: f64,
    #[arg(long, default_value_t = 0.1)]
    outage_per_day: f64,
    #[arg(long, default_value_t = 6.0)]
    mean_outage_hours: f64,
    #[arg(long, default_value_t = 0.002)]
    disk_loss_per_day: f64,
    #[arg(long, default_value_t = 24.0)]
    audits_per_node_per_day: f64,
    /// Print the configuration and the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = ChurnConfig {
        seed: cli.seed,
        nodes: cli.nodes,
        networks: cli.networks,
        segments: cli.segments,
        days: cli.days,
        step_minutes: cli.step_minutes,
        redundancy: cli.redundancy,
        departure_per_day: cli.departure_per_day,
        outage_per_day: cli.outage_per_day,
        mean_outage_hours: cli.mean_outage_hours,
        disk_loss_per_day: cli.disk_loss_per_day,
        audits_per_node_per_day: cli.audits_per_node_per_day,
        ..ChurnConfig::default()
    };
    let report = simulate(config.clone());
    if cli.json {
        let out = serde_json::json!({ "config": config, "report": report });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!(
            "{} nodes over {} days, {} segments of {} MiB at {}",
            config.nodes,
            config.days,
            config.segments,
            config.segment_size >> 20,
            config.redundancy
        );
        println!(
            "  departures {}  joins {}  outages {}  disk losses {}",
            report.departures, report.joins, report.outages, report.disk_losses
        );
        println!(
            "  audits {}  disqualified {} (wrongly {})",
            report.audits, report.disqualified, report.wrongly_disqualified
        );
        println!(
            "  repairs {} (failed {})  pieces rebuilt {}  bad pieces met {}",
            report.repairs, report.repairs_failed, report.pieces_rebuilt, report.bad_pieces_met
        );
        println!(
            "  repair traffic {:.1} GiB down + {:.1} GiB up = {:.3} bytes per stored byte ({:.4} per day)",
            report.repair_download_bytes as f64 / f64::from(1u32 << 30),
            report.repair_upload_bytes as f64 / f64::from(1u32 << 30),
            report.repair_bytes_per_stored_byte,
            report.repair_bytes_per_stored_byte / f64::from(config.days.max(1))
        );
        println!(
            "  fewest healthy pieces seen {}  segment-hours unreadable {}  LOST SEGMENTS {}",
            report.min_healthy,
            report.unavailable_segment_steps * u64::from(config.step_minutes) / 60,
            report.lost_segments
        );
    }
    if report.lost_segments > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
