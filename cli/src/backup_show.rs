//! The `archipel backup` commands that read or tidy a repository rather than
//! move files: `snapshots`, `ls`, `diff`, `forget`, `prune`, `check` (`run`,
//! `restore` and `init` are in `backup`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use archipel_backup::index::Index;
use archipel_backup::tree::{display_name, Node, NodeKind, Trees};
use archipel_backup::walk::{self, ChangeKind};
use archipel_backup::{
    snapshot, CheckReport, Error as BackupError, KeepPolicy, PruneOptions, PruneSummary,
    Repository, Snapshot, Verdict,
};

use crate::backup::{plural, to_json};
use crate::output::{self, human_size, outln};
use crate::CliError;

/// `ls` writes its listing in pieces of about this many bytes.
const LISTING_CHUNK: usize = 64 * 1024;

#[derive(clap::Args)]
pub(crate) struct ForgetFlags {
    /// Snapshots to remove (ids, unique prefixes, or `latest`); without
    /// them, the --keep rules decide.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots (of each host and paths).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_hourly: usize,
    /// Keep the newest snapshot of each of the last N days (UTC).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_daily: usize,
    /// Keep the newest snapshot of each of the last N ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_weekly: usize,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_monthly: usize,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    keep_yearly: usize,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,
    /// Then run `prune` (with --max-unused and --dry-run).
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: PruneFlags,
}

#[derive(clap::Args)]
pub(crate) struct PruneFlags {
    /// Repack a pack when more than this percentage of its bytes is unused.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0, value_parser = parse_percent)]
    max_unused: f64,
    /// Say what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The answer as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('%').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

/// The snapshot `spec` names (an id, a unique prefix of one, or `latest`).
async fn find(repo: &Repository, spec: &str) -> Result<Snapshot, CliError> {
    let snapshots = snapshot::load_all(repo).await?;
    Ok(snapshot::find(&snapshots, spec)?.clone())
}

async fn trees(repo: &Repository) -> Result<Trees, CliError> {
    let index = Index::load(repo).await?;
    Ok(Trees::new(repo, Arc::new(index)))
}

/// A snapshot's time: RFC 3339 to the second, in UTC.
fn snapshot_time(snapshot: &Snapshot) -> String {
    humantime::format_rfc3339_seconds(snapshot.time).to_string()
}

/// A file's modification time, RFC 3339 to the second in UTC; outside what
/// RFC 3339 can write (before 1970, after 9999), seconds since the epoch.
fn node_time(node: &Node) -> String {
    const YEAR_10000: i64 = 253_402_300_800;
    match u64::try_from(node.mtime) {
        Ok(seconds) if node.mtime < YEAR_10000 => {
            let time = UNIX_EPOCH + Duration::from_secs(seconds);
            humantime::format_rfc3339_seconds(time).to_string()
        }
        _ => node.mtime.to_string(),
    }
}

/// `ls -l`'s mode: `-rw-r--r--`, `drwxr-xr-x`, `lrwxrwxrwx`, with setuid,
/// setgid and sticky as `s`/`S` and `t`/`T`.
fn mode_string(kind: NodeKind, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
    });
    for (shift, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => mark,
            (false, true) => mark.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// A table of snapshots: id, time, host, tags, paths (one a line).
fn snapshot_table(snapshots: &[&Snapshot]) -> String {
    let rows: Vec<[String; 4]> = snapshots
        .iter()
        .map(|s| {
            [
                s.short_id().to_string(),
                snapshot_time(s),
                s.hostname.clone(),
                s.tags.join(","),
            ]
        })
        .collect();
    let headers = ["ID", "Time", "Host", "Tags"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4], path: &str| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            text.push_str(&format!("{cell:width$}  "));
        }
        text.push_str(path);
        text.push('\n');
        text
    };
    let mut out = line(headers, "Paths");
    for (row, s) in rows.iter().zip(snapshots) {
        let mut paths = s.paths.iter();
        let first = paths.next().map_or("", String::as_str);
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]], first));
        for path in paths {
            out.push_str(&line(["", "", "", ""], path));
        }
    }
    out
}

/// `archipel backup snapshots`.
pub(crate) async fn snapshots(repo: &Repository, json: bool) -> Result<(), CliError> {
    let all = snapshot::load_all(repo).await?;
    if json {
        return outln!("{}", to_json(&all)?);
    }
    let refs: Vec<&Snapshot> = all.iter().collect();
    output::print(&format!(
        "{}{} snapshot{}\n",
        snapshot_table(&refs),
        all.len(),
        plural(all.len() as u64)
    ))
}

/// One line of `ls --json`.
#[derive(serde::Serialize)]
struct ListedEntry {
    path: String,
    #[serde(rename = "type")]
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

fn listing_line(path: &Path, node: &Node, long: bool, json: bool) -> Result<String, CliError> {
    let target = node.target.as_deref().map(display_name);
    if json {
        return to_json(&ListedEntry {
            path: path.to_string_lossy().into_owned(),
            kind: node.kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            size: node.size,
            mtime: node_time(node),
            target,
        });
    }
    if !long {
        return Ok(path.to_string_lossy().into_owned());
    }
    let mut line = format!(
        "{} {:>6} {:>6} {:>12} {} {}",
        mode_string(node.kind, node.mode),
        node.uid,
        node.gid,
        node.size,
        node_time(node),
        path.to_string_lossy()
    );
    if let Some(target) = target {
        line.push_str(" -> ");
        line.push_str(&target);
    }
    Ok(line)
}

/// `archipel backup ls`.
pub(crate) async fn ls(
    repo: &Repository,
    spec: &str,
    path: Option<&Path>,
    long: bool,
    json: bool,
) -> Result<(), CliError> {
    let snapshot = find(repo, spec).await?;
    let trees = trees(repo).await?;
    let mut out = String::new();
    // The walk calls back with the engine's error type: a failure of ours
    // (a closed pipe) is kept here and the walk stopped with a placeholder.
    let mut failed: Option<CliError> = None;
    let walked = walk::list(
        &trees,
        snapshot.tree,
        path.unwrap_or(Path::new("/")),
        |entry| {
            let printed = listing_line(&entry.path, &entry.node, long, json).and_then(|line| {
                out.push_str(&line);
                out.push('\n');
                if out.len() < LISTING_CHUNK {
                    return Ok(());
                }
                let printed = output::print(&out);
                out.clear();
                printed
            });
            printed.map_err(|e| {
                failed = Some(e);
                BackupError::Invalid("the listing stopped".into())
            })
        },
    )
    .await;
    if let Some(e) = failed {
        return Err(e);
    }
    walked?;
    output::print(&out)
}

/// `archipel backup diff`.
pub(crate) async fn diff(
    repo: &Repository,
    first: &str,
    second: &str,
    json: bool,
) -> Result<(), CliError> {
    let (a, b) = (find(repo, first).await?, find(repo, second).await?);
    let changes = walk::diff(&trees(repo).await?, a.tree, b.tree).await?;
    let mut out = String::new();
    for change in &changes {
        if json {
            out.push_str(&to_json(change)?);
        } else {
            out.push_str(&format!(
                "{}    {}",
                change.kind.symbol(),
                change.path.to_string_lossy()
            ));
        }
        out.push('\n');
    }
    if !json {
        let count = |kind| changes.iter().filter(|c| c.kind == kind).count();
        out.push_str(&format!(
            "\n{} added, {} removed, {} modified, {} with other metadata, {} of another type\n",
            count(ChangeKind::Added),
            count(ChangeKind::Removed),
            count(ChangeKind::Modified),
            count(ChangeKind::Metadata),
            count(ChangeKind::Type),
        ));
    }
    output::print(&out)
}

/// `archipel backup forget`.
pub(crate) async fn forget(repo: &Repository, flags: ForgetFlags) -> Result<(), CliError> {
    let policy = KeepPolicy {
        last: flags.keep_last,
        hourly: flags.keep_hourly,
        daily: flags.keep_daily,
        weekly: flags.keep_weekly,
        monthly: flags.keep_monthly,
        yearly: flags.keep_yearly,
        tags: flags.keep_tag,
    };
    let dry_run = flags.prune_flags.dry_run;
    let json = flags.prune_flags.json;
    if flags.snapshots.is_empty() {
        let verdicts = archipel_backup::forget(repo, &policy, dry_run).await?;
        if json {
            outln!("{}", to_json(&verdicts)?)?;
        } else {
            print_verdicts(&verdicts, dry_run)?;
        }
    } else {
        if !policy.is_empty() {
            return Err(CliError::Usage(
                "give either snapshots to forget or --keep rules, not both".into(),
            ));
        }
        let removed = if dry_run {
            let all = snapshot::load_all(repo).await?;
            flags
                .snapshots
                .iter()
                .map(|spec| snapshot::find(&all, spec).cloned())
                .collect::<Result<Vec<_>, _>>()?
        } else {
            archipel_backup::forget_snapshots(repo, &flags.snapshots).await?
        };
        if json {
            outln!("{}", to_json(&removed)?)?;
        } else {
            let verb = if dry_run { "Would remove" } else { "Removed" };
            for s in &removed {
                outln!("{verb} snapshot {} of {}", s.short_id(), snapshot_time(s))?;
            }
        }
    }
    if flags.prune {
        prune(repo, &flags.prune_flags).await?;
    }
    Ok(())
}

fn print_verdicts(verdicts: &[Verdict], dry_run: bool) -> Result<(), CliError> {
    let mut out = String::new();
    let mut removed = 0;
    for verdict in verdicts {
        out.push_str(&format!(
            "Snapshots of host {}, paths {}:\n",
            verdict.host,
            verdict.paths.join(", ")
        ));
        for (what, list) in [("keep", &verdict.keep), ("remove", &verdict.remove)] {
            if list.is_empty() {
                continue;
            }
            let what = if what == "remove" && dry_run {
                "would remove"
            } else {
                what
            };
            out.push_str(&format!(
                "{what} {} snapshot{}:\n",
                list.len(),
                plural(list.len() as u64)
            ));
            let refs: Vec<&Snapshot> = list.iter().collect();
            out.push_str(&snapshot_table(&refs));
        }
        out.push('\n');
        removed += verdict.remove.len();
    }
    out.push_str(&format!(
        "{} {removed} snapshot{}\n",
        if dry_run { "Would remove" } else { "Removed" },
        plural(removed as u64)
    ));
    output::print(&out)
}

/// `archipel backup prune`.
pub(crate) async fn prune(repo: &Repository, flags: &PruneFlags) -> Result<(), CliError> {
    let options = PruneOptions {
        max_unused: flags.max_unused / 100.0,
        dry_run: flags.dry_run,
    };
    let summary = archipel_backup::prune(repo, &options).await?;
    if flags.json {
        return outln!("{}", to_json(&summary)?);
    }
    print_prune(&summary, flags.dry_run)
}

fn print_prune(s: &PruneSummary, dry_run: bool) -> Result<(), CliError> {
    let (delete, repack, free) = if dry_run {
        ("would delete", "would repack", "Would free")
    } else {
        ("deleted", "repacked", "Freed")
    };
    let mut out = format!(
        "{} pack{} ({}): {delete} {}, {repack} {}",
        s.packs,
        plural(s.packs),
        human_size(s.bytes),
        s.packs_deleted,
        s.packs_repacked,
    );
    if !dry_run {
        out.push_str(&format!(
            " into {} new pack{}",
            s.packs_written,
            plural(s.packs_written)
        ));
    }
    out.push_str(&format!(
        "\n{} blob{} in use, {} no longer used\n{free} {}\n",
        s.blobs_in_use,
        plural(s.blobs_in_use),
        s.blobs_removed,
        human_size(s.bytes_freed)
    ));
    if dry_run {
        out.push_str("Nothing was changed (--dry-run)\n");
    }
    output::print(&out)
}

/// `archipel backup check`.
pub(crate) async fn check(repo: &Repository, read_data: bool, json: bool) -> Result<(), CliError> {
    let report = archipel_backup::check(repo, read_data).await?;
    if json {
        outln!("{}", to_json(&report)?)?;
    } else {
        print_check(&report, read_data)?;
    }
    if report.is_clean() {
        return Ok(());
    }
    Err(CliError::Incomplete {
        message: format!(
            "the repository is damaged: {} error{}",
            report.errors.len(),
            plural(report.errors.len() as u64)
        ),
        status: 1,
    })
}

fn print_check(report: &CheckReport, read_data: bool) -> Result<(), CliError> {
    let mut out = format!(
        "{} snapshot{}, {} pack{}, {} blob{}",
        report.snapshots,
        plural(report.snapshots),
        report.packs,
        plural(report.packs),
        report.blobs,
        plural(report.blobs)
    );
    if read_data {
        out.push_str(&format!(
            ", {} pack{} read",
            report.packs_read,
            plural(report.packs_read)
        ));
    }
    out.push('\n');
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    for error in &report.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    if !report.damaged.is_empty() {
        out.push_str("damaged (snapshot: path):\n");
        for damaged in &report.damaged {
            out.push_str(&format!("  {damaged}\n"));
        }
    }
    if report.is_clean() {
        out.push_str("no errors were found\n");
    }
    output::print(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(NodeKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(NodeKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::Symlink, 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(NodeKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::File, 0o2640), "-rw-r-S---");
    }

    #[test]
    fn times_outside_rfc3339_are_seconds() {
        let node = |mtime| Node {
            name: "x".into(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            mtime_nsec: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 0,
            content: vec![],
            subtree: None,
            target: None,
            rdev: 0,
        };
        assert_eq!(node_time(&node(1_796_292_245)), "2026-12-03T10:04:05Z");
        assert_eq!(node_time(&node(-5)), "-5");
        assert_eq!(node_time(&node(i64::MAX)), i64::MAX.to_string());
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10"), Ok(10.0));
        assert_eq!(parse_percent("2.5%"), Ok(2.5));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("x").is_err());
    }
}
