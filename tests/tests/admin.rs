//! The satellite's admin HTTP API on a real network: every request needs the
//! token; nodes are listed with their status and can be marked as exiting;
//! a segment whose holders go offline until fewer than `k` remain shows up as
//! lost in `/metrics` and `/api/segments/lost`.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::Duration;

mod common;

use archipel_client::UploadOptions;
use archipel_proto::NodeId;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use common::admin::AdminApi;
use serde_json::Value;

fn status_of(node: &Value) -> &str {
    node["status"].as_str().unwrap()
}

async fn admin_api_needs_its_token(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let api = AdminApi::of(&planet);
    for path in [
        "/api/nodes",
        "/metrics",
        "/api/repair/queue",
        "/no/such/path",
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let (status, body) = api.send("GET", path, token).await;
            assert_eq!(status, 401, "GET {path} with {token:?}: {body}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert!(error["error"].is_string(), "{body}");
        }
    }
    let (status, _) = api.send("POST", "/api/nodes/00/exit", None).await;
    assert_eq!(status, 401);
    assert_eq!(api.call("GET", "/no/such/path").await.0, 404);
    planet.shutdown().await.unwrap();
}

async fn nodes_are_listed_and_can_exit(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let api = AdminApi::of(&planet);
    let listed = api.json("GET", "/api/nodes").await;
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), planet.nodes.len());
    for node in nodes {
        assert_eq!(status_of(node), "healthy", "{node}");
        let id: NodeId = node["id"].as_str().unwrap().parse().unwrap();
        let i = planet.node_index(id).unwrap();
        assert_eq!(node["address"], planet.nodes[i].address.to_string());
        assert_eq!(node["audit"]["score"], 1.0);
        assert_eq!(node["audit_total"], 0);
        assert!(node["exiting_at"].is_null() && node["disqualified_at"].is_null());
    }

    let id = planet.nodes[0].id();
    let node = api.json("GET", &format!("/api/nodes/{id}")).await;
    assert_eq!(node["id"], id.to_string());
    assert_eq!(api.call("GET", "/api/nodes/not-hex").await.0, 400);
    let unknown = NodeId([7; 32]);
    assert_eq!(
        api.call("GET", &format!("/api/nodes/{unknown}")).await.0,
        404
    );
    assert_eq!(
        api.call("POST", &format!("/api/nodes/{unknown}/exit"))
            .await
            .0,
        404
    );

    let exited = api.json("POST", &format!("/api/nodes/{id}/exit")).await;
    assert_eq!(status_of(&exited), "exiting");
    assert!(exited["exiting_at"].is_i64());
    let node = api.json("GET", &format!("/api/nodes/{id}")).await;
    assert_eq!(status_of(&node), "exiting");
    let metrics = api.metrics().await;
    let healthy = format!(
        "archipel_nodes{{status=\"healthy\"}} {}",
        planet.nodes.len() - 1
    );
    for line in [healthy.as_str(), "archipel_nodes{status=\"exiting\"} 1"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    let queue = api.json("GET", "/api/repair/queue?limit=5").await;
    assert_eq!(queue["counts"]["queued"], 0);
    assert_eq!(queue["entries"].as_array().unwrap().len(), 0);
    assert_eq!(api.call("GET", "/api/repair/queue?limit=many").await.0, 400);
    planet.shutdown().await.unwrap();
}

/// A satellite that checks every second and counts a node offline 5 s after
/// its last check-in (the planet's nodes check in every second).
fn fast_checker(config: &mut archipel_satellite::Config) {
    config.repair.enabled = true;
    config.repair.checker_interval = Duration::from_secs(1);
    config.repair.interval = Duration::from_secs(1);
    config.node_online_window = Duration::from_secs(5);
}

async fn lost_segments_show_in_metrics(backend: Backend) {
    let mut planet = Planet::start_with(PlanetConfig::with_backend(backend), fast_checker)
        .await
        .unwrap();
    let api = AdminApi::of(&planet);
    let project = planet.project().await.unwrap();
    project.create_bucket("admin").await.unwrap();
    let data = test_data(20_000, 1);
    project
        .upload("admin", "doomed", &data[..], UploadOptions::default())
        .await
        .unwrap();
    let segments = planet
        .metabase()
        .await
        .unwrap()
        .remote_segments_after(None, 10, archipel_proto::orders::unix_now())
        .await
        .unwrap();
    assert_eq!(segments.len(), 1);
    let segment = &segments[0];
    let k = planet.satellite_config.redundancy.required as usize;
    let holders: Vec<usize> = segment
        .pieces
        .iter()
        .map(|p| planet.node_index(p.node).unwrap())
        .collect();
    wait_for("a checker pass that sees the healthy segment", || async {
        api.metrics()
            .await
            .lines()
            .any(|l| l == "archipel_checker_segments 1")
    })
    .await;
    assert!(api
        .metrics()
        .await
        .lines()
        .any(|l| l == "archipel_segments_lost 0"));

    // k - 1 holders stay: the segment cannot be rebuilt.
    for &i in &holders[k - 1..] {
        planet.stop_node(i).await.unwrap();
    }
    wait_for("archipel_segments_lost 1", || async {
        api.metrics()
            .await
            .lines()
            .any(|l| l == "archipel_segments_lost 1")
    })
    .await;
    let lost = api.json("GET", "/api/segments/lost").await;
    assert_eq!(lost["lost"], 1);
    let entries = lost["segments"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{lost}");
    assert_eq!(entries[0]["stream_id"], hex::encode(&segment.stream_id));
    assert_eq!(entries[0]["position"], segment.position);
    assert!(entries[0]["margin"].as_i64().unwrap() < 0, "{lost}");

    let queue = api.json("GET", "/api/repair/queue").await;
    assert_eq!(queue["counts"]["lost"], 1);
    assert_eq!(queue["entries"][0]["stream_id"], entries[0]["stream_id"]);
    wait_for("a checker pass that counts the segment lost", || async {
        api.json("GET", "/api/segments/health").await["checker_pass"]["lost"] == 1
    })
    .await;
    let nodes = api.json("GET", "/api/nodes").await;
    let offline = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| status_of(n) == "offline")
        .count();
    assert_eq!(offline, holders.len() - (k - 1));
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    admin_api_needs_its_token,
    nodes_are_listed_and_can_exit,
    lost_segments_show_in_metrics
);
