//! `archipel-bench backup`: `archipel backup` against restic on one
//! in-process network in one run (issue 15).
//!
//! A real tree (`--tree`; by default the crate sources under
//! `~/.cargo/registry/src`) is copied to a scratch directory, so the original
//! is never touched. Each tool makes a repository and backs the copy up:
//! `archipel backup` (the CLI as a child process; the engine stores through
//! the client library) in `ap://bench/archipel` with its default pack size,
//! and restic (`--compression auto`, repository format 2) through the S3
//! gateway, which runs in this process like the network. Then every
//! [`CHANGE_EVERY`]th file in path order is changed — a line appended to one,
//! a few bytes overwritten in place (same size) in the next — and
//! [`NEW_FILES`] files are added; each tool backs up again (it finds its
//! parent snapshot itself), then restores that second snapshot into an empty
//! directory, which must equal the changed tree (every path, every file's
//! BLAKE3, every symlink's target).
//!
//! restic runs twice, in two repositories: with `--no-cache`, and with a
//! fresh, empty `--cache-dir` for every command. archipel keeps no local
//! cache, so neither lets restic's second backup or restore profit from what
//! an earlier command left on disk; `--no-cache` is the like-for-like one
//! (every read goes to the network), the fresh cache shows what restic's
//! cache costs or saves within one command (it fetches whole tree packs).
//!
//! Stored bytes are measured alike for every repository: the sum of the
//! sizes `Project::list` gives for the objects below its prefix (the
//! plaintext sizes the clients wrote, before erasure coding). Each tool's
//! peak RSS is its `VmHWM`, polled every 10 ms; its CPU time comes from
//! `RUSAGE_CHILDREN`, the network's (and the gateway's) from `RUSAGE_SELF`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use archipel_client::Project;
use archipel_tests::Planet;
use nix::sys::resource::UsageWho;
use serde::Deserialize;
use tokio::process::Command;

use crate::harness::{children_cpu, run_watched, ArchipelCli, Gateway};
use crate::{cpu_seconds, BenchError, BUCKET};

/// Every this many files (in path order), one is changed before the second
/// backup: about 1 %.
const CHANGE_EVERY: usize = 100;
/// New files added before the second backup, 64 KiB of random bytes each.
const NEW_FILES: u64 = 10;
const NEW_FILE_SIZE: usize = 64 << 10;
/// The prefix of archipel's repository in the bench bucket.
const ARCHIPEL_PREFIX: &str = "archipel/";
/// restic's repository password (the bench's repositories are thrown away).
const RESTIC_PASSWORD: &str = "archipel-bench";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The tree to back up; it is copied first, and only the copy changes
    /// [default: $CARGO_HOME/registry/src, or ~/.cargo/registry/src].
    #[arg(long)]
    tree: Option<PathBuf>,
    /// The `archipel` CLI binary [default: `archipel` next to this program].
    #[arg(long)]
    archipel: Option<PathBuf>,
    /// The restic binary (0.14 or later: compression).
    #[arg(long, default_value = "restic")]
    restic: PathBuf,
}

/// How restic treats its local cache.
#[derive(Clone, Copy)]
enum Cache {
    /// `--no-cache`.
    Off,
    /// `--cache-dir` with a new empty directory for every command.
    Fresh,
}

impl Cache {
    /// The prefix of the repository restic uses this way.
    fn prefix(self) -> &'static str {
        match self {
            Cache::Off => "restic/",
            Cache::Fresh => "restic-fresh-cache/",
        }
    }
}

/// One of the tools compared, with its repository.
enum Tool {
    Archipel {
        cli: ArchipelCli,
        url: String,
        /// `XDG_CONFIG_HOME` for the CLI, so that `backup init` remembers the
        /// bench's repository there and not in the user's configuration.
        config_home: PathBuf,
    },
    Restic {
        exe: PathBuf,
        /// `s3:http://127.0.0.1:PORT/bench/PREFIX`.
        url: String,
        /// `-o s3.region=…`, so that restic asks no bucket location (and
        /// path-style requests).
        region: String,
        /// The gateway's key pair.
        keys: (String, String),
        cache: Cache,
        /// Where fresh cache directories are made.
        scratch: PathBuf,
    },
}

impl Tool {
    fn name(&self) -> &'static str {
        match self {
            Tool::Archipel { .. } => "archipel backup",
            Tool::Restic {
                cache: Cache::Off, ..
            } => "restic, --no-cache",
            Tool::Restic {
                cache: Cache::Fresh,
                ..
            } => "restic, fresh cache dir",
        }
    }

    /// The repository's prefix in the bench bucket.
    fn prefix(&self) -> &'static str {
        match self {
            Tool::Archipel { .. } => ARCHIPEL_PREFIX,
            Tool::Restic { cache, .. } => cache.prefix(),
        }
    }

    /// Runs the tool with `args` (after the repository options); returns
    /// its stdout and peak RSS in KiB.
    async fn run(&self, args: &[&str]) -> Result<(Vec<u8>, u64), BenchError> {
        let mut out = Vec::new();
        let peak = match self {
            Tool::Archipel {
                cli, config_home, ..
            } => {
                let mut command = cli.command(args);
                command.env("XDG_CONFIG_HOME", config_home);
                let what = format!("archipel {args:?}");
                run_watched(&mut command, &what, &[], &mut out).await?.1
            }
            Tool::Restic {
                exe,
                url,
                region,
                keys,
                cache,
                scratch,
            } => {
                let mut command = Command::new(exe);
                command
                    .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
                    .env("AWS_ACCESS_KEY_ID", &keys.0)
                    .env("AWS_SECRET_ACCESS_KEY", &keys.1)
                    .env_remove("AWS_SESSION_TOKEN")
                    .args(["-r", url, "-o", &format!("s3.region={region}")])
                    .args(["-o", "s3.bucket-lookup=path"])
                    .args(["--compression", "auto"]);
                // Made now, removed when the command is done.
                let cache_dir = match cache {
                    Cache::Off => {
                        command.arg("--no-cache");
                        None
                    }
                    Cache::Fresh => {
                        let dir = tempfile::tempdir_in(scratch)?;
                        command.arg("--cache-dir").arg(dir.path());
                        Some(dir)
                    }
                };
                command.args(args);
                let (_, peak) =
                    run_watched(&mut command, &format!("restic {args:?}"), &[], &mut out).await?;
                drop(cache_dir);
                peak
            }
        };
        Ok((out, peak))
    }

    async fn init(&self) -> Result<(), BenchError> {
        match self {
            Tool::Archipel { url, .. } => self.run(&["backup", "init", url]).await?,
            Tool::Restic { .. } => {
                self.run(&["init", "--repository-version", "2", "--quiet"])
                    .await?
            }
        };
        Ok(())
    }

    /// Backs `tree` up.
    async fn backup(&self, tree: &Path) -> Result<(Step, Summary), BenchError> {
        let tree = tree.to_string_lossy();
        let step = match self {
            Tool::Archipel { url, .. } => {
                measure(self.run(&["backup", "run", &tree, "--json", "--repo", url])).await?
            }
            Tool::Restic { .. } => measure(self.run(&["backup", &tree, "--json"])).await?,
        };
        let summary = match self {
            Tool::Archipel { .. } => Summary::of_archipel(&step.stdout)?,
            Tool::Restic { .. } => Summary::of_restic(&step.stdout)?,
        };
        Ok((step, summary))
    }

    /// Restores `snapshot` below `target`.
    async fn restore(&self, snapshot: &str, target: &Path) -> Result<Step, BenchError> {
        let target = target.to_string_lossy();
        match self {
            Tool::Archipel { url, .. } => {
                measure(self.run(&[
                    "backup", "restore", snapshot, "--target", &target, "--repo", url,
                ]))
                .await
            }
            Tool::Restic { .. } => {
                measure(self.run(&["restore", snapshot, "--target", &target, "--quiet"])).await
            }
        }
    }
}

/// What one command cost.
struct Step {
    seconds: f64,
    /// CPU seconds of the tool's process.
    tool_cpu: f64,
    /// CPU seconds of this process meanwhile: the network, and for restic
    /// the gateway.
    network_cpu: f64,
    peak_rss_kib: u64,
    stdout: Vec<u8>,
}

async fn measure(
    run: impl std::future::Future<Output = Result<(Vec<u8>, u64), BenchError>>,
) -> Result<Step, BenchError> {
    let (network_before, tool_before) = (cpu_seconds(UsageWho::RUSAGE_SELF), children_cpu());
    let started = Instant::now();
    let (stdout, peak_rss_kib) = run.await?;
    Ok(Step {
        seconds: started.elapsed().as_secs_f64(),
        tool_cpu: children_cpu() - tool_before,
        network_cpu: cpu_seconds(UsageWho::RUSAGE_SELF) - network_before,
        peak_rss_kib,
        stdout,
    })
}

/// What a backup says about itself.
struct Summary {
    snapshot: String,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    /// Plaintext bytes of the new chunks.
    bytes_added: u64,
    /// archipel only: what they take, compressed and sealed.
    bytes_stored: Option<u64>,
    /// archipel only.
    packs: Option<u64>,
    /// The tool's own timing.
    seconds: f64,
}

/// `archipel backup run --json`: the snapshot with its summary.
#[derive(Deserialize)]
struct ArchipelSnapshot {
    id: String,
    summary: ArchipelSummary,
}

#[derive(Deserialize)]
struct ArchipelSummary {
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    bytes_added: u64,
    bytes_stored: u64,
    packs: u64,
    duration_seconds: f64,
}

/// The last line of `restic backup --json`.
#[derive(Deserialize)]
struct ResticSummary {
    message_type: String,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    data_added: u64,
    total_duration: f64,
    snapshot_id: String,
}

impl Summary {
    fn of_archipel(stdout: &[u8]) -> Result<Summary, BenchError> {
        let snapshot: ArchipelSnapshot = serde_json::from_slice(stdout).map_err(|e| {
            BenchError::Child(format!("archipel backup run --json printed nonsense: {e}"))
        })?;
        let s = snapshot.summary;
        Ok(Summary {
            snapshot: snapshot.id,
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            bytes_added: s.bytes_added,
            bytes_stored: Some(s.bytes_stored),
            packs: Some(s.packs),
            seconds: s.duration_seconds,
        })
    }

    fn of_restic(stdout: &[u8]) -> Result<Summary, BenchError> {
        let s = stdout
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<ResticSummary>(line).ok())
            .find(|s| s.message_type == "summary")
            .ok_or_else(|| BenchError::Child("restic backup --json printed no summary".into()))?;
        Ok(Summary {
            snapshot: s.snapshot_id,
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unmodified,
            bytes_added: s.data_added,
            bytes_stored: None,
            packs: None,
            seconds: s.total_duration,
        })
    }
}

/// The bytes and number of objects stored below `prefix` in the bench
/// bucket, as the network stores them (plaintext sizes).
async fn stored(project: &Project, prefix: &str) -> Result<(u64, usize), BenchError> {
    let objects: Vec<u64> = project
        .list(BUCKET, prefix, true)
        .await?
        .into_iter()
        .filter(|e| !e.is_prefix)
        .map(|e| e.size)
        .collect();
    Ok((objects.iter().sum(), objects.len()))
}

/// What an entry of a tree is and holds.
#[derive(Debug, PartialEq, Eq)]
enum Content {
    Dir,
    File { size: u64, hash: blake3::Hash },
    Link(PathBuf),
    Other,
}

/// Every entry below `root`, by its path relative to `root`.
fn contents(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Content>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let relative = dir.join(entry.file_name());
            let kind = entry.file_type()?;
            let content = if kind.is_dir() {
                dirs.push(relative.clone());
                Content::Dir
            } else if kind.is_symlink() {
                Content::Link(std::fs::read_link(entry.path())?)
            } else if kind.is_file() {
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(entry.path())?)?;
                Content::File {
                    size: entry.metadata()?.len(),
                    hash: hasher.finalize(),
                }
            } else {
                Content::Other
            };
            out.insert(relative, content);
        }
    }
    Ok(out)
}

async fn contents_of(root: PathBuf) -> Result<BTreeMap<PathBuf, Content>, BenchError> {
    tokio::task::spawn_blocking(move || contents(&root))
        .await
        .map_err(|e| BenchError::Child(format!("the tree walk failed: {e}")))?
        .map_err(BenchError::from)
}

/// Changes every [`CHANGE_EVERY`]th of `files` below `tree` (alternately a
/// line appended and 8 bytes overwritten in the middle) and adds
/// [`NEW_FILES`] files; returns the number of files changed.
fn change(tree: &Path, files: &[&PathBuf]) -> std::io::Result<usize> {
    let mut changed = 0;
    for (n, relative) in files
        .iter()
        .skip(CHANGE_EVERY - 1)
        .step_by(CHANGE_EVERY)
        .enumerate()
    {
        let path = tree.join(relative);
        let len = std::fs::metadata(&path)?.len();
        if n % 2 == 0 || len < 16 {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)?
                .write_all(b"\n// changed by archipel-bench\n")?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .write_all_at(b"ARCHIPEL", len / 2)?;
        }
        changed += 1;
    }
    let new = tree.join("archipel-bench-new");
    std::fs::create_dir(&new)?;
    for i in 0..NEW_FILES {
        std::fs::write(
            new.join(format!("{i}.bin")),
            archipel_tests::test_data(NEW_FILE_SIZE, i),
        )?;
    }
    Ok(changed)
}

/// `$CARGO_HOME/registry/src`, or `~/.cargo/registry/src`.
fn default_tree() -> Result<PathBuf, BenchError> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|cargo| cargo.join("registry").join("src"))
        .ok_or_else(|| BenchError::Child("neither CARGO_HOME nor HOME is set: pass --tree".into()))
}

/// One backup: what it cost, what it said, and the repository after it
/// (bytes and objects).
struct Backup {
    step: Step,
    summary: Summary,
    stored: (u64, usize),
}

/// One tool's figures.
struct Figures {
    first: Backup,
    second: Backup,
    restore: Step,
}

/// `tool` backs `tree` up; then the repository is measured.
async fn backup(tool: &Tool, project: &Project, tree: &Path) -> Result<Backup, BenchError> {
    let (step, summary) = tool.backup(tree).await?;
    Ok(Backup {
        step,
        summary,
        stored: stored(project, tool.prefix()).await?,
    })
}

/// Runs the comparison on `planet` and prints its tables (Markdown).
pub(crate) async fn bench(planet: &Planet, args: &Args, setting: &str) -> Result<(), BenchError> {
    let source = match &args.tree {
        Some(tree) => tree.clone(),
        None => default_tree()?,
    };
    let access = planet.access().serialize();
    let project = planet.project().await?;
    let archipel = ArchipelCli::locate(args.archipel.as_deref(), access.clone())?;
    let mut version = Vec::new();
    run_watched(
        Command::new(&args.restic).arg("version"),
        "restic version",
        &[],
        &mut version,
    )
    .await?;
    let restic_version = String::from_utf8_lossy(&version).trim().to_string();

    let scratch = tempfile::tempdir()?;
    let scratch_path = std::fs::canonicalize(scratch.path())?;
    let gateway = Gateway::start(&access, &scratch_path.join("gateway")).await?;
    let restic = |cache: Cache| Tool::Restic {
        exe: args.restic.clone(),
        url: format!(
            "s3:{}/{BUCKET}/{}",
            gateway.endpoint,
            cache.prefix().trim_end_matches('/')
        ),
        region: gateway.region.clone(),
        keys: (
            gateway.access_key_id.clone(),
            gateway.secret_access_key.clone(),
        ),
        cache,
        scratch: scratch_path.clone(),
    };
    let tools = [
        Tool::Archipel {
            cli: archipel,
            url: format!("ap://{BUCKET}/{}", ARCHIPEL_PREFIX.trim_end_matches('/')),
            config_home: scratch_path.join("config"),
        },
        restic(Cache::Off),
        restic(Cache::Fresh),
    ];

    let tree = scratch_path.join("tree");
    eprintln!("copying {} to {}…", source.display(), tree.display());
    run_watched(
        Command::new("cp").arg("-a").arg(&source).arg(&tree),
        "cp -a",
        &[],
        &mut tokio::io::sink(),
    )
    .await?;
    let before = contents_of(tree.clone()).await?;
    let files: Vec<&PathBuf> = before
        .iter()
        .filter(|(_, c)| matches!(c, Content::File { .. }))
        .map(|(path, _)| path)
        .collect();
    let tree_bytes: u64 = before
        .values()
        .map(|c| match c {
            Content::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let file_count = files.len();

    let mut firsts = Vec::new();
    for tool in &tools {
        eprintln!("{}: init, first backup…", tool.name());
        tool.init().await?;
        firsts.push(backup(tool, &project, &tree).await?);
    }

    let changed = change(&tree, &files)?;
    let after = contents_of(tree.clone()).await?;
    let mut seconds = Vec::new();
    for tool in &tools {
        eprintln!("{}: second backup…", tool.name());
        seconds.push(backup(tool, &project, &tree).await?);
    }

    let restored_root = tree.strip_prefix("/").unwrap_or(&tree);
    let mut figures = Vec::new();
    for (i, ((tool, first), second)) in tools.iter().zip(firsts).zip(seconds).enumerate() {
        eprintln!("{}: restore…", tool.name());
        let target = scratch_path.join(format!("restore-{i}"));
        let restore = tool.restore(&second.summary.snapshot, &target).await?;
        let restored = contents_of(target.join(restored_root)).await?;
        if let Some(path) = after
            .keys()
            .chain(restored.keys())
            .find(|path| after.get(*path) != restored.get(*path))
        {
            return Err(BenchError::Restore(format!(
                "{}: {} differs",
                tool.name(),
                path.display()
            )));
        }
        tokio::fs::remove_dir_all(&target).await?;
        figures.push(Figures {
            first,
            second,
            restore,
        });
    }
    gateway.stop().await?;

    print_tables(
        &tools,
        &figures,
        &format!(
            "{setting}; {file_count} files, {:.1} MB in {}; changed {changed} files (1 in {CHANGE_EVERY}) and added {NEW_FILES} of {} KiB; {restic_version}",
            tree_bytes as f64 / 1e6,
            source.display(),
            NEW_FILE_SIZE >> 10
        ),
    );
    Ok(())
}

/// Picks one step out of a tool's figures.
type StepOf = fn(&Figures) -> &Step;

fn print_tables(tools: &[Tool], figures: &[Figures], setting: &str) {
    println!("{setting}");
    println!(
        "network, gateway in this process; each tool a child process; every restore equals the tree"
    );
    println!();
    let restic = &tools[1..];
    print!("| | {} |", tools[0].name());
    for tool in restic {
        print!(" {} |", tool.name());
    }
    for tool in restic {
        print!(" archipel / {} |", tool.name());
    }
    println!();
    println!("|---|{}", "---:|".repeat(2 * tools.len() - 1));
    let line = |name: &str, value: &dyn Fn(&Figures) -> f64, digits: usize| {
        print!("| {name} |");
        for f in figures {
            print!(" {:.*} |", digits, value(f));
        }
        for f in &figures[1..] {
            print!(" {:.2} |", value(&figures[0]) / value(f));
        }
        println!();
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let steps: [(&str, StepOf); 3] = [
        ("first backup", |f| &f.first.step),
        ("second backup", |f| &f.second.step),
        ("restore", |f| &f.restore),
    ];
    for (name, step) in steps {
        line(&format!("{name}, s"), &|f| step(f).seconds, 1);
        line(&format!("{name}, tool CPU s"), &|f| step(f).tool_cpu, 1);
        line(
            &format!("{name}, network CPU s"),
            &|f| step(f).network_cpu,
            1,
        );
        line(
            &format!("{name}, peak RSS MiB"),
            &|f| mib(step(f).peak_rss_kib),
            0,
        );
    }
    let mb = |bytes: u64| bytes as f64 / 1e6;
    line(
        "stored after the first backup, MB",
        &|f| mb(f.first.stored.0),
        1,
    );
    line(
        "stored after the second backup, MB",
        &|f| mb(f.second.stored.0),
        1,
    );
    line(
        "added by the second backup, MB",
        &|f| mb(f.second.stored.0.saturating_sub(f.first.stored.0)),
        2,
    );
    line(
        "objects after the second backup",
        &|f| f.second.stored.1 as f64,
        0,
    );
    println!();
    println!("What each backup reported (restic's \"added\" is its `data_added`):");
    println!();
    println!("| backup | tool | files new | changed | unmodified | added MB | stored MB | packs | tool's own s |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (tool, f) in tools.iter().zip(figures) {
        for (name, s) in [("first", &f.first.summary), ("second", &f.second.summary)] {
            println!(
                "| {name} | {} | {} | {} | {} | {:.1} | {} | {} | {:.1} |",
                tool.name(),
                s.files_new,
                s.files_changed,
                s.files_unmodified,
                s.bytes_added as f64 / 1e6,
                s.bytes_stored
                    .map_or("–".to_string(), |b| format!("{:.1}", b as f64 / 1e6)),
                s.packs.map_or("–".to_string(), |p| p.to_string()),
                s.seconds
            );
        }
    }
    println!();
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "reproduce: cargo build --release -p archipel-tests --bin archipel-bench -p archipel-cli --bin archipel && target/release/archipel-bench {}",
        args.join(" ")
    );
}
