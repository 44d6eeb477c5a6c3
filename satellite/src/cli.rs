//! The `archipel-satellite` command line: set up, run and administer a
//! satellite. A library module so that the devnet can run the very same code
//! in processes of its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::admin::AdminConfig;
use crate::{Config, Error};
use archipel_proto::{Identity, Redundancy};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "archipel-satellite", version, about = "The Archipel satellite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity and a config.toml (with a random admin API token)
    /// in a new satellite directory.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7777")]
        listen: String,
        /// Address of the admin HTTP API and Prometheus metrics.
        #[arg(long, default_value = "127.0.0.1:7779")]
        admin_listen: String,
        /// Metabase URL; default: a SQLite file in DIR.
        #[arg(long)]
        database_url: Option<String>,
        /// Redundancy scheme k/repair/success/total[/share_size].
        #[arg(long)]
        redundancy: Option<Redundancy>,
        /// Allow several pieces of a segment in one /24 network (single-machine networks).
        #[arg(long)]
        no_distinct_subnets: bool,
    },
    /// Serve until Ctrl-C or SIGTERM.
    Run {
        #[arg(long, env = "ARCHIPEL_SATELLITE_CONFIG")]
        config: PathBuf,
    },
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Print the satellite's id.
    Info {
        #[arg(long, env = "ARCHIPEL_SATELLITE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project and print its API key.
    Create {
        name: String,
        #[arg(long, env = "ARCHIPEL_SATELLITE_CONFIG")]
        config: PathBuf,
    },
}

fn load_config(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut config: Config = toml::from_str(&text)
        .map_err(|e| Error::Config(format!("{} is not valid: {e}", path.display())))?;
    // A database password belongs in the environment rather than in the file.
    if let Ok(url) = std::env::var("ARCHIPEL_SATELLITE_DATABASE_URL") {
        config.database_url = url;
    }
    config.validate()?;
    Ok(config)
}

fn setup(
    dir: &Path,
    listen: String,
    admin_listen: String,
    database_url: Option<String>,
    redundancy: Option<Redundancy>,
    no_distinct_subnets: bool,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let config_path = dir.join("config.toml");
    let identity_path = dir.join("identity");
    if config_path.exists() || identity_path.exists() {
        return Err(Error::Config(format!(
            "{} already holds a satellite set-up",
            dir.display()
        )));
    }
    let mut config =
        Config::new(database_url.unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", dir.join("satellite.db").display())
        }));
    config.identity_path = identity_path.clone();
    config.listen_address = listen;
    config.admin = AdminConfig {
        listen_address: admin_listen,
        token: AdminConfig::random_token(),
    };
    if let Some(redundancy) = redundancy {
        config.redundancy = redundancy;
    }
    config.distinct_subnets = !no_distinct_subnets;
    config.validate()?;
    let identity = Identity::generate();
    identity.save(&identity_path)?;
    let text = toml::to_string_pretty(&config)
        .map_err(|e| Error::Config(format!("cannot write the configuration: {e}")))?;
    // Owner-only: the file holds the admin API token.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&config_path)?, text.as_bytes())?;
    eprintln!("satellite {} set up in {}", identity.id(), dir.display());
    Ok(())
}

async fn run_command(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Setup {
            dir,
            listen,
            admin_listen,
            database_url,
            redundancy,
            no_distinct_subnets,
        } => setup(
            &dir,
            listen,
            admin_listen,
            database_url,
            redundancy,
            no_distinct_subnets,
        ),
        Command::Run { config } => {
            let config = load_config(&config)?;
            let identity = Identity::load(&config.identity_path)?;
            let listener = tokio::net::TcpListener::bind(&config.listen_address)
                .await
                .map_err(|e| {
                    Error::Config(format!("cannot listen on {}: {e}", config.listen_address))
                })?;
            let admin = config.admin.bind().await?;
            crate::run(
                config,
                identity,
                listener,
                admin,
                archipel_proto::daemon::shutdown_signal(),
            )
            .await
        }
        Command::Project {
            command: ProjectCommand::Create { name, config },
        } => {
            let config = load_config(&config)?;
            let key = crate::create_project(&config.database_url, &name).await?;
            println!("{key}");
            Ok(())
        }
        Command::Info { config } => {
            let config = load_config(&config)?;
            let identity = Identity::load(&config.identity_path)?;
            println!("{}", identity.id());
            Ok(())
        }
    }
}

/// Runs the command line `program args...` (arguments without the program
/// name) to completion, as the `archipel-satellite` binary does.
pub fn main_with_args(program: &str, args: impl IntoIterator<Item = String>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once(program.to_string()).chain(args)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Already set when embedded in a process that logs on its own.
    archipel_proto::daemon::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}
