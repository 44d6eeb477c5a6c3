//! The `archipel` binary against a real in-process network: every command, and
//! that failures come out as one readable sentence with a failing exit code.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::path::Path;
use std::process::Output;

use archipel_tests::{test_data, Planet, PlanetConfig};

struct Cli<'a> {
    access: &'a str,
}

impl Cli<'_> {
    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel"))
            .args(args)
            .env("ARCHIPEL_ACCESS", self.access)
            .output()
            .await
            .unwrap()
    }

    /// Runs with more environment variables.
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel"))
            .args(args)
            .env("ARCHIPEL_ACCESS", self.access)
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "archipel {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs a command that must fail, returning its error message.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(!out.status.success(), "archipel {args:?} succeeded");
        let message = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(message.starts_with("archipel: "), "{message}");
        assert!(
            !message.contains("Status {"),
            "debug dump instead of a sentence: {message}"
        );
        message
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_and_errors_read_like_sentences() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let passphrase_file = dir.path().join("passphrase");
    std::fs::write(&passphrase_file, "correct horse\n").unwrap();
    let satellite = planet.satellite_url().to_string();

    let no_access = Cli { access: "" };
    let grant = no_access
        .ok(&[
            "access",
            "create",
            "--satellite",
            &satellite,
            "--api-key",
            &planet.api_key,
            "--passphrase-file",
            passphrase_file.to_str().unwrap(),
        ])
        .await;
    let grant = String::from_utf8(grant).unwrap();
    let access_file = dir.path().join("access");
    std::fs::write(&access_file, &grant).unwrap();
    let cli = Cli {
        access: access_file.to_str().unwrap(),
    };

    cli.ok(&["mb", "ap://photos"]).await;
    let data = test_data(3_000_000, 11);
    let source = dir.path().join("holiday.jpg");
    std::fs::write(&source, &data).unwrap();
    cli.ok(&["cp", source.to_str().unwrap(), "ap://photos/2026/"])
        .await;

    let listing = String::from_utf8(cli.ok(&["ls", "ap://photos"]).await).unwrap();
    assert!(
        listing.contains("PRE") && listing.contains("2026/"),
        "{listing}"
    );
    let listing = String::from_utf8(cli.ok(&["ls", "--recursive", "ap://photos"]).await).unwrap();
    assert!(
        listing.contains("2.9 MiB") && listing.contains("2026/holiday.jpg"),
        "{listing}"
    );
    let buckets = String::from_utf8(cli.ok(&["ls"]).await).unwrap();
    assert!(buckets.contains("photos"), "{buckets}");

    let stat: serde_json::Value = serde_json::from_slice(
        &cli.ok(&["stat", "--json", "ap://photos/2026/holiday.jpg"])
            .await,
    )
    .unwrap();
    assert_eq!(stat["size"], 3_000_000);
    let segments = stat["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3);
    assert!(segments
        .iter()
        .all(|s| s["piece_count"].as_u64().unwrap() >= 8 && s["redundancy"]["required"] == 4));
    // Every node is up: every piece counts.
    assert!(segments
        .iter()
        .all(|s| s["healthy_pieces"] == s["piece_count"] && s["health"] == "healthy"));
    let human = String::from_utf8(cli.ok(&["stat", "ap://photos/2026/holiday.jpg"]).await).unwrap();
    let first = &segments[0];
    assert!(
        human.contains(&format!(
            "{} pieces ({} healthy: healthy)",
            first["piece_count"], first["healthy_pieces"]
        )),
        "{human}"
    );

    let range = cli
        .ok(&[
            "cat",
            "ap://photos/2026/holiday.jpg",
            "--offset",
            "1048570",
            "--length",
            "20",
        ])
        .await;
    assert_eq!(range, data[1_048_570..1_048_590]);

    let target = dir.path().join("copy.jpg");
    cli.ok(&[
        "cp",
        "ap://photos/2026/holiday.jpg",
        target.to_str().unwrap(),
    ])
    .await;
    assert!(std::fs::read(&target).unwrap() == data);

    // Standard input to standard output.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel"))
        .args(["cp", "-", "ap://photos/notes.txt"])
        .env("ARCHIPEL_ACCESS", access_file.to_str().unwrap())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from stdin").await.unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    assert_eq!(
        cli.ok(&["cp", "ap://photos/notes.txt", "-"]).await,
        b"from stdin"
    );

    let message = cli.fails(&["rb", "ap://photos"]).await;
    assert!(message.contains("not empty"), "{message}");
    let message = cli.fails(&["cat", "ap://photos/missing"]).await;
    assert!(message.contains("not found"), "{message}");
    let message = cli.fails(&["cat", "ap://nobucket/x"]).await;
    assert!(message.contains("nobucket"), "{message}");
    let message = cli.fails(&["cp", "/no/such/file", "ap://photos/x"]).await;
    assert!(message.contains("/no/such/file"), "{message}");
    let message = cli
        .fails(&[
            "cat",
            "ap://photos/2026/holiday.jpg",
            "--offset",
            "99999999",
        ])
        .await;
    assert!(message.contains("past the end"), "{message}");
    let message = Cli {
        access: "ap1garbage",
    }
    .fails(&["ls"])
    .await;
    assert!(message.contains("access grant"), "{message}");
    let message = no_access
        .fails(&[
            "access",
            "create",
            "--satellite",
            &satellite,
            "--api-key",
            "ak_wrong",
            "--passphrase-file",
            passphrase_file.to_str().unwrap(),
        ])
        .await;
    assert!(message.contains("API key"), "{message}");
    // A satellite named without its id is refused before anything is dialled.
    let out = no_access
        .run(&[
            "access",
            "create",
            "--satellite",
            &planet.satellite_address.to_string(),
            "--api-key",
            &planet.api_key,
            "--passphrase-file",
            passphrase_file.to_str().unwrap(),
        ])
        .await;
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("ID@HOST:PORT"), "{message}");

    cli.ok(&["rm", "ap://photos/2026/holiday.jpg"]).await;
    cli.ok(&["rm", "ap://photos/notes.txt"]).await;
    cli.ok(&["rb", "ap://photos"]).await;
    assert!(!Path::new(&dir.path().join(".copy.jpg.archipel-partial")).exists());
    planet.shutdown().await.unwrap();
}

/// `archipel share` prints a grant alone on its first line that a friend
/// uses as `--access`; `access inspect` says what it allows; `access
/// revoke` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_inspect_and_revoke() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let grant = planet.access().serialize();
    let owner = Cli { access: &grant };
    owner.ok(&["mb", "ap://family"]).await;
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("beach.jpg");
    std::fs::write(&photo, test_data(5000, 3)).unwrap();
    owner
        .ok(&[
            "cp",
            photo.to_str().unwrap(),
            "ap://family/photos/beach.jpg",
        ])
        .await;
    owner
        .ok(&[
            "cp",
            photo.to_str().unwrap(),
            "ap://family/private/diary.txt",
        ])
        .await;

    let out = owner
        .ok(&[
            "share",
            "ap://family/photos/",
            "--readonly",
            "--not-after",
            "+1h",
        ])
        .await;
    let out = String::from_utf8(out).unwrap();
    let shared = out.lines().next().unwrap().to_string();
    assert!(shared.starts_with("ap2"), "{out}");

    let info = String::from_utf8(owner.ok(&["access", "inspect", &shared]).await).unwrap();
    assert!(info.contains("family/photos"), "{info}");
    assert!(info.contains("allows:   read, list"), "{info}");
    assert!(info.contains("until:"), "{info}");
    let json = owner.ok(&["access", "inspect", &shared, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["full_keys"], false);
    assert_eq!(json["restrictions"][0]["write"], false);

    let friend = Cli { access: &shared };
    let listing = String::from_utf8(friend.ok(&["ls", "ap://family/", "-r"]).await).unwrap();
    assert!(listing.contains("photos/beach.jpg"), "{listing}");
    assert!(!listing.contains("diary"), "{listing}");
    assert_eq!(
        friend.ok(&["cat", "ap://family/photos/beach.jpg"]).await,
        test_data(5000, 3)
    );
    let message = friend
        .fails(&["cp", photo.to_str().unwrap(), "ap://family/photos/new.jpg"])
        .await;
    assert!(message.contains("does not allow writing"), "{message}");
    let message = friend
        .fails(&["cat", "ap://family/private/diary.txt"])
        .await;
    assert!(message.contains("no key"), "{message}");
    let message = friend.fails(&["share", "ap://family/", "--readonly"]).await;
    assert!(message.contains("no key"), "{message}");
    let out = owner
        .run(&["share", "ap://family/", "--not-after", "soon"])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("+DURATION"));

    owner.ok(&["access", "revoke", &shared]).await;
    let message = friend.fails(&["cat", "ap://family/photos/beach.jpg"]).await;
    assert!(message.contains("revoked"), "{message}");
    // The owner's grant is untouched.
    owner.ok(&["cat", "ap://family/photos/beach.jpg"]).await;
}

/// Every file below `dir`, by its path relative to `dir`, with its bytes.
fn files_below(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                found.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// `ls -r --json` of a location: every line one JSON object.
async fn json_listing(cli: &Cli<'_>, location: &str) -> Vec<serde_json::Value> {
    let out = String::from_utf8(cli.ok(&["ls", "-r", "--json", location]).await).unwrap();
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `cp -r` both ways, `cp` and `mv` on the network, `mv -r`, `rm -r`,
/// upload flags, `--parallelism`, and the refusal of keys that would land
/// outside the target directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_copies_moves_and_removals() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let grant = planet.access().serialize();
    let cli = Cli { access: &grant };
    cli.ok(&["mb", "ap://tree"]).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    for (path, size) in [
        ("one.txt", 10),
        ("sub/two.bin", 3_000_000), // several segments
        ("sub/deeper/three.json", 5000),
        ("with space/four", 0),
    ] {
        let path = local.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, test_data(size, size as u64)).unwrap();
    }
    std::fs::create_dir_all(local.join("empty")).unwrap();
    let sent = files_below(&local);

    // Upload a tree (the prefix gets its `/`), list it as JSON Lines.
    cli.ok(&[
        "cp",
        "-r",
        local.to_str().unwrap(),
        "ap://tree/up",
        "--parallelism",
        "3",
    ])
    .await;
    let listed = json_listing(&cli, "ap://tree/up/").await;
    let keys: Vec<&str> = listed.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let mut expected: Vec<String> = sent.keys().map(|k| format!("up/{k}")).collect();
    expected.sort();
    assert_eq!(keys, expected);
    for entry in &listed {
        assert_eq!(entry["is_prefix"], false);
        let created = entry["created"].as_str().unwrap();
        humantime::parse_rfc3339(created).unwrap();
        let relative = &entry["key"].as_str().unwrap()["up/".len()..];
        assert_eq!(entry["size"], sent[relative].len());
    }
    let stat: serde_json::Value = serde_json::from_slice(
        &cli.ok(&["stat", "--json", "ap://tree/up/sub/deeper/three.json"])
            .await,
    )
    .unwrap();
    assert_eq!(stat["content_type"], "application/json");
    let human = String::from_utf8(cli.ok(&["ls", "ap://tree/up/sub/"]).await).unwrap();
    assert!(
        human.contains("2.9 MiB") && human.contains("PRE"),
        "{human}"
    );

    // And download it again, into a directory that does not exist yet.
    let back = dir.path().join("back/here");
    cli.ok(&["cp", "-r", "ap://tree/up/", back.to_str().unwrap()])
        .await;
    assert!(files_below(&back) == sent);

    // One large object with segments in flight both ways.
    let big = dir.path().join("big");
    let data = test_data(4_500_000, 9);
    std::fs::write(&big, &data).unwrap();
    cli.ok(&[
        "cp",
        "--parallelism",
        "4",
        big.to_str().unwrap(),
        "ap://tree/big",
    ])
    .await;
    let big_back = dir.path().join("big.back");
    cli.ok(&[
        "cp",
        "--parallelism",
        "4",
        "ap://tree/big",
        big_back.to_str().unwrap(),
    ])
    .await;
    assert!(std::fs::read(&big_back).unwrap() == data);

    // Upload flags.
    cli.ok(&[
        "cp",
        "--expires",
        "+30d",
        "--metadata",
        "colour=blue",
        "--metadata",
        "shape=round",
        "--content-type",
        "text/x-test",
        local.join("one.txt").to_str().unwrap(),
        "ap://tree/meta",
    ])
    .await;
    let stat: serde_json::Value =
        serde_json::from_slice(&cli.ok(&["stat", "--json", "ap://tree/meta"]).await).unwrap();
    assert_eq!(stat["content_type"], "text/x-test");
    assert_eq!(stat["metadata"]["colour"], "blue");
    assert_eq!(stat["metadata"]["shape"], "round");
    let expires = humantime::parse_rfc3339(stat["expires"].as_str().unwrap()).unwrap();
    let in_days = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / 86_400;
    assert!((29..=30).contains(&in_days), "{stat}");
    let out = cli
        .run(&["cp", "--metadata", "nokey", "ap://tree/meta", "x"])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
    let message = cli
        .fails(&[
            "cp",
            "--expires",
            "+1d",
            "ap://tree/meta",
            "ap://tree/meta2",
        ])
        .await;
    assert!(
        message.contains("--expires applies to uploads"),
        "{message}"
    );

    // Copies and moves on the network.
    cli.ok(&["cp", "ap://tree/up/one.txt", "ap://tree/copied/"])
        .await;
    assert_eq!(
        cli.ok(&["cat", "ap://tree/copied/one.txt"]).await,
        sent["one.txt"]
    );
    cli.ok(&["mv", "ap://tree/copied/one.txt", "ap://tree/moved.txt"])
        .await;
    assert_eq!(
        cli.ok(&["cat", "ap://tree/moved.txt"]).await,
        sent["one.txt"]
    );
    let message = cli.fails(&["cat", "ap://tree/copied/one.txt"]).await;
    assert!(message.contains("not found"), "{message}");
    let message = cli
        .fails(&["mv", "ap://tree/moved.txt", "ap://tree/moved.txt"])
        .await;
    assert!(
        message.contains("both the source and the destination"),
        "{message}"
    );
    let message = cli
        .fails(&["mv", "-r", "ap://tree/up/", "ap://tree/up/inner/"])
        .await;
    assert!(message.contains("overlap"), "{message}");
    cli.ok(&["mv", "-r", "ap://tree/up/", "ap://tree/down/"])
        .await;
    assert!(json_listing(&cli, "ap://tree/up/").await.is_empty());
    let moved = json_listing(&cli, "ap://tree/down/").await;
    assert_eq!(moved.len(), sent.len());
    assert_eq!(
        cli.ok(&["cat", "ap://tree/down/sub/two.bin"]).await,
        sent["sub/two.bin"]
    );

    // Keys that would land outside the directory are refused.
    let project = planet.project().await.unwrap();
    project
        .upload(
            "tree",
            "evil/../../escaped.txt",
            &b"gotcha"[..],
            Default::default(),
        )
        .await
        .unwrap();
    let target = dir.path().join("inside/target");
    let message = cli
        .fails(&["cp", "-r", "ap://tree/evil/", target.to_str().unwrap()])
        .await;
    assert!(
        message.contains("refusing") && message.contains("escaped.txt"),
        "{message}"
    );
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!dir.path().join("inside/escaped.txt").exists());

    // Removal of everything below a prefix, then of the rest.
    let removed = String::from_utf8(cli.ok(&["rm", "-r", "ap://tree/down"]).await).unwrap();
    assert!(
        removed.contains(&format!("Removed {} objects", sent.len())),
        "{removed}"
    );
    assert!(json_listing(&cli, "ap://tree/down/").await.is_empty());
    cli.ok(&["rm", "-r", "ap://tree"]).await;
    cli.ok(&["rb", "ap://tree"]).await;
    planet.shutdown().await.unwrap();
}

/// A reader that stops early (`| head`) ends the command quietly and
/// successfully, whatever it was writing: a listing, JSON, object bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipes_end_commands_quietly() {
    use futures::StreamExt;
    use tokio::io::AsyncBufReadExt;

    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let grant = planet.access().serialize();
    let cli = Cli { access: &grant };
    cli.ok(&["mb", "ap://many"]).await;
    let project = planet.project().await.unwrap();
    // More than a satellite page, and more than a pipe holds once listed.
    let keys: Vec<String> = (0..1500).map(|i| format!("dir/object-{i:05}")).collect();
    futures::stream::iter(&keys)
        .for_each_concurrent(16, |key| {
            let project = project.clone();
            async move {
                project
                    .upload("many", key, &b"x"[..], Default::default())
                    .await
                    .unwrap();
            }
        })
        .await;
    project
        .upload(
            "many",
            "big",
            &test_data(3_000_000, 1)[..],
            Default::default(),
        )
        .await
        .unwrap();
    let listed = json_listing(&cli, "ap://many/dir/").await;
    assert_eq!(listed.len(), keys.len());

    let spawn = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_archipel"))
            .args(args)
            .env("ARCHIPEL_ACCESS", &grant)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let commands: [&[&str]; 5] = [
        &["ls", "-r", "ap://many"],
        &["ls", "-r", "--json", "ap://many/dir/"],
        &["stat", "--json", "ap://many/big"],
        &["cat", "ap://many/big"],
        &["cp", "ap://many/big", "-"],
    ];
    for args in commands {
        // The reader is gone before anything is written.
        let mut child = spawn(args);
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");

        // `| head -1`: the reader takes a line, then goes.
        let mut child = spawn(args);
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let _ = lines.next_line().await;
        drop(lines);
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    planet.shutdown().await.unwrap();
}

/// `share --url` registers the grant as public with a real gateway's
/// linksharing listener and prints a link that serves the shared prefix;
/// `share --register` prints S3 credentials; failures are sentences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_and_s3_credentials() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let grant = planet.access().serialize();
    let owner = Cli { access: &grant };
    owner.ok(&["mb", "ap://family"]).await;
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("beach.jpg");
    std::fs::write(&photo, test_data(5000, 3)).unwrap();
    owner
        .ok(&[
            "cp",
            photo.to_str().unwrap(),
            "ap://family/photos/beach.jpg",
        ])
        .await;

    // The gateway in-process, with its links listener.
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    archipel_gateway::config::setup(&gateway_dir, &grant).unwrap();
    let mut config = archipel_gateway::Config::load(&gateway_dir.join("config.toml")).unwrap();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (s3, links) = (bind().await, bind().await);
    let s3_url = format!("http://{}", s3.local_addr().unwrap());
    let links_url = format!("http://{}", links.local_addr().unwrap());
    config.public_url = Some(links_url.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(archipel_gateway::run_with_listeners(
        config,
        archipel_gateway::Listeners {
            s3,
            metrics: None,
            linksharing: Some(links),
        },
        async move {
            let _ = stopped.await;
        },
    ));

    let out = owner
        .ok(&[
            "share",
            "ap://family/photos/",
            "--url",
            "--linksharing",
            &links_url,
        ])
        .await;
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("ap2"), "{out}");
    let link = lines[1];
    assert!(link.starts_with(&format!("{links_url}/s/")), "{out}");
    assert!(link.ends_with("/family/photos/"), "{out}");
    // The link serves the shared prefix's listing.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client.get(link.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("beach.jpg"));

    // The service from the environment; the credentials after the grant.
    let out = owner
        .run_with(
            &["share", "ap://family/", "--register"],
            &[("ARCHIPEL_LINKSHARING", &links_url)],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("ap2"), "{out}");
    let field = |line: &str, name: &str| line.strip_prefix(name).unwrap().trim().to_string();
    assert!(!field(lines[1], "access key id:").is_empty());
    assert!(!field(lines[2], "secret key:").is_empty());
    assert_eq!(field(lines[3], "endpoint:"), links_url);

    let message = owner.fails(&["share", "ap://family/", "--url"]).await;
    assert!(message.contains("--linksharing"), "{message}");
    // Not a linksharing service: the S3 listener refuses the request.
    let message = owner
        .fails(&["share", "ap://family/", "--url", "--linksharing", &s3_url])
        .await;
    assert!(message.contains("refused"), "{message}");
    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
    let message = owner
        .fails(&[
            "share",
            "ap://family/",
            "--url",
            "--linksharing",
            &links_url,
        ])
        .await;
    assert!(message.contains("cannot be reached"), "{message}");
    planet.shutdown().await.unwrap();
}
