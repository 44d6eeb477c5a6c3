//! `archipel-devnet`: a whole Archipel network on one machine for trying it out.
//!
//! Starts a satellite (SQLite) — or several independent ones with
//! `--satellites N` — and N storage nodes trusting every satellite, each as
//! its own OS process (this binary re-executed with `satellite …` or
//! `node …`, which run exactly the code of `archipel-satellite` and
//! `archipel-node`), on distinct loopback addresses — node `i` on
//! 127.0.`i+1`.1, so every node sits in its own /24 and the satellite's
//! one-piece-per-subnet rule stays on. Intervals are short (check-ins every
//! 2 s, offline after 10 s, repair checks every 2 s) so that a person sees
//! repair happen. Writes the first satellite's access grant to `DIR/access`
//! and its admin API's address and token to `DIR/admin.env` (satellite `i`'s
//! to `DIR/access-sat<i>` and `DIR/admin-sat<i>.env`), the S3 gateway's keys
//! (for the first satellite's grant) to `DIR/s3.env` and the layout to
//! `DIR/devnet.json`; started again on the same DIR it resumes with the same
//! identities, ports and data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use archipel_client::Access;
use archipel_proto::{Identity, NodeId, Redundancy};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(
    name = "archipel-devnet",
    version,
    about = "Run a whole Archipel network on this machine"
)]
struct Cli {
    /// Where the network keeps its state; reused when started again.
    #[arg(long, default_value = "devnet")]
    dir: PathBuf,
    /// Number of storage nodes (at least the scheme's total).
    #[arg(long, default_value_t = 14)]
    nodes: usize,
    /// Number of independent satellites (each its own metabase, identity
    /// and project); every node trusts them all.
    #[arg(long, default_value_t = 1)]
    satellites: usize,
    /// Redundancy scheme k/repair/success/total for new segments.
    #[arg(long, default_value = "4/6/8/10")]
    redundancy: Redundancy,
    #[command(subcommand)]
    role: Option<Role>,
}

/// The processes the devnet starts run these (hidden) subcommands.
#[derive(Subcommand)]
enum Role {
    /// Run `archipel-satellite` with the given arguments.
    #[command(hide = true)]
    Satellite {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run `archipel-node` with the given arguments.
    #[command(hide = true)]
    Node {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run `archipel-gateway` with the given arguments.
    #[command(hide = true)]
    Gateway {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
enum DevnetError {
    #[error("{0}")]
    Message(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] archipel_client::Error),
    #[error(transparent)]
    Satellite(#[from] archipel_satellite::Error),
    #[error(transparent)]
    Gateway(#[from] archipel_gateway::Error),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevnetError {
    let path = path.display().to_string();
    move |source| DevnetError::Io {
        action,
        path,
        source,
    }
}

/// `DIR/devnet.json`: what a person or a script needs to use the network.
#[derive(Serialize, Deserialize)]
struct Layout {
    /// The first satellite, whose grant `access_file` and the gateway use
    /// (also `satellites[0]`; scripts of a single satellite read it here).
    satellite: SatelliteEntry,
    /// Every satellite, each with its own access grant.
    satellites: Vec<SatelliteEntry>,
    nodes: Vec<NodeEntry>,
    access_file: PathBuf,
    gateway: GatewayEntry,
    redundancy: String,
}

/// The S3 gateway, with the key pair it accepts (also in `DIR/s3.env`).
#[derive(Serialize, Deserialize)]
struct GatewayEntry {
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
    region: String,
    /// Its Prometheus metrics (`http://HOST:PORT/metrics`), if configured.
    metrics: Option<String>,
    /// The base URL of its public links (`POST .../api/v1/access` registers
    /// a grant, see docs/SHARING.md), if they are on.
    #[serde(default)]
    linksharing: Option<String>,
    pid: Option<u32>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SatelliteEntry {
    id: NodeId,
    address: String,
    pid: Option<u32>,
    dir: PathBuf,
    database_url: String,
    /// The admin HTTP API (and `/metrics`); none if its config has no token.
    admin_address: Option<String>,
    admin_token: Option<String>,
    /// An access grant to its project.
    access_file: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct NodeEntry {
    id: NodeId,
    address: String,
    /// Its dashboard: `http://ADDRESS/` (JSON at `/api/node`, metrics at `/metrics`).
    dashboard: String,
    pid: Option<u32>,
    storage_dir: PathBuf,
}

/// How often nodes check in; the satellite counts them offline after 10 s.
const CHECK_IN_INTERVAL: Duration = Duration::from_secs(2);

/// A free port on `ip`, found by binding port 0.
fn free_port(ip: &str) -> Result<SocketAddr, DevnetError> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| DevnetError::Message(format!("cannot bind a port on {ip}: {e}")))?;
    listener
        .local_addr()
        .map_err(io_err("read the address of", Path::new(ip)))
}

fn write_file(path: &Path, text: &str) -> Result<(), DevnetError> {
    std::fs::write(path, text).map_err(io_err("write", path))
}

fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), DevnetError> {
    let text = toml::to_string(value)
        .map_err(|e| DevnetError::Message(format!("cannot encode {}: {e}", path.display())))?;
    write_file(path, &text)
}

/// The identity difficulty the devnet's satellite requires and its nodes
/// have: enough to exercise the check, little enough to start at once.
const DEVNET_IDENTITY_DIFFICULTY: u32 = 8;

/// Loads the identity at `path`, or creates one of `difficulty` there.
fn identity_at(path: &Path, difficulty: u32) -> Result<Identity, DevnetError> {
    if path.exists() {
        return Identity::load(path).map_err(|e| DevnetError::Message(e.to_string()));
    }
    let identity = Identity::generate_with_difficulty(difficulty);
    identity.save(path).map_err(io_err("write", path))?;
    Ok(identity)
}

/// Satellite `i`'s name: its directory in DIR and its log. The first keeps
/// the name of a devnet's only satellite, so that directories made before
/// there could be several keep working.
fn satellite_name(i: usize) -> String {
    match i {
        0 => "satellite".to_string(),
        i => format!("satellite{i}"),
    }
}

/// What satellite `i`'s files directly in DIR (access grant, passphrase, API
/// key, admin env) add to their names; nothing for the first, whose files
/// keep the names they had when a devnet had one satellite.
fn file_suffix(i: usize) -> String {
    match i {
        0 => String::new(),
        i => format!("-sat{i}"),
    }
}

/// Creates (or reuses) satellite `i`'s directory, identity and config.
fn prepare_satellite(
    dir: &Path,
    i: usize,
    redundancy: Redundancy,
) -> Result<SatelliteEntry, DevnetError> {
    let sat_dir = dir.join(satellite_name(i));
    std::fs::create_dir_all(&sat_dir).map_err(io_err("create", &sat_dir))?;
    let identity = identity_at(&sat_dir.join("identity"), 0)?;
    let config_path = sat_dir.join("config.toml");
    let config: archipel_satellite::Config = if config_path.exists() {
        let text = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
        toml::from_str(&text)
            .map_err(|e| DevnetError::Message(format!("{}: {e}", config_path.display())))?
    } else {
        let url = format!(
            "sqlite://{}?mode=rwc",
            sat_dir.join("satellite.db").display()
        );
        let mut config = archipel_satellite::Config::new(&url);
        config.identity_path = sat_dir.join("identity");
        config.listen_address = free_port("127.0.0.1")?.to_string();
        config.redundancy = redundancy;
        config.distinct_subnets = true;
        config.check_in_interval = CHECK_IN_INTERVAL;
        config.min_identity_difficulty = DEVNET_IDENTITY_DIFFICULTY;
        config.node_online_window = Duration::from_secs(10);
        config.audit.interval = Duration::from_secs(5);
        config.repair.checker_interval = Duration::from_secs(2);
        config.repair.interval = Duration::from_secs(1);
        config.repair.retry_after = Duration::from_secs(10);
        config.admin = archipel_satellite::admin::AdminConfig {
            listen_address: free_port("127.0.0.1")?.to_string(),
            token: archipel_satellite::admin::AdminConfig::random_token(),
        };
        write_toml(&config_path, &config)?;
        config
    };
    let admin = config.admin.enabled().then_some(config.admin);
    Ok(SatelliteEntry {
        id: identity.id(),
        address: config.listen_address.clone(),
        pid: None,
        dir: sat_dir,
        database_url: config.database_url,
        admin_address: admin.as_ref().map(|a| a.listen_address.clone()),
        admin_token: admin.map(|a| a.token),
        access_file: dir.join(format!("access{}", file_suffix(i))),
    })
}

/// Creates (or reuses) node `i`'s directory, identity and config; the node
/// trusts exactly `satellites`.
fn prepare_node(
    dir: &Path,
    i: usize,
    satellites: &[SatelliteEntry],
) -> Result<NodeEntry, DevnetError> {
    let node_dir = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&node_dir).map_err(io_err("create", &node_dir))?;
    let identity = identity_at(&node_dir.join("identity"), DEVNET_IDENTITY_DIFFICULTY)?;
    let config_path = node_dir.join("config.toml");
    let trusted: Vec<_> = satellites
        .iter()
        .map(|satellite| archipel_storagenode::TrustedSatellite {
            id: satellite.id,
            address: satellite.address.clone(),
        })
        .collect();
    let config: archipel_storagenode::Config = if config_path.exists() {
        let text = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
        let mut config: archipel_storagenode::Config = toml::from_str(&text)
            .map_err(|e| DevnetError::Message(format!("{}: {e}", config_path.display())))?;
        // A run with another --satellites than the last: the node trusts
        // the satellites of this run, which it checks in to.
        if config.satellites != trusted {
            config.satellites = trusted;
            write_toml(&config_path, &config)?;
        }
        config
    } else {
        let ip = format!("127.0.{}.1", (i + 1) % 256);
        let mut config = archipel_storagenode::Config::new(node_dir.join("storage"));
        config.identity_path = node_dir.join("identity");
        config.listen_address = free_port(&ip)?.to_string();
        config.dashboard_address = free_port(&ip)?.to_string();
        config.satellites = trusted;
        config.check_in_interval = CHECK_IN_INTERVAL;
        write_toml(&config_path, &config)?;
        config
    };
    Ok(NodeEntry {
        id: identity.id(),
        address: config.listen_address.clone(),
        dashboard: config.dashboard_address.clone(),
        pid: None,
        storage_dir: config.storage_dir,
    })
}

/// Creates (or reuses) the gateway's config: S3 keys for the devnet's access grant.
fn prepare_gateway(
    dir: &Path,
    access_file: &Path,
) -> Result<archipel_gateway::Config, DevnetError> {
    let gateway_dir = dir.join("gateway");
    let config_path = gateway_dir.join("config.toml");
    if config_path.exists() {
        let mut config = archipel_gateway::Config::load(&config_path)?;
        // A devnet made before links existed gets a port of its own for
        // them rather than the fixed default.
        let text = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
        if !text.contains("linksharing_address") {
            config.linksharing_address = Some(free_port("127.0.0.1")?);
            config.state_dir = None; // the default: the configuration's directory
            config.save(&config_path)?;
            config = archipel_gateway::Config::load(&config_path)?;
        }
        return Ok(config);
    }
    let (mut config, _) =
        archipel_gateway::config::setup(&gateway_dir, &access_file.to_string_lossy())?;
    config.listen = free_port("127.0.0.1")?;
    config.metrics_listen = Some(free_port("127.0.0.1")?);
    config.linksharing_address = Some(free_port("127.0.0.1")?);
    config.save(&config_path)?;
    Ok(archipel_gateway::Config::load(&config_path)?)
}

/// `DIR/s3.env`: the gateway's endpoint and keys for `source`.
fn write_s3_env(dir: &Path, gateway: &GatewayEntry) -> Result<PathBuf, DevnetError> {
    let path = dir.join("s3.env");
    let text = format!(
        "export AWS_ENDPOINT_URL={}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_REGION={}\n",
        gateway.endpoint, gateway.access_key_id, gateway.secret_access_key, gateway.region
    );
    write_file(&path, &text)?;
    Ok(path)
}

/// `DIR/admin.env` (`DIR/admin-sat<i>.env` for satellite `i` > 0): satellite
/// `i`'s admin API address and token, if it has one.
fn write_admin_env(
    dir: &Path,
    i: usize,
    satellite: &SatelliteEntry,
) -> Result<Option<PathBuf>, DevnetError> {
    let (Some(address), Some(token)) = (&satellite.admin_address, &satellite.admin_token) else {
        return Ok(None);
    };
    let path = dir.join(format!("admin{}.env", file_suffix(i)));
    let text = format!(
        "export ARCHIPEL_ADMIN_URL=http://{address}\nexport ARCHIPEL_ADMIN_TOKEN={token}\n"
    );
    write_file(&path, &text)?;
    Ok(Some(path))
}

/// Starts this binary again in a role, logging to `log`.
fn spawn(role: &str, args: &[&str], log: &Path) -> Result<Child, DevnetError> {
    let exe = std::env::current_exe().map_err(io_err("find", Path::new("this program")))?;
    let out = std::fs::File::create(log).map_err(io_err("create", log))?;
    let err = out.try_clone().map_err(io_err("open", log))?;
    Command::new(exe)
        .arg(role)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err("start a process for", Path::new(role)))
}

async fn wait_until_listening(address: &str, what: &str, log: &Path) -> Result<(), DevnetError> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevnetError::Message(format!(
        "{what} did not start listening on {address}; see {}",
        log.display()
    )))
}

/// Creates a project on satellite `i` and writes its access grant to the
/// satellite's `access_file` (with the passphrase and API key next to it),
/// unless an earlier run did.
async fn ensure_access(
    dir: &Path,
    i: usize,
    satellite: &SatelliteEntry,
) -> Result<(), DevnetError> {
    if satellite.access_file.exists() {
        return Ok(());
    }
    let api_key = archipel_satellite::create_project(&satellite.database_url, "devnet").await?;
    let passphrase = format!("devnet-{}", hex::encode(rand::random::<[u8; 8]>()));
    let suffix = file_suffix(i);
    write_file(
        &dir.join(format!("passphrase{suffix}")),
        &format!("{passphrase}\n"),
    )?;
    write_file(
        &dir.join(format!("api-key{suffix}")),
        &format!("{api_key}\n"),
    )?;
    let satellite_url = archipel_proto::NodeUrl {
        id: satellite.id,
        address: satellite.address.clone(),
    };
    let access = Access::request(&satellite_url, &api_key, &passphrase).await?;
    write_file(&satellite.access_file, &format!("{}\n", access.serialize()))
}

async fn wait_for_nodes(database_url: &str, count: usize, to: &str) -> Result<(), DevnetError> {
    for _ in 0..300 {
        if archipel_satellite::testing::node_count(database_url).await? >= count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DevnetError::Message(format!(
        "not all {count} storage nodes checked in to {to} within 30 s; see the node logs"
    )))
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

async fn devnet(cli: Cli) -> Result<(), DevnetError> {
    if cli.nodes < cli.redundancy.total as usize {
        return Err(DevnetError::Message(format!(
            "{} nodes cannot hold the {} pieces of the {} scheme; pass --nodes {} or more",
            cli.nodes, cli.redundancy.total, cli.redundancy, cli.redundancy.total
        )));
    }
    if cli.satellites == 0 {
        return Err(DevnetError::Message(
            "a network needs a satellite; pass --satellites 1 or more".into(),
        ));
    }
    let dir = &cli.dir;
    std::fs::create_dir_all(dir.join("logs")).map_err(io_err("create", dir))?;
    let dir = &std::fs::canonicalize(dir).map_err(io_err("find", dir))?;
    let mut satellites = (0..cli.satellites)
        .map(|i| prepare_satellite(dir, i, cli.redundancy))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = (0..cli.nodes)
        .map(|i| prepare_node(dir, i, &satellites))
        .collect::<Result<Vec<_>, _>>()?;

    let mut children = Vec::new();
    for (i, satellite) in satellites.iter_mut().enumerate() {
        let name = satellite_name(i);
        let log = dir.join(format!("logs/{name}.log"));
        let config = satellite.dir.join("config.toml");
        let child = spawn(
            "satellite",
            &["run", "--config", &config.to_string_lossy()],
            &log,
        )?;
        satellite.pid = child.id();
        children.push((name.clone(), child));
        wait_until_listening(&satellite.address, &name, &log).await?;
    }

    for (i, node) in nodes.iter_mut().enumerate() {
        let log = dir.join(format!("logs/node{i}.log"));
        let config = dir.join(format!("node{i}/config.toml"));
        let child = spawn(
            "node",
            &["run", "--config", &config.to_string_lossy()],
            &log,
        )?;
        node.pid = child.id();
        children.push((format!("node{i}"), child));
    }
    let mut admin_envs = Vec::with_capacity(satellites.len());
    for (i, satellite) in satellites.iter().enumerate() {
        wait_for_nodes(&satellite.database_url, nodes.len(), &satellite_name(i)).await?;
        ensure_access(dir, i, satellite).await?;
        admin_envs.push(write_admin_env(dir, i, satellite)?);
    }
    let access_file = satellites[0].access_file.clone();

    let gateway_config = prepare_gateway(dir, &access_file)?;
    let gateway_log = dir.join("logs/gateway.log");
    let gateway_config_path = dir.join("gateway/config.toml");
    let child = spawn(
        "gateway",
        &["run", "--config", &gateway_config_path.to_string_lossy()],
        &gateway_log,
    )?;
    let credential = gateway_config.credentials.first().ok_or_else(|| {
        DevnetError::Message(format!(
            "{} holds no S3 key pair",
            gateway_config_path.display()
        ))
    })?;
    let gateway = GatewayEntry {
        endpoint: format!("http://{}", gateway_config.listen),
        access_key_id: credential.access_key_id.clone(),
        secret_access_key: credential.secret_access_key.clone(),
        region: gateway_config.region.clone(),
        metrics: gateway_config
            .metrics_listen
            .map(|address| format!("http://{address}/metrics")),
        linksharing: gateway_config.links_url(),
        pid: child.id(),
    };
    children.push(("gateway".to_string(), child));
    wait_until_listening(
        &gateway_config.listen.to_string(),
        "the S3 gateway",
        &gateway_log,
    )
    .await?;
    let s3_env = write_s3_env(dir, &gateway)?;

    let layout = Layout {
        satellite: satellites[0].clone(),
        satellites,
        nodes,
        access_file: access_file.clone(),
        gateway,
        redundancy: cli.redundancy.to_string(),
    };
    let json =
        serde_json::to_string_pretty(&layout).map_err(|e| DevnetError::Message(e.to_string()))?;
    write_file(&dir.join("devnet.json"), &json)?;

    let satellites_text = match layout.satellites.len() {
        1 => format!("a satellite at {}", layout.satellite.address),
        n => format!("{n} satellites (the first at {})", layout.satellite.address),
    };
    println!(
        "Archipel devnet is running: {satellites_text} and {} storage nodes.",
        layout.nodes.len()
    );
    println!("State, logs and devnet.json are in {}.\n", dir.display());
    println!("Try, in another terminal:");
    println!("  export ARCHIPEL_ACCESS={}", access_file.display());
    println!("  cargo run --release --bin archipel -- mb ap://demo");
    println!("  cargo run --release --bin archipel -- cp ./some-file ap://demo/");
    println!("  cargo run --release --bin archipel -- ls ap://demo");
    println!("  cargo run --release --bin archipel -- stat ap://demo/some-file");
    println!("  cargo run --release --bin archipel -- cp ap://demo/some-file ./copy");
    if let Some(first) = layout.nodes.first() {
        println!(
            "Node dashboards (devnet.json lists them all): http://{}/ for node0; in a terminal:",
            first.dashboard
        );
        println!(
            "  cargo run --release --bin archipel-node -- info --config {}",
            dir.join("node0/config.toml").display()
        );
    }
    println!("Kill a few node processes (pids in devnet.json) and download again.");
    match &admin_envs[0] {
        Some(admin_env) => {
            println!("Within seconds the satellite sees them offline and repairs; watch it with:");
            println!("  source {}", admin_env.display());
            println!("  curl -H \"Authorization: Bearer $ARCHIPEL_ADMIN_TOKEN\" $ARCHIPEL_ADMIN_URL/api/nodes");
            println!("  curl -H \"Authorization: Bearer $ARCHIPEL_ADMIN_TOKEN\" $ARCHIPEL_ADMIN_URL/metrics");
        }
        None => println!("The satellite's admin API is off: its config has no [admin] token."),
    }
    println!(
        "\nThe S3 gateway is at {}; for the aws CLI:",
        layout.gateway.endpoint
    );
    println!("  source {}", s3_env.display());
    println!(
        "  aws s3 mb s3://photos && aws s3 cp ./some-file s3://photos/ && aws s3 ls s3://photos"
    );
    if let Some(metrics) = &layout.gateway.metrics {
        println!("How long each S3 operation takes: curl {metrics}");
    }
    if let Some(links) = &layout.gateway.linksharing {
        println!("Share objects by link (see docs/SHARING.md):");
        println!(
            "  curl -s {links}/api/v1/access -d \"{{\\\"access_grant\\\": \\\"$(cat {})\\\", \\\"public\\\": true}}\"",
            access_file.display()
        );
        println!("  then open {links}/s/<access_key_id>/photos/ in a browser");
    }
    if layout.satellites.len() > 1 {
        println!("\nThe other satellites, each with a project of its own on the same nodes:");
        let others = layout.satellites.iter().zip(&admin_envs).enumerate();
        for (i, (satellite, admin_env)) in others.skip(1) {
            println!(
                "  {} at {}: export ARCHIPEL_ACCESS={}",
                satellite_name(i),
                satellite.address,
                satellite.access_file.display()
            );
            if let Some(admin_env) = admin_env {
                println!("    its admin API: source {}", admin_env.display());
            }
        }
    }
    println!("Press Ctrl-C to stop the network.");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("listen for", Path::new("SIGTERM")))?;
    let mut running: Vec<(String, Child)> = children;
    loop {
        let exited = async {
            loop {
                for (i, (_, child)) in running.iter_mut().enumerate() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return (i, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            (i, status) = exited => {
                let (name, _) = running.remove(i);
                println!("{name} exited ({status}); the rest of the network keeps running.");
                if running.is_empty() {
                    return Ok(());
                }
            }
        }
    }
    println!("\nStopping the network…");
    for (_, child) in &running {
        terminate(child);
    }
    for (name, mut child) in running {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            eprintln!("{name} did not stop within 10 s; killing it");
            let _ = child.kill().await;
        }
    }
    println!("Stopped. Start again with the same --dir to resume.");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Satellite { args }) => {
            archipel_satellite::cli::main_with_args("archipel-satellite", args)
        }
        Some(Role::Gateway { args }) => archipel_gateway::cli::main_with_args(
            std::iter::once("archipel-gateway".to_string()).chain(args),
        ),
        Some(Role::Node { args }) => archipel_storagenode::cli::main_with_args(
            std::iter::once("archipel-node".to_string()).chain(args),
        ),
        None => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("archipel-devnet: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(devnet(cli)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("archipel-devnet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
