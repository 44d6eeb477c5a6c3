//! `archipel-bench`: end-to-end throughput and client memory of a whole
//! Archipel network on one machine.
//!
//! Starts a [`Planet`] in this process (satellite and storage nodes), then runs
//! the client in a child process — this binary re-executed with the hidden
//! `client` subcommand and the planet's access grant in `ARCHIPEL_BENCH_ACCESS`
//! — so that the client's peak memory is measured apart from the network's.
//! The child uploads a generated object (streamed, never held in memory), then
//! downloads it into a sink that hashes it; the BLAKE3 hashes of what went up
//! and what came down must match. A last download runs with some nodes stopped.
//!
//! `archipel-bench gateway` compares the S3 gateway with the `archipel` CLI and
//! the client library instead (see the `gateway` module); `archipel-bench
//! backup` compares `archipel backup` with restic through the gateway (see
//! the `backup` module).

mod backup;
mod gateway;
mod harness;
mod latency;
mod stages;

use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use archipel_client::{Access, Project, UploadOptions};
use archipel_proto::Redundancy;
use archipel_tests::{Backend, Planet, PlanetConfig};
use clap::{Parser, Subcommand};
use nix::sys::resource::{getrusage, UsageWho};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const ACCESS_ENV: &str = "ARCHIPEL_BENCH_ACCESS";
const BUCKET: &str = "bench";
const KEY: &str = "object";
/// The generator repeats one pseudo-random block, stamped with its index.
const PATTERN: usize = 1 << 20;

#[derive(Parser)]
#[command(
    name = "archipel-bench",
    about = "Measure upload and download throughput and client memory on an in-process network"
)]
struct Cli {
    /// Object size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Nodes stopped for the degraded download (client mode).
    #[arg(long, default_value_t = 4)]
    stop: usize,
    /// Keep the metabase in PostgreSQL (`ARCHIPEL_TEST_POSTGRES`) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// The satellite's inline threshold in bytes [default: the satellite's default].
    #[arg(long)]
    inline_threshold: Option<u64>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Compare the S3 gateway with the `archipel` CLI and the client library:
    /// a `--size` object up and down, then many small objects.
    Gateway(gateway::Args),
    /// Compare `archipel backup` with restic through the S3 gateway: a real
    /// tree backed up, backed up again after changing 1 % of its files, and
    /// restored.
    Backup(backup::Args),
    /// Run one client operation against the access grant in `ARCHIPEL_BENCH_ACCESS`.
    #[command(hide = true)]
    Client {
        #[arg(value_enum)]
        operation: Operation,
        #[arg(long)]
        size: u64,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Operation {
    Upload,
    Download,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("the test network failed: {0}")]
    Planet(#[from] archipel_tests::PlanetError),
    #[error("the client failed: {0}")]
    Client(#[from] archipel_client::Error),
    #[error("the client process failed: {0}")]
    Child(String),
    #[error("cannot run the client process: {0}")]
    Io(#[from] std::io::Error),
    #[error("the access grant is missing from {ACCESS_ENV}")]
    NoAccess,
    #[error("the gateway failed: {0}")]
    Gateway(#[from] archipel_gateway::Error),
    #[error("an S3 request failed: {0}")]
    S3(String),
    #[error("the downloaded object differs from the uploaded one ({0} vs {1})")]
    Mismatch(String, String),
    #[error("a restore differs from the tree backed up: {0}")]
    Restore(String),
}

/// What a client run reports on its stdout, as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct ClientReport {
    bytes: u64,
    seconds: f64,
    blake3: String,
    /// The process's peak resident set (`VmHWM`) in KiB, read just before exit.
    peak_rss_kib: u64,
    /// User plus system CPU seconds the process used.
    cpu_seconds: f64,
}

/// User plus system CPU seconds used so far by `who`.
fn cpu_seconds(who: UsageWho) -> f64 {
    getrusage(who).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// An endless-looking but reproducible stream of `remaining` bytes that hashes
/// what it hands out.
struct Generator {
    pattern: Vec<u8>,
    block: Vec<u8>,
    offset: u64,
    remaining: u64,
    hasher: blake3::Hasher,
}

impl Generator {
    fn new(size: u64) -> Self {
        let pattern = archipel_tests::test_data(PATTERN, 1);
        Generator {
            block: pattern.clone(),
            pattern,
            offset: 0,
            remaining: size,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl AsyncRead for Generator {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let at = (this.offset % PATTERN as u64) as usize;
        if at == 0 {
            // A new block: the pattern with its index in front, so no two
            // blocks of the object are alike.
            this.block.copy_from_slice(&this.pattern);
            this.block[..8].copy_from_slice(&(this.offset / PATTERN as u64).to_le_bytes());
        }
        let n = (PATTERN - at)
            .min(buf.remaining())
            .min(this.remaining.min(usize::MAX as u64) as usize);
        let chunk = &this.block[at..at + n];
        this.hasher.update(chunk);
        buf.put_slice(chunk);
        this.offset += n as u64;
        this.remaining -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Hashes and counts what is written to it.
#[derive(Default)]
struct HashSink {
    hasher: blake3::Hasher,
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The peak resident set (`VmHWM`) in KiB from a `/proc/PID/status` file.
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    std::fs::read_to_string(status_file)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
}

/// This process's peak resident set in KiB.
fn peak_rss_kib() -> u64 {
    vm_hwm_kib("/proc/self/status").unwrap_or(0)
}

async fn run_client(operation: Operation, size: u64) -> Result<ClientReport, BenchError> {
    let access = std::env::var(ACCESS_ENV).map_err(|_| BenchError::NoAccess)?;
    let project = Project::open(&Access::parse(&access)?).await?;
    let started = Instant::now();
    let (bytes, hash) = match operation {
        Operation::Upload => {
            let mut source = Generator::new(size);
            let info = project
                .upload(BUCKET, KEY, &mut source, UploadOptions::default())
                .await?;
            (info.size, source.hasher.finalize())
        }
        Operation::Download => {
            let mut sink = HashSink::default();
            let bytes = project.download(BUCKET, KEY, None, &mut sink, None).await?;
            (bytes, sink.hasher.finalize())
        }
    };
    Ok(ClientReport {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        blake3: hash.to_hex().to_string(),
        peak_rss_kib: peak_rss_kib(),
        cpu_seconds: cpu_seconds(UsageWho::RUSAGE_SELF),
    })
}

/// One client run in a child process.
struct Run {
    report: ClientReport,
    /// From spawn to exit.
    wall: Duration,
    /// CPU seconds this process (the network) used meanwhile.
    network_cpu: f64,
    /// `RUSAGE_CHILDREN`'s peak RSS so far, in KiB.
    children_max_rss_kib: u64,
}

async fn child(access: &str, operation: Operation, size: u64) -> Result<Run, BenchError> {
    let started = Instant::now();
    let cpu_before = cpu_seconds(UsageWho::RUSAGE_SELF);
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["client", &format!("{operation:?}").to_lowercase()])
        .args(["--size", &size.to_string()])
        .env(ACCESS_ENV, access)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    let wall = started.elapsed();
    let network_cpu = cpu_seconds(UsageWho::RUSAGE_SELF) - cpu_before;
    if !output.status.success() {
        return Err(BenchError::Child(format!(
            "{operation:?} exited with {}",
            output.status
        )));
    }
    let report: ClientReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| BenchError::Child(format!("{operation:?} reported nonsense: {e}")))?;
    let children_max_rss_kib = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|usage| usage.max_rss() as u64)
        .unwrap_or(0);
    Ok(Run {
        report,
        wall,
        network_cpu,
        children_max_rss_kib,
    })
}

fn row(name: &str, run: &Run) {
    let report = &run.report;
    println!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
        report.bytes as f64 / 1e9,
        report.seconds,
        run.wall.as_secs_f64(),
        report.bytes as f64 / report.seconds / 1e6,
        report.peak_rss_kib as f64 / 1024.0,
        run.children_max_rss_kib as f64 / 1024.0,
        report.cpu_seconds,
        run.network_cpu,
    );
}

/// The network both modes measure, with the bench bucket made.
async fn start_planet(cli: &Cli) -> Result<Planet, BenchError> {
    let planet = Planet::start(PlanetConfig {
        nodes: cli.nodes,
        backend: if cli.postgres {
            Backend::Postgres
        } else {
            Backend::Sqlite
        },
        redundancy: Redundancy::new(4, 6, 8, 10, 4096).expect("a valid scheme"),
        max_segment_size: 64 << 20,
        inline_threshold: cli
            .inline_threshold
            .unwrap_or(archipel_satellite::DEFAULT_INLINE_THRESHOLD),
        ..Default::default()
    })
    .await?;
    planet.project().await?.create_bucket(BUCKET).await?;
    Ok(planet)
}

/// What the tables' first line says about the network.
fn setting(cli: &Cli) -> String {
    format!(
        "{} nodes, 4/6/8/10 × 4096, 64 MiB segments, inline up to {} B, {}",
        cli.nodes,
        cli.inline_threshold
            .unwrap_or(archipel_satellite::DEFAULT_INLINE_THRESHOLD),
        if cli.postgres { "PostgreSQL" } else { "SQLite" }
    )
}

async fn bench(cli: &Cli) -> Result<(), BenchError> {
    let mut planet = start_planet(cli).await?;
    let access = planet.access().serialize();

    let upload = child(&access, Operation::Upload, cli.size).await?;
    let download = child(&access, Operation::Download, cli.size).await?;
    let stopped = cli.stop.min(cli.nodes);
    for i in 0..stopped {
        planet.stop_node(i).await?;
    }
    let degraded = child(&access, Operation::Download, cli.size).await?;
    for run in [&download, &degraded] {
        if run.report.blake3 != upload.report.blake3 {
            return Err(BenchError::Mismatch(
                upload.report.blake3.clone(),
                run.report.blake3.clone(),
            ));
        }
    }
    println!("{}", setting(cli));
    println!(
        "| run | GB | s (transfer) | s (process) | MB/s | client peak RSS MiB | RUSAGE_CHILDREN max MiB | client CPU s | network CPU s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    row("upload", &upload);
    row("download", &download);
    row(&format!("download, {stopped} nodes stopped"), &degraded);
    println!(
        "downloads match the upload (BLAKE3 {}); this process's peak RSS: {:.0} MiB",
        upload.report.blake3,
        peak_rss_kib() as f64 / 1024.0
    );
    planet.shutdown().await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("archipel-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.role {
        Some(Role::Gateway(args)) => runtime.block_on(async {
            let stages = args.stages.then(stages::install);
            let planet = start_planet(&cli).await?;
            gateway::bench(&planet, cli.size, args, &setting(&cli), stages).await?;
            planet.shutdown().await?;
            Ok(())
        }),
        Some(Role::Backup(args)) => runtime.block_on(async {
            let planet = start_planet(&cli).await?;
            backup::bench(&planet, args, &setting(&cli)).await?;
            planet.shutdown().await?;
            Ok(())
        }),
        Some(Role::Client { operation, size }) => runtime
            .block_on(run_client(*operation, *size))
            .and_then(|report| {
                serde_json::to_string(&report)
                    .map(|line| println!("{line}"))
                    .map_err(|e| BenchError::Child(e.to_string()))
            }),
        None => runtime.block_on(bench(&cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
