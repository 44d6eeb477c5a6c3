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
        listing.contains("3000000") && listing.contains("2026/holiday.jpg"),
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
