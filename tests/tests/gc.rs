//! Garbage collection on a real network: deletes are queued durably and
//! reach nodes that were away through retain filters; a retain round never
//! trashes a piece some segment lists, not even one uploaded while the round
//! runs; a wrong filter costs a restore, not data.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

mod common;

use archipel_client::UploadOptions;
use archipel_proto::bloom::BloomFilter;
use archipel_proto::orders::{retain_filter, unix_now};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::RetainRequest;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use common::admin::AdminApi;
use serde_json::Value;

/// Pieces younger than this are never trashed, and segments must be
/// committed within it: short, so the tests need not wait long.
const GRACE: Duration = Duration::from_secs(4);

async fn planet(backend: Backend) -> Planet {
    Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        config.gc.grace = GRACE;
        // Deletes a node missed are retried only long after the test: what
        // reaches it is the retain filter.
        config.gc.delete_retry = Duration::from_secs(3600);
    })
    .await
    .unwrap()
}

async fn download(planet: &Planet, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    planet
        .project()
        .await
        .unwrap()
        .download("garbage", key, None, &mut out, None)
        .await
        .unwrap();
    out
}

async fn retain_round(planet: &Planet) -> Value {
    let (status, body) = AdminApi::of(planet).call("POST", "/api/gc/retain").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn a_node_away_during_a_delete_gets_its_disk_back_in_one_round(backend: Backend) {
    let mut planet = planet(backend).await;
    let project = planet.project().await.unwrap();
    project.create_bucket("garbage").await.unwrap();
    let kept = test_data(150_000, 1);
    project
        .upload("garbage", "kept", &kept[..], UploadOptions::default())
        .await
        .unwrap();
    let before: Vec<u64> = planet.nodes.iter().map(|n| n.piece_bytes()).collect();
    project
        .upload(
            "garbage",
            "doomed",
            &test_data(300_000, 2)[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    let away = (0..planet.nodes.len())
        .find(|&i| planet.nodes[i].piece_bytes() > before[i])
        .unwrap();
    let away_id = planet.nodes[away].id();
    planet.stop_node(away).await.unwrap();
    project.delete_object("garbage", "doomed").await.unwrap();

    // The node away keeps its pieces, and its deletes wait in the queue;
    // the others get theirs at once.
    let metabase = planet.metabase().await.unwrap().clone();
    assert!(
        metabase
            .deletion_queue_length(Some(&away_id))
            .await
            .unwrap()
            > 0
    );
    wait_for("the running nodes to delete their pieces", || async {
        metabase.deletion_queue_length(None).await.unwrap()
            == metabase
                .deletion_queue_length(Some(&away_id))
                .await
                .unwrap()
    })
    .await;
    assert!(planet.nodes[away].piece_bytes() > before[away]);

    planet.restart_node(away).await.unwrap();
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let report = retain_round(&planet).await;
    let took = started.elapsed();
    assert_eq!(report["failed_nodes"], 0, "{report}");
    assert!(report["pieces_trashed"].as_u64().unwrap() > 0, "{report}");

    // Every running node holds exactly what committed segments list: the
    // doomed object's pieces and any upload's cancelled long tail are in the
    // trash, nothing listed is.
    let committed = planet.committed_piece_files().await.unwrap();
    assert_eq!(planet.running_piece_files(), committed);
    assert!(planet.nodes[away].piece_bytes() <= before[away]);
    assert!(!planet.nodes[away].trash_files().is_empty());
    assert_eq!(download(&planet, "kept").await, kept);
    println!(
        "node away: {} bytes before the upload, {} after the round ({} trashed on all nodes) in {took:?}",
        before[away],
        planet.nodes[away].piece_bytes(),
        report["bytes_trashed"]
    );
    planet.shutdown().await.unwrap();
}

async fn pieces_uploaded_during_a_round_are_never_trashed(backend: Backend) {
    let planet = planet(backend).await;
    let project = planet.project().await.unwrap();
    project.create_bucket("garbage").await.unwrap();
    let old = test_data(100_000, 3);
    project
        .upload("garbage", "old", &old[..], UploadOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;

    let admin = AdminApi::of(&planet);
    let round = tokio::spawn(async move { admin.call("POST", "/api/gc/retain").await });
    let mut uploaded = BTreeMap::new();
    for i in 0..6 {
        let data = test_data(60_000 + i * 1000, 10 + i as u64);
        let key = format!("new{i}");
        project
            .upload("garbage", &key, &data[..], UploadOptions::default())
            .await
            .unwrap();
        uploaded.insert(key, data);
    }
    let (status, body) = round.await.unwrap();
    assert_eq!(status, 200, "{body}");

    let committed = planet.committed_piece_files().await.unwrap();
    let trashed: BTreeSet<PathBuf> = planet.nodes.iter().flat_map(|n| n.trash_files()).collect();
    for file in &committed {
        assert!(file.exists(), "{} was trashed", file.display());
    }
    // A second round, after the new pieces' grace, finds nothing more to take.
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let second = retain_round(&planet).await;
    for file in &committed {
        assert!(
            file.exists(),
            "{} was trashed by the second round",
            file.display()
        );
    }
    assert_eq!(planet.running_piece_files(), committed, "{second}");
    assert!(trashed.iter().all(|f| !committed.contains(f)));
    assert_eq!(download(&planet, "old").await, old);
    for (key, data) in uploaded {
        assert_eq!(download(&planet, &key).await, data);
    }
    planet.shutdown().await.unwrap();
}

async fn a_wrong_filter_is_undone_by_a_restore(backend: Backend) {
    let planet = planet(backend).await;
    let project = planet.project().await.unwrap();
    project.create_bucket("garbage").await.unwrap();
    let data = test_data(200_000, 4);
    project
        .upload("garbage", "precious", &data[..], UploadOptions::default())
        .await
        .unwrap();
    let node = &planet.nodes[0];
    let contents = |files: Vec<PathBuf>| -> BTreeMap<String, Vec<u8>> {
        files
            .into_iter()
            .map(|f| {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&f).unwrap())
            })
            .collect()
    };
    let originals = contents(node.piece_files());
    assert!(!originals.is_empty());

    // A filter that names nothing, as a buggy satellite might send.
    let filter = retain_filter(
        &planet.satellite_identity,
        node.id(),
        BloomFilter::with_capacity(0, 0.1),
        0,
        unix_now(),
        unix_now() + 1,
    );
    let response = PiecestoreClient::new(planet.node_channel(0).await.unwrap())
        .retain(RetainRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.pieces_trashed as usize, originals.len());
    assert!(node.piece_files().is_empty());
    assert_eq!(contents(node.trash_files()), originals);
    // The object survives one node's loss.
    assert_eq!(download(&planet, "precious").await, data);

    let path = format!("/api/nodes/{}/restore-trash", node.id());
    let (status, body) = AdminApi::of(&planet).call("POST", &path).await;
    assert_eq!(status, 200, "{body}");
    let restored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(restored["pieces_restored"], originals.len());
    assert_eq!(contents(node.piece_files()), originals);
    assert!(node.trash_files().is_empty());
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    a_node_away_during_a_delete_gets_its_disk_back_in_one_round,
    pieces_uploaded_during_a_round_are_never_trashed,
    a_wrong_filter_is_undone_by_a_restore,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_retried_until_the_node_confirms() {
    let mut planet = Planet::start_with(PlanetConfig::default(), |config| {
        config.gc.delete_retry = Duration::from_secs(1);
        config.gc.delete_interval = Duration::from_millis(200);
    })
    .await
    .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("garbage").await.unwrap();
    project
        .upload(
            "garbage",
            "x",
            &test_data(100_000, 5)[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    let holder = (0..planet.nodes.len())
        .find(|&i| !planet.nodes[i].piece_files().is_empty())
        .unwrap();
    planet.stop_node(holder).await.unwrap();
    project.delete_object("garbage", "x").await.unwrap();
    let id = planet.nodes[holder].id();
    let metabase = planet.metabase().await.unwrap().clone();
    wait_for("a failed delete to be recorded", || async {
        metabase.deletion_queue_length(Some(&id)).await.unwrap() > 0
            && metabase.deletion_queue_length(None).await.unwrap()
                == metabase.deletion_queue_length(Some(&id)).await.unwrap()
    })
    .await;
    planet.restart_node(holder).await.unwrap();
    wait_for("the node to get its deletes", || async {
        metabase.deletion_queue_length(None).await.unwrap() == 0
    })
    .await;
    assert!(planet.nodes[holder].piece_files().is_empty());
    planet.shutdown().await.unwrap();
}
