//! `archipel backup …` as its users run it, against a real in-process
//! network: the README's walkthrough with a bit-for-bit restore, a backup
//! killed with SIGKILL and resumed, two backups at once and the locks that
//! keep prune away from them, passphrase repositories, and failures that
//! read as one sentence.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};

use archipel_backup::{RepoLocation, Repository};
use archipel_tests::{test_data, Planet, PlanetConfig};

/// Packs of 1 MiB (one segment of the test network), so small trees still
/// fill several.
const PACK_SIZE: &str = "1048576";

/// The binary with a grant and a config directory of its own (where `init`
/// remembers the repository), and none of the caller's backup variables.
struct Cli {
    access: String,
    config: PathBuf,
}

impl Cli {
    fn new(planet: &Planet, config: &Path) -> Cli {
        Cli {
            access: planet.access().serialize(),
            config: config.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel"));
        command
            .args(args)
            .env("ARCHIPEL_ACCESS", &self.access)
            .env("XDG_CONFIG_HOME", &self.config)
            .env("HOME", &self.config)
            .env_remove("ARCHIPEL_BACKUP_REPO")
            .env_remove("ARCHIPEL_BACKUP_PASSWORD")
            .env_remove("ARCHIPEL_BACKUP_PASSWORD_FILE")
            .envs(env.iter().copied());
        command
    }

    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().await.unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, &[]).await
    }

    async fn ok_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run_with(args, env).await;
        assert!(
            out.status.success(),
            "archipel {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args).await).unwrap()
    }

    /// Runs a command that must fail with `status`, returning its message.
    async fn fails_with(&self, args: &[&str], env: &[(&str, &str)], status: i32) -> String {
        let out = self.run_with(args, env).await;
        let message = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(status),
            "archipel {args:?}: {message}"
        );
        assert!(message.starts_with("archipel: "), "{message}");
        assert!(
            !message.contains("Status {") && !message.contains("Error {"),
            "debug dump instead of a sentence: {message}"
        );
        message
    }

    async fn fails(&self, args: &[&str]) -> String {
        self.fails_with(args, &[], 1).await
    }
}

/// What a tree is, entry by entry (relative path → kind, mode, mtime,
/// content or link target): equal manifests are bit-for-bit equal trees.
fn manifest(root: &Path) -> BTreeMap<String, (char, u32, i64, i64, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, i64, i64, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (kind, content) = if meta.is_dir() {
                walk(root, &path, out);
                ('d', Vec::new())
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ('l', target.into_os_string().into_encoded_bytes())
            } else {
                ('f', std::fs::read(&path).unwrap())
            };
            let name = path.strip_prefix(root).unwrap().to_string_lossy().into();
            out.insert(
                name,
                (
                    kind,
                    meta.mode() & 0o7777,
                    meta.mtime(),
                    meta.mtime_nsec(),
                    content,
                ),
            );
        }
    }
    let mut out = BTreeMap::new();
    let meta = std::fs::metadata(root).unwrap();
    out.insert(
        String::new(),
        (
            'd',
            meta.mode() & 0o7777,
            meta.mtime(),
            meta.mtime_nsec(),
            Vec::new(),
        ),
    );
    walk(root, root, &mut out);
    out
}

fn set_mtime(path: &Path, seconds: u64) {
    let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(123_456_789);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// Where a restore into `target` puts the snapshot's path `backed_up`.
fn restored(target: &Path, backed_up: &str) -> PathBuf {
    target.join(backed_up.trim_start_matches('/'))
}

async fn start() -> (Planet, tempfile::TempDir) {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    (planet, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_restores_an_older_snapshot_bit_for_bit() {
    let (planet, dir) = start().await;
    let cli = Cli::new(&planet, &dir.path().join("config"));
    let src = dir.path().join("Documents");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("notes.txt"), "first version\n").unwrap();
    std::fs::write(src.join("sub/photo.bin"), test_data(1_500_000, 1)).unwrap();
    std::fs::write(src.join("sub/old.bin"), test_data(200_000, 2)).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::set_permissions(src.join("sub/old.bin"), PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("notes.txt", src.join("latest-notes")).unwrap();
    for (i, file) in ["notes.txt", "sub/photo.bin", "sub/old.bin", "run.sh"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(file), 1_700_000_000 + i as u64 * 1000);
    }

    let init = cli
        .ok(&[
            "backup",
            "init",
            "ap://backups/laptop",
            "--pack-size",
            PACK_SIZE,
        ])
        .await;
    assert!(init.contains("ap://backups/laptop"), "{init}");
    assert!(init.contains("access grant"), "{init}");
    let remembered =
        std::fs::read_to_string(cli.config.join("archipel/backup-repository")).unwrap();
    assert_eq!(remembered.trim(), "ap://backups/laptop");
    let message = cli.fails(&["backup", "init", "ap://backups/laptop"]).await;
    assert!(message.contains("already exists"), "{message}");

    // From here on the remembered repository is used.
    let first = cli
        .ok(&["backup", "run", src.to_str().unwrap(), "--tag", "first"])
        .await;
    assert!(
        first.contains("Files:") && first.contains("4 new") && first.contains("saved"),
        "{first}"
    );
    let before = manifest(&src);

    std::fs::write(src.join("notes.txt"), "second version, longer\n").unwrap();
    set_mtime(&src.join("notes.txt"), 1_800_000_000);
    std::fs::remove_file(src.join("sub/old.bin")).unwrap();
    std::fs::write(src.join("new.txt"), "new\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), PermissionsExt::from_mode(0o700)).unwrap();
    let second = cli
        .ok(&["backup", "run", src.to_str().unwrap(), "--json"])
        .await;
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    let summary = &second["summary"];
    // notes.txt and run.sh changed, new.txt is new, photo.bin unmodified
    // and not read again.
    assert_eq!(summary["files_new"], 1, "{summary}");
    assert_eq!(summary["files_changed"], 2, "{summary}");
    assert_eq!(summary["files_unmodified"], 1, "{summary}");
    assert!(
        summary["bytes_added"].as_u64().unwrap() < 100_000,
        "{summary}"
    );

    let snapshots = cli.json(&["backup", "snapshots", "--json"]).await;
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 2);
    let (old_id, new_id) = (
        snapshots[0]["id"].as_str().unwrap(),
        snapshots[1]["id"].as_str().unwrap(),
    );
    assert_eq!(new_id, second["id"].as_str().unwrap());
    assert_eq!(snapshots[1]["parent"], old_id);
    assert_eq!(snapshots[0]["tags"][0], "first");
    let backed_up = snapshots[0]["paths"][0].as_str().unwrap();
    let table = cli.ok(&["backup", "snapshots"]).await;
    assert!(
        table.contains(&old_id[..8]) && table.contains(backed_up) && table.contains("2 snapshots"),
        "{table}"
    );

    let target = dir.path().join("restore");
    let restored_text = cli
        .ok(&[
            "backup",
            "restore",
            &old_id[..8],
            "--target",
            target.to_str().unwrap(),
        ])
        .await;
    assert!(restored_text.contains("4 files"), "{restored_text}");
    assert_eq!(manifest(&restored(&target, backed_up)), before);

    let listing = cli.ok(&["backup", "ls", "latest"]).await;
    assert!(listing.contains("/new.txt\n"), "{listing}");
    assert!(!listing.contains("old.bin"), "{listing}");
    let listing = cli
        .ok(&["backup", "ls", &old_id[..8], backed_up, "--long"])
        .await;
    assert!(listing.contains("lrwxrwxrwx"), "{listing}");
    assert!(listing.contains("latest-notes -> notes.txt"), "{listing}");
    assert!(listing.contains("-rw------- "), "{listing}");
    assert!(listing.contains("-rwxr-x--- "), "{listing}");
    assert!(listing.contains("drwx"), "{listing}");
    let lines = cli
        .ok(&[
            "backup",
            "ls",
            "--json",
            old_id,
            &format!("{backed_up}/sub"),
        ])
        .await;
    let entries: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let photo = entries
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("/sub/photo.bin"))
        .unwrap();
    assert_eq!(photo["type"], "file");
    assert_eq!(photo["size"], 1_500_000);
    assert_eq!(photo["mtime"], "2023-11-14T22:30:00Z");

    let diff = cli.ok(&["backup", "diff", old_id, "latest"]).await;
    for line in [
        format!("M    {backed_up}/notes.txt\n"),
        format!("+    {backed_up}/new.txt\n"),
        format!("-    {backed_up}/sub/old.bin\n"),
        format!("U    {backed_up}/run.sh\n"),
    ] {
        assert!(diff.contains(&line), "no {line:?} in {diff}");
    }
    assert!(!diff.contains("photo.bin"), "{diff}");
    assert!(diff.contains("1 added, 1 removed, 1 modified"), "{diff}");

    let check = cli.ok(&["backup", "check", "--read-data"]).await;
    assert!(check.contains("no errors"), "{check}");

    // Keep the newest only; prune frees old.bin's pack space.
    let forgotten = cli
        .ok(&["backup", "forget", "--keep-last", "1", "--prune"])
        .await;
    assert!(
        forgotten.contains("keep 1 snapshot") && forgotten.contains("remove 1 snapshot"),
        "{forgotten}"
    );
    assert!(forgotten.contains("Freed"), "{forgotten}");
    assert_eq!(
        cli.json(&["backup", "snapshots", "--json"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let message = cli.fails(&["backup", "ls", old_id]).await;
    assert!(message.contains("no snapshot matches"), "{message}");
    let check = cli.ok(&["backup", "check", "--read-data"]).await;
    assert!(check.contains("no errors"), "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_midway_is_resumed_and_restores_whole() {
    let (planet, dir) = start().await;
    let cli = Cli::new(&planet, &dir.path().join("config"));
    let project = planet.project().await.unwrap();
    let src = dir.path().join("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("part{i}.bin")), test_data(8 << 20, 10 + i)).unwrap();
    }
    cli.ok(&[
        "backup",
        "init",
        "ap://backups/killed",
        "--pack-size",
        PACK_SIZE,
    ])
    .await;

    let mut child = cli
        .command(&["backup", "run", src.to_str().unwrap()], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let packs = project.list("backups", "killed/data/", true).await.unwrap();
        if !packs.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no pack uploaded");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    assert_eq!(
        cli.json(&["backup", "snapshots", "--json"]).await,
        serde_json::json!([]),
        "the backup finished before it was killed"
    );

    let snapshot: serde_json::Value = serde_json::from_str(
        &cli.ok(&["backup", "run", src.to_str().unwrap(), "--json"])
            .await,
    )
    .unwrap();
    let summary = &snapshot["summary"];
    assert!(
        summary["packs_recovered"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert!(
        summary["bytes_added"].as_u64().unwrap() < 24 << 20,
        "{summary}"
    );
    assert_eq!(summary["total_bytes"], 24 << 20);

    let check = cli.ok(&["backup", "check", "--read-data"]).await;
    assert!(check.contains("no errors"), "{check}");
    let target = dir.path().join("restore");
    cli.ok(&[
        "backup",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .await;
    let backed_up = snapshot["paths"][0].as_str().unwrap();
    assert_eq!(manifest(&restored(&target, backed_up)), manifest(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backups_at_once_and_prune_waits_for_locks() {
    let (planet, dir) = start().await;
    let cli = Cli::new(&planet, &dir.path().join("config"));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (i, src) in [&a, &b].into_iter().enumerate() {
        std::fs::create_dir_all(src).unwrap();
        for j in 0..3 {
            let data = test_data(400_000, 100 * i as u64 + j);
            std::fs::write(src.join(format!("file{j}.bin")), data).unwrap();
        }
        // The same file in both: stored at least once, maybe twice.
        std::fs::write(src.join("shared.bin"), test_data(300_000, 7)).unwrap();
    }
    cli.ok(&[
        "backup",
        "init",
        "ap://backups/shared",
        "--pack-size",
        PACK_SIZE,
    ])
    .await;
    let run_a = ["backup", "run", a.to_str().unwrap()];
    let run_b = ["backup", "run", b.to_str().unwrap()];
    let (first, second) = tokio::join!(cli.ok(&run_a), cli.ok(&run_b));
    assert!(first.contains("saved") && second.contains("saved"));
    let check = cli.ok(&["backup", "check"]).await;
    assert!(check.contains("no errors"), "{check}");
    let snapshots = cli.json(&["backup", "snapshots", "--json"]).await;
    assert_eq!(snapshots.as_array().unwrap().len(), 2);
    for (i, snapshot) in snapshots.as_array().unwrap().iter().enumerate() {
        let target = dir.path().join(format!("restore{i}"));
        cli.ok(&[
            "backup",
            "restore",
            snapshot["id"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ])
        .await;
        let backed_up = snapshot["paths"][0].as_str().unwrap();
        let source = if backed_up.ends_with("/a") { &a } else { &b };
        assert_eq!(manifest(&restored(&target, backed_up)), manifest(source));
    }

    // A live backup's lock (held here), and a stale one of a process long
    // gone, written as the engine writes locks.
    let project = planet.project().await.unwrap();
    let location = RepoLocation::parse("ap://backups/shared").unwrap();
    let repo = Repository::open(&project, &location, None).await.unwrap();
    let live = archipel_backup::lock::Lock::acquire(&repo, false, "backup")
        .await
        .unwrap();
    let stale = serde_json::json!({
        "exclusive": false, "host": "gone", "pid": 1, "purpose": "backup", "time": 1_000_000_000u64,
    });
    repo.put_sealed(
        "locks/00stale",
        b"archipel backup lock",
        stale.to_string().as_bytes(),
    )
    .await
    .unwrap();
    let message = cli.fails(&["backup", "prune"]).await;
    assert!(message.contains("in use"), "{message}");
    let unlocked = cli.ok(&["backup", "unlock"]).await;
    assert!(unlocked.contains("Removed 1 stale lock"), "{unlocked}");
    let message = cli.fails(&["backup", "prune"]).await;
    assert!(message.contains("in use"), "{message}");
    live.release().await.unwrap();
    let pruned = cli.ok(&["backup", "prune", "--dry-run"]).await;
    assert!(pruned.contains("Nothing was changed"), "{pruned}");
    // At most shared.bin's chunk, stored by both backups, is left over.
    let pruned = cli.json(&["backup", "prune", "--json"]).await;
    assert!(pruned["blobs_removed"].as_u64().unwrap() <= 1, "{pruned}");
    let check = cli.ok(&["backup", "check", "--read-data"]).await;
    assert!(check.contains("no errors"), "{check}");
    assert_eq!(
        cli.json(&["backup", "snapshots", "--json"]).await,
        snapshots,
        "prune changed the snapshots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_repository_needs_its_passphrase() {
    let (planet, dir) = start().await;
    let cli = Cli::new(&planet, &dir.path().join("config"));
    let src = dir.path().join("secret");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("diary.txt"), "dear diary\n").unwrap();
    let right = dir.path().join("right");
    std::fs::write(&right, "correct horse battery staple\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "incorrect horse\n").unwrap();

    let init = cli
        .ok(&[
            "backup",
            "init",
            "ap://vault/me",
            "--password-file",
            right.to_str().unwrap(),
        ])
        .await;
    assert!(init.contains("passphrase"), "{init}");
    let path = src.to_str().unwrap();
    let message = cli.fails(&["backup", "run", path]).await;
    assert!(message.contains("protected by a passphrase"), "{message}");
    let message = cli
        .fails(&[
            "backup",
            "run",
            path,
            "--password-file",
            wrong.to_str().unwrap(),
        ])
        .await;
    assert!(message.contains("passphrase does not open"), "{message}");
    let message = cli
        .fails_with(
            &["backup", "snapshots"],
            &[("ARCHIPEL_BACKUP_PASSWORD", "incorrect horse")],
            1,
        )
        .await;
    assert!(message.contains("passphrase does not open"), "{message}");
    cli.ok(&[
        "backup",
        "run",
        path,
        "--password-file",
        right.to_str().unwrap(),
    ])
    .await;
    let listing = cli
        .ok_with(
            &["backup", "ls", "latest"],
            &[("ARCHIPEL_BACKUP_PASSWORD", "correct horse battery staple")],
        )
        .await;
    assert!(listing.contains("/diary.txt"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_reads_like_sentences() {
    let (planet, dir) = start().await;
    let cli = Cli::new(&planet, &dir.path().join("config"));
    let message = cli.fails(&["backup", "snapshots"]).await;
    assert!(
        message.contains("archipel backup init") && message.contains("--repo"),
        "{message}"
    );
    let message = cli
        .fails(&["backup", "snapshots", "--repo", "s3://bucket/x"])
        .await;
    assert!(message.contains("not a repository URL"), "{message}");
    let message = cli
        .fails(&["backup", "--repo", "ap://nothing/here", "snapshots"])
        .await;
    assert!(message.contains("no backup repository at"), "{message}");

    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "a").unwrap();
    cli.ok(&["backup", "init", "ap://backups/bad"]).await;
    let target = dir.path().join("restore");
    let message = cli
        .fails(&[
            "backup",
            "restore",
            "deadbeef",
            "--target",
            target.to_str().unwrap(),
        ])
        .await;
    assert!(
        message.contains("no snapshot matches \"deadbeef\""),
        "{message}"
    );
    let message = cli.fails(&["backup", "run", "/no/such/dir"]).await;
    assert!(message.contains("/no/such/dir"), "{message}");
    let message = cli
        .fails(&["backup", "run", src.to_str().unwrap(), "--exclude", "["])
        .await;
    assert!(message.contains("invalid pattern"), "{message}");
    let message = cli.fails(&["backup", "forget"]).await;
    assert!(message.contains("no keep rule"), "{message}");

    // An unreadable file: the snapshot is saved without it, status 3 (root
    // reads everything, so only checked when the file really is unreadable).
    let locked = src.join("locked.txt");
    std::fs::write(&locked, "x").unwrap();
    std::fs::set_permissions(&locked, PermissionsExt::from_mode(0o000)).unwrap();
    if std::fs::read(&locked).is_err() {
        let message = cli
            .fails_with(&["backup", "run", src.to_str().unwrap()], &[], 3)
            .await;
        assert!(message.contains("locked.txt"), "{message}");
        assert!(message.contains("could not be read"), "{message}");
    }
}
