//! `archipel backup …`: encrypted, deduplicated snapshots of local files in a
//! repository on the network, with restic's habits. The engine is
//! `archipel_backup`; this module parses flags, finds the repository and its
//! key, draws progress and prints what happened.
//!
//! - here: the flags, which repository (`--repo`, `ARCHIPEL_BACKUP_REPO`, or
//!   the one `init` remembered) and which key, `init`, `run`, `restore`;
//! - `backup_show`: `snapshots`, `ls`, `diff`, `forget`, `prune`, `check`,
//!   `unlock`.
//!
//! The repository `init` made is remembered in
//! `$XDG_CONFIG_HOME/archipel/backup-repository` (or
//! `~/.config/archipel/backup-repository`), so that day-to-day commands need
//! no `--repo`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipel_backup::repo::KeySource;
use archipel_backup::{
    snapshot, BackupOptions, BackupProgress, BackupSummary, Error as BackupError, InitOptions,
    RepoLocation, Repository, RestoreOptions, RestoreProgress, Snapshot,
};
use archipel_client::{Error, Project};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backup_show;
use crate::output::{human_size, outln};
use crate::{io_error, CliError};

/// Where `init` remembers the repository, below the user's config directory.
const REMEMBERED: &str = "archipel/backup-repository";
/// Names the passphrase when no `--password-file` is given.
const PASSWORD_VARIABLE: &str = "ARCHIPEL_BACKUP_PASSWORD";
/// Exit status of a backup whose snapshot was saved without some
/// unreadable paths (restic's).
const PARTIAL_BACKUP: u8 = 3;
/// Packs fetched at once by `restore` unless told otherwise.
const DEFAULT_DOWNLOADS: usize = 4;

/// Flags of every backup command: which repository, and its passphrase.
#[derive(clap::Args)]
pub(crate) struct RepoFlags {
    /// The repository, ap://BUCKET/PREFIX (default: the one `archipel backup
    /// init` made on this machine).
    #[arg(long, env = "ARCHIPEL_BACKUP_REPO", global = true)]
    repo: Option<String>,
    /// Read the repository's passphrase from this file (else from the
    /// ARCHIPEL_BACKUP_PASSWORD variable). Only repositories made with a
    /// passphrase need one; the others are keyed by the access grant.
    #[arg(long, env = "ARCHIPEL_BACKUP_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Create a repository (and its bucket if missing), and remember it as
    /// this machine's default. Keyed by the access grant unless a passphrase
    /// is given (--password-file or ARCHIPEL_BACKUP_PASSWORD).
    Init {
        /// ap://BUCKET/PREFIX (default: --repo).
        repository: Option<String>,
        /// Packs are uploaded once they hold this many bytes (default: 64
        /// MiB, one segment of a default satellite; at most 1 GiB).
        #[arg(long, value_name = "BYTES", value_parser = parse_pack_size)]
        pack_size: Option<u32>,
    },
    /// Back up files and directories: a new snapshot of PATH….
    Run(RunFlags),
    /// List the snapshots, oldest first.
    Snapshots {
        /// A JSON array of the snapshots (with their summaries).
        #[arg(long)]
        json: bool,
    },
    /// List a snapshot's entries, all or those at or below PATH.
    Ls {
        /// An id, a unique prefix of one, or `latest`.
        snapshot: String,
        path: Option<PathBuf>,
        /// Mode, owner, size and time before each path.
        #[arg(long, short)]
        long: bool,
        /// One JSON object per line: path, type, mode, size, mtime.
        #[arg(long)]
        json: bool,
    },
    /// What changed between two snapshots.
    Diff {
        first: String,
        second: String,
        /// One JSON object per change and line: kind, path.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot (or part of it) below a directory.
    Restore {
        snapshot: String,
        /// The directory to restore into (made if missing).
        #[arg(long)]
        target: PathBuf,
        /// Restore only paths matching this pattern, and what is below them
        /// (repeatable).
        #[arg(long, value_name = "PATTERN")]
        include: Vec<String>,
        /// Leave out paths matching this pattern (repeatable).
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Packs downloaded at once.
        #[arg(long, default_value_t = DEFAULT_DOWNLOADS, value_parser = crate::parse_parallelism)]
        download_concurrency: usize,
    },
    /// Remove snapshots: those named, or those the --keep rules do not keep.
    Forget(backup_show::ForgetFlags),
    /// Free the space of data no snapshot uses any more.
    Prune(backup_show::PruneFlags),
    /// Check that the repository is whole (with --read-data, every byte).
    Check {
        /// Download every pack and check every blob.
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove locks left by processes that are gone.
    Unlock {
        /// Remove every lock, also those of running processes.
        #[arg(long)]
        remove_all: bool,
    },
}

#[derive(clap::Args)]
pub(crate) struct RunFlags {
    /// Files and directories to back up.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Leave out paths matching this pattern (repeatable): `*.tmp`,
    /// `node_modules`, `/home/me/cache`.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Read exclude patterns from this file, one a line (blank lines and
    /// lines starting with `#` are ignored; repeatable).
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// The host recorded in the snapshot (default: this machine's name).
    #[arg(long)]
    host: Option<String>,
    /// Compare with this snapshot instead of the latest of the same host
    /// and paths.
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those whose size, time and inode are unchanged.
    #[arg(long)]
    force: bool,
    /// Print the snapshot, with its summary, as one JSON object.
    #[arg(long)]
    json: bool,
    /// Files read at once.
    #[arg(long, value_parser = crate::parse_parallelism)]
    read_concurrency: Option<usize>,
    /// Packs uploaded at once.
    #[arg(long, value_parser = crate::parse_parallelism)]
    upload_concurrency: Option<usize>,
}

/// Largest `--pack-size`: a pack's blob offsets are 32-bit, and a pack
/// grows past its size by up to one chunk, so stay far below 4 GiB.
const MAX_PACK_SIZE: u32 = 1 << 30;

fn parse_pack_size(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1024..=MAX_PACK_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of bytes from 1024 to {MAX_PACK_SIZE} (1 GiB)"
        )),
    }
}

/// `archipel backup …`.
pub(crate) async fn backup(
    project: &Project,
    flags: RepoFlags,
    command: BackupCommand,
) -> Result<(), CliError> {
    if let BackupCommand::Init {
        repository,
        pack_size,
    } = command
    {
        let url = repository.or(flags.repo.clone()).ok_or_else(|| {
            CliError::Usage("no repository given: `archipel backup init ap://BUCKET/PREFIX`".into())
        })?;
        return init(project, &url, passphrase(&flags)?, pack_size).await;
    }
    let repo = open(project, &flags).await?;
    // Ctrl-C stops the command cleanly: its lock is released, and what it
    // stored stays usable by the next run.
    let on_interrupt = {
        let repo = repo.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                repo.interrupt();
            }
        })
    };
    let result = command_on(&repo, command).await;
    on_interrupt.abort();
    result
}

/// A command on an open repository.
async fn command_on(repo: &Repository, command: BackupCommand) -> Result<(), CliError> {
    match command {
        BackupCommand::Init { .. } => unreachable!("handled above"),
        BackupCommand::Run(run_flags) => run(repo, run_flags).await,
        BackupCommand::Snapshots { json } => backup_show::snapshots(repo, json).await,
        BackupCommand::Ls {
            snapshot,
            path,
            long,
            json,
        } => backup_show::ls(repo, &snapshot, path.as_deref(), long, json).await,
        BackupCommand::Diff {
            first,
            second,
            json,
        } => backup_show::diff(repo, &first, &second, json).await,
        BackupCommand::Restore {
            snapshot,
            target,
            include,
            exclude,
            download_concurrency,
        } => {
            let options = RestoreOptions {
                target,
                includes: include,
                excludes: exclude,
                download_concurrency,
            };
            restore(repo, &snapshot, &options).await
        }
        BackupCommand::Forget(forget_flags) => backup_show::forget(repo, forget_flags).await,
        BackupCommand::Prune(prune_flags) => backup_show::prune(repo, &prune_flags).await,
        BackupCommand::Check { read_data, json } => backup_show::check(repo, read_data, json).await,
        BackupCommand::Unlock { remove_all } => {
            let removed = archipel_backup::lock::unlock(repo, remove_all).await?;
            let what = if remove_all { "" } else { "stale " };
            outln!("Removed {removed} {what}lock{}", plural(removed as u64))
        }
    }
}

/// The passphrase, if one was given: from `--password-file`, else from
/// [`PASSWORD_VARIABLE`]. Never prompted for: without one, a grant-keyed
/// repository needs none and a passphrase one says so.
fn passphrase(flags: &RepoFlags) -> Result<Option<String>, CliError> {
    let given = match &flags.password_file {
        Some(file) => crate::read_passphrase(Some(file))?,
        None => match std::env::var(PASSWORD_VARIABLE) {
            Ok(text) => text,
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(CliError::Usage(format!(
                    "{PASSWORD_VARIABLE} is not valid UTF-8"
                )))
            }
        },
    };
    if given.is_empty() {
        return Err(CliError::Usage("the backup passphrase is empty".into()));
    }
    Ok(Some(given))
}

/// The file that remembers this machine's default repository: below
/// `$XDG_CONFIG_HOME`, else `~/.config` (the XDG base directory rules,
/// which ignore a relative `XDG_CONFIG_HOME`).
fn remembered_file() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let config = absolute("XDG_CONFIG_HOME").or_else(|| Some(absolute("HOME")?.join(".config")))?;
    Some(config.join(REMEMBERED))
}

/// The repository's URL: `--repo` (or its variable), else the remembered one.
fn repository_url(flags: &RepoFlags) -> Result<String, CliError> {
    if let Some(url) = &flags.repo {
        return Ok(url.clone());
    }
    if let Some(file) = remembered_file() {
        match std::fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("read", &file.display().to_string())(e)),
        }
    }
    Err(CliError::Usage(
        "no backup repository: run `archipel backup init ap://BUCKET/PREFIX` once on this machine, or pass --repo (or set ARCHIPEL_BACKUP_REPO)".into(),
    ))
}

async fn open(project: &Project, flags: &RepoFlags) -> Result<Repository, CliError> {
    let location = RepoLocation::parse(&repository_url(flags)?)?;
    let passphrase = passphrase(flags)?;
    Ok(Repository::open(project, &location, passphrase.as_deref()).await?)
}

/// `archipel backup init`.
async fn init(
    project: &Project,
    url: &str,
    passphrase: Option<String>,
    pack_size: Option<u32>,
) -> Result<(), CliError> {
    let location = RepoLocation::parse(url)?;
    let defaults = InitOptions::default();
    let options = InitOptions {
        passphrase,
        pack_size: pack_size.unwrap_or(defaults.pack_size),
        ..defaults
    };
    let repo = match Repository::init(project, &location, options.clone()).await {
        // A repository in a bucket of its own is the common case: make it.
        Err(BackupError::Network(Error::BucketNotFound(_))) => {
            project.create_bucket(&location.bucket).await?;
            Repository::init(project, &location, options).await?
        }
        other => other?,
    };
    outln!("Created a backup repository at {}", repo.location())?;
    match repo.config().key {
        KeySource::Grant => outln!("Keys: from the access grant (no passphrase)")?,
        KeySource::Passphrase { .. } => {
            outln!("Keys: from the passphrase (keep it safe: nothing else opens the repository)")?
        }
    }
    // The repository exists either way; failing to remember it only costs
    // `--repo` on later commands, so it is said, not an error.
    let Some(file) = remembered_file() else {
        eprintln!("archipel: no HOME or XDG_CONFIG_HOME to remember the repository in; pass --repo to later commands");
        return Ok(());
    };
    let written = match file.parent() {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
    .and_then(|()| std::fs::write(&file, format!("{}\n", repo.location())));
    match written {
        Ok(()) => outln!(
            "Remembered as this machine's repository in {}",
            file.display()
        ),
        Err(e) => {
            eprintln!(
                "archipel: cannot remember the repository in {}: {e}; pass --repo to later commands",
                file.display()
            );
            Ok(())
        }
    }
}

/// Lines of an exclude file that are patterns.
fn exclude_file_patterns(file: &Path) -> Result<Vec<String>, CliError> {
    let text =
        std::fs::read_to_string(file).map_err(io_error("read", &file.display().to_string()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `archipel backup run`.
async fn run(repo: &Repository, flags: RunFlags) -> Result<(), CliError> {
    let mut excludes = flags.exclude;
    for file in &flags.exclude_file {
        excludes.extend(exclude_file_patterns(file)?);
    }
    let defaults = BackupOptions::default();
    let options = BackupOptions {
        paths: flags.paths,
        excludes,
        tags: flags.tag,
        host: flags.host,
        parent: flags.parent,
        force: flags.force,
        read_concurrency: flags.read_concurrency.unwrap_or(defaults.read_concurrency),
        upload_concurrency: flags
            .upload_concurrency
            .unwrap_or(defaults.upload_concurrency),
    };
    let progress = Arc::new(BackupProgress::default());
    let ticker = {
        let progress = progress.clone();
        Ticker::start(move |bar| {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let more = if progress.scan_done.load(Ordering::Relaxed) {
                ""
            } else {
                "+"
            };
            bar.set_length(load(&progress.bytes_total));
            bar.set_position(load(&progress.bytes_done));
            // Reading ends before the last packs are uploaded: the second
            // half says how far those are.
            bar.set_message(format!(
                "{}/{}{more} files, {} of {} new uploaded",
                load(&progress.files_done),
                load(&progress.files_total),
                human_size(load(&progress.bytes_uploaded)),
                human_size(load(&progress.bytes_stored))
            ));
        })
    };
    let result = archipel_backup::backup(repo, options, progress).await;
    ticker.finish();
    let snapshot = result?;
    let summary = snapshot.summary.clone().unwrap_or_default();
    if flags.json {
        outln!("{}", to_json(&snapshot)?)?;
    } else {
        print_backup_summary(&snapshot, &summary)?;
    }
    if summary.errors.is_empty() {
        return Ok(());
    }
    for error in &summary.errors {
        eprintln!("archipel: could not back up {error}");
    }
    Err(CliError::Incomplete {
        message: format!(
            "snapshot {} saved, but {} path{} could not be read and {} not in it",
            snapshot.short_id(),
            summary.errors.len(),
            plural(summary.errors.len() as u64),
            if summary.errors.len() == 1 {
                "is"
            } else {
                "are"
            },
        ),
        status: PARTIAL_BACKUP,
    })
}

fn print_backup_summary(snapshot: &Snapshot, s: &BackupSummary) -> Result<(), CliError> {
    let mut out = format!(
        "Files: {:>9} new, {:>9} changed, {:>9} unmodified\n\
         Dirs:  {:>9} new, {:>9} changed, {:>9} unmodified\n\
         Added to the repository: {} ({} stored) in {} new pack{}\n",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs_new,
        s.dirs_changed,
        s.dirs_unmodified,
        human_size(s.bytes_added),
        human_size(s.bytes_stored),
        s.packs,
        plural(s.packs),
    );
    if s.packs_recovered > 0 {
        out.push_str(&format!(
            "Recovered {} pack{} left by an interrupted backup\n",
            s.packs_recovered,
            plural(s.packs_recovered)
        ));
    }
    out.push_str(&format!(
        "\nprocessed {} file{}, {} in {}\nsnapshot {} saved\n",
        s.total_files,
        plural(s.total_files),
        human_size(s.total_bytes),
        clock(s.duration_seconds),
        snapshot.short_id()
    ));
    crate::output::print(&out)
}

/// `archipel backup restore`.
async fn restore(repo: &Repository, spec: &str, options: &RestoreOptions) -> Result<(), CliError> {
    let snapshots = snapshot::load_all(repo).await?;
    let snapshot = snapshot::find(&snapshots, spec)?;
    let progress = Arc::new(RestoreProgress::default());
    let ticker = {
        let progress = progress.clone();
        Ticker::start(move |bar| {
            bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
            bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
            bar.set_message(format!(
                "{} files",
                progress.files_total.load(Ordering::Relaxed)
            ));
        })
    };
    let result = archipel_backup::restore(repo, snapshot, options, progress).await;
    ticker.finish();
    let summary = result?;
    outln!(
        "Restored snapshot {} to {}: {} file{}, {} director{}, {} other{}, {}",
        snapshot.short_id(),
        options.target.display(),
        summary.files,
        plural(summary.files),
        summary.dirs,
        if summary.dirs == 1 { "y" } else { "ies" },
        summary.others,
        plural(summary.others),
        human_size(summary.bytes)
    )?;
    if summary.errors.is_empty() {
        return Ok(());
    }
    for error in &summary.errors {
        eprintln!("archipel: could not restore {error}");
    }
    Err(CliError::Incomplete {
        message: format!(
            "{} error{} while restoring: the restore is incomplete",
            summary.errors.len(),
            plural(summary.errors.len() as u64)
        ),
        status: 1,
    })
}

/// A progress bar on standard error, when it is a terminal, updated ten
/// times a second from the engine's counters by `update`.
struct Ticker(Option<(ProgressBar, tokio::task::JoinHandle<()>)>);

impl Ticker {
    fn start(update: impl Fn(&ProgressBar) + Send + 'static) -> Ticker {
        if !std::io::stderr().is_terminal() {
            return Ticker(None);
        }
        // Hidden until the engine knows a total: a bar of 0 bytes would
        // show as complete.
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()).with_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let task = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                let mut shown = false;
                loop {
                    every.tick().await;
                    update(&bar);
                    if !shown && bar.length().is_some_and(|total| total > 0) {
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        shown = true;
                    }
                }
            })
        };
        Ticker(Some((bar, task)))
    }

    fn finish(self) {
        if let Some((bar, task)) = self.0 {
            task.abort();
            bar.finish_and_clear();
        }
    }
}

/// `s` after a count other than one.
pub(crate) fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// A duration as a clock shows it: `0:02`, `1:02:03`.
fn clock(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string(value)
        .map_err(|e| CliError::Usage(format!("cannot format the answer as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(2.4), "0:02");
        assert_eq!(clock(62.0), "1:02");
        assert_eq!(clock(3723.0), "1:02:03");
        assert_eq!(clock(-1.0), "0:00");
    }

    #[test]
    fn pack_sizes_stay_within_what_packs_can_address() {
        assert_eq!(parse_pack_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_pack_size("1024"), Ok(1024));
        assert!(parse_pack_size("1023").is_err());
        assert!(parse_pack_size("2147483648").is_err());
        assert!(parse_pack_size("1MiB").is_err());
    }
}
