//! Audits and node reputation on real networks: honest nodes pass, nodes with
//! corrupted or deleted pieces are disqualified within the bound the reputation
//! arithmetic gives, offline nodes are not punished, and a node that connects
//! but never answers is contained, asked the same challenge again, and fails
//! after the retry limit whether or not it goes offline meanwhile. Pieces that
//! stop being owed (expired, or deleted while audited) cost honest nodes
//! nothing. Also the metabase's reputation bookkeeping, directly, on both
//! backends.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::{Duration, SystemTime};

use archipel_client::{CopyMetadata, Error, UploadOptions};
use archipel_proto::orders::unix_now;
use archipel_proto::NodeId;
use archipel_satellite::audit::{AuditConfig, AuditResult, Auditor};
use archipel_satellite::metabase::{Node, PendingAudit};
use archipel_satellite::metrics::Metrics;
use archipel_satellite::orders::OrderSigner;
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
    let segments = planet.remote_segments().await.unwrap();
    let mut holders: Vec<usize> = segments
        .iter()
        .flat_map(|s| s.pieces.iter())
        .map(|p| planet.node_index(p.node).unwrap())
        .collect();
    holders.sort_unstable();
    holders.dedup();
    holders
}

async fn holder_ids(planet: &Planet) -> Vec<NodeId> {
    holders(planet)
        .await
        .into_iter()
        .map(|i| planet.nodes[i].id())
        .collect()
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
    let others: Vec<NodeId> = held[2..].iter().map(|&i| planet.nodes[i].id()).collect();
    wait_for_audits(&planet, &others, 3).await;
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
    wait_for("offline audits are recorded", || async {
        health(&planet, id).await.last_contact_failure > 0
    })
    .await;
    // Audits of one node never overlap: once one found it offline, none that
    // began while it was up can still finish.
    let stopped = health(&planet, id).await;
    // Stay away a while longer: audits keep finding the node offline over
    // two more seconds.
    wait_for("more offline audits", || async {
        health(&planet, id).await.last_contact_failure >= stopped.last_contact_failure + 2
    })
    .await;
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

/// Asserts that every node of the planet passed every audit it had.
async fn no_audit_failed(planet: &Planet) {
    for node in &planet.nodes {
        let h = health(planet, node.id()).await;
        assert_eq!(h.audit_total, h.audit_success, "{}: {h:?}", node.id());
        assert!(h.disqualified_at.is_none() && h.suspended_at.is_none());
    }
}

/// Waits until each of `nodes` had `more` further audits: proof that audit
/// rounds went on, where a fixed sleep would only hope so.
async fn wait_for_audits(planet: &Planet, nodes: &[NodeId], more: i64) {
    let mut targets = Vec::new();
    for &id in nodes {
        targets.push((id, health(planet, id).await.audit_total + more));
    }
    wait_for("further audits of every node named", || async {
        let mut all = true;
        for (id, target) in &targets {
            all &= health(planet, *id).await.audit_total >= *target;
        }
        all
    })
    .await;
}

async fn expired_objects_are_gone_and_cost_nodes_nothing(backend: Backend) {
    // The cleanup runs seldom enough that the expired object's metadata stays
    // a while after the nodes dropped its pieces: audits must not pick it.
    let planet = Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        fast_audits(config);
        config.cleanup_interval = Duration::from_secs(4);
    })
    .await
    .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("expiry").await.unwrap();
    let lasting = test_data(200_000, 1);
    project
        .upload("expiry", "lasting", &lasting[..], UploadOptions::default())
        .await
        .unwrap();
    let metabase = planet.metabase().await.unwrap();
    let before = planet.remote_segments().await.unwrap();
    let expires = SystemTime::now() + Duration::from_secs(2);
    project
        .upload(
            "expiry",
            "short-lived",
            &test_data(200_000, 2)[..],
            UploadOptions {
                expires: Some(expires),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let short_lived = planet
        .remote_segments()
        .await
        .unwrap()
        .into_iter()
        .find(|s| !before.contains(s))
        .unwrap()
        .stream_id;
    let pieces =
        |planet: &Planet| -> usize { planet.nodes.iter().map(|n| n.piece_files().len()).sum() };
    let all_pieces = pieces(&planet);

    // The nodes drop the expired pieces on their own.
    wait_for("the nodes sweeping the expired pieces", || async {
        pieces(&planet) < all_pieces
    })
    .await;
    // Expirations are whole seconds.
    let expires_at = expires
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(unix_now() >= expires_at as i64);
    let gone = |e: &Error| matches!(e, Error::ObjectNotFound { .. });
    let e = project.stat("expiry", "short-lived").await.unwrap_err();
    assert!(gone(&e), "{e}");
    let e = project
        .download("expiry", "short-lived", None, &mut Vec::new(), None)
        .await
        .unwrap_err();
    assert!(gone(&e), "{e}");
    let e = project
        .copy_object(
            "expiry",
            "short-lived",
            "expiry",
            "copy",
            CopyMetadata::default(),
        )
        .await
        .unwrap_err();
    assert!(gone(&e), "{e}");
    let listed: Vec<_> = project
        .list("expiry", "", true)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(listed, ["lasting"]);

    // Audits go on, and find nothing wrong with any node.
    wait_for_audits(&planet, &holder_ids(&planet).await, 5).await;
    no_audit_failed(&planet).await;
    // The cleanup deletes the object's metadata; the other object stays.
    wait_for("the cleanup deleting the expired object", || async {
        metabase
            .stream_expiration(&short_lived)
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let mut out = Vec::new();
    project
        .download("expiry", "lasting", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == lasting);
    no_audit_failed(&planet).await;
    planet.shutdown().await.unwrap();
}

async fn deletes_during_audits_cost_nodes_nothing(backend: Backend) {
    let planet = Planet::start_with(PlanetConfig::with_backend(backend), |config| {
        fast_audits(config);
        config.audit.interval = Duration::from_millis(10);
    })
    .await
    .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("churn").await.unwrap();
    project
        .upload(
            "churn",
            "kept",
            &test_data(100_000, 0)[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    // Objects come and go while audits run back to back: some audits pick a
    // piece that its node deletes before it answers.
    for round in 0..20u64 {
        let key = format!("object-{round}");
        project
            .upload(
                "churn",
                &key,
                &test_data(100_000, round)[..],
                UploadOptions::default(),
            )
            .await
            .unwrap();
        project.delete_object("churn", &key).await.unwrap();
    }
    wait_for_audits(&planet, &holder_ids(&planet).await, 3).await;
    no_audit_failed(&planet).await;
    planet.shutdown().await.unwrap();
}

/// Runs `rounds` random audits with `auditor`; returns how many audited a
/// node (rather than finding nothing to audit).
async fn audits_done(auditor: &Auditor, rounds: usize) -> usize {
    let mut done = 0;
    for _ in 0..rounds {
        if let AuditResult::Audited(_) = auditor.audit_random_piece().await.unwrap() {
            done += 1;
        }
    }
    done
}

async fn empty_identities_do_not_dilute_audits(backend: Backend) {
    // The planet's own audit workers are off: only this test's auditor runs,
    // on the planet's metabase and against its real nodes.
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    upload_objects(&planet).await;
    let config = &planet.satellite_config;
    let metabase = planet.metabase().await.unwrap().clone();
    let auditor = Auditor::new(
        OrderSigner::new(planet.satellite_identity.clone(), config.order_expiration),
        metabase.clone(),
        AuditConfig {
            timeout: Duration::from_secs(5),
            ..AuditConfig::default()
        },
        config.reputation.clone(),
        std::sync::Arc::new(Metrics::default()),
    );
    const ROUNDS: usize = 100;
    let before = audits_done(&auditor, ROUNDS).await;

    // 2000 registered identities, online, with room and no pieces.
    let now = unix_now();
    for i in 0..2000u32 {
        let identity = archipel_proto::Identity::generate();
        metabase
            .upsert_node(&Node {
                id: identity.id().to_vec(),
                public_key: identity.public_key().to_vec(),
                address: format!("127.3.{}.{}:7000", i / 250, i % 250 + 1),
                last_net: format!("127.3.{}.0/24", i / 250),
                capacity_bytes: 1 << 40,
                free_bytes: 1 << 40,
                version: "sybil".into(),
                last_contact: now,
                created_at: now,
            })
            .await
            .unwrap();
    }
    let after = audits_done(&auditor, ROUNDS).await;
    assert!(
        after * 10 >= before * 9,
        "audits of real holders fell from {before} to {after} of {ROUNDS}"
    );
    assert!(before >= ROUNDS * 9 / 10, "{before} of {ROUNDS}");
    no_audit_failed(&planet).await;
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
    let stopped_at = unix_now();
    silent.stop().await;
    // A contact failure recorded after the stop comes from an audit that
    // began after any retry that was running (they never overlap).
    wait_for("an audit finding the node offline", || async {
        health(&planet, id).await.last_contact_failure > stopped_at
    })
    .await;
    let offline_since = pending(metabase.clone()).await.unwrap();
    assert_eq!(challenge_of(&offline_since), challenge_of(&first));
    assert!((1..CONTAINMENT_RETRIES).contains(&offline_since.reverify_count));
    let h = health(&planet, id).await;
    assert_eq!(
        h.audit_total, contained.audit_total,
        "timeouts are not yet failures"
    );
    let failures_seen = health(&planet, id).await.last_contact_failure;
    wait_for("offline audits over two more seconds", || async {
        health(&planet, id).await.last_contact_failure >= failures_seen + 2
    })
    .await;
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
    let scores = mb.online_scores(now + 40, None).await.unwrap();
    assert_eq!(scores.len(), 1);
    assert_eq!(scores[0].0, a);
    assert!((scores[0].1 - 30.0 / 31.0).abs() < 1e-9);
    // Contacts older than the score's period no longer count.
    let later = now + archipel_satellite::reputation::ONLINE_SCORE_PERIOD_SECS + 86_400;
    assert!(mb.online_scores(later, None).await.unwrap().is_empty());

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
    expired_objects_are_gone_and_cost_nodes_nothing,
    deletes_during_audits_cost_nodes_nothing,
    empty_identities_do_not_dilute_audits,
    nodes_losing_data_are_disqualified,
    offline_nodes_are_not_punished,
    silent_nodes_are_contained_then_fail,
    metabase_keeps_reputation,
);
