//! The `archipel-node` binary: setup, info (from the running node's
//! dashboard), and a run stopped by SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_archipel-node"))
}

#[test]
fn setup_writes_identity_and_config_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");
    let satellite = archipel_proto::Identity::generate().id();
    let output = node()
        .args(["setup", "--dir"])
        .arg(&node_dir)
        .args(["--listen", "127.0.0.1:0", "--allocated", "2GB"])
        .args(["--difficulty", "8", "--dashboard", "127.0.0.1:9"])
        .arg("--satellite")
        .arg(format!("{satellite}@127.0.0.1:7070"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(node_dir.join("identity").exists());
    assert!(node_dir.join("storage").is_dir());

    let config = archipel_storagenode::Config::load(&node_dir.join("config.toml")).unwrap();
    assert_eq!(config.allocated_bytes, 2_000_000_000);
    assert_eq!(config.satellites[0].id, satellite);
    assert_eq!(config.listen_address, "127.0.0.1:0");
    assert_eq!(config.dashboard_address, "127.0.0.1:9");
    let identity = archipel_proto::Identity::load(&config.identity_path).unwrap();
    assert!(identity.id().difficulty() >= 8, "{}", identity.id());

    // `info` reads the running node; this one is not running.
    let output = node()
        .args(["info", "--config"])
        .arg(node_dir.join("config.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("is the node running"), "{message}");

    let again = node()
        .args(["setup", "--dir"])
        .arg(&node_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(
        archipel_proto::Identity::load(&config.identity_path)
            .unwrap()
            .id(),
        identity.id()
    );
}

#[test]
fn bad_input_is_reported_as_a_sentence_with_a_failure_code() {
    let dir = tempfile::tempdir().unwrap();
    let output = node()
        .args(["info", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("cannot read the configuration file"),
        "{message}"
    );

    let output = node()
        .args(["setup", "--dir"])
        .arg(dir.path())
        .args(["--allocated", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a size"));
}

#[test]
fn run_serves_until_sigterm_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let status = node()
        .args(["setup", "--dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--difficulty", "0"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let dashboard = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let config = dir.path().join("config.toml");
    let mut child = node()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--dashboard", &dashboard])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `info` answers once the node is up, in words and in JSON.
    let info = |json: bool| {
        let mut command = node();
        command.args(["info", "--config"]).arg(&config);
        command.env("ARCHIPEL_NODE_DASHBOARD", &dashboard);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let json = loop {
        let output = info(true);
        if output.status.success() {
            break output.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "the node's dashboard did not answer"
        );
        assert!(child.try_wait().unwrap().is_none(), "the node exited early");
        std::thread::sleep(Duration::from_millis(50));
    };
    let report: archipel_storagenode::dashboard::NodeReport =
        serde_json::from_slice(&json).unwrap();
    let identity = archipel_proto::Identity::load(&dir.path().join("identity")).unwrap();
    assert_eq!(report.node_id, identity.id().to_string());
    assert_eq!(report.disk.used_bytes, 0);
    assert!(report.disk.free_bytes > 0);
    assert_eq!(report.disk.problem, None);
    let words = info(false);
    assert!(words.status.success());
    let words = String::from_utf8_lossy(&words.stdout);
    assert!(words.contains(&report.node_id), "{words}");
    assert!(words.contains("0 B used"), "{words}");

    // `exit` asks the running node, which refuses a satellite it does not trust.
    let stranger = archipel_proto::Identity::generate().id().to_string();
    let refused = node()
        .args(["exit", "--config"])
        .arg(&config)
        .args(["--satellite", &stranger, "--dashboard", &dashboard])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("does not trust satellite"), "{message}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("storage node stopped"), "{log}");
}

#[test]
fn restore_trash_brings_pieces_back_and_refuses_while_the_store_is_open() {
    use archipel_proto::pb::{OrderLimit, PieceAction};
    use archipel_storagenode::{piece_path, trash_path, PieceStore};

    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node");
    let setup = node()
        .args(["setup", "--dir"])
        .arg(&node_dir)
        .args(["--difficulty", "0"])
        .output()
        .unwrap();
    assert!(setup.status.success());
    let config_path = node_dir.join("config.toml");
    let config = archipel_storagenode::Config::load(&config_path).unwrap();
    let satellite = archipel_proto::Identity::generate().id();
    let identity = archipel_proto::Identity::load(&config.identity_path).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(async {
        let store = PieceStore::open(config.storage_dir.clone(), 1 << 30)
            .await
            .unwrap();
        let limit = OrderLimit {
            satellite_id: satellite.to_vec(),
            piece_id: vec![7; 32],
            action: PieceAction::Put as i32,
            ..OrderLimit::default()
        };
        let mut writer = store.create(limit, 1000).await.unwrap();
        writer.write(&[42; 1000]).await.unwrap();
        writer.commit(&identity).await.unwrap();
        store.trash(satellite, vec![[7; 32]], 0).await.unwrap();
        store
    });
    let piece = piece_path(&config.storage_dir, &satellite, &[7; 32]);
    assert!(!piece.exists());
    assert!(trash_path(&config.storage_dir, &satellite, &[7; 32]).exists());

    let refused = node()
        .args(["restore-trash", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("is the node running?"), "{message}");

    runtime.block_on(store.close()).unwrap();
    drop(store);
    let restored = node()
        .args(["restore-trash", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let text = String::from_utf8_lossy(&restored.stdout);
    assert!(text.contains("restored 1 pieces"), "{text}");
    assert!(piece.exists());
}
