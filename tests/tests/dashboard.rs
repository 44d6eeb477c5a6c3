//! The node's dashboard in a real browser: after uploads and downloads on a
//! real network, headless Chromium renders the page, and every figure it
//! shows must equal the JSON API's (formatted by the rules `archipel-node
//! info` uses). The metrics page agrees with the JSON too. A screenshot is
//! kept under `target/tmp/artifacts/`.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::path::PathBuf;
use std::process::Command;

mod common;

use archipel_client::UploadOptions;
use archipel_storagenode::dashboard::{format_bytes, format_score};
use archipel_tests::{test_data, wait_for, Planet, PlanetConfig};
use common::admin::request;
use serde_json::Value;

/// Debian's package installs `chromium`; other systems name it otherwise.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(output) = Command::new("which").arg(name).output() {
            if output.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            }
        }
    }
    panic!(
        "this test needs a headless browser: install Debian's `chromium` package (.ci/run does)"
    );
}

/// Runs headless Chromium on `url` with `args`, letting the page's scripts
/// run (fetch included) for a while of virtual time first.
fn headless(url: &str, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// The figures a rendered page shows: (JSON path, kind, text) of every
/// element with a `data-field`.
fn shown_figures(dom: &str) -> Vec<(String, String, String)> {
    let attribute = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].to_string())
    };
    let mut figures = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("data-field=\"") {
        let tag_start = rest[..at].rfind('<').unwrap();
        let tag_end = at + rest[at..].find('>').unwrap();
        let tag = &rest[tag_start..tag_end];
        let text_end = tag_end + 1 + rest[tag_end + 1..].find('<').unwrap();
        figures.push((
            attribute(tag, "data-field").unwrap(),
            attribute(tag, "data-kind").unwrap(),
            rest[tag_end + 1..text_end].to_string(),
        ));
        rest = &rest[text_end..];
    }
    figures
}

/// The value at a dotted path (`satellites.0.used_bytes`) of the report.
fn at_path<'a>(report: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(report, |value, step| match step.parse::<usize>() {
            Ok(index) => &value[index],
            Err(_) => &value[step],
        })
}

fn formatted(value: &Value, kind: &str) -> String {
    match kind {
        "bytes" => format_bytes(value.as_u64().unwrap()),
        "score" => format_score(value.as_f64().unwrap()),
        "count" => value.as_u64().unwrap().to_string(),
        other => panic!("the page shows a figure of unknown kind {other:?}"),
    }
}

async fn report(dashboard: &str) -> Value {
    let (status, body) = request("GET", &format!("{dashboard}/api/node"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_in_a_browser_what_the_json_api_says() {
    let mut planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("shown").await.unwrap();
    let data = test_data(200_000, 7);
    project
        .upload("shown", "object", &data[..], UploadOptions::default())
        .await
        .unwrap();
    // Downloads prefer the pieces of the data shards; the node holding the
    // first one serves every download.
    let segment = &planet.remote_segments().await.unwrap()[0];
    let first = segment.pieces.iter().find(|p| p.num == 0).unwrap();
    let holder = planet.node_index(first.node).unwrap();
    // A node whose allocation, not the shared disk of the machine, bounds
    // its free space, so that the figure holds still while the test reads it.
    planet.stop_node(holder).await.unwrap();
    planet.nodes[holder].config.allocated_bytes = 500_000_000;
    planet.restart_node(holder).await.unwrap();
    for _ in 0..2 {
        let mut out = Vec::new();
        project
            .download("shown", "object", None, &mut out, None)
            .await
            .unwrap();
        assert_eq!(out, data);
    }
    let dashboard = planet.nodes[holder].dashboard_url();
    wait_for("the node's first check-in after its restart", || async {
        report(&dashboard).await["satellites"][0]["reputation"].is_object()
    })
    .await;

    let before = report(&dashboard).await;
    let satellite = &before["satellites"][0];
    assert_eq!(
        satellite["id"].as_str().unwrap(),
        planet.satellite_identity.id().to_string()
    );
    assert!(satellite["used_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        satellite["used_bytes"].as_u64().unwrap(),
        planet.nodes[holder].piece_bytes()
    );
    assert!(satellite["bandwidth"]["upload"].as_u64().unwrap() > 0);
    assert!(satellite["bandwidth"]["download"].as_u64().unwrap() > 0);
    assert_eq!(before["disk"]["allocated_bytes"], 500_000_000);
    assert_eq!(before["warnings"], Value::Array(Vec::new()));

    let page = format!("{dashboard}/");
    let dump = headless(&page, &["--dump-dom"]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dom = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page did not load its figures: {dom}"
    );
    let after = report(&dashboard).await;

    let figures = shown_figures(&dom);
    for (path, kind, text) in &figures {
        // The page was read between the two reports; a figure may have moved
        // in between, but must equal one of them.
        let expected = [&before, &after].map(|r| formatted(at_path(r, path), kind));
        assert!(
            expected.contains(text),
            "{path}: the page shows {text:?}, the JSON API says {expected:?}"
        );
    }
    let shown: Vec<&str> = figures.iter().map(|(path, _, _)| path.as_str()).collect();
    for path in [
        "disk.allocated_bytes",
        "disk.used_bytes",
        "disk.trash_bytes",
        "disk.free_bytes",
        "satellites.0.used_bytes",
        "satellites.0.trash_bytes",
        "satellites.0.pieces",
        "satellites.0.bandwidth.upload",
        "satellites.0.bandwidth.download",
        "satellites.0.bandwidth.audit",
        "satellites.0.bandwidth.repair",
        "satellites.0.bandwidth.exit",
        "satellites.0.bandwidth_total",
        "satellites.0.reputation.audit_score",
        "satellites.0.reputation.suspension_score",
        "satellites.0.reputation.online_score",
    ] {
        assert!(
            shown.contains(&path),
            "the page does not show {path}: {shown:?}"
        );
    }
    assert!(dom.contains(before["node_id"].as_str().unwrap()));
    assert!(dom.contains("All is well"), "{dom}");

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let shot = headless(
        &page,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,1500",
        ],
    );
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    println!("dashboard screenshot: {}", screenshot.display());

    // The metrics say what the JSON says.
    let (status, metrics) = request("GET", &format!("{dashboard}/metrics"), None).await;
    assert_eq!(status, 200);
    let id = satellite["id"].as_str().unwrap();
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{series} ")))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
            .parse()
            .unwrap()
    };
    let now = report(&dashboard).await;
    assert_eq!(
        sample(&format!("archipel_node_used_bytes{{satellite=\"{id}\"}}")),
        now["satellites"][0]["used_bytes"].as_f64().unwrap()
    );
    assert_eq!(sample("archipel_node_disk_healthy"), 1.0);
    assert!(
        sample(
            "archipel_node_transfers_total{direction=\"download\",action=\"download\",result=\"success\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&format!(
            "archipel_node_satellite_score{{satellite=\"{id}\",score=\"audit\"}}"
        )),
        now["satellites"][0]["reputation"]["audit_score"]
            .as_f64()
            .unwrap()
    );
    planet.shutdown().await.unwrap();
}
