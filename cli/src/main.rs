//! `archipel`: the command-line client. Thin: parsing, progress display and
//! turning library errors into sentences; all work happens in `archipel_client`.
//!
//! - `transfer`: `cp`, `mv`, `rm`, `cat` (single objects and trees);
//! - `listing`: `ls`;
//! - `share`: `share`, with registration at a linksharing service;
//! - `backup`, `backup_show`: `backup …`, snapshots of local files
//!   (`archipel_backup`);
//! - `output`: standard output (a closed pipe ends quietly) and human formats.

mod backup;
mod backup_show;
mod listing;
mod output;
mod share;
mod transfer;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use archipel_client::{Access, AccessInfo, BucketOptions, ByteRange, Error, ObjectInfo, Project};
use archipel_proto::NodeUrl;
use clap::{Parser, Subcommand};

use crate::output::outln;

/// Transfers in flight at once unless `--parallelism` says otherwise.
const DEFAULT_PARALLELISM: usize = 4;

#[derive(Parser)]
#[command(
    name = "archipel",
    version,
    about = "Store and retrieve encrypted objects on an Archipel network"
)]
struct Cli {
    /// Access grant, or a file holding one.
    #[arg(long, env = "ARCHIPEL_ACCESS", global = true, hide_env_values = true)]
    access: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage access grants.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Make a bucket: `archipel mb ap://BUCKET`.
    Mb {
        bucket: String,
        /// Store object names unencrypted (contents and metadata stay
        /// encrypted): listings then page in order instead of reading whole
        /// levels, for very large flat buckets. The satellite sees the names.
        #[arg(long)]
        unencrypted_names: bool,
    },
    /// Remove an empty bucket: `archipel rb ap://BUCKET`.
    Rb { bucket: String },
    /// List buckets, or objects under `ap://BUCKET/PREFIX`.
    Ls {
        location: Option<String>,
        /// List every object below the prefix instead of one level (page by
        /// page; in a bucket with encrypted names sorted within each page).
        #[arg(long, short)]
        recursive: bool,
        /// One JSON object per line: key, size, created (RFC 3339), is_prefix.
        #[arg(long)]
        json: bool,
    },
    /// Copy: upload (FILE or `-` to ap://BUCKET/KEY), download (ap://… to
    /// FILE, DIR or `-`), or copy on the network (ap://… to ap://…, no data
    /// moves). With -r, a whole directory or prefix.
    Cp {
        source: String,
        destination: String,
        /// Copy a directory tree to a prefix, or everything below a prefix
        /// into a directory.
        #[arg(long, short)]
        recursive: bool,
        /// Objects in flight at once with -r; segments in flight for a single
        /// object (each held in memory: up to N × 64 MiB).
        #[arg(long, default_value_t = DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
        parallelism: usize,
        #[command(flatten)]
        upload: transfer::UploadFlags,
    },
    /// Move objects within the network: a copy on the satellite (no data
    /// moves), then the source is deleted.
    Mv {
        source: String,
        destination: String,
        /// Move everything below a prefix to another prefix.
        #[arg(long, short)]
        recursive: bool,
        /// Objects moved at once with -r.
        #[arg(long, default_value_t = DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
        parallelism: usize,
    },
    /// Write an object (or a byte range of it) to stdout.
    Cat {
        object: String,
        #[arg(long)]
        offset: Option<u64>,
        #[arg(long)]
        length: Option<u64>,
    },
    /// Remove an object, or with -r every object below a prefix.
    Rm {
        object: String,
        #[arg(long, short)]
        recursive: bool,
        /// Objects deleted at once with -r.
        #[arg(long, default_value_t = DEFAULT_PARALLELISM, value_parser = parse_parallelism)]
        parallelism: usize,
    },
    /// Share buckets or prefixes: prints a new access grant, alone on the
    /// first line, that can do only what the flags say (read-only unless
    /// told otherwise) and holds only the keys of the given prefixes.
    Share(share::ShareFlags),
    /// Show an object's size, segments and redundancy.
    Stat {
        object: String,
        #[arg(long)]
        json: bool,
    },
    /// Back up local files to a repository on the network, and restore
    /// them: encrypted, deduplicated snapshots.
    Backup {
        #[command(flatten)]
        repo: backup::RepoFlags,
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Create an access grant from a satellite's URL, an API key and a passphrase.
    Create {
        /// The satellite as ID@HOST:PORT (`archipel-satellite info` prints the
        /// id); the connection is refused unless the satellite proves that id.
        #[arg(long, value_parser = parse_node_url)]
        satellite: NodeUrl,
        #[arg(long, env = "ARCHIPEL_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Read the passphrase from this file instead of prompting.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Show what an access grant allows: its satellite, the prefixes it holds
    /// keys for, and each restriction of its API key.
    Inspect {
        /// The grant, or a file holding one (default: --access).
        grant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an access grant and every grant shared from it, from their
    /// next request on. Run with the grant it was shared from (--access) or
    /// with itself.
    Revoke {
        /// The grant to revoke, or a file holding one.
        grant: String,
    },
}

/// A time given as a date, an RFC 3339 time, or `+DURATION` from now.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Some(duration) = text.strip_prefix('+') {
        let duration = humantime::parse_duration(duration).map_err(|e| e.to_string())?;
        return Ok(SystemTime::now() + duration);
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full).map_err(|_| {
        format!("{text:?} is not a date (2027-01-01), an RFC 3339 time or +DURATION (+24h)")
    })
}

fn parse_parallelism(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number from 1 to 256")),
    }
}

fn parse_node_url(text: &str) -> Result<NodeUrl, String> {
    text.parse()
        .map_err(|e: archipel_proto::Error| e.to_string())
}

/// Failures of the CLI itself, beside the library's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] Error),
    #[error(transparent)]
    Backup(#[from] archipel_backup::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the linksharing service at {url} {reason}")]
    Linksharing { url: String, reason: String },
    /// Standard output's reader went away: the command ends quietly.
    #[error("standard output was closed")]
    ClosedPipe,
    /// The command did its work but not all of it (a backup without some
    /// unreadable files, a restore with errors, a damaged repository): the
    /// details are printed, this says what they amount to.
    #[error("{message}")]
    Incomplete { message: String, status: u8 },
}

impl CliError {
    /// The exit status: 1, an incomplete command's own, or 130 for a
    /// command stopped by Ctrl-C (as shells report SIGINT).
    fn status(&self) -> u8 {
        match self {
            CliError::Incomplete { status, .. } => *status,
            CliError::Backup(archipel_backup::Error::Interrupted) => 130,
            _ => 1,
        }
    }
}

fn io_error(action: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_string();
    move |source| CliError::Io {
        action,
        path,
        source,
    }
}

/// A location on the network: `ap://bucket/key`.
struct Location {
    bucket: String,
    key: String,
}

fn parse_location(text: &str) -> Option<Location> {
    let rest = text.strip_prefix("ap://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some(Location {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

fn location(text: &str) -> Result<Location, CliError> {
    parse_location(text)
        .ok_or_else(|| CliError::Usage(format!("{text:?} is not a location like ap://bucket/key")))
}

fn object_location(text: &str) -> Result<Location, CliError> {
    let loc = location(text)?;
    if loc.key.is_empty() {
        return Err(CliError::Usage(format!(
            "{text:?} names a bucket, not an object"
        )));
    }
    Ok(loc)
}

fn load_access(flag: Option<&str>) -> Result<Access, CliError> {
    let given = flag.ok_or_else(|| {
        CliError::Usage(
            "no access grant: pass --access GRANT_OR_FILE or set ARCHIPEL_ACCESS".into(),
        )
    })?;
    parse_grant(given)
}

/// A grant given inline or as the name of a file holding one.
fn parse_grant(given: &str) -> Result<Access, CliError> {
    let text = if Path::new(given).is_file() {
        std::fs::read_to_string(given).map_err(io_error("read", given))?
    } else {
        given.to_string()
    };
    Ok(Access::parse(text.trim())?)
}

fn read_passphrase(file: Option<&Path>) -> Result<String, CliError> {
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).map_err(io_error("read", &file.display().to_string()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let first =
        rpassword::prompt_password("Passphrase: ").map_err(io_error("read", "the passphrase"))?;
    let second =
        rpassword::prompt_password("Again: ").map_err(io_error("read", "the passphrase"))?;
    if first != second {
        return Err(CliError::Usage("the passphrases do not match".into()));
    }
    if first.is_empty() {
        return Err(CliError::Usage("the passphrase must not be empty".into()));
    }
    Ok(first)
}

fn print_stat(info: &ObjectInfo) -> Result<(), CliError> {
    outln!("key:      {}", info.key)?;
    outln!("size:     {} bytes", info.size)?;
    outln!(
        "created:  {}",
        humantime::format_rfc3339_seconds(info.created)
    )?;
    if let Some(expires) = info.expires {
        outln!("expires:  {}", humantime::format_rfc3339_seconds(expires))?;
    }
    if let Some(content_type) = &info.content_type {
        outln!("type:     {content_type}")?;
    }
    outln!("segments: {}", info.segments.len())?;
    for s in &info.segments {
        match &s.redundancy {
            Some(r) if !s.inline => outln!(
                "  #{:<4} {:>10} bytes  {} pieces ({} healthy: {})  redundancy {}",
                s.position,
                s.plain_size,
                s.piece_count,
                s.healthy_pieces,
                s.health,
                r
            )?,
            _ => outln!("  #{:<4} {:>10} bytes  inline", s.position, s.plain_size)?,
        }
    }
    Ok(())
}

fn print_access_info(info: &AccessInfo) -> Result<(), CliError> {
    outln!("satellite:  {}", info.satellite)?;
    if info.full_keys {
        outln!("keys:       the project's root key (every bucket and object)")?;
    } else {
        outln!("keys:       {}", info.prefixes.join(", "))?;
    }
    if info.restrictions.is_empty() {
        outln!("allows:     everything")?;
    }
    for (i, r) in info.restrictions.iter().enumerate() {
        let ops: Vec<&str> = [
            (r.read, "read"),
            (r.list, "list"),
            (r.write, "write"),
            (r.delete, "delete"),
            (r.bypass_governance, "bypass-governance"),
        ]
        .into_iter()
        .filter_map(|(allowed, name)| allowed.then_some(name))
        .collect();
        outln!("restriction {}:", i + 1)?;
        outln!(
            "  allows:   {}",
            if ops.is_empty() {
                "nothing".to_string()
            } else {
                ops.join(", ")
            }
        )?;
        if !r.paths.is_empty() {
            outln!("  only:     {}", r.paths.join(", "))?;
        }
        if let Some(time) = r.not_before {
            outln!("  from:     {}", humantime::format_rfc3339_seconds(time))?;
        }
        if let Some(time) = r.not_after {
            outln!("  until:    {}", humantime::format_rfc3339_seconds(time))?;
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Access { command } = &cli.command {
        match command {
            AccessCommand::Create {
                satellite,
                api_key,
                passphrase_file,
            } => {
                let passphrase = read_passphrase(passphrase_file.as_deref())?;
                let access = Access::request(satellite, api_key, &passphrase).await?;
                return outln!("{}", access.serialize());
            }
            AccessCommand::Inspect { grant, json } => {
                let access = match grant {
                    Some(grant) => parse_grant(grant)?,
                    None => load_access(cli.access.as_deref())?,
                };
                let info = access.inspect()?;
                if *json {
                    let text = serde_json::to_string_pretty(&info).map_err(|e| {
                        CliError::Usage(format!("cannot format the grant as JSON: {e}"))
                    })?;
                    return outln!("{text}");
                }
                return print_access_info(&info);
            }
            AccessCommand::Revoke { .. } => {}
        }
    }
    let access = load_access(cli.access.as_deref())?;
    let project = Project::open(&access).await?;
    match cli.command {
        Command::Access {
            command: AccessCommand::Revoke { grant },
        } => {
            let revoked = parse_grant(&grant)?;
            project.revoke(&revoked.api_key).await?;
            outln!("Revoked the grant and every grant shared from it")
        }
        Command::Access { .. } => unreachable!("handled above"),
        Command::Share(flags) => share::share(&project, flags).await,
        Command::Backup { repo, command } => backup::backup(&project, repo, command).await,
        Command::Mb {
            bucket,
            unencrypted_names,
        } => {
            let loc = location(&bucket)?;
            project
                .create_bucket_with(
                    &loc.bucket,
                    BucketOptions {
                        unencrypted_names,
                        ..Default::default()
                    },
                )
                .await?;
            if unencrypted_names {
                outln!(
                    "Bucket ap://{} created (object names unencrypted)",
                    loc.bucket
                )
            } else {
                outln!("Bucket ap://{} created", loc.bucket)
            }
        }
        Command::Rb { bucket } => {
            let loc = location(&bucket)?;
            project.delete_bucket(&loc.bucket).await?;
            outln!("Bucket ap://{} removed", loc.bucket)
        }
        Command::Ls {
            location,
            recursive,
            json,
        } => listing::ls(&project, location.as_deref(), recursive, json).await,
        Command::Cp {
            source,
            destination,
            recursive,
            parallelism,
            upload,
        } => {
            transfer::cp(
                &project,
                &source,
                &destination,
                recursive,
                parallelism,
                &upload,
            )
            .await
        }
        Command::Mv {
            source,
            destination,
            recursive,
            parallelism,
        } => transfer::mv(&project, &source, &destination, recursive, parallelism).await,
        Command::Cat {
            object,
            offset,
            length,
        } => {
            let range = (offset.is_some() || length.is_some()).then(|| ByteRange {
                offset: offset.unwrap_or(0),
                length,
            });
            transfer::cat(&project, &object, range).await
        }
        Command::Rm {
            object,
            recursive,
            parallelism,
        } => transfer::rm(&project, &object, recursive, parallelism).await,
        Command::Stat { object, json } => {
            let loc = object_location(&object)?;
            let info = project.stat(&loc.bucket, &loc.key).await?;
            if json {
                let text = serde_json::to_string_pretty(&info).map_err(|e| {
                    CliError::Usage(format!("cannot format the object info as JSON: {e}"))
                })?;
                outln!("{text}")
            } else {
                print_stat(&info)
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output has all it wants (`| head`): see `output`.
        Err(e) if output::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel: {e}");
            ExitCode::from(e.status())
        }
    }
}
