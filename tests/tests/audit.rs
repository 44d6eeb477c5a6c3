//! Audits and node reputation on real networks: honest nodes pass, nodes with
//! corrupted or deleted pieces are disqualified within the bound the reputation
//! arithmetic gives, offline nodes are not punished, and a node that connects
//! but never answers is contained, asked the same challenge again, and fails
//! after the retry limit whether or not it goes offline meanwhile. Also the
//! metabase's reputation bookkeeping, directly, on both backends.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::Duration;

use archipel_client::UploadOptions;
use archipel_proto::NodeId;
use archipel_satellite::audit::AuditConfig;
use archipel_satellite::metabase::{Node, PendingAudit};
use archipel_satellite::reputation::{AuditOutcome, NodeHealth, ReputationConfig};
use archipel_satellite::testing::FreshDatabase;
use archipel_satellite::Metabase;
use archipel_tests::{
    on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig, SilentListener,
};

const VETTING_AUDITS: u64 = 3;

/// Fast audits: every 100 ms per worker, a one-second timeout.
fn fast_audits(config: &mut archipel_satellite::Config) {
    config.audit = AuditConfig {
        enabled: true,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        max_reverify_count: 3,
        concurrency: 2,
    };
    config.reputation.vetting_audits = VETTING_AUDITS;
}

async fn audited_planet(backend: Backend) -> Planet {
    Planet::start_with(PlanetConfig::with_backend(backend), fast_audits)
        .await
        .unwrap()
}

/// Uploads a few objects; with 10 nodes and 10 pieces per segment, every node
/// that was up holds pieces of several chunks each.
async fn upload_objects(planet: &Planet) -> Vec<Vec<u8>> {
    let project = planet.project().await.unwrap();
    project.create_bucket("audits").await.unwrap();
    let mut objects = Vec::new();
    for i in 0..3u64 {
        let data = test_data(200_000 + i as usize * 1000, i);
        project
            .upload(
                "audits",
                &format!("object-{i}"),
                &data[..],
                UploadOptions::default(),
            )
            .await
            .unwrap();
        objects.push(data);
    }
    objects
}

/// Indexes of the nodes holding pieces of committed segments.
async fn holders(planet: &Planet) -> Vec<usize> {
    let segments = planet
        .metabase()
        .await
        .unwrap()
        .committed_remote_segments_from(&[], 1000)
        .await
        .unwrap();
    let mut holders: Vec<usize> = segments
        .iter()
        .flat_map(|s| s.pieces.iter())
        .map(|p| planet.node_index(p.node).unwrap())
        .collect();
    holders.sort_unstable();
    holders.dedup();
    holders
}

async fn health(planet: &Planet, node: NodeId) -> NodeHealth {
    planet.node_health(node).await.unwrap()
}

/// Rewrites every byte of the data region of each piece file of `node`.
fn corrupt_all_pieces(planet: &Planet, node: usize) -> usize {
    let files = planet.nodes[node].piece_files();
    for path in &files {
        let mut bytes = std::fs::read(path).unwrap();
        let start = archipel_storagenode::PIECE_HEADER_SIZE as usize;
        assert!(bytes.len() > start, "a piece file without data");
        for byte in &mut bytes[start..] {
            *byte ^= 0x5a;
        }
        std::fs::write(path, bytes).unwrap();
    }
    files.len()
}

fn delete_all_pieces(planet: &Planet, node: usize) -> usize {
    let files = planet.nodes[node].piece_files();
    for path in &files {
        std::fs::remove_file(path).unwrap();
    }
    files.len()
}

/// The most failed audits `node` may take before disqualification, from its
/// health now, allowing for one success still in flight.
fn failure_bound(health: &NodeHealth, config: &ReputationConfig) -> u32 {
    health
        .audit
        .updated(true, config)
        .bad_outcomes_until(config.disqualification_threshold, config, 1000)
        .unwrap()
}

async fn honest_nodes_pass_their_audits(backend: Backend) {
    let planet = audited_planet(backend).await;
    let objects = upload_objects(&planet).await;
    let held = holders(&planet).await;
    assert!(held.len() >= 8);
    let ids: Vec<NodeId> = held.iter().map(|&i| planet.nodes[i].id()).collect();
    wait_for("every node holding pieces audited five times", || async {
        let mut all = true;
        for &id in &ids {
            all &= health(&planet, id).await.audit_total >= 5;
        }
        all
    })
    .await;
    let config = &planet.satellite_config.reputation;
    let metabase = planet.metabase().await.unwrap();
    for &id in &ids {
        let h = health(&planet, id).await;
        assert_eq!(h.audit_total, h.audit_success, "{id}: {h:?}");
        assert!(
            h.disqualified_at.is_none() && h.suspended_at.is_none(),
            "{h:?}"
        );
        assert!(
            h.audit.score() > 0.999 && h.unknown.score() > 0.999,
            "{h:?}"
        );
        assert!(h.is_vetted(config) && h.vetted_at.is_some(), "{h:?}");
        assert!(
            h.last_contact_success > 0 && h.last_contact_failure == 0,
            "{h:?}"
        );
        assert!(metabase.pending_audit(&id).await.unwrap().is_none());
    }
    assert!(metabase.disqualified_nodes().await.unwrap().is_empty());
    // Audits leave the data as it was.
    let project = planet.project().await.unwrap();
    for (i, data) in objects.iter().enumerate() {
        let mut out = Vec::new();
        project
            .download("audits", &format!("object-{i}"), None, &mut out, None)
            .await
            .unwrap();
        assert!(&out == data);
    }
    planet.shutdown().await.unwrap();
}

async fn nodes_losing_data_are_disqualified(backend: Backend) {
    let planet = audited_planet(backend).await;
    upload_objects(&planet).await;
    let config = planet.satellite_config.reputation.clone();
    let held = holders(&planet).await;
    let (corrupt, deleted) = (held[0], held[1]);
    assert!(corrupt_all_pieces(&planet, corrupt) > 0);
    assert!(delete_all_pieces(&planet, deleted) > 0);
    let mut bounds = Vec::new();
    for i in [corrupt, deleted] {
        let id = planet.nodes[i].id();
        let before = health(&planet, id).await;
        let bound = failure_bound(&before, &config);
        // With λ = 0.999 and a short history, a single failure is enough:
        // α stays below 24 = 0.96/(1 - 0.96) until about 25 successes.
        assert!(
            before.audit_success < 20 && bound == 1,
            "{before:?} {bound}"
        );
        bounds.push((id, before, bound));
    }
    for (id, before, bound) in bounds {
        wait_for("the node losing data is disqualified", || async {
            health(&planet, id).await.disqualified_at.is_some()
        })
        .await;
        let after = health(&planet, id).await;
        let failures =
            (after.audit_total - after.audit_success) - (before.audit_total - before.audit_success);
        assert!(
            (1..=i64::from(bound)).contains(&failures),
            "{failures} failures, bound {bound}: {after:?}"
        );
        assert!(after.audit.score() <= config.disqualification_threshold);
        // The node answered (with bad data or "not found"): never contained.
        assert_eq!(after.last_contact_failure, 0, "{after:?}");
        let metabase = planet.metabase().await.unwrap();
        assert!(metabase.disqualified_nodes().await.unwrap().contains(&id));
        // Never selected again.
        let eligible = metabase.eligible_nodes(0, 0).await.unwrap();
        assert!(eligible.iter().all(|n| n.id != id.to_vec()));
    }
    // The others are fine, and disqualified nodes are audited no more.
    for &i in &held[2..] {
        let h = health(&planet, planet.nodes[i].id()).await;
        assert!(h.disqualified_at.is_none() && h.audit_total == h.audit_success);
    }
    let settled = health(&planet, planet.nodes[corrupt].id())
        .await
        .audit_total;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        health(&planet, planet.nodes[corrupt].id())
            .await
            .audit_total,
        settled
    );
    planet.shutdown().await.unwrap();
}

async fn offline_nodes_are_not_punished(backend: Backend) {
    let mut planet = audited_planet(backend).await;
    upload_objects(&planet).await;
    let node = holders(&planet).await[0];
    let id = planet.nodes[node].id();
    planet.stop_node(node).await.unwrap();
    // An audit running while the node stopped may still finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = health(&planet, id).await;
    wait_for("offline audits are recorded", || async {
        health(&planet, id).await.last_contact_failure > 0
    })
    .await;
    // Stay away a while longer: several audits find the node offline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let away = health(&planet, id).await;
    assert_eq!(away.audit_total, stopped.audit_total, "{away:?}");
    assert_eq!(away.audit, stopped.audit);
    assert!(away.disqualified_at.is_none() && away.suspended_at.is_none());
    assert!(planet
        .metabase()
        .await
        .unwrap()
        .pending_audit(&id)
        .await
        .unwrap()
        .is_none());

    planet.restart_node(node).await.unwrap();
    wait_for("the node passes audits again", || async {
        health(&planet, id).await.audit_success > away.audit_success + 2
    })
    .await;
    let back = health(&planet, id).await;
    assert_eq!(back.audit_total, back.audit_success);
    assert!(back.disqualified_at.is_none() && back.last_contact_success > 0);
    planet.shutdown().await.unwrap();
}

/// The challenge of a pending audit, without its retry count.
fn challenge_of(p: &PendingAudit) -> (Vec<u8>, u32, u16, [u8; 32], u64) {
    (
        p.stream_id.clone(),
        p.position,
        p.piece_num,
        p.piece_root,
        p.chunk_index,
    )
}

/// Retries a contained node gets in the containment test: enough that the
/// node cannot run out of them between the test's steps on a loaded machine.
const CONTAINMENT_RETRIES: u32 = 6;

async fn silent_nodes_are_contained_then_fail(backend: Backend) {
    let mut planet = Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        fast_audits(config);
        config.audit.max_reverify_count = CONTAINMENT_RETRIES;
    })
    .await
    .unwrap();
    upload_objects(&planet).await;
    let node = holders(&planet).await[0];
    let id = planet.nodes[node].id();
    let silent = planet.silence_node(node).await.unwrap();
    let metabase = planet.metabase().await.unwrap().clone();
    let before = health(&planet, id).await;
    let bound = failure_bound(&before, &planet.satellite_config.reputation);
    assert_eq!(bound, 1, "{before:?}");

    let pending = |m: Metabase| async move { m.pending_audit(&id).await.unwrap() };
    wait_for("the silent node is contained", || async {
        pending(metabase.clone()).await.is_some()
    })
    .await;
    let first = pending(metabase.clone()).await.unwrap();
    // Counted from here: an audit that began before the node fell silent may
    // have finished after `before` was read (audits of one node never overlap,
    // so none is left once the containing audit has run).
    let contained = health(&planet, id).await;
    wait_for("the challenge is asked again", || async {
        pending(metabase.clone())
            .await
            .is_some_and(|p| p.reverify_count >= 1)
    })
    .await;
    // Going offline does not clear the debt, nor count as an answer. (A retry
    // running now sees its connection break off: one more unanswered retry,
    // still short of the limit.)
    silent.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let offline_since = pending(metabase.clone()).await.unwrap();
    assert_eq!(challenge_of(&offline_since), challenge_of(&first));
    assert!((1..CONTAINMENT_RETRIES).contains(&offline_since.reverify_count));
    let h = health(&planet, id).await;
    assert_eq!(
        h.audit_total, contained.audit_total,
        "timeouts are not yet failures"
    );
    let failures_seen = health(&planet, id).await.last_contact_failure;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = pending(metabase.clone()).await.unwrap();
    assert_eq!(challenge_of(&still), challenge_of(&first));
    assert_eq!(still.reverify_count, offline_since.reverify_count);
    let h = health(&planet, id).await;
    assert!(h.last_contact_failure >= failures_seen);
    assert!(h.disqualified_at.is_none());
    assert_eq!(h.audit_total, contained.audit_total);

    // Back, and silent again: the retries run out and the node fails.
    let silent = SilentListener::bind(planet.nodes[node].address)
        .await
        .unwrap();
    // The failure is counted, then the verdict it leads to is written: wait
    // for both, so as not to read in between.
    wait_for(
        "the contained node fails its audit and is disqualified",
        || async {
            let h = health(&planet, id).await;
            h.audit_total > contained.audit_total && h.disqualified_at.is_some()
        },
    )
    .await;
    let h = health(&planet, id).await;
    assert_eq!(h.audit_success, contained.audit_success, "{h:?}");
    assert!(pending(metabase.clone()).await.is_none());
    silent.stop().await;
    planet.shutdown().await.unwrap();
}

fn registry_node(id: NodeId, now: i64) -> Node {
    Node {
        id: id.to_vec(),
        public_key: id.to_vec(),
        address: "127.0.0.1:1".into(),
        last_net: "127.0.0.0/24".into(),
        capacity_bytes: 1 << 30,
        free_bytes: 1 << 30,
        version: "test".into(),
        last_contact: now,
        created_at: now,
    }
}

async fn metabase_keeps_reputation(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = FreshDatabase::create(backend, dir.path()).await.unwrap();
    let mb = database.metabase().await.unwrap();
    let config = ReputationConfig {
        vetting_audits: 2,
        ..ReputationConfig::default()
    };
    let now = 1_000;
    let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
    for id in [a, b] {
        mb.upsert_node(&registry_node(id, now)).await.unwrap();
    }
    assert!(mb
        .record_audit(&NodeId([9; 32]), AuditOutcome::Success, &config, now)
        .await
        .unwrap()
        .is_none());
    let fresh = mb.node_health(&a, &config).await.unwrap().unwrap();
    assert_eq!(fresh.audit, config.initial());
    assert_eq!(fresh.last_contact_success, now, "a check-in is a contact");

    // The stored arithmetic is the reputation module's.
    let mut expected = config.initial();
    for t in 1..=30 {
        let h = mb
            .record_audit(&a, AuditOutcome::Success, &config, now + t)
            .await
            .unwrap()
            .unwrap();
        expected = expected.updated(true, &config);
        assert!((h.audit.alpha - expected.alpha).abs() < 1e-9);
        assert_eq!(h.vetted_at.is_some(), t >= 2);
    }
    let h = mb.node_health(&a, &config).await.unwrap().unwrap();
    assert_eq!((h.audit_total, h.audit_success), (30, 30));
    assert_eq!(h.vetted_at, Some(now + 2));
    let (vetted, unvetted) = mb.eligible_nodes_by_vetting(0, 0, 2).await.unwrap();
    assert_eq!(vetted.len(), 1);
    assert_eq!(unvetted.len(), 1);

    // Offline: a failed contact and nothing else.
    let h = mb
        .record_audit(&a, AuditOutcome::Offline, &config, now + 40)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((h.audit_total, h.last_contact_failure), (30, now + 40));
    assert!((h.audit.alpha - expected.alpha).abs() < 1e-9);
    // The online score counts it: 30 contacts reached the node, one did not.
    let scores = mb.online_scores(now + 40).await.unwrap();
    assert_eq!(scores.len(), 1);
    assert_eq!(scores[0].0, a);
    assert!((scores[0].1 - 30.0 / 31.0).abs() < 1e-9);
    // Contacts older than the score's period no longer count.
    let later = now + archipel_satellite::reputation::ONLINE_SCORE_PERIOD_SECS + 86_400;
    assert!(mb.online_scores(later).await.unwrap().is_empty());

    // Unknown errors suspend, after as many as the arithmetic says;
    // successes lift the suspension.
    let h = mb.node_health(&a, &config).await.unwrap().unwrap();
    let unknowns = h
        .unknown
        .bad_outcomes_until(config.suspension_threshold, &config, 1000)
        .unwrap();
    assert!(unknowns > 1);
    for n in 1..=unknowns {
        let h = mb
            .record_audit(&a, AuditOutcome::Unknown, &config, now + 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            h.suspended_at.is_some(),
            n == unknowns,
            "after {n} unknown errors"
        );
        assert!(h.disqualified_at.is_none());
    }
    assert_eq!(mb.eligible_nodes(0, 0).await.unwrap().len(), 1);
    let mut lifted = false;
    for t in 0..10 {
        let h = mb
            .record_audit(&a, AuditOutcome::Success, &config, now + 60 + t)
            .await
            .unwrap()
            .unwrap();
        lifted |= h.suspended_at.is_none();
    }
    assert!(lifted);
    assert_eq!(mb.eligible_nodes(0, 0).await.unwrap().len(), 2);

    // Failures disqualify after exactly the computed number.
    let h = mb.node_health(&a, &config).await.unwrap().unwrap();
    let bound = h
        .audit
        .bad_outcomes_until(config.disqualification_threshold, &config, 1000)
        .unwrap();
    assert!(bound > 1);
    for n in 1..=bound {
        let h = mb
            .record_audit(&a, AuditOutcome::Failure, &config, now + 100 + i64::from(n))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            h.disqualified_at.is_some(),
            n == bound,
            "after {n} failures"
        );
    }
    assert_eq!(mb.disqualified_nodes().await.unwrap(), vec![a]);
    assert_eq!(mb.auditable_nodes().await.unwrap().len(), 1);
    let eligible = mb.eligible_nodes(0, 0).await.unwrap();
    assert_eq!(eligible.len(), 1);
    assert_eq!(eligible[0].id, b.to_vec());

    // Containment keeps the first challenge and counts retries.
    let challenge = PendingAudit {
        node: b,
        stream_id: vec![7; 16],
        position: 3,
        piece_num: 5,
        piece_root: [8; 32],
        chunk_index: 2,
        reverify_count: 0,
        created_at: now,
    };
    assert!(mb.contain(&challenge).await.unwrap());
    let other = PendingAudit {
        chunk_index: 9,
        ..challenge.clone()
    };
    assert!(!mb.contain(&other).await.unwrap());
    assert_eq!(mb.pending_audit(&b).await.unwrap(), Some(challenge.clone()));
    assert_eq!(mb.count_reverification(&b).await.unwrap(), Some(1));
    assert_eq!(mb.count_reverification(&b).await.unwrap(), Some(2));
    mb.release(&b).await.unwrap();
    assert_eq!(mb.pending_audit(&b).await.unwrap(), None);
    assert_eq!(mb.count_reverification(&b).await.unwrap(), None);
}

on_both_backends!(
    honest_nodes_pass_their_audits,
    nodes_losing_data_are_disqualified,
    offline_nodes_are_not_punished,
    silent_nodes_are_contained_then_fail,
    metabase_keeps_reputation,
);
