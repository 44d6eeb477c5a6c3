//! Heal on read and healthy piece counts on real networks: a piece that fails
//! verification during a download is reported and its node audited on that
//! very piece at once; reports of pieces a client was never given are ignored
//! or refused; `stat` counts only the pieces on nodes that are up.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::Duration;

use archipel_client::{Access, Project, UploadOptions};
use archipel_proto::orders::derive_piece_id;
use archipel_proto::pb::metainfo_client::MetainfoClient;
use archipel_proto::pb::{self, BadPieceReason};
use archipel_proto::NodeId;
use archipel_satellite::audit::AuditConfig;
use archipel_satellite::metabase::Segment;
use archipel_satellite::reputation::NodeHealth;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use tonic::transport::Channel;

/// Audits on, but the workers' own rounds an hour apart: within a test, only
/// prompt audits happen.
fn prompt_audits_only(concurrency: usize) -> impl FnOnce(&mut archipel_satellite::Config) {
    move |config| {
        config.audit = AuditConfig {
            enabled: true,
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            max_reverify_count: 3,
            concurrency,
        };
    }
}

async fn health(planet: &Planet, node: NodeId) -> NodeHealth {
    planet.node_health(node).await.unwrap()
}

/// Uploads `data` as `bucket`/`key` and returns the segments that appeared.
async fn upload_new(
    planet: &Planet,
    project: &Project,
    bucket: &str,
    key: &str,
    data: &[u8],
) -> Vec<Segment> {
    let before = planet.remote_segments().await.unwrap();
    project
        .upload(bucket, key, data, UploadOptions::default())
        .await
        .unwrap();
    let mut after = planet.remote_segments().await.unwrap();
    after.retain(|s| !before.contains(s));
    after
}

/// Flips every data byte of the file of piece `num` of `segment`.
fn corrupt_piece(planet: &Planet, segment: &Segment, num: u16) -> NodeId {
    let piece = segment.pieces.iter().find(|p| p.num == num).unwrap();
    let node = &planet.nodes[planet.node_index(piece.node).unwrap()];
    let path = archipel_storagenode::piece_path(
        &node.config.storage_dir,
        &planet.satellite_identity.id(),
        &derive_piece_id(&segment.root_piece_id, &piece.node, num.into()),
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let start = archipel_storagenode::PIECE_HEADER_SIZE as usize;
    assert!(bytes.len() > start, "a piece file without data");
    for byte in &mut bytes[start..] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    piece.node
}

async fn a_bad_piece_read_is_audited_at_once(backend: Backend) {
    let planet = Planet::start_with(PlanetConfig::with_backend(backend), prompt_audits_only(2))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("heal").await.unwrap();
    let data = test_data(300_000, 1);
    let segments = upload_new(&planet, &project, "heal", "read-me", &data).await;
    assert_eq!(segments.len(), 1);
    // More objects give the bad node good pieces too: a random audit of it
    // would likely pick one of those and pass.
    for i in 0..4u64 {
        let other = test_data(300_000, 10 + i);
        upload_new(&planet, &project, "heal", &format!("other-{i}"), &other).await;
    }
    // The lowest-numbered piece stored is a data piece (the upload's cut
    // long tail may have left piece 0 out): the download reads it first.
    let first = segments[0].pieces.iter().map(|p| p.num).min().unwrap();
    let bad_node = corrupt_piece(&planet, &segments[0], first);
    let held = planet
        .remote_segments()
        .await
        .unwrap()
        .iter()
        .filter(|s| s.pieces.iter().any(|p| p.node == bad_node))
        .count();
    assert!(held >= 2, "the bad node holds {held} pieces");

    let mut out = Vec::new();
    project
        .download("heal", "read-me", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == data, "the download is not byte-identical");

    wait_for("the reported node failing an audit", || async {
        let h = health(&planet, bad_node).await;
        h.audit_total > h.audit_success
    })
    .await;
    // One audit, of the reported piece: no random piece, no other node.
    let h = health(&planet, bad_node).await;
    assert_eq!((h.audit_total, h.audit_success), (1, 0), "{h:?}");
    for node in &planet.nodes {
        if node.id() != bad_node {
            assert_eq!(health(&planet, node.id()).await.audit_total, 0);
        }
    }
    planet.shutdown().await.unwrap();
}

async fn metainfo(planet: &Planet) -> MetainfoClient<Channel> {
    MetainfoClient::new(planet.satellite_channel().await.unwrap())
}

fn header(api_key: &str) -> Option<pb::RequestHeader> {
    Some(pb::RequestHeader {
        api_key: api_key.to_string(),
    })
}

/// The stream id the satellite hands out for the only object of `bucket`.
async fn stream_id(client: &mut MetainfoClient<Channel>, api_key: &str, bucket: &str) -> Vec<u8> {
    let listing = client
        .list_objects(pb::ListObjectsRequest {
            header: header(api_key),
            bucket: bucket.to_string(),
            encrypted_prefix: Vec::new(),
            cursor: Vec::new(),
            recursive: true,
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listing.items.len(), 1);
    // Listings leave stream ids out; reading the object hands it out.
    let object = client
        .get_object(pb::GetObjectRequest {
            header: header(api_key),
            bucket: bucket.to_string(),
            encrypted_object_key: listing.items[0].encrypted_object_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    object.object.unwrap().stream_id
}

fn bad_piece(num: u16, node: NodeId, reason: BadPieceReason) -> pb::BadPiece {
    pb::BadPiece {
        piece_num: num.into(),
        node_id: node.to_vec(),
        reason: reason.into(),
    }
}

async fn reports_of_pieces_not_given_are_ignored(backend: Backend) {
    // One worker: requests are audited in the order they came.
    let planet = Planet::start_with(PlanetConfig::with_backend(backend), prompt_audits_only(1))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("mine").await.unwrap();
    let mine = upload_new(&planet, &project, "mine", "a", &test_data(100_000, 2)).await;
    let other_key = archipel_satellite::create_project(planet.database_url(), "other")
        .await
        .unwrap();
    let other_access = Access::request(&planet.satellite_url(), &other_key, "other passphrase")
        .await
        .unwrap();
    let other_project = Project::open(&other_access).await.unwrap();
    other_project.create_bucket("theirs").await.unwrap();
    let theirs = upload_new(
        &planet,
        &other_project,
        "theirs",
        "b",
        &test_data(100_000, 3),
    )
    .await;
    let (mine, theirs) = (&mine[0], &theirs[0]);

    let mut client = metainfo(&planet).await;
    let my_stream = stream_id(&mut client, &planet.api_key, "mine").await;
    let their_stream = stream_id(&mut client, &other_key, "theirs").await;
    let node_of =
        |segment: &Segment, num: u16| segment.pieces.iter().find(|p| p.num == num).unwrap().node;
    let target = node_of(mine, 3);
    let report =
        |stream: &[u8], position: u32, pieces: Vec<pb::BadPiece>| pb::ReportBadPiecesRequest {
            header: header(&planet.api_key),
            stream_id: stream.to_vec(),
            position,
            pieces,
        };

    // Pieces on the wrong node, unknown piece numbers and nodes, no reason;
    // padded past the segment's piece count, so that a real piece at the end
    // is cut off too.
    let mut pieces = vec![
        bad_piece(0, node_of(mine, 1), BadPieceReason::Corrupt),
        bad_piece(99, node_of(mine, 0), BadPieceReason::Corrupt),
        bad_piece(2, NodeId([7; 32]), BadPieceReason::Missing),
        bad_piece(2, node_of(mine, 2), BadPieceReason::Invalid),
    ];
    while pieces.len() < mine.pieces.len() {
        pieces.push(bad_piece(0, node_of(mine, 1), BadPieceReason::Corrupt));
    }
    pieces.push(bad_piece(4, node_of(mine, 4), BadPieceReason::Corrupt));
    let answer = client
        .report_bad_pieces(report(&my_stream, 0, pieces))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 0);

    // Another project's stream is refused, and so is a segment that is not there.
    let other_node = theirs.pieces.iter().find(|p| p.node != target).unwrap();
    let refused = client
        .report_bad_pieces(report(
            &their_stream,
            0,
            vec![bad_piece(
                other_node.num,
                other_node.node,
                BadPieceReason::Corrupt,
            )],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let missing = client
        .report_bad_pieces(report(
            &my_stream,
            7,
            vec![bad_piece(0, node_of(mine, 0), BadPieceReason::Corrupt)],
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    // A real piece, reported twice in one report, counts once and is audited
    // (and passes: it is fine).
    let real = bad_piece(3, target, BadPieceReason::Missing);
    let answer = client
        .report_bad_pieces(report(&my_stream, 0, vec![real.clone(), real]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.accepted, 1);
    wait_for("the reported node audited", || async {
        health(&planet, target).await.audit_total > 0
    })
    .await;
    let h = health(&planet, target).await;
    assert_eq!((h.audit_total, h.audit_success), (1, 1), "{h:?}");
    // Whatever was queued before it has been audited by now: nothing was.
    for node in &planet.nodes {
        if node.id() != target {
            assert_eq!(health(&planet, node.id()).await.audit_total, 0);
        }
    }
    planet.shutdown().await.unwrap();
}

/// Healthy pieces per segment as `stat` shows them, in position order.
async fn healthy_counts(project: &Project) -> Vec<u32> {
    let info = project.stat("stat", "big").await.unwrap();
    info.segments.iter().map(|s| s.healthy_pieces).collect()
}

/// Pieces per segment (in position order) on nodes that are running.
fn running_counts(planet: &Planet, segments: &[Segment]) -> Vec<u32> {
    segments
        .iter()
        .map(|s| {
            s.pieces
                .iter()
                .filter(|p| planet.nodes[planet.node_index(p.node).unwrap()].is_running())
                .count() as u32
        })
        .collect()
}

async fn stat_counts_healthy_pieces(backend: Backend) {
    // Nodes check in every second; one silent for 5 seconds is offline.
    let planet = Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        config.node_online_window = Duration::from_secs(5);
    })
    .await;
    let mut planet = planet.unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("stat").await.unwrap();
    let mut segments = upload_new(&planet, &project, "stat", "big", &test_data(2_500_000, 4)).await;
    segments.sort_by_key(|s| s.position);
    assert_eq!(segments.len(), 3);
    project
        .upload("stat", "small", &b"inline"[..], UploadOptions::default())
        .await
        .unwrap();

    let info = project.stat("stat", "big").await.unwrap();
    let piece_counts: Vec<u32> = info.segments.iter().map(|s| s.piece_count).collect();
    let stored: Vec<u32> = segments.iter().map(|s| s.pieces.len() as u32).collect();
    assert_eq!(piece_counts, stored);
    assert_eq!(healthy_counts(&project).await, stored);
    let small = project.stat("stat", "small").await.unwrap();
    assert!(small.segments[0].inline);
    assert_eq!(small.segments[0].healthy_pieces, 0);

    for i in [0, 1, 2] {
        planet.stop_node(i).await.unwrap();
    }
    let expected = running_counts(&planet, &segments);
    assert!(expected.iter().zip(&stored).all(|(e, s)| e < s));
    wait_for("stat counting the stopped nodes' pieces out", || async {
        healthy_counts(&project).await == expected
    })
    .await;
    assert_eq!(healthy_counts(&project).await, expected);
    // The piece list itself is unchanged: offline pieces may come back.
    let info = project.stat("stat", "big").await.unwrap();
    let piece_counts: Vec<u32> = info.segments.iter().map(|s| s.piece_count).collect();
    assert_eq!(piece_counts, stored);

    planet.restart_node(0).await.unwrap();
    let expected = running_counts(&planet, &segments);
    wait_for("stat counting the restarted node's pieces in", || async {
        healthy_counts(&project).await == expected
    })
    .await;
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    a_bad_piece_read_is_audited_at_once,
    reports_of_pieces_not_given_are_ignored,
    stat_counts_healthy_pieces,
);
