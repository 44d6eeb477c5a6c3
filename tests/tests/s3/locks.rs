//! S3 Object Lock end to end with `aws-sdk-s3` against the in-process
//! gateway, on both metabase backends: buckets created with Object Lock,
//! default retention, retention and legal holds set by PUT headers, by
//! `?retention` and `?legal-hold`, on copies and multipart uploads; locked
//! versions survive deletes (governance yields to a bypass, compliance and
//! legal holds to nothing), and a bypass needs a grant that allows it.

use std::time::{Duration, SystemTime};

use crate::common::{code, get_bytes, upload_in_one_part, Fixture};
use archipel_client::{
    DeleteOptions, Error, Permissions, Project, Retention, RetentionMode, Share, UploadOptions,
    Version, VersionLock,
};
use archipel_tests::{on_both_backends, Backend};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, Delete, ObjectIdentifier, ObjectLockConfiguration,
    ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};
use aws_sdk_s3::Client;

on_both_backends!(
    locked_versions_survive_deletes,
    lock_configurations_and_their_edges,
    bypassing_governance_takes_a_grant_that_allows_it
);

fn in_seconds(seconds: u64) -> DateTime {
    DateTime::from(SystemTime::now() + Duration::from_secs(seconds))
}

async fn put(s3: &Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap();
}

async fn delete_version(
    s3: &Client,
    bucket: &str,
    key: &str,
    version: &str,
    bypass: bool,
) -> String {
    match s3
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .bypass_governance_retention(bypass)
        .send()
        .await
    {
        Ok(_) => "deleted".into(),
        Err(e) => code(&e),
    }
}

async fn create_locked_bucket(s3: &Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
}

async fn locked_versions_survive_deletes(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let s3 = &fixture.client;
    create_locked_bucket(s3, "vault").await;
    let versioning = s3
        .get_bucket_versioning()
        .bucket("vault")
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));

    // Compliance with a legal hold, from the PUT's headers.
    let ledger = s3
        .put_object()
        .bucket("vault")
        .key("ledger")
        .body(ByteStream::from_static(b"entries"))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(in_seconds(2 * 86_400))
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    let head = s3
        .head_object()
        .bucket("vault")
        .key("ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    assert_eq!(
        head.object_lock_legal_hold_status(),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    let until = head.object_lock_retain_until_date().unwrap().secs();
    let now = DateTime::from(SystemTime::now()).secs();
    assert!((now + 2 * 86_400 - 60..=now + 2 * 86_400 + 5).contains(&until));

    // A delete without a version only hides it; the version stays.
    let marker = s3
        .delete_object()
        .bucket("vault")
        .key("ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(marker.delete_marker(), Some(true));
    for bypass in [false, true] {
        assert_eq!(
            delete_version(s3, "vault", "ledger", &ledger, bypass).await,
            "AccessDenied"
        );
    }
    // Lifting the hold leaves the compliance retention, which yields to
    // nobody and can only be extended.
    s3.put_object_legal_hold()
        .bucket("vault")
        .key("ledger")
        .version_id(&ledger)
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::Off)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let hold = s3
        .get_object_legal_hold()
        .bucket("vault")
        .key("ledger")
        .version_id(&ledger)
        .send()
        .await
        .unwrap();
    assert_eq!(
        hold.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::Off)
    );
    assert_eq!(
        delete_version(s3, "vault", "ledger", &ledger, true).await,
        "AccessDenied"
    );
    let shorten = s3
        .put_object_retention()
        .bucket("vault")
        .key("ledger")
        .version_id(&ledger)
        .bypass_governance_retention(true)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(in_seconds(3_600))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&shorten), "AccessDenied");
    s3.put_object_retention()
        .bucket("vault")
        .key("ledger")
        .version_id(&ledger)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(in_seconds(3 * 86_400))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // DeleteObjects answers each locked version with its own error.
    let batch = s3
        .delete_objects()
        .bucket("vault")
        .bypass_governance_retention(true)
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("ledger")
                        .version_id(&ledger)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(batch.errors()[0].code(), Some("AccessDenied"));
    let kept = s3
        .get_object()
        .bucket("vault")
        .key("ledger")
        .version_id(&ledger)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.body.collect().await.unwrap().to_vec(), b"entries");

    // Governance: extended freely, shortened or removed only bypassing it.
    let memo = s3
        .put_object()
        .bucket("vault")
        .key("memo")
        .body(ByteStream::from_static(b"note"))
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(in_seconds(3_600))
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    assert_eq!(
        delete_version(s3, "vault", "memo", &memo, false).await,
        "AccessDenied"
    );
    let retention = |seconds| {
        ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::Governance)
            .retain_until_date(in_seconds(seconds))
            .build()
    };
    s3.put_object_retention()
        .bucket("vault")
        .key("memo")
        .version_id(&memo)
        .retention(retention(7_200))
        .send()
        .await
        .unwrap();
    let refused = s3
        .put_object_retention()
        .bucket("vault")
        .key("memo")
        .version_id(&memo)
        .retention(retention(600))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "AccessDenied");
    s3.put_object_retention()
        .bucket("vault")
        .key("memo")
        .version_id(&memo)
        .retention(retention(600))
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
    let shown = s3
        .get_object_retention()
        .bucket("vault")
        .key("memo")
        .version_id(&memo)
        .send()
        .await
        .unwrap();
    let shown = shown.retention().unwrap();
    assert_eq!(shown.mode(), Some(&ObjectLockRetentionMode::Governance));
    assert!(shown.retain_until_date().unwrap().secs() < now + 700);
    assert_eq!(
        delete_version(s3, "vault", "memo", &memo, true).await,
        "deleted"
    );
    let gone = s3
        .get_object()
        .bucket("vault")
        .key("memo")
        .version_id(&memo)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NoSuchVersion");
    fixture.shutdown().await;
}

async fn lock_configurations_and_their_edges(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let s3 = &fixture.client;

    // Without Object Lock: no configuration, no locked writes, and the
    // lock needs versioning before it can be enabled.
    s3.create_bucket().bucket("plain").send().await.unwrap();
    let missing = s3
        .get_object_lock_configuration()
        .bucket("plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "ObjectLockConfigurationNotFoundError");
    let refused = s3
        .put_object()
        .bucket("plain")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "InvalidArgument");
    put(s3, "plain", "k", b"x").await;
    let no_lock = s3
        .get_object_retention()
        .bucket("plain")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&no_lock), "InvalidRequest");
    let configuration = |days: Option<i32>, years: Option<i32>| {
        let mut retention = DefaultRetention::builder().mode(ObjectLockRetentionMode::Governance);
        retention = retention.set_days(days).set_years(years);
        ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(retention.build())
                    .build(),
            )
            .build()
    };
    let unversioned = s3
        .put_object_lock_configuration()
        .bucket("plain")
        .object_lock_configuration(configuration(Some(1), None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&unversioned), "InvalidBucketState");
    // Half-written lock headers are refused.
    let half = s3
        .put_object()
        .bucket("plain")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .object_lock_mode(ObjectLockMode::Governance)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&half), "InvalidArgument");

    // An existing bucket with versioning enabled may take the lock, for good.
    s3.put_bucket_versioning()
        .bucket("plain")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for (days, years) in [(Some(1), Some(1)), (Some(0), None), (None, None)] {
        let bad = s3
            .put_object_lock_configuration()
            .bucket("plain")
            .object_lock_configuration(configuration(days, years))
            .send()
            .await
            .unwrap_err();
        assert!(
            ["MalformedXML", "InvalidArgument"].contains(&code(&bad).as_str()),
            "{days:?}/{years:?}: {}",
            code(&bad)
        );
    }
    s3.put_object_lock_configuration()
        .bucket("plain")
        .object_lock_configuration(configuration(Some(2), None))
        .send()
        .await
        .unwrap();
    let read = s3
        .get_object_lock_configuration()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    let read = read.object_lock_configuration().unwrap();
    assert_eq!(
        read.object_lock_enabled(),
        Some(&ObjectLockEnabled::Enabled)
    );
    let default = read.rule().unwrap().default_retention().unwrap();
    assert_eq!(
        (default.mode(), default.days(), default.years()),
        (Some(&ObjectLockRetentionMode::Governance), Some(2), None)
    );
    let suspend = s3
        .put_bucket_versioning()
        .bucket("plain")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&suspend), "InvalidBucketState");

    // The version written before the lock has none; new ones, copies and
    // multipart uploads get the default or what they ask for.
    let old = s3
        .get_object_retention()
        .bucket("plain")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&old), "NoSuchObjectLockConfiguration");
    put(s3, "plain", "fresh", b"new").await;
    s3.copy_object()
        .bucket("plain")
        .key("copy")
        .copy_source("plain/k")
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .send()
        .await
        .unwrap();
    for key in ["fresh", "copy"] {
        let head = s3
            .head_object()
            .bucket("plain")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.object_lock_mode(),
            Some(&ObjectLockMode::Governance),
            "{key}"
        );
        let until = head.object_lock_retain_until_date().unwrap().secs();
        let now = DateTime::from(SystemTime::now()).secs();
        assert!((now + 2 * 86_400 - 60..=now + 2 * 86_400 + 5).contains(&until));
    }
    upload_in_one_part(
        s3,
        s3.create_multipart_upload()
            .bucket("plain")
            .key("parts")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(in_seconds(86_400)),
        b"only part",
    )
    .await;
    let copy_hold = s3
        .get_object_legal_hold()
        .bucket("plain")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy_hold.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    let parts = s3
        .get_object_retention()
        .bucket("plain")
        .key("parts")
        .send()
        .await
        .unwrap();
    assert_eq!(
        parts.retention().and_then(|r| r.mode()),
        Some(&ObjectLockRetentionMode::Compliance)
    );
    assert_eq!(get_bytes(s3, "plain", "parts").await, b"only part");
    fixture.shutdown().await;
}

/// The satellite refuses a bypass of governance to a grant restricted
/// without it, whatever the gateway or client asks; a grant that keeps it
/// may bypass.
async fn bypassing_governance_takes_a_grant_that_allows_it(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    create_locked_bucket(&fixture.client, "vault").await;
    let full = fixture.planet.project().await.unwrap();
    let retention = Retention {
        mode: RetentionMode::Governance,
        until: SystemTime::now() + Duration::from_secs(3_600),
    };
    let options = UploadOptions {
        lock: VersionLock {
            retention: Some(retention),
            legal_hold: false,
        },
        ..Default::default()
    };
    let stored = full
        .upload("vault", "k", &b"kept"[..], options)
        .await
        .unwrap();
    let version = Version::Id(stored.version.unwrap().id);
    assert_eq!(stored.lock.retention, Some(retention_rounded(retention)));
    let bypassing = DeleteOptions {
        version: version.clone(),
        bypass_governance: true,
        ..Default::default()
    };
    let share = |permissions| Share {
        permissions,
        prefixes: vec![("vault".to_string(), String::new())],
        not_before: None,
        not_after: None,
    };
    let restricted = full.share(&share(Permissions::READ_WRITE)).await.unwrap();
    let restricted = Project::open(&restricted).await.unwrap();
    assert!(matches!(
        restricted.delete("vault", "k", &bypassing).await,
        Err(Error::PermissionDenied(why)) if why.contains("governance")
    ));
    assert!(matches!(
        restricted
            .set_retention("vault", "k", &version, None, true)
            .await,
        Err(Error::PermissionDenied(_))
    ));
    // Without the bypass, the lock itself refuses.
    let plain_delete = DeleteOptions {
        version: version.clone(),
        ..Default::default()
    };
    assert!(matches!(
        restricted.delete("vault", "k", &plain_delete).await,
        Err(Error::ObjectLocked(_))
    ));
    let allowed = full.share(&share(Permissions::ALL)).await.unwrap();
    let allowed = Project::open(&allowed).await.unwrap();
    let deleted = allowed.delete("vault", "k", &bypassing).await.unwrap();
    assert!(deleted.removed.is_some());
    fixture.shutdown().await;
}

/// `retention` as the satellite keeps it: to the second.
fn retention_rounded(retention: Retention) -> Retention {
    let seconds = retention
        .until
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Retention {
        until: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
        ..retention
    }
}
