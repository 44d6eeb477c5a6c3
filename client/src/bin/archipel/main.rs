//! `archipel`: the command-line client. Thin: parsing, progress display and
//! turning library errors into sentences; all work happens in `archipel_client`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use archipel_client::{
    Access, AccessInfo, BucketOptions, ByteRange, Error, ListEntry, ObjectInfo, Permissions,
    Project, Share, UploadOptions,
};
use archipel_proto::NodeUrl;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite};

/// Transfers at least this large show a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 8 << 20;

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
        /// List every object below the prefix instead of one level.
        #[arg(long, short)]
        recursive: bool,
    },
    /// Copy a file to or from the network; `-` is stdin or stdout.
    Cp { source: String, destination: String },
    /// Write an object (or a byte range of it) to stdout.
    Cat {
        object: String,
        #[arg(long)]
        offset: Option<u64>,
        #[arg(long)]
        length: Option<u64>,
    },
    /// Remove an object.
    Rm { object: String },
    /// Share buckets or prefixes: prints a new access grant, alone on the
    /// first line, that can do only what the flags say (read-only unless
    /// told otherwise) and holds only the keys of the given prefixes.
    Share {
        /// What to share: `ap://BUCKET` or `ap://BUCKET/PREFIX/` (whole path
        /// components; `ap://b/photos` opens the object `photos` and
        /// everything below `photos/`).
        #[arg(required = true)]
        locations: Vec<String>,
        /// Download and list (the default).
        #[arg(long, group = "permission")]
        readonly: bool,
        /// Upload and list; no reading, deleting or overwriting.
        #[arg(long, group = "permission")]
        writeonly: bool,
        /// Everything: read, list, write and delete.
        #[arg(long, group = "permission")]
        readwrite: bool,
        /// Not valid before this time: a date (2027-01-01), an RFC 3339 time,
        /// or a duration from now (+2h).
        #[arg(long, value_parser = parse_time)]
        not_before: Option<SystemTime>,
        /// Not valid after this time (same forms as --not-before).
        #[arg(long, value_parser = parse_time)]
        not_after: Option<SystemTime>,
    },
    /// Show an object's size, segments and redundancy.
    Stat {
        object: String,
        #[arg(long)]
        json: bool,
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

fn parse_node_url(text: &str) -> Result<NodeUrl, String> {
    text.parse()
        .map_err(|e: archipel_proto::Error| e.to_string())
}

/// Failures of the CLI itself, beside the library's.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
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

fn progress_bar(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || total.is_some_and(|t| t < PROGRESS_THRESHOLD) {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    Some(bar)
}

type Progress = Option<Arc<dyn Fn(u64) + Send + Sync>>;

fn progress_callback(bar: &Option<ProgressBar>) -> Progress {
    bar.clone().map(|bar| {
        Arc::new(move |done: u64| bar.set_position(done)) as Arc<dyn Fn(u64) + Send + Sync>
    })
}

async fn upload(project: &Project, source: &str, dest: Location) -> Result<ObjectInfo, CliError> {
    let key = if dest.key.is_empty() || dest.key.ends_with('/') {
        let name = Path::new(source).file_name().ok_or_else(|| {
            CliError::Usage(format!("give an object key to upload {source:?} to"))
        })?;
        format!("{}{}", dest.key, name.to_string_lossy())
    } else {
        dest.key.clone()
    };
    let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if source == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(source)
            .await
            .map_err(io_error("open", source))?;
        let size = file
            .metadata()
            .await
            .map_err(io_error("read", source))?
            .len();
        (Box::new(file), Some(size))
    };
    let bar = progress_bar(size);
    let options = UploadOptions {
        progress: progress_callback(&bar),
        ..Default::default()
    };
    let info = project.upload(&dest.bucket, &key, reader, options).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(info?)
}

async fn download(
    project: &Project,
    source: Location,
    dest: &str,
    range: Option<ByteRange>,
) -> Result<u64, CliError> {
    let info = project.stat(&source.bucket, &source.key).await?;
    let (writer, bar, temp): (Box<dyn AsyncWrite + Unpin + Send>, _, _) = if dest == "-" {
        (Box::new(tokio::io::stdout()), None, None)
    } else {
        let target = if Path::new(dest).is_dir() {
            let name = source.key.rsplit('/').next().unwrap_or(&source.key);
            Path::new(dest).join(name)
        } else {
            PathBuf::from(dest)
        };
        // Write next to the target and rename at the end, so a failed download
        // never leaves a file that looks complete.
        let temp = target.with_file_name(format!(
            ".{}.archipel-partial",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(io_error("create", &temp.display().to_string()))?;
        (
            Box::new(file),
            progress_bar(Some(info.size)),
            Some((temp, target)),
        )
    };
    let result = project
        .download(
            &source.bucket,
            &source.key,
            range,
            writer,
            progress_callback(&bar),
        )
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match (result, temp) {
        (Ok(n), Some((temp, target))) => {
            tokio::fs::rename(&temp, &target)
                .await
                .map_err(io_error("write", &target.display().to_string()))?;
            Ok(n)
        }
        (Ok(n), None) => Ok(n),
        (Err(e), temp) => {
            if let Some((temp, _)) = temp {
                let _ = tokio::fs::remove_file(temp).await;
            }
            Err(e.into())
        }
    }
}

fn print_entries(entries: &[ListEntry]) {
    for entry in entries {
        if entry.is_prefix {
            println!("{:>10}  {:19}  {}", "PRE", "", entry.key);
        } else {
            let created = entry
                .created
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default();
            println!(
                "{:>10}  {:19}  {}",
                entry.size,
                created.trim_end_matches('Z'),
                entry.key
            );
        }
    }
}

fn print_stat(info: &ObjectInfo) {
    println!("key:      {}", info.key);
    println!("size:     {} bytes", info.size);
    println!(
        "created:  {}",
        humantime::format_rfc3339_seconds(info.created)
    );
    if let Some(expires) = info.expires {
        println!("expires:  {}", humantime::format_rfc3339_seconds(expires));
    }
    if let Some(content_type) = &info.content_type {
        println!("type:     {content_type}");
    }
    println!("segments: {}", info.segments.len());
    for s in &info.segments {
        match &s.redundancy {
            Some(r) if !s.inline => println!(
                "  #{:<4} {:>10} bytes  {} pieces ({} healthy: {})  redundancy {}",
                s.position, s.plain_size, s.piece_count, s.healthy_pieces, s.health, r
            ),
            _ => println!("  #{:<4} {:>10} bytes  inline", s.position, s.plain_size),
        }
    }
}

fn print_access_info(info: &AccessInfo) {
    println!("satellite:  {}", info.satellite);
    if info.full_keys {
        println!("keys:       the project's root key (every bucket and object)");
    } else {
        println!("keys:       {}", info.prefixes.join(", "));
    }
    if info.restrictions.is_empty() {
        println!("allows:     everything");
    }
    for (i, r) in info.restrictions.iter().enumerate() {
        let ops: Vec<&str> = [
            (r.read, "read"),
            (r.list, "list"),
            (r.write, "write"),
            (r.delete, "delete"),
        ]
        .into_iter()
        .filter_map(|(allowed, name)| allowed.then_some(name))
        .collect();
        println!("restriction {}:", i + 1);
        println!(
            "  allows:   {}",
            if ops.is_empty() {
                "nothing".to_string()
            } else {
                ops.join(", ")
            }
        );
        if !r.paths.is_empty() {
            println!("  only:     {}", r.paths.join(", "));
        }
        if let Some(time) = r.not_before {
            println!("  from:     {}", humantime::format_rfc3339_seconds(time));
        }
        if let Some(time) = r.not_after {
            println!("  until:    {}", humantime::format_rfc3339_seconds(time));
        }
    }
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
                println!("{}", access.serialize());
                return Ok(());
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
                    println!("{text}");
                } else {
                    print_access_info(&info);
                }
                return Ok(());
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
            println!("Revoked the grant and every grant shared from it");
        }
        Command::Access { .. } => unreachable!("handled above"),
        Command::Share {
            locations,
            readonly: _,
            writeonly,
            readwrite,
            not_before,
            not_after,
        } => {
            let permissions = if writeonly {
                Permissions::WRITE_ONLY
            } else if readwrite {
                Permissions::ALL
            } else {
                Permissions::READ_ONLY
            };
            let prefixes = locations
                .iter()
                .map(|text| location(text).map(|loc| (loc.bucket, loc.key)))
                .collect::<Result<_, _>>()?;
            let shared = project
                .share(&Share {
                    permissions,
                    prefixes,
                    not_before,
                    not_after,
                })
                .await?;
            println!("{}", shared.serialize());
        }
        Command::Mb {
            bucket,
            unencrypted_names,
        } => {
            let loc = location(&bucket)?;
            project
                .create_bucket_with(&loc.bucket, BucketOptions { unencrypted_names })
                .await?;
            if unencrypted_names {
                println!("Bucket ap://{} created (object names unencrypted)", loc.bucket);
            } else {
                println!("Bucket ap://{} created", loc.bucket);
            }
        }
        Command::Rb { bucket } => {
            let loc = location(&bucket)?;
            project.delete_bucket(&loc.bucket).await?;
            println!("Bucket ap://{} removed", loc.bucket);
        }
        Command::Ls { location: None, .. } => {
            for bucket in project.list_buckets().await? {
                println!("{}  {}", humantime::format_rfc3339_seconds(bucket.created), bucket.name);
            }
        }
        Command::Ls { location: Some(text), recursive } => {
            let loc = location(&text)?;
            print_entries(&project.list(&loc.bucket, &loc.key, recursive).await?);
        }
        Command::Cp { source, destination } => match (parse_location(&source), parse_location(&destination)) {
            (None, Some(dest)) => {
                let bucket = dest.bucket.clone();
                let info = upload(&project, &source, dest).await?;
                eprintln!("Uploaded {} bytes to ap://{bucket}/{}", info.size, info.key);
            }
            (Some(src), None) => {
                let n = download(&project, src, &destination, None).await?;
                if destination != "-" {
                    eprintln!("Downloaded {n} bytes to {destination}");
                }
            }
            (Some(_), Some(_)) => return Err(CliError::Usage("copying between two network locations is not supported yet; download and upload instead".into())),
            (None, None) => return Err(CliError::Usage("one side of cp must be a location like ap://bucket/key".into())),
        },
        Command::Cat { object, offset, length } => {
            let loc = object_location(&object)?;
            let range = (offset.is_some() || length.is_some()).then(|| ByteRange {
                offset: offset.unwrap_or(0),
                length,
            });
            download(&project, loc, "-", range).await?;
        }
        Command::Rm { object } => {
            let loc = object_location(&object)?;
            project.delete_object(&loc.bucket, &loc.key).await?;
            println!("Removed {object}");
        }
        Command::Stat { object, json } => {
            let loc = object_location(&object)?;
            let info = project.stat(&loc.bucket, &loc.key).await?;
            if json {
                let text = serde_json::to_string_pretty(&info)
                    .map_err(|e| CliError::Usage(format!("cannot format the object info as JSON: {e}")))?;
                println!("{text}");
            } else {
                print_stat(&info);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel: {e}");
            ExitCode::FAILURE
        }
    }
}
