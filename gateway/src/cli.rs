//! The `archipel-gateway` command line: `setup` writes a configuration with
//! fresh S3 keys for an access grant; `run` serves S3 (and links, metrics
//! when configured) until Ctrl-C or SIGTERM.
//! The binary and the devnet both run it through [`main_with_args`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "archipel-gateway",
    about = "An S3-compatible gateway to Archipel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generates S3 credentials for an access grant and writes DIR/config.toml.
    Setup {
        /// The directory to write config.toml into.
        #[arg(long)]
        dir: PathBuf,
        /// The access grant, or a file that holds it.
        #[arg(long)]
        access: String,
    },
    /// Serves S3 on the configured address.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs `archipel-gateway` with `args` (the first being the program name).
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    archipel_proto::daemon::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("archipel-gateway: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<(), String> {
    match command {
        Command::Setup { dir, access } => {
            let (config, path) = crate::config::setup(&dir, &access).map_err(|e| e.to_string())?;
            println!("wrote {}", path.display());
            for credential in &config.credentials {
                println!("access key id:     {}", credential.access_key_id);
                println!("secret access key: {}", credential.secret_access_key);
            }
            println!("endpoint:          http://{}", config.listen);
            if let Some(links) = config.links_url() {
                println!("links:             {links} (register grants at {links}/api/v1/access)");
            }
            Ok(())
        }
        Command::Run { config } => {
            let config = crate::Config::load(&config).map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
            let metrics = match config.metrics_listen {
                Some(address) => Some(
                    tokio::net::TcpListener::bind(address)
                        .await
                        .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?,
                ),
                None => None,
            };
            let linksharing = match config.linksharing_address {
                Some(address) => Some(
                    tokio::net::TcpListener::bind(address)
                        .await
                        .map_err(|e| format!("cannot serve links on {address}: {e}"))?,
                ),
                None => None,
            };
            tracing::info!("serving S3 on {}://{}", config.scheme(), config.listen);
            if let Some(address) = config.metrics_listen {
                tracing::info!("serving metrics on http://{address}/metrics");
            }
            if let (Some(address), Some(url)) = (config.linksharing_address, config.links_url()) {
                tracing::info!("serving links on {address} as {url}");
            }
            let shutdown = archipel_proto::daemon::shutdown_signal();
            let listeners = crate::Listeners {
                s3: listener,
                metrics,
                linksharing,
            };
            crate::run_with_listeners(config, listeners, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
    }
}
