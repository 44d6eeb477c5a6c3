//! Repair on real networks: segments that lose pieces to stopped or
//! disqualified nodes are rebuilt on other nodes and stay downloadable with
//! the original holders gone; a repair racing a delete or an overwrite never
//! brings anything back; the repair queue hands each segment to one worker
//! even with several satellite processes claiming from one database.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use archipel_client::{CopyMetadata, UploadOptions};
use archipel_proto::orders::derive_piece_id;
use archipel_proto::{NodeId, Redundancy};
use archipel_satellite::audit::{AuditConfig, AuditResult, Auditor, PieceRef};
use archipel_satellite::deletes::PieceDeleter;
use archipel_satellite::health::{self, NetworkView};
use archipel_satellite::metabase::{Piece, QueuedSegment, Segment, SegmentKey};
use archipel_satellite::metrics::Metrics;
use archipel_satellite::orders::OrderSigner;
use archipel_satellite::repair::repairer::Repairer;
use archipel_satellite::reputation::AuditOutcome;
use archipel_satellite::testing::FreshDatabase;
use archipel_satellite::Metabase;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};

const BUCKET: &str = "repair";

/// Nodes count as offline 3 s after their last check-in (they check in every
/// second); the checker and the repairers run several times a second.
fn fast_repair(config: &mut archipel_satellite::Config) {
    config.node_online_window = Duration::from_secs(3);
    config.repair.enabled = true;
    config.repair.checker_interval = Duration::from_millis(300);
    config.repair.interval = Duration::from_millis(200);
    config.repair.retry_after = Duration::from_secs(1);
}

fn planet_config(backend: Backend, nodes: usize) -> PlanetConfig {
    PlanetConfig {
        nodes,
        ..PlanetConfig::with_backend(backend)
    }
}

async fn upload(planet: &Planet, key: &str, data: &[u8]) {
    planet
        .project()
        .await
        .unwrap()
        .upload(BUCKET, key, data, UploadOptions::default())
        .await
        .unwrap();
}

async fn download(planet: &Planet, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    planet
        .project()
        .await
        .unwrap()
        .download(BUCKET, key, None, &mut out, None)
        .await
        .unwrap();
    out
}

async fn segments(planet: &Planet) -> Vec<Segment> {
    planet
        .metabase()
        .await
        .unwrap()
        .remote_segments_after(None, 10_000, archipel_proto::orders::unix_now())
        .await
        .unwrap()
}

async fn view(planet: &Planet) -> NetworkView {
    health::current_view(
        planet.metabase().await.unwrap(),
        &planet.satellite_config,
        archipel_proto::orders::unix_now(),
    )
    .await
    .unwrap()
}

/// Waits until the satellite counts every node of `stopped` offline.
async fn wait_until_offline(planet: &Planet, stopped: &HashSet<NodeId>) {
    wait_for("the stopped nodes count as offline", || async {
        let view = view(planet).await;
        stopped
            .iter()
            .all(|n| view.status(n) == health::NodeStatus::Offline)
    })
    .await;
}

/// Stops nodes holding pieces of the first segment until it is at its repair
/// threshold; returns the stopped nodes.
async fn stop_holders(planet: &mut Planet, count: usize) -> HashSet<NodeId> {
    let first = segments(planet).await.remove(0);
    let stopped: HashSet<NodeId> = first.pieces.iter().take(count).map(|p| p.node).collect();
    for node in &stopped {
        let i = planet.node_index(*node).unwrap();
        planet.stop_node(i).await.unwrap();
    }
    stopped
}

async fn repair_restores_segments_after_nodes_stop(backend: Backend) {
    let mut planet = Planet::start_with(planet_config(backend, 14), fast_repair)
        .await
        .unwrap();
    let redundancy = planet.satellite_config.redundancy;
    planet
        .project()
        .await
        .unwrap()
        .create_bucket(BUCKET)
        .await
        .unwrap();
    // Three segments of 1 MiB and a short one; and a one-segment object.
    let big = test_data(3 * (1 << 20) + 12_345, 1);
    let small = test_data(300_000, 2);
    upload(&planet, "big", &big).await;
    upload(&planet, "small", &small).await;
    // A server-side copy: its segment lists the same pieces and is repaired
    // as a segment of its own.
    planet
        .project()
        .await
        .unwrap()
        .copy_object(BUCKET, "small", BUCKET, "copy", CopyMetadata::Keep)
        .await
        .unwrap();
    let before: Vec<Segment> = segments(&planet).await;
    assert_eq!(before.len(), 6);

    let stopped = stop_holders(&mut planet, 4).await;
    // Wait until the satellite sees them offline, then note who is at risk.
    wait_until_offline(&planet, &stopped).await;
    let at_risk: HashSet<SegmentKey> = before
        .iter()
        .filter(|s| {
            let healthy = s
                .pieces
                .iter()
                .filter(|p| !stopped.contains(&p.node))
                .count();
            healthy <= usize::from(redundancy.repair)
        })
        .map(Segment::key)
        .collect();
    assert!(!at_risk.is_empty());

    wait_for("every segment is above its repair threshold", || async {
        let view = view(&planet).await;
        segments(&planet)
            .await
            .iter()
            .all(|s| view.classify(&s.pieces).healthy_count() > redundancy.repair)
    })
    .await;

    let view = view(&planet).await;
    for segment in segments(&planet).await {
        let old = before.iter().find(|s| s.key() == segment.key()).unwrap();
        let health = view.classify(&segment.pieces);
        if at_risk.contains(&segment.key()) {
            assert!(
                health.healthy_count() >= redundancy.success,
                "a repaired segment has only {} healthy pieces",
                health.healthy_count()
            );
        }
        // Nothing was rebuilt onto a node that already held the segment, and
        // piece numbers stay unique.
        let nodes: HashSet<NodeId> = segment.pieces.iter().map(|p| p.node).collect();
        assert_eq!(nodes.len(), segment.pieces.len());
        let nums: HashSet<u16> = segment.pieces.iter().map(|p| p.num).collect();
        assert_eq!(nums.len(), segment.pieces.len());
        // Healthy pieces that were there before are all still there.
        for piece in &old.pieces {
            if !stopped.contains(&piece.node) {
                assert!(
                    segment.pieces.contains(piece),
                    "a healthy piece was dropped"
                );
            }
        }
        assert!(segment
            .pieces
            .iter()
            .all(|p| !stopped.contains(&p.node) || old.pieces.contains(p)));
    }
    // The original holders are still down.
    assert_eq!(download(&planet, "big").await, big);
    assert_eq!(download(&planet, "small").await, small);
    assert_eq!(download(&planet, "copy").await, small);

    // Deleting the source takes no piece the repaired copy lists.
    let project = planet.project().await.unwrap();
    let listed_before = planet.committed_piece_files().await.unwrap();
    project.delete_object(BUCKET, "small").await.unwrap();
    project.delete_object(BUCKET, "big").await.unwrap();
    wait_for("the deleted objects' unshared pieces are gone", || async {
        let listed = planet.committed_piece_files().await.unwrap();
        listed_before
            .difference(&listed)
            .filter(|f| on_running_node(&planet, f))
            .all(|f| !f.exists())
    })
    .await;
    let satellite = planet.satellite_identity.id();
    for segment in segments(&planet).await {
        for piece in &segment.pieces {
            let node = &planet.nodes[planet.node_index(piece.node).unwrap()];
            if node.is_running() {
                let id = derive_piece_id(&segment.root_piece_id, &piece.node, piece.num.into());
                let path =
                    archipel_storagenode::piece_path(&node.config.storage_dir, &satellite, &id);
                assert!(path.exists(), "a piece the copy lists was deleted");
            }
        }
    }
    assert_eq!(download(&planet, "copy").await, small);
    planet.shutdown().await.unwrap();
}

/// Any lost piece sends a segment to repair: k = 4, repair = success = 9, total 10.
fn touchy_redundancy() -> Redundancy {
    Redundancy::new(4, 9, 9, 10, 1024).unwrap()
}

async fn repair_moves_data_off_disqualified_nodes(backend: Backend) {
    let config = PlanetConfig {
        redundancy: touchy_redundancy(),
        ..planet_config(backend, 13)
    };
    let mut planet = Planet::start_with(config, |config| {
        fast_repair(config);
        config.audit = AuditConfig {
            enabled: true,
            interval: Duration::from_millis(100),
            // Generous: on a loaded machine a 1 s audit timed out, which
            // contains the node instead of failing it, and the wait for
            // disqualification ran out.
            timeout: Duration::from_secs(10),
            max_reverify_count: 3,
            concurrency: 2,
        };
        config.reputation.vetting_audits = 1;
    })
    .await
    .unwrap();
    planet
        .project()
        .await
        .unwrap()
        .create_bucket(BUCKET)
        .await
        .unwrap();
    let objects: Vec<Vec<u8>> = (0..3)
        .map(|i| test_data(400_000 + i * 1000, i as u64))
        .collect();
    for (i, data) in objects.iter().enumerate() {
        upload(&planet, &format!("object-{i}"), data).await;
    }
    // One node garbles every piece it holds, another loses them all.
    let first = segments(&planet).await.remove(0);
    let liar = planet.node_index(first.pieces[0].node).unwrap();
    let loser = planet.node_index(first.pieces[1].node).unwrap();
    for file in planet.nodes[liar].piece_files() {
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..] {
            *b ^= 0x5a;
        }
        std::fs::write(&file, bytes).unwrap();
    }
    for file in planet.nodes[loser].piece_files() {
        std::fs::remove_file(file).unwrap();
    }
    let bad: HashSet<NodeId> = [planet.nodes[liar].id(), planet.nodes[loser].id()].into();

    wait_for("both nodes are disqualified", || async {
        let disqualified: HashSet<NodeId> = planet
            .metabase()
            .await
            .unwrap()
            .disqualified_nodes()
            .await
            .unwrap()
            .into_iter()
            .collect();
        bad.is_subset(&disqualified)
    })
    .await;
    wait_for("no segment keeps a piece on them", || async {
        let view = view(&planet).await;
        segments(&planet).await.iter().all(|s| {
            s.pieces.iter().all(|p| !bad.contains(&p.node))
                && view.classify(&s.pieces).healthy_count() >= touchy_redundancy().success
        })
    })
    .await;
    for i in [liar, loser] {
        planet.stop_node(i).await.unwrap();
    }
    for (i, data) in objects.iter().enumerate() {
        assert_eq!(&download(&planet, &format!("object-{i}")).await, data);
    }
    planet.shutdown().await.unwrap();
}

/// Repair checked where it counts: it must rebuild from exactly `k`
/// originals, and then every original holder is stopped, so the object reads
/// back (byte for byte) only through the rebuilt pieces, which also pass
/// audits. A repair that stored garbage fails here.
async fn repaired_pieces_alone_rebuild_the_object(backend: Backend) {
    let mut planet = Planet::start_with(planet_config(backend, 14), fast_repair)
        .await
        .unwrap();
    let k = usize::from(planet.satellite_config.redundancy.required);
    let project = planet.project().await.unwrap();
    project.create_bucket(BUCKET).await.unwrap();
    let data = test_data(300_000, 9);
    upload(&planet, "object", &data).await;
    let original = segments(&planet).await.remove(0);
    let original_nodes: HashSet<NodeId> = original.pieces.iter().map(|p| p.node).collect();

    let stopped = stop_holders(&mut planet, original.pieces.len() - k).await;
    wait_until_offline(&planet, &stopped).await;
    wait_for("the segment holds k rebuilt pieces", || async {
        let segment = segments(&planet).await.remove(0);
        let rebuilt = segment.pieces.iter();
        rebuilt
            .filter(|p| !original_nodes.contains(&p.node))
            .count()
            >= k
    })
    .await;
    let repaired = segments(&planet).await.remove(0);
    let rebuilt: Vec<Piece> = repaired
        .pieces
        .iter()
        .filter(|p| !original_nodes.contains(&p.node))
        .cloned()
        .collect();

    for node in original_nodes.difference(&stopped) {
        let i = planet.node_index(*node).unwrap();
        planet.stop_node(i).await.unwrap();
    }
    assert!(original_nodes
        .iter()
        .all(|n| !planet.nodes[planet.node_index(*n).unwrap()].is_running()));
    assert_eq!(download(&planet, "object").await, data);

    let metabase = planet.metabase().await.unwrap();
    let auditor = Auditor::new(
        OrderSigner::new(
            planet.satellite_identity.clone(),
            planet.satellite_config.order_expiration,
        ),
        metabase.clone(),
        planet.satellite_config.audit.clone(),
        planet.satellite_config.reputation.clone(),
        Arc::new(Metrics::default()),
    );
    for piece in &rebuilt {
        let target = PieceRef {
            segment: repaired.key(),
            num: piece.num,
        };
        let result = auditor.audit_piece_now(piece.node, &target).await.unwrap();
        assert_eq!(result, AuditResult::Audited(AuditOutcome::Success));
    }
    planet.shutdown().await.unwrap();
}

/// A piece that fails verification during a repair is proof enough: its
/// node is charged an audit failure (audits are off here, so nothing else
/// can charge it) and the piece is rebuilt elsewhere. Without the charge a
/// node serving garbage would lose the piece without a mark, since an audit
/// of a piece the segment no longer lists finds nothing owed.
async fn a_bad_piece_met_in_repair_counts_against_its_node(backend: Backend) {
    let mut planet = Planet::start_with(planet_config(backend, 14), fast_repair)
        .await
        .unwrap();
    let k = usize::from(planet.satellite_config.redundancy.required);
    planet
        .project()
        .await
        .unwrap()
        .create_bucket(BUCKET)
        .await
        .unwrap();
    let data = test_data(300_000, 4);
    upload(&planet, "object", &data).await;
    let original = segments(&planet).await.remove(0);
    // k + 1 holders stay up; the repair's first batch of k downloads starts
    // with the first of them, whose pieces are garbled.
    let stopped = stop_holders(&mut planet, original.pieces.len() - k - 1).await;
    let liar = original.pieces[stopped.len()].node;
    let liar_index = planet.node_index(liar).unwrap();
    for file in planet.nodes[liar_index].piece_files() {
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        std::fs::write(&file, bytes).unwrap();
    }
    let before = planet.node_health(liar).await.unwrap();
    wait_until_offline(&planet, &stopped).await;

    wait_for("the repair drops the garbled piece", || async {
        let segment = segments(&planet).await.remove(0);
        segment.pieces.len() > k + 1 && segment.pieces.iter().all(|p| p.node != liar)
    })
    .await;
    let after = planet.node_health(liar).await.unwrap();
    let failures = |h: &archipel_satellite::reputation::NodeHealth| h.audit_total - h.audit_success;
    assert!(failures(&after) > failures(&before));
    assert!(after.audit.score() < before.audit.score());
    assert_eq!(download(&planet, "object").await, data);
    planet.shutdown().await.unwrap();
}

/// A repairer of the planet's satellite, driven by the test.
fn repairer(planet: &Planet, metabase: &Metabase) -> Repairer {
    let orders = OrderSigner::new(
        planet.satellite_identity.clone(),
        planet.satellite_config.order_expiration,
    );
    let metrics = Arc::new(Metrics::default());
    Repairer::new(
        planet.satellite_config.clone(),
        orders.clone(),
        metabase.clone(),
        PieceDeleter::new(
            orders,
            metabase.clone(),
            planet.satellite_config.gc.clone(),
            metrics.clone(),
        ),
        metrics,
    )
}

/// Whether `file` is in the storage of a node that is running.
fn on_running_node(planet: &Planet, file: &Path) -> bool {
    planet
        .nodes
        .iter()
        .any(|n| n.is_running() && file.starts_with(&n.config.storage_dir))
}

async fn repair_racing_delete_and_overwrite_resurrects_nothing(backend: Backend) {
    // Every stopped holder sends a segment to repair.
    let config = PlanetConfig {
        redundancy: touchy_redundancy(),
        ..planet_config(backend, 14)
    };
    let mut planet = Planet::start_with(config, |config| {
        config.node_online_window = Duration::from_secs(3);
    })
    .await
    .unwrap();
    let metabase = planet.metabase().await.unwrap().clone();
    let repairer = repairer(&planet, &metabase);
    planet
        .project()
        .await
        .unwrap()
        .create_bucket(BUCKET)
        .await
        .unwrap();
    // The one segment of each object, as it is uploaded.
    let rounds = 4u64;
    let mut targets = Vec::new();
    let mut known: HashSet<SegmentKey> = HashSet::new();
    for i in 0..rounds {
        let mut pair = Vec::new();
        for (name, seed) in [("deleted", i), ("overwritten", 100 + i)] {
            upload(&planet, &format!("{name}-{i}"), &test_data(500_000, seed)).await;
            let new: Vec<SegmentKey> = segments(&planet)
                .await
                .iter()
                .map(Segment::key)
                .filter(|k| !known.contains(k))
                .collect();
            assert_eq!(new.len(), 1);
            known.insert(new[0].clone());
            pair.push(new[0].clone());
        }
        targets.push(pair);
    }
    let doomed = segments(&planet).await;
    let doomed_pieces = planet.committed_piece_files().await.unwrap();
    let stopped = stop_holders(&mut planet, 1).await;
    wait_until_offline(&planet, &stopped).await;
    // Besides the listed pieces, the uploads may have left pieces of their
    // cancelled long tail (settled by now), which only garbage collection
    // removes.
    let uploaded = planet.running_piece_files();

    let project = planet.project().await.unwrap();
    let mut outcomes = Vec::new();
    for (i, pair) in targets.into_iter().enumerate() {
        let repairs: Vec<_> = pair
            .into_iter()
            .map(|key| {
                let repairer = repairer.clone();
                tokio::spawn(async move { repairer.repair(&key).await })
            })
            .collect();
        // Let the repairs get going, to different depths each round.
        tokio::time::sleep(Duration::from_millis(15 * i as u64)).await;
        project
            .delete_object(BUCKET, &format!("deleted-{i}"))
            .await
            .unwrap();
        project
            .upload(
                BUCKET,
                &format!("overwritten-{i}"),
                &test_data(1000, 200 + i as u64)[..],
                UploadOptions::default(),
            )
            .await
            .unwrap();
        for repair in repairs {
            outcomes.push(repair.await.unwrap());
        }
    }
    // Every repair either finished first, or saw the segment gone or changed
    // (which one depends on timing; the compare-and-swap itself is tested
    // deterministically below).
    for outcome in &outcomes {
        if let Err(e) = outcome {
            panic!("a repair failed: {e}");
        }
    }
    // Nothing of the deleted or replaced objects is left in the metabase ...
    let remaining = segments(&planet).await;
    for segment in &doomed {
        assert!(remaining.iter().all(|s| s.stream_id != segment.stream_id));
    }
    for i in 0..rounds {
        let mut out = Vec::new();
        assert!(project
            .download(BUCKET, &format!("deleted-{i}"), None, &mut out, None)
            .await
            .is_err());
        assert_eq!(
            download(&planet, &format!("overwritten-{i}")).await,
            test_data(1000, 200 + i)
        );
    }
    // ... nor on the running nodes' disks once the deletes went out: no
    // listed piece and no piece a repair uploaded (the new objects are
    // inline: they have no pieces).
    wait_for("the running nodes hold no piece", || async {
        planet
            .running_piece_files()
            .iter()
            .all(|f| uploaded.contains(f) && !doomed_pieces.contains(f))
    })
    .await;
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    repair_restores_segments_after_nodes_stop,
    repair_moves_data_off_disqualified_nodes,
    repair_racing_delete_and_overwrite_resurrects_nothing,
    repaired_pieces_alone_rebuild_the_object,
    a_bad_piece_met_in_repair_counts_against_its_node,
    piece_list_swaps_compare_and_set,
    claims_give_each_segment_to_one_worker,
);

fn piece(num: u16, node: u8) -> Piece {
    Piece {
        num,
        node: NodeId([node; 32]),
        root: [num as u8; 32],
    }
}

/// Inserts a committed object with one remote segment holding `pieces`.
async fn stored_segment(metabase: &Metabase, name: &str, pieces: Vec<Piece>) -> SegmentKey {
    use archipel_satellite::metabase::Object;
    let key = metabase.create_project(name, 1).await.unwrap();
    let project = metabase.authenticate(&key).await.unwrap().project;
    metabase
        .create_bucket(&project.id, "bucket", 1)
        .await
        .unwrap();
    let stream_id: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
    let object = Object::pending(
        stream_id.clone(),
        project.id.clone(),
        "bucket".into(),
        name.as_bytes().to_vec(),
        1,
        0,
        1,
        1024,
    );
    metabase.begin_object(&object).await.unwrap();
    let segment = Segment {
        stream_id: stream_id.clone(),
        position: 0,
        root_piece_id: [7; 32],
        encrypted_key: vec![1; 48],
        encrypted_key_nonce: vec![2; 12],
        plain_offset: 0,
        plain_size: 100,
        encrypted_size: 128,
        redundancy: Some(touchy_redundancy()),
        inline_data: None,
        pieces,
        created_at: 1,
    };
    metabase.put_segment(&project.id, &segment).await.unwrap();
    segment.key()
}

async fn piece_list_swaps_compare_and_set(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = FreshDatabase::create(backend, dir.path()).await.unwrap();
    let metabase = database.metabase().await.unwrap();
    let old = vec![piece(0, 1), piece(1, 2)];
    let key = stored_segment(metabase, "cas", old.clone()).await;
    let repaired = vec![piece(0, 1), piece(1, 3)];
    let other = vec![piece(0, 1), piece(1, 4)];
    assert!(metabase.swap_pieces(&key, &old, &repaired).await.unwrap());
    // A second repairer that read the old list loses.
    assert!(!metabase.swap_pieces(&key, &old, &other).await.unwrap());
    let now = metabase.segment(&key.stream_id, 0).await.unwrap();
    assert_eq!(now.pieces, repaired);
    // A swap on a segment that is gone changes nothing and creates nothing.
    let gone = SegmentKey {
        stream_id: vec![9; 16],
        position: 0,
    };
    assert!(!metabase.swap_pieces(&gone, &old, &repaired).await.unwrap());
    assert!(metabase.segment(&gone.stream_id, 0).await.is_err());
}

async fn claims_give_each_segment_to_one_worker(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = FreshDatabase::create(backend, dir.path()).await.unwrap();
    let metabase = database.metabase().await.unwrap();
    let now = 1_000;
    let count = 40u32;
    for i in 0..count {
        let key = SegmentKey {
            stream_id: vec![i as u8; 16],
            position: i,
        };
        // Margins from 0 to 3, and a few lost segments (claimed too).
        let healthy = if i % 10 == 9 { 2 } else { 4 + (i % 4) as u16 };
        metabase
            .enqueue_repair(
                &QueuedSegment {
                    key,
                    healthy,
                    required: 4,
                },
                now,
            )
            .await
            .unwrap();
    }
    // Four "satellite processes", each with its own connection pool.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let metabase = Metabase::connect(database.url()).await.unwrap();
        workers.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(claim) = metabase.claim_repair(now, now + 600).await.unwrap() {
                claimed.push(claim);
            }
            claimed
        }));
    }
    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    let keys: HashSet<SegmentKey> = claimed.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys.len(), claimed.len(), "a segment was claimed twice");
    assert_eq!(claimed.len(), 40, "every segment is claimed once");
    let queue = metabase.repair_queue(100, false).await.unwrap();
    assert_eq!(queue.len(), 40);
    assert_eq!(metabase.repair_queue(100, true).await.unwrap().len(), 4);
    // Claims expire: after the lease, the segments can be claimed again.
    assert!(metabase
        .claim_repair(now + 1, now + 600)
        .await
        .unwrap()
        .is_none());
    let again = metabase
        .claim_repair(now + 601, now + 1200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 2);
    // A finished claim leaves the queue; a failed one stays with its reason.
    metabase.finish_repair(&again, None).await.unwrap();
    let retry = metabase
        .claim_repair(now + 601, now + 1200)
        .await
        .unwrap()
        .unwrap();
    metabase
        .finish_repair(&retry, Some((now + 700, "no fresh node")))
        .await
        .unwrap();
    let queue = metabase.repair_queue(100, false).await.unwrap();
    assert_eq!(queue.len(), 39);
    let entry = queue
        .iter()
        .find(|e| e.stream_id == retry.key.stream_id)
        .unwrap();
    assert_eq!(entry.last_error.as_deref(), Some("no fresh node"));
    // The riskiest segments go first: the finished claim was a lost one.
    assert_eq!(metabase.repair_queue_counts().await.unwrap(), (39, 3));
}
