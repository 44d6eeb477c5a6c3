//! Fault tests on the real servers: stopped nodes, a node that stalls in the
//! middle of a download, corrupted pieces, forged, expired, misdirected and
//! replayed order limits (also across a node restart), wrong API keys.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archipel_client::{Access, Project, UploadOptions};
use archipel_proto::orders::{derive_piece_id, new_serial, sign_order_limit, unix_now};
use archipel_proto::pb::piecestore_client::PiecestoreClient;
use archipel_proto::pb::{OrderLimit, PieceAction, PieceDownloadRequest, PieceUploadRequest};
use archipel_proto::Identity;
use archipel_satellite::audit::AuditConfig;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Uploads one single-segment object and returns its bytes and the indexes of
/// the nodes that hold its pieces.
async fn upload_one_segment(planet: &Planet, key: &str) -> (Vec<u8>, Vec<usize>) {
    let project = planet.project().await.unwrap();
    let _ = project.create_bucket("faults").await;
    let data = test_data(300_000, key.len() as u64);
    project
        .upload("faults", key, &data[..], UploadOptions::default())
        .await
        .unwrap();
    (data, planet.holders().await.unwrap())
}

async fn download(planet: &Planet, key: &str) -> Result<Vec<u8>, archipel_client::Error> {
    let project = planet.project().await.unwrap();
    let mut out = Vec::new();
    project
        .download("faults", key, None, &mut out, None)
        .await?;
    Ok(out)
}

async fn download_survives_stopped_holders(backend: Backend) {
    let mut planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let k = planet.satellite_config.redundancy.required as usize;
    let (data, holders) = upload_one_segment(&planet, "survivor").await;
    assert!(holders.len() >= planet.satellite_config.redundancy.success as usize);
    for &i in &holders[..holders.len() - k] {
        planet.stop_node(i).await.unwrap();
    }
    assert!(download(&planet, "survivor").await.unwrap() == data);

    // One more holder gone: fewer than k pieces, a clear error rather than wrong bytes.
    planet.stop_node(holders[holders.len() - k]).await.unwrap();
    let error = download(&planet, "survivor").await.unwrap_err();
    assert!(
        error.to_string().contains("piece"),
        "unexpected error: {error}"
    );
    planet.shutdown().await.unwrap();
}

async fn upload_survives_down_nodes(backend: Backend) {
    let mut planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let r = planet.satellite_config.redundancy;
    for i in 0..(r.total - r.success) as usize {
        planet.stop_node(i).await.unwrap();
    }
    let project = planet.project().await.unwrap();
    project.create_bucket("faults").await.unwrap();
    let data = test_data(3 << 20, 5);
    project
        .upload("faults", "partial", &data[..], UploadOptions::default())
        .await
        .unwrap();
    assert!(download(&planet, "partial").await.unwrap() == data);
    planet.shutdown().await.unwrap();
}

/// Flips bytes in the middle of every piece file of `node`.
fn corrupt_pieces(planet: &Planet, node: usize) {
    for path in planet.nodes[node].piece_files() {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let len = file.metadata().unwrap().len();
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(len / 2)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(len / 2)).unwrap();
        file.write_all(&[byte[0] ^ 0xff]).unwrap();
    }
}

async fn corrupted_pieces_are_routed_around(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let k = planet.satellite_config.redundancy.required as usize;
    let (data, holders) = upload_one_segment(&planet, "corrupt").await;
    for &i in &holders[..holders.len() - k] {
        corrupt_pieces(&planet, i);
    }
    assert!(download(&planet, "corrupt").await.unwrap() == data);
    planet.shutdown().await.unwrap();
}

async fn wrong_api_key_is_rejected(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let error = Access::request(&planet.satellite_url(), "ak_not-a-real-key", "pass")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("API key"),
        "unexpected error: {error}"
    );

    // A grant whose key was valid elsewhere fails on every call, not only at creation.
    let serialized = planet.access().serialize();
    let mut forged = Access::parse(&serialized).unwrap();
    forged.api_key = "ak_forged".into();
    let project = Project::open(&forged).await.unwrap();
    assert!(project.list_buckets().await.is_err());
    assert!(project.create_bucket("nope").await.is_err());
    planet.shutdown().await.unwrap();
}

fn limit(planet: &Planet, node: usize, action: PieceAction, expires: i64) -> OrderLimit {
    OrderLimit {
        serial_number: new_serial(),
        node_id: planet.nodes[node].id().to_vec(),
        piece_id: rand::random::<[u8; 32]>().to_vec(),
        action: action as i32,
        limit: 1 << 20,
        order_expiration: expires,
        order_creation: unix_now(),
        ..Default::default()
    }
}

/// Uploads 1000 bytes of `fill` with `limit`.
async fn upload_piece(
    planet: &Planet,
    node: usize,
    limit: OrderLimit,
    fill: u8,
) -> Result<(), tonic::Status> {
    let mut client = PiecestoreClient::new(planet.node_channel(node).await.unwrap());
    let messages = vec![
        PieceUploadRequest {
            limit: Some(limit),
            data: vec![fill; 1000],
            done: false,
        },
        PieceUploadRequest {
            limit: None,
            data: Vec::new(),
            done: true,
        },
    ];
    client
        .upload(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

/// Asserts that a node refused an order limit, for `reason`.
fn refused(status: &tonic::Status, reason: &str) {
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(reason), "{status:?}");
}

async fn bad_order_limits_are_refused(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let satellite = &planet.satellite_identity;
    let later = unix_now() + 600;

    let good = sign_order_limit(satellite, limit(&planet, 0, PieceAction::Put, later));
    upload_piece(&planet, 0, good.clone(), 1)
        .await
        .expect("a valid order limit is honoured");

    let replayed = upload_piece(&planet, 0, good.clone(), 1).await.unwrap_err();
    refused(&replayed, "was already used");

    let to_other_node = upload_piece(&planet, 1, good, 1).await.unwrap_err();
    refused(&to_other_node, "not this node");

    let forged = sign_order_limit(
        &Identity::generate(),
        limit(&planet, 0, PieceAction::Put, later),
    );
    let error = upload_piece(&planet, 0, forged, 1).await.unwrap_err();
    refused(&error, "does not trust");

    let mut tampered = sign_order_limit(satellite, limit(&planet, 0, PieceAction::Put, later));
    tampered.limit *= 1000;
    let error = upload_piece(&planet, 0, tampered, 1).await.unwrap_err();
    refused(&error, "signature does not verify");

    let expired = sign_order_limit(
        satellite,
        limit(&planet, 0, PieceAction::Put, unix_now() - 1),
    );
    let error = upload_piece(&planet, 0, expired, 1).await.unwrap_err();
    refused(&error, "order limit expired");

    let get_for_put = sign_order_limit(satellite, limit(&planet, 0, PieceAction::Get, later));
    let error = upload_piece(&planet, 0, get_for_put, 1).await.unwrap_err();
    refused(&error, "not Put");

    let mut small = limit(&planet, 0, PieceAction::Put, later);
    small.limit = 10;
    let error = upload_piece(&planet, 0, sign_order_limit(satellite, small), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.code(),
            tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::ResourceExhausted
        ),
        "{error:?}"
    );

    // Downloads are checked the same way.
    let mut client = PiecestoreClient::new(planet.node_channel(0).await.unwrap());
    let forged_get = sign_order_limit(
        &Identity::generate(),
        limit(&planet, 0, PieceAction::Get, later),
    );
    let request = PieceDownloadRequest {
        limit: Some(forged_get),
        offset: 0,
        length: 10,
    };
    let error = match client.download(request).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    refused(&error, "does not trust");
    planet.shutdown().await.unwrap();
}

async fn orders_cannot_be_replayed_after_a_restart(backend: Backend) {
    let mut planet = Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        config.audit = AuditConfig {
            enabled: true,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            max_reverify_count: 3,
            concurrency: 1,
        };
    })
    .await
    .unwrap();
    let (data, _) = upload_one_segment(&planet, "kept").await;
    let segment = planet.remote_segments().await.unwrap().remove(0);
    let piece = segment.pieces[0];
    let node = planet.node_index(piece.node).unwrap();
    let stored_id = derive_piece_id(&segment.root_piece_id, &piece.node, piece.num.into());
    let stored_file = archipel_storagenode::piece_path(
        &planet.nodes[node].config.storage_dir,
        &planet.satellite_identity.id(),
        &stored_id,
    );
    let stored = std::fs::read(&stored_file).unwrap();

    // An order used once, then the node restarts and forgets its memory.
    let satellite = planet.satellite_identity.clone();
    let order = sign_order_limit(
        &satellite,
        limit(&planet, node, PieceAction::Put, unix_now() + 600),
    );
    upload_piece(&planet, node, order.clone(), 1).await.unwrap();
    planet.stop_node(node).await.unwrap();
    planet.restart_node(node).await.unwrap();

    let replayed = upload_piece(&planet, node, order, 2).await.unwrap_err();
    assert_eq!(
        replayed.code(),
        tonic::Code::PermissionDenied,
        "{replayed:?}"
    );
    assert!(
        replayed.message().contains("was already used"),
        "{replayed:?}"
    );

    // A fresh order for a stored piece does not replace it either.
    let overwrite = sign_order_limit(
        &satellite,
        OrderLimit {
            piece_id: stored_id.to_vec(),
            ..limit(&planet, node, PieceAction::Put, unix_now() + 600)
        },
    );
    let refused = upload_piece(&planet, node, overwrite, 3).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("a stored piece is never replaced"),
        "{refused:?}"
    );
    assert!(std::fs::read(&stored_file).unwrap() == stored);

    // The object reads back, and the node passes audits of what it keeps.
    assert!(download(&planet, "kept").await.unwrap() == data);
    let id = planet.nodes[node].id();
    wait_for("three audits of the restarted node", || async {
        planet.node_health(id).await.unwrap().audit_total >= 3
    })
    .await;
    let health = planet.node_health(id).await.unwrap();
    assert_eq!(health.audit_success, health.audit_total, "{health:?}");
    planet.shutdown().await.unwrap();
}

/// A TCP proxy to `target`. Once `armed`, it passes on at most `budget`
/// more bytes from the node to each client connection and then nothing,
/// keeping the connection open: a node that stops sending mid-stream.
async fn stalling_proxy(target: SocketAddr, budget: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let arming = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let armed = arming.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 16 << 10];
                let mut left = budget;
                while let Ok(n) = server_read.read(&mut buf).await {
                    let pass = if armed.load(Ordering::SeqCst) {
                        n.min(left)
                    } else {
                        n
                    };
                    if n == 0 || client_write.write_all(&buf[..pass]).await.is_err() {
                        return;
                    }
                    if armed.load(Ordering::SeqCst) {
                        left -= pass;
                        if pass < n || left == 0 {
                            // Stalled for good, the connection held open.
                            std::future::pending::<()>().await;
                        }
                    }
                }
            });
        }
    });
    (address, armed)
}

/// A node that stops sending in the middle of a download (its connection
/// open, so nothing fails) costs the download a hedge, not the 30 s after
/// which a stalled read is given up.
async fn a_node_that_stalls_mid_download_is_hedged(backend: Backend) {
    let mut planet = Planet::start(PlanetConfig {
        max_segment_size: 8 << 20,
        ..PlanetConfig::with_backend(backend)
    })
    .await
    .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("faults").await.unwrap();
    // One segment of six 1 MiB batches.
    let data = test_data(6 << 20, 5);
    project
        .upload("faults", "long", &data[..], UploadOptions::default())
        .await
        .unwrap();
    // The node holding data piece 0 is reached through the proxy from now on.
    let segment = planet.remote_segments().await.unwrap().remove(0);
    let first = segment.pieces.iter().find(|p| p.num == 0).unwrap().node;
    let node = planet.node_index(first).unwrap();
    let (proxy, armed) = stalling_proxy(planet.nodes[node].address, 300 << 10).await;
    planet.stop_node(node).await.unwrap();
    planet.nodes[node].config.advertised_address = Some(proxy.to_string());
    planet.restart_node(node).await.unwrap();
    wait_for("the satellite knows the node at the proxy", || async {
        let known = planet
            .metabase()
            .await
            .unwrap()
            .nodes(&[first])
            .await
            .unwrap();
        known
            .first()
            .is_some_and(|n| n.address == proxy.to_string())
    })
    .await;

    // It sends about its first batch, then nothing.
    armed.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    let read = project.download("faults", "long", None, &mut out, None);
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the download waited for the stalled node")
        .unwrap();
    assert!(out == data);
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    a_node_that_stalls_mid_download_is_hedged,
    download_survives_stopped_holders,
    upload_survives_down_nodes,
    corrupted_pieces_are_routed_around,
    wrong_api_key_is_rejected,
    bad_order_limits_are_refused,
    orders_cannot_be_replayed_after_a_restart,
);
