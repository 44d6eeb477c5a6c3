//! Several satellites, one node: two independent satellites store objects
//! through the same storage nodes, and neither's deletes, garbage collection
//! or space accounting ever touches the other's pieces.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

mod common;

use archipel_client::UploadOptions;
use archipel_proto::NodeId;
use archipel_storagenode::dashboard::NodeReport;
use archipel_tests::{
    on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig, Satellite, StorageNode,
};
use common::admin::{request, AdminApi};
use serde_json::Value;

const BUCKET: &str = "shared-nodes";

/// Pieces younger than this are never trashed: short, so that a retain
/// round may take the garbage of a moment ago.
const GRACE: Duration = Duration::from_secs(4);

async fn planet(backend: Backend) -> Planet {
    let config = PlanetConfig {
        satellites: 2,
        ..PlanetConfig::with_backend(backend)
    };
    Planet::start_with(config, |config| {
        config.gc.grace = GRACE;
        // Deletes a node missed are retried only long after the test: what
        // reaches it is the retain filter.
        config.gc.delete_retry = Duration::from_secs(3600);
    })
    .await
    .unwrap()
}

/// Uploads `count` objects, each well above the inline threshold (so stored
/// on the nodes), through `satellite`'s project; returns them by key.
async fn upload_objects(satellite: &Satellite, count: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let project = satellite.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();
    let mut objects = BTreeMap::new();
    for i in 0..count {
        let data = test_data(60_000 + 30_000 * i as usize, seed + i);
        let key = format!("object{i}");
        project
            .upload(BUCKET, &key, &data[..], UploadOptions::default())
            .await
            .unwrap();
        objects.insert(key, data);
    }
    objects
}

async fn assert_downloadable(satellite: &Satellite, objects: &BTreeMap<String, Vec<u8>>) {
    let project = satellite.project().await.unwrap();
    for (key, data) in objects {
        let mut out = Vec::new();
        project
            .download(BUCKET, key, None, &mut out, None)
            .await
            .unwrap();
        assert!(out == *data, "{key} came back different");
    }
}

/// Every piece file of `satellite` on every node, committed or not, with its
/// contents.
fn piece_contents(nodes: &[StorageNode], satellite: NodeId) -> BTreeMap<PathBuf, Vec<u8>> {
    nodes
        .iter()
        .flat_map(|node| node.piece_files_of(satellite))
        .map(|file| {
            let contents = std::fs::read(&file).unwrap();
            (file, contents)
        })
        .collect()
}

fn all_piece_files_of(nodes: &[StorageNode], satellite: NodeId) -> BTreeSet<PathBuf> {
    nodes
        .iter()
        .flat_map(|node| node.piece_files_of(satellite))
        .collect()
}

async fn deleting_everything_on_one_satellite_leaves_the_other_intact(backend: Backend) {
    let planet = planet(backend).await;
    let (a, b) = (planet.satellite(0), planet.satellite(1));
    upload_objects(a, 3, 100).await;
    let b_objects = upload_objects(b, 3, 200).await;

    // Each satellite's pieces sit in its own directory on the shared nodes.
    let a_committed = a.committed_piece_files(&planet.nodes).await.unwrap();
    let b_committed = b.committed_piece_files(&planet.nodes).await.unwrap();
    assert!(!a_committed.is_empty() && !b_committed.is_empty());
    assert!(a_committed.is_subset(&all_piece_files_of(&planet.nodes, a.id())));
    assert!(b_committed.is_subset(&all_piece_files_of(&planet.nodes, b.id())));
    let shared = planet
        .nodes
        .iter()
        .filter(|n| !n.piece_files_of(a.id()).is_empty() && !n.piece_files_of(b.id()).is_empty())
        .count();
    assert!(shared > 0, "no node holds pieces of both satellites");
    let b_before = piece_contents(&planet.nodes, b.id());

    let project = a.project().await.unwrap();
    for entry in project.list(BUCKET, "", true).await.unwrap() {
        project.delete_object(BUCKET, &entry.key).await.unwrap();
    }
    assert!(project.list(BUCKET, "", true).await.unwrap().is_empty());
    assert!(a.remote_segments().await.unwrap().is_empty());
    let metabase = a.metabase().await.unwrap();
    wait_for("A's deletion worker to remove its pieces", || async {
        metabase.deletion_queue_length(None).await.unwrap() == 0
            && a_committed.iter().all(|file| !file.exists())
    })
    .await;

    assert_eq!(piece_contents(&planet.nodes, b.id()), b_before);
    assert!(planet.nodes.iter().all(|n| n.trash_files().is_empty()));
    assert_downloadable(b, &b_objects).await;
    planet.shutdown().await.unwrap();
}

async fn retain_round(satellite: &Satellite) -> Value {
    let (status, body) = AdminApi::of_satellite(satellite)
        .call("POST", "/api/gc/retain")
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn garbage_collection_on_one_satellite_never_trashes_the_others_pieces(backend: Backend) {
    let mut planet = planet(backend).await;
    let (a_id, b_id) = (planet.satellite(0).id(), planet.satellite(1).id());
    let b_objects = upload_objects(planet.satellite(1), 3, 300).await;
    let a_objects = upload_objects(planet.satellite(0), 3, 400).await;

    // Garbage for A: an object deleted while a node holding some of its
    // pieces was away, so that only a retain filter can reach them.
    let before: Vec<usize> = planet
        .nodes
        .iter()
        .map(|n| n.piece_files_of(a_id).len())
        .collect();
    let project = planet.satellite(0).project().await.unwrap();
    project
        .upload(
            BUCKET,
            "doomed",
            &test_data(200_000, 401)[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    let away = (0..planet.nodes.len())
        .find(|&i| planet.nodes[i].piece_files_of(a_id).len() > before[i])
        .unwrap();
    let away_id = planet.nodes[away].id();
    planet.stop_node(away).await.unwrap();
    project.delete_object(BUCKET, "doomed").await.unwrap();
    let metabase = planet.satellite(0).metabase().await.unwrap().clone();
    wait_for("the running nodes to delete their pieces", || async {
        metabase.deletion_queue_length(None).await.unwrap()
            == metabase
                .deletion_queue_length(Some(&away_id))
                .await
                .unwrap()
    })
    .await;
    // The away node missed the delete for good, as if its message was lost
    // (left queued, it could reach the node once back, before the round):
    // only a retain filter can reach these pieces now.
    let queued = metabase
        .claim_deletions(i64::MAX, i64::MAX, usize::MAX)
        .await
        .unwrap();
    let missed: Vec<_> = queued.into_iter().filter(|d| d.node == away_id).collect();
    assert!(!missed.is_empty());
    metabase.finish_deletions(&missed).await.unwrap();
    planet.restart_node(away).await.unwrap();

    // Every B piece is past the grace too: only its satellite protects it.
    // B's garbage (an upload's cancelled long tail) is among them.
    let b_before = piece_contents(&planet.nodes, b_id);
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let report = retain_round(planet.satellite(0)).await;
    assert_eq!(report["failed_nodes"], 0, "{report}");
    assert!(report["pieces_trashed"].as_u64().unwrap() > 0, "{report}");

    assert_eq!(piece_contents(&planet.nodes, b_id), b_before);
    for node in &planet.nodes {
        assert!(
            node.trash_files_of(b_id).is_empty(),
            "B's pieces were trashed"
        );
        let trashed: BTreeSet<PathBuf> = node.trash_files().into_iter().collect();
        let trashed_of_a: BTreeSet<PathBuf> = node.trash_files_of(a_id).into_iter().collect();
        assert_eq!(trashed_of_a, trashed);
    }
    assert!(!planet.nodes[away].trash_files_of(a_id).is_empty());
    // A's garbage went to the trash: the nodes hold exactly what A's
    // committed segments list.
    let a_committed = planet
        .satellite(0)
        .committed_piece_files(&planet.nodes)
        .await
        .unwrap();
    assert_eq!(all_piece_files_of(&planet.nodes, a_id), a_committed);
    assert_downloadable(planet.satellite(0), &a_objects).await;
    assert_downloadable(planet.satellite(1), &b_objects).await;
    planet.shutdown().await.unwrap();
}

async fn node_report(node: &StorageNode) -> NodeReport {
    let (status, body) = request("GET", &format!("{}/api/node", node.dashboard_url()), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Whether the node's report gives each satellite exactly the pieces and
/// bytes of the piece files it holds for it.
async fn reports_disk_per_satellite(node: &StorageNode, satellites: &[NodeId]) -> bool {
    let report = node_report(node).await;
    let reported: BTreeMap<String, (u64, u64)> = report
        .satellites
        .iter()
        .map(|s| (s.id.clone(), (s.pieces, s.used_bytes)))
        .collect();
    let on_disk: BTreeMap<String, (u64, u64)> = satellites
        .iter()
        .map(|&satellite| {
            let files = node.piece_files_of(satellite);
            let bytes = files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum();
            (satellite.to_string(), (files.len() as u64, bytes))
        })
        .collect();
    reported == on_disk
}

async fn the_node_reports_space_per_satellite(backend: Backend) {
    let planet = planet(backend).await;
    let ids: Vec<NodeId> = planet.satellites().iter().map(Satellite::id).collect();
    upload_objects(planet.satellite(0), 2, 500).await;
    // B stores more, so that the two satellites' figures differ.
    upload_objects(planet.satellite(1), 4, 600).await;

    for node in &planet.nodes {
        wait_for("the node's figures per satellite to match its disk", || {
            reports_disk_per_satellite(node, &ids)
        })
        .await;
    }
    let used = |i: usize| -> u64 {
        planet
            .nodes
            .iter()
            .flat_map(|n| n.piece_files_of(ids[i]))
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    assert!(used(0) > 0 && used(1) > used(0));
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    deleting_everything_on_one_satellite_leaves_the_other_intact,
    garbage_collection_on_one_satellite_never_trashes_the_others_pieces,
    the_node_reports_space_per_satellite,
);
