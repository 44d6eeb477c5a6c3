//! The `archipel-satellite` binary: setup, info, project create, and a run that
//! serves until SIGTERM and then shuts down cleanly.

// Test helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use archipel_proto::pb::metainfo_client::MetainfoClient;
use archipel_proto::pb::{ProjectInfoRequest, RequestHeader};

fn satellite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archipel-satellite"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn setup_project_info_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let sat_dir = dir.path().join("sat");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let admin_listen = format!("127.0.0.1:{}", free_port());
    let sat = sat_dir.to_str().unwrap();
    stdout(&satellite(&[
        "setup",
        "--dir",
        sat,
        "--listen",
        &listen,
        "--admin-listen",
        &admin_listen,
        "--redundancy",
        "4/6/8/10",
        "--no-distinct-subnets",
    ]));
    let config_path = sat_dir.join("config.toml");
    let config: archipel_satellite::Config =
        toml::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config.redundancy.total, 10);
    assert!(!config.distinct_subnets);
    assert!(config.database_url.starts_with("sqlite://"));
    assert_eq!(config.admin.listen_address, admin_listen);
    assert_eq!(hex::decode(&config.admin.token).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "config.toml holds the admin token");
    }
    let config = config_path.to_str().unwrap();

    let again = satellite(&["setup", "--dir", sat]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    let id = stdout(&satellite(&["info", "--config", config]));
    let satellite_id: archipel_proto::NodeId = id.trim().parse().unwrap();
    let key = stdout(&satellite(&[
        "project", "create", "demo", "--config", config,
    ]));
    let key = key.trim().to_string();
    assert!(key.starts_with("ak1") && !key.contains(char::is_whitespace));

    let mut server = Command::new(env!("CARGO_BIN_EXE_archipel-satellite"))
        .args(["run", "--config", config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        let endpoint = archipel_proto::transport::endpoint(&listen).unwrap();
        if let Ok(channel) = archipel_proto::transport::connect(&endpoint, satellite_id).await {
            break MetainfoClient::new(channel);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the satellite never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let info = client
        .get_project_info(ProjectInfoRequest {
            header: Some(RequestHeader { api_key: key }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hex::encode(info.satellite_id), id.trim());
    tokio::net::TcpStream::connect(&admin_listen).await.unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn errors_are_sentences_with_a_failing_exit() {
    let output = satellite(&["info", "--config", "/nonexistent/config.toml"]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("cannot read /nonexistent/config.toml"),
        "{message}"
    );
}
