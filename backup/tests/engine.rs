//! The backup engine on a whole in-process network: round trips of trees
//! with every kind of entry, deduplication across snapshots, a one-byte
//! change, forget and prune, damage found by check and survived by restore,
//! concurrent backups and the locks that keep prune apart from them.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use archipel_backup::lock::Lock;
use archipel_backup::{
    backup, check, forget, prune, restore, snapshot, BackupOptions, BackupProgress, ChunkerSizes,
    Error, InitOptions, KeepPolicy, PruneOptions, RepoLocation, Repository, RestoreOptions,
    RestoreProgress, RestoreSummary, Snapshot,
};
use archipel_client::Project;
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};

/// Small chunks and packs, so that small trees exercise many of both.
fn small_repository() -> InitOptions {
    InitOptions {
        passphrase: None,
        chunker: ChunkerSizes {
            min: 16 * 1024,
            average: 64 * 1024,
            max: 256 * 1024,
        },
        pack_size: 512 * 1024,
    }
}

async fn network(backend: Backend) -> (Planet, Project, Repository) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("backups").await.unwrap();
    let location = RepoLocation::parse("ap://backups/laptop").unwrap();
    let repo = Repository::init(&project, &location, small_repository())
        .await
        .unwrap();
    (planet, project, repo)
}

async fn run(repo: &Repository, paths: &[&Path]) -> Snapshot {
    let options = BackupOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        ..BackupOptions::default()
    };
    backup(repo, options, Arc::default()).await.unwrap()
}

async fn run_result(repo: &Repository, path: &Path) -> Result<Snapshot, Error> {
    let options = BackupOptions {
        paths: vec![path.to_path_buf()],
        ..BackupOptions::default()
    };
    backup(repo, options, Arc::default()).await
}

/// Bytes of every pack stored.
async fn pack_bytes(repo: &Repository) -> u64 {
    repo.list_packs()
        .await
        .unwrap()
        .iter()
        .map(|(_, size)| size)
        .sum()
}

/// One file at a time: chunks go to packs in file order.
async fn run_in_order(repo: &Repository, path: &Path) -> Snapshot {
    backup(
        repo,
        BackupOptions {
            paths: vec![path.to_path_buf()],
            read_concurrency: 1,
            ..BackupOptions::default()
        },
        Arc::default(),
    )
    .await
    .unwrap()
}

async fn restore_some(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    includes: Vec<String>,
) -> RestoreSummary {
    let options = RestoreOptions {
        target: target.to_path_buf(),
        includes,
        excludes: vec![],
        download_concurrency: 2,
    };
    restore(
        repo,
        snapshot,
        &options,
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap()
}

async fn restore_to(repo: &Repository, snapshot: &Snapshot, target: &Path) {
    let summary = restore_some(repo, snapshot, target, vec![]).await;
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
}

/// Where a backed-up `source` lands below a restore `target`: its absolute
/// path, rooted at the target.
fn restored(target: &Path, source: &Path) -> PathBuf {
    let source = std::fs::canonicalize(source).unwrap();
    target.join(source.strip_prefix("/").unwrap())
}

/// Everything a restore must bring back, entry by entry below `root`.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<PathBuf, String>,
        inodes: &mut BTreeMap<u64, PathBuf>,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = meta.file_type();
            let what = if kind.is_symlink() {
                format!("symlink -> {:?}", std::fs::read_link(&path).unwrap())
            } else if kind.is_dir() {
                walk(root, &path, out, inodes);
                format!("dir {:o} {}", meta.mode() & 0o7777, meta.mtime())
            } else if kind.is_file() {
                let content = std::fs::read(&path).unwrap();
                // A second name of one inode names the first.
                let link = if meta.nlink() > 1 {
                    match inodes.get(&meta.ino()) {
                        Some(first) => format!(" link of {first:?}"),
                        None => {
                            inodes.insert(meta.ino(), relative.clone());
                            String::new()
                        }
                    }
                } else {
                    String::new()
                };
                format!(
                    "file {:o} {}.{:09} {} {}{link}",
                    meta.mode() & 0o7777,
                    meta.mtime(),
                    meta.mtime_nsec(),
                    content.len(),
                    blake3::hash(&content)
                )
            } else {
                format!(
                    "special {:o} {:o}",
                    meta.mode() & 0o170000,
                    meta.mode() & 0o7777
                )
            };
            out.insert(relative, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut BTreeMap::new());
    out
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of entry and the edge cases of each.
fn awkward_tree(root: &Path) {
    write(&root.join("empty"), b"");
    // Exactly one chunk: below the chunker's minimum.
    write(&root.join("one-chunk"), &test_data(10_000, 1));
    write(&root.join("many-chunks.bin"), &test_data(1_500_000, 2));
    write(
        &root.join("text/notes.txt"),
        &b"compressible line\n".repeat(20_000),
    );
    write(&root.join("unicode/日本語 ü ñ.txt"), b"names");
    write(
        &root.join(OsStr::from_bytes(b"not-utf8-\xff\xfe")),
        b"bytes",
    );
    write(&root.join("spaces and 'quotes' \"double\""), b"odd");
    write(&root.join("deep/a/b/c/d/e/f/leaf"), b"deep");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("modes/private"), b"secret");
    chmod(&root.join("modes/private"), 0o600);
    write(&root.join("modes/script"), b"#!/bin/sh\n");
    chmod(&root.join("modes/script"), 0o4755);
    write(&root.join("modes/readonly"), b"ro");
    chmod(&root.join("modes/readonly"), 0o444);
    std::os::unix::fs::symlink("one-chunk", root.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    // Loops that a follower of links would never leave.
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("..", root.join("deep/up")).unwrap();
    std::fs::hard_link(root.join("one-chunk"), root.join("hard-link")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // A large sparse file: 256 MiB with a little data in the middle.
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(256 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"island", 100 << 20).unwrap();
    // Times with nanoseconds, set last (writing changes a directory's).
    let when = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    for file in [
        "empty",
        "one-chunk",
        "modes/private",
        "deep/a/b/c/d/e/f/leaf",
    ] {
        filetime::set_file_mtime(root.join(file), when).unwrap();
    }
    filetime::set_symlink_file_times(root.join("dangling"), when, when).unwrap();
}

async fn every_kind_of_entry_round_trips(backend: Backend) {
    let (_planet, _project, repo) = network(backend).await;
    let source = tempfile::tempdir().unwrap();
    awkward_tree(source.path());
    let progress = Arc::new(BackupProgress::default());
    let snapshot = backup(
        &repo,
        BackupOptions {
            paths: vec![source.path().to_path_buf()],
            tags: vec!["nightly".into()],
            ..BackupOptions::default()
        },
        progress.clone(),
    )
    .await
    .unwrap();
    let summary = snapshot.summary.clone().unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.files_new, 13, "{summary:?}");
    assert_eq!(
        summary.total_bytes,
        progress
            .bytes_done
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // The sparse file's zero chunks are one blob: far less stored than read.
    assert!(summary.bytes_stored < 4 << 20, "{summary:?}");

    let target = tempfile::tempdir().unwrap();
    let snapshots = snapshot::load_all(&repo).await.unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].tags, ["nightly"]);
    restore_to(&repo, &snapshots[0], target.path()).await;
    let back = restored(target.path(), source.path());
    assert_eq!(describe(&back), describe(source.path()));
    // Sparse stays sparse.
    let sparse = std::fs::metadata(back.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 256 << 20);
    assert!(
        sparse.blocks() * 512 < 16 << 20,
        "{} blocks",
        sparse.blocks()
    );
    assert!(check(&repo, true).await.unwrap().is_clean());
}

async fn an_unchanged_tree_uploads_nothing_and_one_byte_one_chunk(backend: Backend) {
    let (_planet, _project, repo) = network(backend).await;
    let source = tempfile::tempdir().unwrap();
    let mut big = test_data(4 << 20, 7);
    write(&source.path().join("big"), &big);
    for i in 0..20 {
        write(
            &source.path().join(format!("small/{i}")),
            &test_data(3000, i),
        );
    }
    let first = run(&repo, &[source.path()]).await;
    let first_summary = first.summary.clone().unwrap();

    let second = run(&repo, &[source.path()]).await;
    let summary = second.summary.clone().unwrap();
    assert_eq!(second.parent.as_deref(), Some(first.id.as_str()));
    assert_eq!(
        (
            summary.files_unmodified,
            summary.files_new,
            summary.files_changed
        ),
        (21, 0, 0)
    );
    // No data; at most the trees of the directories above the source, whose
    // times change as other tests make temporary directories beside it.
    assert_eq!(summary.data_blobs, 0);
    assert!(
        summary.tree_blobs <= 2 && summary.bytes_added < 1024,
        "{summary:?}"
    );

    // Reading everything again finds everything stored already.
    let forced = backup(
        &repo,
        BackupOptions {
            paths: vec![source.path().to_path_buf()],
            force: true,
            ..BackupOptions::default()
        },
        Arc::default(),
    )
    .await
    .unwrap();
    assert_eq!(forced.summary.unwrap().data_blobs, 0);

    // One byte in the middle of a 4 MiB file: about one chunk again.
    big[2 << 20] ^= 0xff;
    write(&source.path().join("big"), &big);
    let third = run(&repo, &[source.path()]).await;
    let summary = third.summary.clone().unwrap();
    assert_eq!((summary.files_changed, summary.files_unmodified), (1, 20));
    assert!(summary.data_blobs <= 2, "{summary:?}");
    assert!(
        summary.bytes_added < first_summary.bytes_added / 8,
        "{summary:?} vs {first_summary:?}"
    );

    // Every snapshot restores as it was.
    let target = tempfile::tempdir().unwrap();
    restore_to(&repo, &third, target.path()).await;
    assert_eq!(
        std::fs::read(restored(target.path(), source.path()).join("big")).unwrap(),
        big
    );
    let target = tempfile::tempdir().unwrap();
    restore_to(&repo, &first, target.path()).await;
    big[2 << 20] ^= 0xff;
    assert_eq!(
        std::fs::read(restored(target.path(), source.path()).join("big")).unwrap(),
        big
    );
}

on_both_backends!(
    every_kind_of_entry_round_trips,
    an_unchanged_tree_uploads_nothing_and_one_byte_one_chunk
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_prune_keep_what_the_policy_says_and_restores_still_work() {
    let (_planet, _project, repo) = network(Backend::Sqlite).await;
    let source = tempfile::tempdir().unwrap();
    let mut snapshots = Vec::new();
    for round in 0..4u64 {
        // Each round replaces most of the data: old snapshots own space.
        write(
            &source.path().join("data"),
            &test_data(600_000, 100 + round),
        );
        write(&source.path().join("stable"), &test_data(200_000, 1));
        snapshots.push(run(&repo, &[source.path()]).await);
    }
    let verdicts = forget(
        &repo,
        &KeepPolicy {
            last: 2,
            ..KeepPolicy::default()
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(verdicts.len(), 1);
    let kept: Vec<&str> = verdicts[0].keep.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(kept, [snapshots[3].id.as_str(), snapshots[2].id.as_str()]);
    let left = snapshot::load_all(&repo).await.unwrap();
    assert_eq!(
        left.iter().map(|s| &s.id).collect::<Vec<_>>(),
        [&snapshots[2].id, &snapshots[3].id]
    );

    let before = pack_bytes(&repo).await;
    let dry = prune(
        &repo,
        &PruneOptions {
            max_unused: 0.1,
            dry_run: true,
        },
    )
    .await
    .unwrap();
    let summary = prune(&repo, &PruneOptions::default()).await.unwrap();
    assert_eq!(
        (dry.packs_deleted, dry.packs_repacked),
        (summary.packs_deleted, summary.packs_repacked)
    );
    let after = pack_bytes(&repo).await;
    assert!(
        summary.packs_deleted + summary.packs_repacked > 0,
        "{summary:?}"
    );
    assert_eq!(before - after, summary.bytes_freed, "{summary:?}");
    // Two rounds of 600 KB were freed, give or take compression.
    assert!(summary.bytes_freed > 1_000_000, "{summary:?}");
    // A second prune finds nothing to do.
    let again = prune(&repo, &PruneOptions::default()).await.unwrap();
    assert_eq!(
        (again.packs_deleted, again.packs_repacked),
        (0, 0),
        "{again:?}"
    );

    let report = check(&repo, true).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    for kept in &snapshots[2..] {
        let target = tempfile::tempdir().unwrap();
        restore_to(&repo, kept, target.path()).await;
    }
    let target = tempfile::tempdir().unwrap();
    restore_to(&repo, &snapshots[3], target.path()).await;
    assert_eq!(
        describe(&restored(target.path(), source.path())),
        describe(source.path())
    );
    assert!(matches!(
        snapshot::find(&snapshot::load_all(&repo).await.unwrap(), &snapshots[0].id),
        Err(Error::NoSnapshot(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_corrupt_packs_are_reported_with_their_files_and_the_rest_restores() {
    let (_planet, _project, repo) = network(Backend::Sqlite).await;
    let source = tempfile::tempdir().unwrap();
    // Each file is three packs long and read alone, so each has packs of
    // its own.
    write(&source.path().join("a"), &test_data(1_500_000, 1));
    write(&source.path().join("b"), &test_data(1_500_000, 2));
    write(&source.path().join("c"), &test_data(1_500_000, 3));
    let snapshot = run_in_order(&repo, source.path()).await;

    // Find a pack holding a chunk of `b` only, and delete it.
    let index = archipel_backup::index::Index::load(&repo).await.unwrap();
    let trees = archipel_backup::tree::Trees::new(&repo, Arc::new(index));
    let mut chunks = BTreeMap::new();
    archipel_backup::walk::list(&trees, snapshot.tree, Path::new("/"), |entry| {
        chunks.insert(
            entry.path.file_name().unwrap().to_os_string(),
            entry.node.content.clone(),
        );
        Ok(())
    })
    .await
    .unwrap();
    let index = trees.index();
    let pack_of = |id| index.pack_id(&index.get(id).unwrap());
    // A pack holding chunks of `name` and of no other file.
    let own_pack = |name: &str| {
        chunks[OsStr::new(name)]
            .iter()
            .map(pack_of)
            .find(|pack| {
                chunks
                    .iter()
                    .filter(|(other, _)| other.as_os_str() != OsStr::new(name))
                    .all(|(_, content)| content.iter().all(|c| pack_of(c) != *pack))
            })
            .unwrap()
    };
    let victim = own_pack("b");
    let spoiled = own_pack("c");
    repo.delete(&Repository::pack_key(victim)).await.unwrap();

    let report = check(&repo, false).await.unwrap();
    assert!(!report.is_clean());
    let short = snapshot.short_id();
    let damaged: Vec<&String> = report.damaged.iter().collect();
    assert_eq!(damaged.len(), 1, "{report:?}");
    assert!(
        damaged[0].starts_with(short) && damaged[0].ends_with("/b"),
        "{damaged:?}"
    );

    // A pack changed in place (one byte of a blob of `c`): only reading the
    // data finds it, and names `c` as well.
    let mut bytes = repo.get(&Repository::pack_key(spoiled)).await.unwrap();
    bytes[100] ^= 1;
    repo.put(&Repository::pack_key(spoiled), bytes)
        .await
        .unwrap();
    assert_eq!(check(&repo, false).await.unwrap().damaged.len(), 1);
    let report = check(&repo, true).await.unwrap();
    let damaged: Vec<&String> = report.damaged.iter().collect();
    assert_eq!(damaged.len(), 2, "{report:?}");
    assert!(damaged[1].ends_with("/c"), "{damaged:?}");

    let target = tempfile::tempdir().unwrap();
    let summary = restore_some(&repo, &snapshot, target.path(), vec![]).await;
    let mut errors = summary.errors.clone();
    errors.sort_by_key(|e| e.ends_with("/c"));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].ends_with("/b") && errors[1].ends_with("/c"),
        "{errors:?}"
    );
    let back = restored(target.path(), source.path());
    assert_eq!(
        std::fs::read(back.join("a")).unwrap(),
        std::fs::read(source.path().join("a")).unwrap()
    );
    // Prune refuses to delete on a damaged repository.
    assert!(matches!(
        prune(&repo, &PruneOptions::default()).await,
        Err(Error::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_backups_are_safe_and_prune_waits_for_them() {
    let (_planet, project, repo) = network(Backend::Sqlite).await;
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    // Shared content: both backups may store the same chunk.
    for dir in [one.path(), two.path()] {
        write(&dir.join("shared"), &test_data(400_000, 9));
    }
    write(&one.path().join("own"), &test_data(300_000, 1));
    write(&two.path().join("own"), &test_data(300_000, 2));
    let location = repo.location().clone();
    let other = Repository::open(&project, &location, None).await.unwrap();
    let (paths_one, paths_two) = ([one.path()], [two.path()]);
    let (a, b) = tokio::join!(run(&repo, &paths_one), run(&other, &paths_two));
    assert_ne!(a.id, b.id);
    assert!(check(&repo, true).await.unwrap().is_clean());
    for (snapshot, source) in [(&a, one.path()), (&b, two.path())] {
        let target = tempfile::tempdir().unwrap();
        restore_to(&repo, snapshot, target.path()).await;
        assert_eq!(describe(&restored(target.path(), source)), describe(source));
    }
    // A second copy of the shared chunk, if any, is waste prune removes.
    prune(
        &repo,
        &PruneOptions {
            max_unused: 0.0,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert!(check(&repo, true).await.unwrap().is_clean());

    // A live shared lock (a backup elsewhere) keeps prune out, and prune's
    // own lock keeps backups out.
    let held = Lock::acquire(&repo, false, "backup").await.unwrap();
    let refused = prune(&repo, &PruneOptions::default()).await;
    assert!(
        matches!(&refused, Err(Error::Locked(m)) if m.contains("in use")),
        "{refused:?}"
    );
    held.release().await.unwrap();
    let exclusive = Lock::acquire(&repo, true, "prune").await.unwrap();
    let refused = run_result(&repo, one.path()).await;
    assert!(matches!(refused, Err(Error::Locked(_))));
    exclusive.release().await.unwrap();

    // An interrupted command releases its lock too.
    let interrupted = Repository::open(&project, &location, None).await.unwrap();
    interrupted.interrupt();
    let stopped = run_result(&interrupted, one.path()).await;
    assert!(matches!(stopped, Err(Error::Interrupted)), "{stopped:?}");
    // Every lock was released: nothing left to unlock.
    assert_eq!(archipel_backup::lock::unlock(&repo, true).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excludes_leave_out_and_includes_pick_out() {
    let (_planet, _project, repo) = network(Backend::Sqlite).await;
    let source = tempfile::tempdir().unwrap();
    write(&source.path().join("keep.txt"), b"keep");
    write(&source.path().join("skip.tmp"), b"skip");
    write(&source.path().join("cache/big"), b"cache");
    write(&source.path().join("docs/report.txt"), b"report");
    write(&source.path().join("docs/draft.tmp"), b"draft");
    let snapshot = backup(
        &repo,
        BackupOptions {
            paths: vec![source.path().to_path_buf()],
            excludes: vec!["*.tmp".into(), "cache".into()],
            ..BackupOptions::default()
        },
        Arc::default(),
    )
    .await
    .unwrap();
    assert_eq!(snapshot.summary.as_ref().unwrap().total_files, 2);

    let target = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(source.path()).unwrap();
    let includes = vec![root.join("docs").to_string_lossy().into_owned()];
    restore_some(&repo, &snapshot, target.path(), includes).await;
    let back = restored(target.path(), source.path());
    assert_eq!(
        std::fs::read(back.join("docs/report.txt")).unwrap(),
        b"report"
    );
    assert!(!back.join("keep.txt").exists());
    assert!(!back.join("docs/draft.tmp").exists());
    assert!(!back.join("cache").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_the_grant_or_a_passphrase() {
    let (planet, project, _repo) = network(Backend::Sqlite).await;
    let location = RepoLocation::parse("ap://backups/protected").unwrap();
    let options = InitOptions {
        passphrase: Some("correct horse".into()),
        ..small_repository()
    };
    Repository::init(&project, &location, options)
        .await
        .unwrap();
    assert!(matches!(
        Repository::open(&project, &location, None).await,
        Err(Error::WrongKey(_))
    ));
    assert!(matches!(
        Repository::open(&project, &location, Some("wrong")).await,
        Err(Error::WrongKey(_))
    ));
    Repository::open(&project, &location, Some("correct horse"))
        .await
        .unwrap();
    assert!(matches!(
        Repository::init(&project, &location, small_repository()).await,
        Err(Error::RepositoryExists(_))
    ));
    assert!(matches!(
        Repository::open(
            &project,
            &RepoLocation::parse("ap://backups/none").unwrap(),
            None
        )
        .await,
        Err(Error::NoRepository(_))
    ));

    // A grant shared for the repository's prefix alone opens a grant-keyed
    // repository: its keys derive from the prefix's key.
    let grant_keyed = RepoLocation::parse("ap://backups/laptop").unwrap();
    let shared = project
        .share(&archipel_client::Share {
            permissions: archipel_client::Permissions::ALL,
            prefixes: vec![("backups".into(), "laptop/".into())],
            not_before: None,
            not_after: None,
        })
        .await
        .unwrap();
    let shared_project = Project::open(&shared).await.unwrap();
    Repository::open(&shared_project, &grant_keyed, None)
        .await
        .unwrap();
    drop(planet);
}
