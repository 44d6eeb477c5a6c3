//! `archipel-node`: sets up, runs and describes a storage node. A thin layer
//! over the library: argument parsing, files, signals and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{parse_byte_size, DEFAULT_DASHBOARD_ADDRESS, DEFAULT_LISTEN_ADDRESS};
use crate::{Config, Error, PieceStore, TrustedSatellite};
use archipel_proto::Identity;
use clap::{Parser, Subcommand};

/// An Archipel storage node: offers disk space to satellites.
#[derive(Parser)]
#[command(name = "archipel-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a node directory: a new identity and a config file.
    Setup {
        /// Directory for the node (identity, config.toml, storage/).
        #[arg(long)]
        dir: PathBuf,
        /// host:port the piecestore listens on.
        #[arg(long, default_value = DEFAULT_LISTEN_ADDRESS)]
        listen: String,
        /// host:port announced to satellites, if not the listen address.
        #[arg(long)]
        advertise: Option<String>,
        /// host:port of the dashboard (keep it on loopback); "" turns it off.
        #[arg(long, default_value = DEFAULT_DASHBOARD_ADDRESS)]
        dashboard: String,
        /// Disk space offered, e.g. 500GB or 2TiB.
        #[arg(long, value_parser = parse_size)]
        allocated: Option<u64>,
        /// A trusted satellite as ID@HOST:PORT; may be repeated.
        #[arg(long = "satellite", value_parser = parse_satellite)]
        satellites: Vec<TrustedSatellite>,
        /// Trailing zero bits the new node id must have: a proof of work
        /// satellites ask for (each bit doubles the time to create it).
        #[arg(long, default_value_t = archipel_proto::DEFAULT_IDENTITY_DIFFICULTY)]
        difficulty: u32,
    },
    /// Runs the node until Ctrl-C or SIGTERM.
    Run {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Overrides the listen address of the config file.
        #[arg(long, env = "ARCHIPEL_NODE_LISTEN")]
        listen: Option<String>,
        /// Overrides the advertised address of the config file.
        #[arg(long, env = "ARCHIPEL_NODE_ADVERTISE")]
        advertise: Option<String>,
        /// Overrides the dashboard address of the config file.
        #[arg(long, env = "ARCHIPEL_NODE_DASHBOARD")]
        dashboard: Option<String>,
    },
    /// Shows the running node's dashboard in the terminal: space, bandwidth
    /// this month and standing per satellite, warnings.
    Info {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Prints the dashboard's JSON report instead.
        #[arg(long)]
        json: bool,
        /// The dashboard's host:port, if `run` was given another than the config's.
        #[arg(long, env = "ARCHIPEL_NODE_DASHBOARD")]
        dashboard: Option<String>,
    },
    /// Leaves a satellite gracefully: the running node hands its pieces to
    /// other nodes, gets the satellite's receipt, then deletes them. Shows
    /// the progress until the exit ends (Ctrl-C stops watching, not the exit).
    Exit {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// The satellite to leave (its id).
        #[arg(long)]
        satellite: archipel_proto::NodeId,
        /// Starts the exit and returns without watching it.
        #[arg(long)]
        no_wait: bool,
        /// The dashboard's host:port, if `run` was given another than the config's.
        #[arg(long, env = "ARCHIPEL_NODE_DASHBOARD")]
        dashboard: Option<String>,
    },
    /// Moves the pieces garbage collection put in the trash back, for one
    /// satellite or all; run it while the node is stopped.
    RestoreTrash {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Only this satellite's trash (its id); all satellites' by default.
        #[arg(long)]
        satellite: Option<archipel_proto::NodeId>,
    },
}

fn parse_size(text: &str) -> Result<u64, String> {
    parse_byte_size(text).map_err(|e| e.to_string())
}

fn parse_satellite(text: &str) -> Result<TrustedSatellite, String> {
    text.parse()
        .map_err(|e: archipel_proto::Error| e.to_string())
}

/// Runs `archipel-node` with `args` (the first being the program name), as the
/// binary does with its command line; the devnet runs nodes through this too.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Setup {
            dir,
            listen,
            advertise,
            dashboard,
            allocated,
            satellites,
            difficulty,
        } => setup(
            &dir,
            SetupOptions {
                listen,
                advertise,
                dashboard,
                allocated,
                satellites,
                difficulty,
            },
        ),
        Command::Run {
            config,
            listen,
            advertise,
            dashboard,
        } => run(
            &config,
            Overrides {
                listen,
                advertise,
                dashboard,
            },
        ),
        Command::Info {
            config,
            json,
            dashboard,
        } => info(&config, json, dashboard),
        Command::Exit {
            config,
            satellite,
            no_wait,
            dashboard,
        } => exit(&config, satellite, no_wait, dashboard),
        Command::RestoreTrash { config, satellite } => restore_trash(&config, satellite),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `setup` writes besides the directory.
struct SetupOptions {
    listen: String,
    advertise: Option<String>,
    dashboard: String,
    allocated: Option<u64>,
    satellites: Vec<TrustedSatellite>,
    difficulty: u32,
}

fn setup(dir: &Path, options: SetupOptions) -> Result<(), Error> {
    let SetupOptions {
        listen,
        advertise,
        dashboard,
        allocated,
        satellites,
        difficulty,
    } = options;
    std::fs::create_dir_all(dir)
        .map_err(|source| io_error(format!("cannot create {}", dir.display()), source))?;
    let dir = dir
        .canonicalize()
        .map_err(|source| io_error(format!("cannot resolve {}", dir.display()), source))?;
    let identity_path = dir.join("identity");
    let config_path = dir.join("config.toml");
    if identity_path.exists() {
        return Err(Error::IdentityExists(identity_path));
    }
    if config_path.exists() {
        return Err(Error::Config(format!(
            "{} already exists; refusing to overwrite it",
            config_path.display()
        )));
    }
    let mut config = Config::new(dir.join("storage"));
    config.identity_path = identity_path.clone();
    config.listen_address = listen;
    config.advertised_address = advertise;
    config.dashboard_address = dashboard;
    if let Some(allocated) = allocated {
        config.allocated_bytes = allocated;
    }
    config.satellites = satellites;
    config.validate()?;
    let text = config.to_toml()?;

    std::fs::create_dir_all(&config.storage_dir).map_err(|source| {
        io_error(
            format!("cannot create {}", config.storage_dir.display()),
            source,
        )
    })?;
    if difficulty > 0 {
        println!("creating an identity of difficulty {difficulty} (about 2^{difficulty} tries)…");
    }
    let identity = Identity::generate_with_difficulty(difficulty);
    identity.save(&identity_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::IdentityExists(identity_path.clone())
        } else {
            io_error(format!("cannot write {}", identity_path.display()), source)
        }
    })?;
    std::fs::write(&config_path, text)
        .map_err(|source| io_error(format!("cannot write {}", config_path.display()), source))?;
    println!("node id:  {}", identity.id());
    println!("identity: {}", identity_path.display());
    println!("config:   {}", config_path.display());
    if !config.dashboard_address.is_empty() {
        println!(
            "dashboard: http://{}/ (once the node runs)",
            config.dashboard_address
        );
    }
    if config.satellites.is_empty() {
        println!("No satellite is trusted yet: add \"ID@HOST:PORT\" entries to `satellites` in the config.");
    }
    Ok(())
}

fn load(config_path: &Path) -> Result<(Config, Identity), Error> {
    let config = Config::load(config_path)?;
    let identity = Identity::load(&config.identity_path).map_err(|source| Error::Identity {
        path: config.identity_path.clone(),
        source,
    })?;
    Ok((config, identity))
}

/// Flags of `run` that override the config file.
struct Overrides {
    listen: Option<String>,
    advertise: Option<String>,
    dashboard: Option<String>,
}

fn run(config_path: &Path, overrides: Overrides) -> Result<(), Error> {
    let (mut config, identity) = load(config_path)?;
    archipel_proto::daemon::init_logging_as(config.log_format);
    if let Some(listen) = overrides.listen {
        config.listen_address = listen;
    }
    if overrides.advertise.is_some() {
        config.advertised_address = overrides.advertise;
    }
    if let Some(dashboard) = overrides.dashboard {
        config.dashboard_address = dashboard;
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|source| io_error("cannot start the async runtime".into(), source))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen_address)
            .await
            .map_err(|source| {
                io_error(
                    format!("cannot listen on {}", config.listen_address),
                    source,
                )
            })?;
        let dashboard =
            match config.dashboard_address.as_str() {
                "" => None,
                address => Some(tokio::net::TcpListener::bind(address).await.map_err(
                    |source| {
                        io_error(
                            format!("cannot listen on {address} for the dashboard"),
                            source,
                        )
                    },
                )?),
            };
        crate::run(
            config,
            identity,
            listener,
            dashboard,
            archipel_proto::daemon::shutdown_signal(),
        )
        .await
    })
}

fn info(config_path: &Path, json: bool, dashboard: Option<String>) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    let address = dashboard.unwrap_or(config.dashboard_address);
    let body = crate::dashboard::fetch_report(&address)?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let report: crate::dashboard::NodeReport = serde_json::from_str(&body).map_err(|e| {
        Error::Config(format!(
            "the dashboard at {address} answered something other than a node report: {e}"
        ))
    })?;
    print!("{}", crate::dashboard::terminal_report(&report));
    Ok(())
}

fn exit(
    config_path: &Path,
    satellite: archipel_proto::NodeId,
    no_wait: bool,
    dashboard: Option<String>,
) -> Result<(), Error> {
    use crate::dashboard::{fetch_report, read_operator_token, request_exit, NodeReport};
    let config = Config::load(config_path)?;
    let address = dashboard.unwrap_or(config.dashboard_address);
    let token = read_operator_token(&config.storage_dir)?;
    request_exit(&address, &satellite, &token)?;
    println!("graceful exit from satellite {satellite} started");
    if no_wait {
        return Ok(());
    }
    let mut last = String::new();
    loop {
        let body = fetch_report(&address)?;
        let report: NodeReport = serde_json::from_str(&body).map_err(|e| {
            Error::Config(format!(
                "the dashboard at {address} answered something other than a node report: {e}"
            ))
        })?;
        let exit = report
            .satellites
            .iter()
            .find(|s| s.id == satellite.to_string())
            .and_then(|s| s.exit.clone())
            .unwrap_or_default();
        let line = format!(
            "{} pieces handed over, {} failed{}",
            exit.pieces_transferred,
            exit.pieces_failed,
            exit.last_error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if let Some(failure) = exit.failure {
            return Err(Error::NodeRefused(format!(
                "the satellite ended the exit as failed: {failure}"
            )));
        }
        if exit.succeeded() && exit.pieces_deleted.is_some() {
            println!(
                "exit completed: the satellite's receipt is kept in the node's database and its {} pieces are deleted",
                exit.pieces_deleted.unwrap_or(0)
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn restore_trash(config_path: &Path, only: Option<archipel_proto::NodeId>) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    archipel_proto::daemon::init_logging_as(config.log_format);
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|source| io_error("cannot start the async runtime".into(), source))?;
    runtime.block_on(async move {
        // Fails while the node runs: the store's lock is the running node's.
        let store = PieceStore::open(config.storage_dir.clone(), config.allocated_bytes).await?;
        let mut satellites: Vec<_> = store.usage().into_keys().collect();
        satellites.sort();
        if let Some(only) = only {
            satellites.retain(|s| *s == only);
        }
        for satellite in satellites {
            let restored = store.restore_trash(satellite).await?;
            println!(
                "satellite {satellite}: restored {} pieces ({} bytes)",
                restored.pieces, restored.bytes
            );
        }
        store.close().await
    })
}

fn io_error(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}
