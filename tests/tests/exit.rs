//! Graceful exit on a real network: the operator starts it on the node's
//! dashboard (as `archipel-node exit` does), the node hands every piece to a
//! replacement while clients keep reading, the satellite signs a receipt and
//! the node deletes the satellite's pieces; a node that goes silent mid-exit
//! fails it.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use archipel_client::UploadOptions;
use archipel_proto::orders::{sign_exit_request, unix_now, verify_exit_completed};
use archipel_proto::pb::node_client::NodeClient;
use archipel_proto::pb::{ExitCompleted, ExitRequest};
use archipel_proto::PeerKey;
use archipel_storagenode::dashboard::{read_operator_token, NodeReport};
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use common::admin::request;
use prost::Message;

const OBJECTS: u64 = 6;

async fn planet(
    backend: Backend,
    configure: impl FnOnce(&mut archipel_satellite::Config),
) -> Planet {
    // Twelve nodes for segments of ten pieces at most: room for replacements.
    Planet::start_with(
        PlanetConfig {
            nodes: 12,
            ..PlanetConfig::with_backend(backend)
        },
        configure,
    )
    .await
    .unwrap()
}

async fn upload_objects(planet: &Planet) -> Vec<Vec<u8>> {
    let project = planet.project().await.unwrap();
    project.create_bucket("leaving").await.unwrap();
    let mut objects = Vec::new();
    for i in 0..OBJECTS {
        let data = test_data(120_000 + i as usize * 1000, i);
        project
            .upload(
                "leaving",
                &format!("o{i}"),
                &data[..],
                UploadOptions::default(),
            )
            .await
            .unwrap();
        objects.push(data);
    }
    objects
}

/// The node holding the most pieces the satellite lists.
async fn busiest_node(planet: &Planet) -> usize {
    let mut counts = vec![0usize; planet.nodes.len()];
    for segment in planet.remote_segments().await.unwrap() {
        for piece in &segment.pieces {
            counts[planet.node_index(piece.node).unwrap()] += 1;
        }
    }
    (0..counts.len()).max_by_key(|&i| counts[i]).unwrap()
}

async fn pieces_listed_on(planet: &Planet, node: usize) -> usize {
    let id = planet.nodes[node].id();
    planet
        .remote_segments()
        .await
        .unwrap()
        .iter()
        .flat_map(|s| &s.pieces)
        .filter(|p| p.node == id)
        .count()
}

async fn report(planet: &Planet, node: usize) -> NodeReport {
    let (status, body) = request(
        "GET",
        &format!("{}/api/node", planet.nodes[node].dashboard_url()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn an_exiting_node_hands_over_every_piece_while_objects_stay_readable(backend: Backend) {
    let planet = planet(backend, |config| config.exit.batch = 3).await;
    let objects = Arc::new(upload_objects(&planet).await);
    let leaving = busiest_node(&planet).await;
    let listed = pieces_listed_on(&planet, leaving).await;
    assert!(listed > 0);
    let satellite = planet.satellite_identity.id();

    // Readers run through the whole exit.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers = {
        let (project, objects, stop, reads) = (
            planet.project().await.unwrap(),
            objects.clone(),
            stop.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (i, data) in objects.iter().enumerate() {
                    let mut out = Vec::new();
                    project
                        .download("leaving", &format!("o{i}"), None, &mut out, None)
                        .await
                        .unwrap_or_else(|e| panic!("object o{i} unreadable during the exit: {e}"));
                    assert_eq!(&out, data, "object o{i} changed during the exit");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let node = &planet.nodes[leaving];
    let exit_url = format!("{}/api/exit/{satellite}", node.dashboard_url());
    let (status, _) = request("POST", &exit_url, None).await;
    assert_eq!(status, 401, "an exit needs the operator token");
    let (status, _) = request("POST", &exit_url, Some("not the token")).await;
    assert_eq!(status, 401);
    let token = read_operator_token(&node.config.storage_dir).unwrap();
    let (status, body) = request("POST", &exit_url, Some(&token)).await;
    assert_eq!(status, 200, "{body}");

    wait_for(
        "the exit to complete and the node to delete the pieces",
        || async {
            report(&planet, leaving).await.satellites[0]
                .exit
                .as_ref()
                .is_some_and(|e| e.pieces_deleted.is_some())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    readers.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) >= OBJECTS as usize);

    let shown = report(&planet, leaving).await;
    let exit = shown.satellites[0].exit.clone().unwrap();
    assert_eq!(exit.failure, None);
    assert_eq!(exit.pieces_failed, 0);
    assert_eq!(exit.pieces_transferred, listed as i64);
    assert!(shown.satellites[0].bandwidth[&archipel_storagenode::bandwidth::Action::Exit] > 0);
    let receipt =
        ExitCompleted::decode(hex::decode(exit.receipt.unwrap()).unwrap().as_slice()).unwrap();
    let satellite_key =
        PeerKey::for_id(satellite, &planet.satellite_identity.public_key()).unwrap();
    verify_exit_completed(&satellite_key, node.id(), &receipt).unwrap();
    assert_eq!(receipt.pieces_transferred, listed as i64);

    // The node holds nothing of the satellite's, the satellite lists nothing
    // on it, and every object reads back from the replacements.
    assert!(node.piece_files().is_empty(), "{:?}", node.piece_files());
    assert!(node.trash_files().is_empty());
    assert_eq!(pieces_listed_on(&planet, leaving).await, 0);
    assert_eq!(shown.satellites[0].used_bytes, 0);
    let project = planet.project().await.unwrap();
    for (i, data) in objects.iter().enumerate() {
        let mut out = Vec::new();
        project
            .download("leaving", &format!("o{i}"), None, &mut out, None)
            .await
            .unwrap();
        assert_eq!(&out, data);
    }
    // New pieces never go to the node that left.
    project
        .upload(
            "leaving",
            "after",
            &test_data(150_000, 99)[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    assert!(node.piece_files().is_empty());
    planet.shutdown().await.unwrap();
}

async fn a_node_silent_mid_exit_fails_it(backend: Backend) {
    let planet = planet(backend, |config| {
        config.exit.inactivity_timeout = Duration::from_secs(2);
        config.exit.check_interval = Duration::from_millis(300);
    })
    .await;
    upload_objects(&planet).await;
    let leaving = busiest_node(&planet).await;
    let identity = planet.nodes[leaving].identity.clone();
    let mut satellite = NodeClient::new(planet.satellite_channel().await.unwrap());
    let call = |results| {
        sign_exit_request(
            &identity,
            ExitRequest {
                timestamp: unix_now(),
                results,
                ..ExitRequest::default()
            },
        )
    };

    // The node starts its exit, takes a batch of transfers, and vanishes.
    let first = satellite.exit(call(Vec::new())).await.unwrap().into_inner();
    assert!(!first.transfers.is_empty());
    assert!(first.completed.is_none() && first.failed.is_empty());
    let metabase = planet.metabase().await.unwrap();
    wait_for("the satellite to fail the silent exit", || async {
        metabase
            .exit_state(&identity.id())
            .await
            .unwrap()
            .unwrap()
            .failure
            .is_some()
    })
    .await;

    // Coming back does not resume it, and its pieces are not handed over.
    let again = satellite.exit(call(Vec::new())).await.unwrap().into_inner();
    assert!(
        again.failed.contains("stopped handing over"),
        "{}",
        again.failed
    );
    assert!(again.transfers.is_empty() && again.completed.is_none());
    assert!(pieces_listed_on(&planet, leaving).await > 0);
    // Its pieces still listed count as lost, for repair to rebuild.
    let standing = &metabase.node_standings_of(&[identity.id()]).await.unwrap()[0];
    assert_eq!(
        archipel_satellite::health::NodeStatus::of(standing, 0),
        archipel_satellite::health::NodeStatus::Exited
    );
    // A forged request is refused before anything changes.
    let mut forged = call(Vec::new());
    forged.timestamp += 1;
    let refused = satellite.exit(forged).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    an_exiting_node_hands_over_every_piece_while_objects_stay_readable,
    a_node_silent_mid_exit_fails_it,
);
