//! The metabase against both backends: every test runs on a fresh SQLite file
//! and on a fresh PostgreSQL database.

// Test helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use archipel_proto::macaroon::ApiKey;
use archipel_proto::multipart::position;
use archipel_proto::orders::unix_now;
use archipel_proto::version::VersionId;
use archipel_proto::{pb, NodeId, Redundancy};
use archipel_satellite::metabase::{
    BucketAccess, BucketAccessUpdate, CannedAcl, DefaultRetention, ListEntry, Listing, Metabase,
    Node, Object, ObjectCommit, ObjectCopy, ObjectLock, Piece, Precondition, PublicAccessBlock,
    RemovedSegment, Retention, RetentionMode, RetentionPeriod, Segment, SegmentKey, VersionLock,
    VersionRef, Versioning, WrappedSegmentKey,
};
use archipel_satellite::testing::{Backend, FreshDatabase};
use archipel_satellite::Error;

/// Declares `$name` once per backend, each with a fresh database.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let db = super::FreshDatabase::create(super::Backend::Sqlite, dir.path()).await.unwrap();
                super::$name(db.metabase().await.unwrap()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let db = super::FreshDatabase::create(super::Backend::Postgres, dir.path()).await.unwrap();
                super::$name(db.metabase().await.unwrap()).await;
            })*
        }
    };
}

on_both_backends!(
    projects_and_api_keys,
    commits_replace_only_when_allowed,
    buckets,
    objects_and_segments,
    commit_replaces_the_committed_object,
    listing,
    listing_many_keys,
    pending_cleanup,
    expired_objects,
    nodes,
    concurrent_commits,
    commits_with_their_last_segment,
    inline_objects_in_one_transaction,
    multipart_uploads,
    server_side_copies,
    concurrent_copies,
    deletion_queue,
    versions_of_a_key,
    preconditions_hold_in_the_transaction,
    listing_versions_page_by_page,
    object_lock_keeps_versions,
    metadata_updates_in_place,
);

const NOW: i64 = 1_700_000_000;

async fn project(mb: &Metabase) -> Vec<u8> {
    let key = mb.create_project("p", NOW).await.unwrap();
    mb.authenticate(&key).await.unwrap().project.id
}

fn pending(project: &[u8], bucket: &str, key: &[u8], created_at: i64) -> Object {
    let stream: [u8; 16] = rand::random();
    Object::pending(
        stream.to_vec(),
        project.to_vec(),
        bucket.into(),
        key.to_vec(),
        created_at,
        0,
        1,
        65536,
    )
}

fn remote_segment(stream: &[u8], position: u32, plain_size: i64) -> Segment {
    Segment {
        stream_id: stream.to_vec(),
        position,
        root_piece_id: rand::random(),
        encrypted_key: vec![1; 48],
        encrypted_key_nonce: vec![2; 12],
        plain_offset: 0,
        plain_size,
        encrypted_size: plain_size + 16,
        redundancy: Some(Redundancy::new(2, 3, 4, 5, 1024).unwrap()),
        inline_data: None,
        pieces: (0..4)
            .map(|num| Piece {
                num,
                node: NodeId(rand::random()),
                root: rand::random(),
            })
            .collect(),
        created_at: NOW,
    }
}

fn inline_segment(stream: &[u8], position: u32, data: &[u8]) -> Segment {
    Segment {
        stream_id: stream.to_vec(),
        position,
        root_piece_id: [0; 32],
        encrypted_key: vec![3; 48],
        encrypted_key_nonce: vec![4; 12],
        plain_offset: 0,
        plain_size: data.len() as i64 - 16,
        encrypted_size: data.len() as i64,
        redundancy: None,
        inline_data: Some(data.to_vec()),
        pieces: Vec::new(),
        created_at: NOW,
    }
}

/// What commits the pending object of `stream` (a single upload, or a
/// multipart one with `parts`).
fn commit(
    stream: &[u8],
    metadata: &[u8],
    key: &[u8],
    nonce: &[u8],
    parts: &[(u32, Vec<u8>)],
) -> ObjectCommit {
    ObjectCommit {
        stream_id: stream.to_vec(),
        encrypted_metadata: metadata.to_vec(),
        encrypted_metadata_key: key.to_vec(),
        encrypted_metadata_nonce: nonce.to_vec(),
        parts: parts.to_vec(),
        last_segment: None,
        replace: true,
        precondition: None,
    }
}

/// Deletes the current object of an unversioned key: what it was, and its
/// remote segments.
async fn delete_current(
    mb: &Metabase,
    project: &[u8],
    bucket: &str,
    key: &[u8],
) -> Result<(Object, Vec<RemovedSegment>), Error> {
    let deletion = mb
        .delete_object(project, bucket, key, &VersionRef::Latest, None, false)
        .await?;
    match deletion.removed {
        Some(removed) => Ok((removed, deletion.segments)),
        None => panic!("an unversioned delete removes the object"),
    }
}

/// Uploads and commits an object of one inline segment.
async fn put_object(mb: &Metabase, project: &[u8], bucket: &str, key: &[u8]) -> Object {
    let object = pending(project, bucket, key, NOW);
    mb.begin_object(&object).await.unwrap();
    mb.put_segment(project, &inline_segment(&object.stream_id, 0, &[9; 20]))
        .await
        .unwrap();
    mb.commit_object(
        project,
        &commit(&object.stream_id, b"meta", b"mkey", b"nonce", &[]),
    )
    .await
    .unwrap()
    .0
}

async fn projects_and_api_keys(mb: &Metabase) {
    let key = mb.create_project("first", NOW).await.unwrap();
    assert!(key.starts_with("ak1"), "{key}");
    let first = mb.authenticate(&key).await.unwrap();
    assert_eq!(first.project.name, "first");
    assert_eq!(first.project.salt.len(), 32);
    assert!(first.caveats.is_empty());
    let other = mb.create_project("second", NOW).await.unwrap();
    let second = mb.authenticate(&other).await.unwrap().project;
    assert_ne!(first.project.id, second.id);
    assert_ne!(first.project.salt, second.salt);
    for wrong in ["ak_wrong", "ak1wrong", ""] {
        assert!(matches!(
            mb.authenticate(wrong).await,
            Err(Error::Unauthenticated)
        ));
    }

    // A key restricted offline carries its caveats; a forged one is refused.
    let issued = ApiKey::parse(&key).unwrap();
    let caveat = pb::Caveat {
        disallow_deletes: true,
        nonce: vec![1],
        ..Default::default()
    };
    let child = issued.restrict(&caveat);
    let grandchild = child.restrict(&pb::Caveat {
        nonce: vec![2],
        ..Default::default()
    });
    let sibling = issued.restrict(&pb::Caveat {
        nonce: vec![3],
        ..Default::default()
    });
    let authenticated = mb.authenticate(&child.serialize()).await.unwrap();
    assert_eq!(authenticated.caveats, vec![caveat]);
    assert_eq!(authenticated.project.id, first.project.id);
    let forged = ApiKey::parse(&other)
        .unwrap()
        .restrict(&pb::Caveat::default());
    let mut text = forged.serialize();
    text.replace_range(10..12, "AA");
    assert!(mb.authenticate(&text).await.is_err());

    // Revoking the child revokes the grandchild, not the parent or a sibling.
    mb.revoke_api_key(&child, NOW).await.unwrap();
    mb.revoke_api_key(&child, NOW).await.unwrap();
    for revoked in [&child, &grandchild] {
        assert!(matches!(
            mb.authenticate(&revoked.serialize()).await,
            Err(Error::Unauthenticated)
        ));
    }
    for valid in [&issued, &sibling] {
        assert!(mb.authenticate(&valid.serialize()).await.is_ok());
    }
    assert!(mb.authenticate(&other).await.is_ok());
}

async fn buckets(mb: &Metabase) {
    let p = project(mb).await;
    let other = project(mb).await;
    for name in ["bbb", "aaa", "ccc"] {
        mb.create_bucket(&p, name, NOW).await.unwrap();
    }
    assert!(matches!(
        mb.create_bucket(&p, "aaa", NOW).await,
        Err(Error::AlreadyExists(_))
    ));
    // Names are per project.
    mb.create_bucket(&other, "aaa", NOW).await.unwrap();
    assert_eq!(mb.get_bucket(&p, "bbb").await.unwrap().created_at, NOW);
    assert!(matches!(
        mb.get_bucket(&other, "bbb").await,
        Err(Error::NotFound(_))
    ));

    let (page, more) = mb.list_buckets(&p, "", 2).await.unwrap();
    let names: Vec<_> = page.iter().map(|b| b.name.as_str()).collect();
    assert_eq!((names, more), (vec!["aaa", "bbb"], true));
    let (page, more) = mb.list_buckets(&p, "bbb", 2).await.unwrap();
    let names: Vec<_> = page.iter().map(|b| b.name.as_str()).collect();
    assert_eq!((names, more), (vec!["ccc"], false));

    // Tags replace each other whole, within S3's limits.
    let tags = vec![
        ("team".to_string(), "blue".to_string()),
        ("cost".to_string(), String::new()),
    ];
    let tagged = mb.set_bucket_tags(&p, "bbb", &tags).await.unwrap();
    assert_eq!(tagged.tags, tags);
    assert_eq!(mb.get_bucket(&p, "bbb").await.unwrap().tags, tags);
    let twice = vec![
        ("k".to_string(), "1".to_string()),
        ("k".to_string(), "2".to_string()),
    ];
    let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
    for bad in [twice, many, vec![(String::new(), "v".to_string())]] {
        assert!(matches!(
            mb.set_bucket_tags(&p, "bbb", &bad).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(mb
        .set_bucket_tags(&p, "bbb", &[])
        .await
        .unwrap()
        .tags
        .is_empty());
    assert!(matches!(
        mb.set_bucket_tags(&p, "nope", &tags).await,
        Err(Error::NotFound(_))
    ));

    // Access settings: each part replaced alone, the others kept.
    assert_eq!(
        mb.get_bucket(&p, "bbb").await.unwrap().access,
        BucketAccess::default()
    );
    let public = BucketAccessUpdate {
        acl: Some(CannedAcl::PublicReadWrite),
        ..BucketAccessUpdate::default()
    };
    mb.set_bucket_access(&p, "bbb", &public).await.unwrap();
    let block = PublicAccessBlock {
        ignore_public_acls: true,
        restrict_public_buckets: true,
        ..PublicAccessBlock::default()
    };
    let rule = pb::CorsRule {
        id: "web".into(),
        allowed_origins: vec!["https://*.example".into()],
        allowed_methods: vec!["GET".into(), "PUT".into()],
        allowed_headers: vec!["*".into()],
        expose_headers: vec!["ETag".into()],
        max_age_seconds: 300,
    };
    let settings = BucketAccessUpdate {
        public_access_block: Some(Some(block)),
        cors: Some(vec![rule.clone()]),
        ..BucketAccessUpdate::default()
    };
    let set = mb.set_bucket_access(&p, "bbb", &settings).await.unwrap();
    let expected = BucketAccess {
        acl: CannedAcl::PublicReadWrite,
        public_access_block: Some(block),
        cors: vec![rule.clone()],
    };
    assert_eq!(set.access, expected);
    assert_eq!(mb.get_bucket(&p, "bbb").await.unwrap().access, expected);
    // A block of all-false settings is a block, not none.
    let all_off = BucketAccessUpdate {
        public_access_block: Some(Some(PublicAccessBlock::default())),
        ..BucketAccessUpdate::default()
    };
    let set = mb.set_bucket_access(&p, "bbb", &all_off).await.unwrap();
    assert_eq!(
        set.access.public_access_block,
        Some(PublicAccessBlock::default())
    );
    let removed = BucketAccessUpdate {
        public_access_block: Some(None),
        cors: Some(Vec::new()),
        ..BucketAccessUpdate::default()
    };
    let set = mb.set_bucket_access(&p, "bbb", &removed).await.unwrap();
    assert_eq!(
        set.access,
        BucketAccess {
            acl: CannedAcl::PublicReadWrite,
            ..BucketAccess::default()
        }
    );
    // Rules S3 would refuse are refused, and change nothing.
    let mut wrong_method = rule.clone();
    wrong_method.allowed_methods = vec!["PATCH".into()];
    let mut two_wildcards = rule.clone();
    two_wildcards.allowed_origins = vec!["*.*".into()];
    let mut no_origin = rule.clone();
    no_origin.allowed_origins.clear();
    for bad in [
        vec![wrong_method],
        vec![two_wildcards],
        vec![no_origin],
        vec![rule.clone(); 101],
    ] {
        let update = BucketAccessUpdate {
            acl: Some(CannedAcl::Private),
            cors: Some(bad),
            ..BucketAccessUpdate::default()
        };
        assert!(matches!(
            mb.set_bucket_access(&p, "bbb", &update).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    assert_eq!(
        mb.get_bucket(&p, "bbb").await.unwrap().access.acl,
        CannedAcl::PublicReadWrite
    );
    assert!(matches!(
        mb.set_bucket_access(&p, "nope", &public).await,
        Err(Error::NotFound(_))
    ));

    // A bucket's name mode is kept and reported.
    let plain = mb
        .create_bucket_with(&p, "plain", true, false, NOW)
        .await
        .unwrap();
    assert!(plain.plain_names);
    assert!(mb.get_bucket(&p, "plain").await.unwrap().plain_names);
    assert!(!mb.get_bucket(&p, "bbb").await.unwrap().plain_names);
    let (page, _) = mb.list_buckets(&p, "ccc", 10).await.unwrap();
    assert_eq!(page, vec![plain]);

    put_object(mb, &p, "bbb", b"k").await;
    assert!(matches!(
        mb.delete_bucket(&p, "bbb").await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(mb.get_bucket(&p, "bbb").await.is_ok());
    // Uploads still pending go with their bucket, their pieces queued for
    // deletion (as S3 aborts incomplete multipart uploads).
    let upload = pending(&p, "ccc", b"k", NOW);
    mb.begin_object(&upload).await.unwrap();
    let stored = remote_segment(&upload.stream_id, 0, 100);
    mb.put_segment(&p, &stored).await.unwrap();
    let queued = mb.deletion_queue_length(None).await.unwrap();
    let aborted = mb.delete_bucket(&p, "ccc").await.unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].pieces, stored.pieces);
    assert_eq!(mb.deletion_queue_length(None).await.unwrap(), queued + 4);
    assert!(matches!(
        mb.object_by_stream(&p, &upload.stream_id).await,
        Err(Error::NotFound(_))
    ));
    assert!(mb.get_bucket(&p, "ccc").await.is_err());
    mb.delete_bucket(&p, "aaa").await.unwrap();
    assert!(matches!(
        mb.delete_bucket(&p, "aaa").await,
        Err(Error::NotFound(_))
    ));
    assert!(mb.get_bucket(&other, "aaa").await.is_ok());
    // Objects need an existing bucket.
    assert!(matches!(
        mb.begin_object(&pending(&p, "nope", b"k", NOW)).await,
        Err(Error::NotFound(_))
    ));
}

async fn objects_and_segments(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let object = pending(&p, "b", b"enc/key", NOW);
    mb.begin_object(&object).await.unwrap();
    assert!(matches!(
        mb.get_object(&p, "b", b"enc/key", NOW).await,
        Err(Error::NotFound(_))
    ));

    let first = remote_segment(&object.stream_id, 0, 1000);
    let third = inline_segment(&object.stream_id, 2, &[5; 40]);
    mb.put_segment(&p, &first).await.unwrap();
    mb.put_segment(&p, &third).await.unwrap();
    assert!(matches!(
        mb.put_segment(&p, &remote_segment(&object.stream_id, 0, 5))
            .await,
        Err(Error::AlreadyExists(_))
    ));
    // Another project cannot add segments to this stream.
    let other = project(mb).await;
    assert!(matches!(
        mb.put_segment(&other, &remote_segment(&object.stream_id, 1, 5))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        mb.commit_object(&p, &commit(&object.stream_id, b"", b"", b"", &[]))
            .await,
        Err(Error::FailedPrecondition(_))
    ));
    let second = remote_segment(&object.stream_id, 1, 500);
    mb.put_segment(&p, &second).await.unwrap();

    let (committed, replaced) = mb
        .commit_object(
            &p,
            &commit(&object.stream_id, b"meta", b"mkey", b"nonce", &[]),
        )
        .await
        .unwrap();
    assert!(replaced.is_empty());
    assert_eq!(committed.plain_size, 1000 + 500 + 24);
    assert_eq!(committed.segment_count, 3);
    assert_eq!(committed.encrypted_metadata, b"meta");
    assert_eq!(
        mb.get_object(&p, "b", b"enc/key", NOW).await.unwrap(),
        committed
    );

    let segments = mb.segments(&object.stream_id).await.unwrap();
    let offsets: Vec<_> = segments.iter().map(|s| s.plain_offset).collect();
    assert_eq!(offsets, vec![0, 1000, 1500]);
    assert_eq!(segments[0].pieces, first.pieces);
    assert_eq!(segments[0].root_piece_id, first.root_piece_id);
    assert_eq!(segments[0].redundancy, first.redundancy);
    assert_eq!(segments[2].inline_data, third.inline_data);
    assert_eq!(segments[2].redundancy, None);
    assert_eq!(
        mb.segment(&object.stream_id, 1).await.unwrap().pieces,
        second.pieces
    );

    // A committed object takes no more segments and cannot be committed again.
    assert!(matches!(
        mb.put_segment(&p, &remote_segment(&object.stream_id, 3, 5))
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(mb
        .commit_object(&p, &commit(&object.stream_id, b"", b"", b"", &[]))
        .await
        .is_err());

    let (deleted, removed) = delete_current(mb, &p, "b", b"enc/key").await.unwrap();
    assert_eq!(deleted.stream_id, object.stream_id);
    assert_eq!(removed.len(), 2);
    assert_eq!(removed[0].pieces, first.pieces);
    assert!(mb.segments(&object.stream_id).await.unwrap().is_empty());
    assert!(matches!(
        delete_current(mb, &p, "b", b"enc/key").await,
        Err(Error::NotFound(_))
    ));
}

async fn commit_replaces_the_committed_object(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let old = pending(&p, "b", b"key", NOW);
    mb.begin_object(&old).await.unwrap();
    let old_segment = remote_segment(&old.stream_id, 0, 100);
    mb.put_segment(&p, &old_segment).await.unwrap();
    mb.commit_object(&p, &commit(&old.stream_id, b"old", b"", b"", &[]))
        .await
        .unwrap();

    // A new upload of the same key does not disturb the committed one until it commits.
    let new = pending(&p, "b", b"key", NOW + 1);
    mb.begin_object(&new).await.unwrap();
    mb.put_segment(&p, &remote_segment(&new.stream_id, 0, 7))
        .await
        .unwrap();
    assert_eq!(
        mb.get_object(&p, "b", b"key", NOW).await.unwrap().stream_id,
        old.stream_id
    );
    let (committed, replaced) = mb
        .commit_object(&p, &commit(&new.stream_id, b"new", b"", b"", &[]))
        .await
        .unwrap();
    assert_eq!(committed.stream_id, new.stream_id);
    assert_eq!(replaced.len(), 1);
    assert_eq!(replaced[0].root_piece_id, old_segment.root_piece_id);
    assert_eq!(replaced[0].pieces, old_segment.pieces);
    let current = mb.get_object(&p, "b", b"key", NOW).await.unwrap();
    assert_eq!(current.encrypted_metadata, b"new");
    assert_eq!(current.plain_size, 7);
    assert!(mb.segments(&old.stream_id).await.unwrap().is_empty());
    let (listed, _) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: true,
                limit: 10,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

fn keys(entries: &[ListEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let key = String::from_utf8(e.key().to_vec()).unwrap();
            match e {
                ListEntry::Prefix(_) => format!("{key}*"),
                ListEntry::Object(..) => key,
                ListEntry::Version { object, .. } => format!("{key}@{}", object.version),
            }
        })
        .collect()
}

async fn listing(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    mb.create_bucket(&p, "other", NOW).await.unwrap();
    for key in ["a/1", "a/2", "a/b/3", "b", "c/x", "c/y/z", "d", "d/e"] {
        put_object(mb, &p, "b", key.as_bytes()).await;
    }
    put_object(mb, &p, "other", b"a/9").await;
    // Pending objects are not listed.
    mb.begin_object(&pending(&p, "b", b"a/pending", NOW))
        .await
        .unwrap();

    let project_ref = &p;
    let list = move |prefix: &'static str, cursor: &'static str, recursive: bool, limit: usize| async move {
        let (entries, more) = mb
            .list_objects(
                project_ref,
                "b",
                &Listing {
                    prefix: prefix.as_bytes(),
                    cursor: cursor.as_bytes(),
                    recursive,
                    limit,
                },
                NOW,
            )
            .await
            .unwrap();
        (keys(&entries), more)
    };
    assert_eq!(
        list("", "", false, 0).await,
        (
            vec![
                "a/*".into(),
                "b".into(),
                "c/*".into(),
                "d".into(),
                "d/*".into()
            ],
            false
        )
    );
    assert_eq!(
        list("", "", true, 0).await.0,
        vec!["a/1", "a/2", "a/b/3", "b", "c/x", "c/y/z", "d", "d/e"]
    );
    assert_eq!(
        list("a/", "", false, 0).await,
        (vec!["1".into(), "2".into(), "b/*".into()], false)
    );
    assert_eq!(list("a/", "", true, 0).await.0, vec!["1", "2", "b/3"]);
    assert_eq!(list("c/", "x", false, 0).await.0, vec!["y/*"]);
    assert_eq!(list("zz/", "", false, 0).await, (vec![], false));

    // Pages put together give the whole listing, in both modes.
    for recursive in [false, true] {
        let whole = list("", "", recursive, 0).await.0;
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let (entries, more) = mb
                .list_objects(
                    &p,
                    "b",
                    &Listing {
                        prefix: b"",
                        cursor: cursor.as_bytes(),
                        recursive,
                        limit: 2,
                    },
                    NOW,
                )
                .await
                .unwrap();
            assert!(entries.len() <= 2);
            paged.extend(keys(&entries));
            cursor = String::from_utf8(entries.last().unwrap().key().to_vec()).unwrap();
            if !more {
                break;
            }
        }
        assert_eq!(paged, whole, "recursive: {recursive}");
    }
    // The object returned carries its full key.
    let (entries, _) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"a/",
                cursor: b"1",
                recursive: false,
                limit: 1,
            },
            NOW,
        )
        .await
        .unwrap();
    match &entries[0] {
        ListEntry::Object(key, object) => {
            assert_eq!(key, b"2");
            assert_eq!(object.object_key, b"a/2");
        }
        other => panic!("expected an object, got {other:?}"),
    }
    // Keys are ordered by bytes, including bytes above 0x7F.
    put_object(mb, &p, "other", &[0xFF, b'/', 1]).await;
    put_object(mb, &p, "other", &[0x80]).await;
    let (entries, _) = mb
        .list_objects(
            &p,
            "other",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: false,
                limit: 0,
            },
            NOW,
        )
        .await
        .unwrap();
    let got: Vec<&[u8]> = entries.iter().map(|e| e.key()).collect();
    assert_eq!(got, vec![&b"a/"[..], &[0x80][..], &[0xFF, b'/'][..]]);
}

async fn listing_many_keys(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    for dir in 0..10 {
        for file in 0..100 {
            put_object(mb, &p, "b", format!("d{dir}/f{file:03}").as_bytes()).await;
        }
    }
    let (entries, more) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: false,
                limit: 0,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 10);
    assert!(!more);
    let mut all = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let (entries, more) = mb
            .list_objects(
                &p,
                "b",
                &Listing {
                    prefix: b"",
                    cursor: &cursor,
                    recursive: true,
                    limit: 300,
                },
                NOW,
            )
            .await
            .unwrap();
        cursor = entries.last().unwrap().key().to_vec();
        all.extend(entries.into_iter().map(|e| e.key().to_vec()));
        if !more {
            break;
        }
    }
    assert_eq!(all.len(), 1000);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    let (entries, more) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"d3/",
                cursor: b"",
                recursive: false,
                limit: 5000,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 100);
    assert!(!more);
}

async fn pending_cleanup(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let old = pending(&p, "b", b"old", NOW - 1000);
    mb.begin_object(&old).await.unwrap();
    let segment = remote_segment(&old.stream_id, 0, 10);
    mb.put_segment(&p, &segment).await.unwrap();
    let fresh = pending(&p, "b", b"fresh", NOW);
    mb.begin_object(&fresh).await.unwrap();
    let committed_old = pending(&p, "b", b"kept", NOW - 1000);
    mb.begin_object(&committed_old).await.unwrap();
    mb.commit_object(&p, &commit(&committed_old.stream_id, b"", b"", b"", &[]))
        .await
        .unwrap();

    let (count, removed) = mb
        .delete_pending_before(NOW - 500, NOW - 500, 10)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].pieces, segment.pieces);
    assert!(matches!(
        mb.object_by_stream(&p, &old.stream_id).await,
        Err(Error::NotFound(_))
    ));
    assert!(mb.segments(&old.stream_id).await.unwrap().is_empty());
    assert!(mb.object_by_stream(&p, &fresh.stream_id).await.is_ok());
    assert!(mb.get_object(&p, "b", b"kept", NOW).await.is_ok());
    assert_eq!(
        mb.delete_pending_before(NOW - 500, NOW - 500, 10)
            .await
            .unwrap()
            .0,
        0
    );
}

/// An object past its expiration is gone for reads, listings, copies and
/// audits at once, and the cleanup deletes it with its pieces.
async fn expired_objects(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let expires_at = NOW + 100;
    let object = Object {
        expires_at,
        ..pending(&p, "b", b"short-lived", NOW)
    };
    mb.begin_object(&object).await.unwrap();
    let segment = remote_segment(&object.stream_id, 0, 10);
    mb.put_segment(&p, &segment).await.unwrap();
    mb.commit_object(&p, &commit(&object.stream_id, b"", b"", b"", &[]))
        .await
        .unwrap();
    let lasting = put_object(mb, &p, "b", b"lasting").await;

    let listed = |now| {
        let p = p.clone();
        async move {
            let (entries, _) = mb
                .list_objects(
                    &p,
                    "b",
                    &Listing {
                        prefix: b"",
                        cursor: b"",
                        recursive: true,
                        limit: 0,
                    },
                    now,
                )
                .await
                .unwrap();
            keys(&entries)
        }
    };
    let audited = |now| async move {
        mb.committed_remote_segments_from(&[], 10, now)
            .await
            .unwrap()
            .len()
    };
    // Alive until the second it expires.
    let before = expires_at - 1;
    assert!(mb.get_object(&p, "b", b"short-lived", before).await.is_ok());
    assert_eq!(listed(before).await, ["lasting", "short-lived"]);
    assert_eq!(audited(before).await, 1);
    assert_eq!(mb.delete_expired(before, 10).await.unwrap().0, 0);

    assert!(matches!(
        mb.get_object(&p, "b", b"short-lived", expires_at).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(listed(expires_at).await, ["lasting"]);
    assert_eq!(audited(expires_at).await, 0);
    let copy = ObjectCopy {
        created_at: expires_at,
        ..copy_to("b", b"copy", &[0], b"")
    };
    assert!(matches!(
        mb.copy_object(&p, &object.stream_id, &copy).await,
        Err(Error::NotFound(_))
    ));

    let (count, removed) = mb.delete_expired(expires_at, 10).await.unwrap();
    assert_eq!(count, 1);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].pieces, segment.pieces);
    assert!(mb.segments(&object.stream_id).await.unwrap().is_empty());
    assert_eq!(mb.stream_expiration(&object.stream_id).await.unwrap(), None);
    assert_eq!(mb.delete_expired(NOW + 1000, 10).await.unwrap().0, 0);
    assert_eq!(
        mb.get_object(&p, "b", b"lasting", NOW + 1000)
            .await
            .unwrap(),
        lasting
    );
}

fn node(id: u8, free: i64, last_contact: i64) -> Node {
    Node {
        id: vec![id; 32],
        public_key: vec![id; 32],
        address: format!("127.0.0.{id}:7000"),
        last_net: "127.0.0.0/24".into(),
        capacity_bytes: 1 << 30,
        free_bytes: free,
        version: "0.1.0".into(),
        last_contact,
        created_at: last_contact,
    }
}

async fn nodes(mb: &Metabase) {
    mb.upsert_node(&node(1, 1000, NOW)).await.unwrap();
    mb.upsert_node(&node(2, 10, NOW)).await.unwrap();
    mb.upsert_node(&node(3, 1000, NOW - 100)).await.unwrap();
    assert_eq!(mb.node_count().await.unwrap(), 3);
    let mut eligible: Vec<_> = mb
        .eligible_nodes(NOW - 50, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id[0])
        .collect();
    eligible.sort();
    assert_eq!(eligible, vec![1]);

    // A check-in updates everything but the creation time.
    let mut moved = node(3, 2000, NOW);
    moved.address = "127.0.9.9:1".into();
    moved.created_at = NOW + 5;
    mb.upsert_node(&moved).await.unwrap();
    assert_eq!(mb.node_count().await.unwrap(), 3);
    let stored = mb.node(&NodeId([3; 32])).await.unwrap().unwrap();
    assert_eq!(stored.address, "127.0.9.9:1");
    assert_eq!(stored.free_bytes, 2000);
    assert_eq!(stored.created_at, NOW - 100);
    assert_eq!(mb.eligible_nodes(NOW - 50, 500).await.unwrap().len(), 2);

    let found = mb
        .nodes(&[NodeId([1; 32]), NodeId([3; 32]), NodeId([7; 32])])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(mb.node(&NodeId([7; 32])).await.unwrap().is_none());
}

async fn concurrent_commits(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let mb = mb.clone();
            let p = p.clone();
            tokio::spawn(async move {
                // Half the writers race for one key, the others write their own.
                let key = if i % 2 == 0 {
                    "same".to_string()
                } else {
                    format!("own{i}")
                };
                // Some as one request (inline), the others begun and committed.
                if i % 4 < 2 {
                    put_inline(&mb, &p, key.as_bytes(), &[i as u8; 20]).await;
                } else {
                    put_object(&mb, &p, "b", key.as_bytes()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (entries, _) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: true,
                limit: 0,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 9);
}

/// Stores `data` as a committed object of one inline segment in bucket `b`,
/// in one transaction; returns the object and what it replaced.
async fn put_inline(
    mb: &Metabase,
    project: &[u8],
    key: &[u8],
    data: &[u8],
) -> (Object, Vec<RemovedSegment>) {
    let segment_of = |object: &Object| inline_segment(&object.stream_id, 0, data);
    let mut object = pending(project, "b", key, NOW);
    object.committed = 1;
    object.segment_count = 1;
    object.plain_size = segment_of(&object).plain_size;
    mb.put_inline_object(&object, &segment_of(&object), true, None)
        .await
        .unwrap()
}

/// A key that may write but not delete cannot replace an object, by any of
/// the three ways of committing one; the object stays as it was.
async fn commits_replace_only_when_allowed(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let original = put_object(mb, &p, "b", b"k").await;
    fn refused<T>(result: Result<T, Error>) -> bool {
        matches!(result, Err(Error::PermissionDenied(_)))
    }

    let object = pending(&p, "b", b"k", NOW);
    mb.begin_object(&object).await.unwrap();
    mb.put_segment(&p, &inline_segment(&object.stream_id, 0, &[1; 5]))
        .await
        .unwrap();
    let no_replace = ObjectCommit {
        replace: false,
        ..commit(&object.stream_id, b"new", b"", b"", &[])
    };
    assert!(refused(mb.commit_object(&p, &no_replace).await));

    let mut inline = pending(&p, "b", b"k", NOW);
    inline.committed = 1;
    inline.segment_count = 1;
    let segment = inline_segment(&inline.stream_id, 0, &[2; 5]);
    inline.plain_size = segment.plain_size;
    assert!(refused(
        mb.put_inline_object(&inline, &segment, false, None).await
    ));

    let other = put_object(mb, &p, "b", b"source").await;
    let copy = ObjectCopy {
        replace: false,
        ..copy_to("b", b"k", &[0], b"copied")
    };
    assert!(refused(mb.copy_object(&p, &other.stream_id, &copy).await));

    let still = mb.get_object(&p, "b", b"k", NOW).await.unwrap();
    assert_eq!(still.stream_id, original.stream_id);
    // Where nothing is replaced, the same commit goes through.
    let fresh = ObjectCopy {
        replace: false,
        ..copy_to("b", b"fresh", &[0], b"copied")
    };
    mb.copy_object(&p, &other.stream_id, &fresh).await.unwrap();
}

async fn commits_with_their_last_segment(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let object = pending(&p, "b", b"k", NOW);
    mb.begin_object(&object).await.unwrap();
    mb.put_segment(&p, &remote_segment(&object.stream_id, 0, 100))
        .await
        .unwrap();
    let mut with_last = commit(&object.stream_id, b"m", b"", b"", &[]);
    with_last.last_segment = Some(inline_segment(&object.stream_id, 1, &[7; 30]));
    let (committed, removed) = mb.commit_object(&p, &with_last).await.unwrap();
    assert!(removed.is_empty());
    assert_eq!((committed.segment_count, committed.plain_size), (2, 114));
    let segments = mb.segments(&object.stream_id).await.unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1].plain_offset, 100);
    assert_eq!(segments[1].inline_data.as_deref(), Some(&[7; 30][..]));

    // A last segment where one already is: nothing commits.
    let other = pending(&p, "b", b"other", NOW);
    mb.begin_object(&other).await.unwrap();
    mb.put_segment(&p, &remote_segment(&other.stream_id, 0, 10))
        .await
        .unwrap();
    let mut clash = commit(&other.stream_id, b"m", b"", b"", &[]);
    clash.last_segment = Some(remote_segment(&other.stream_id, 0, 10));
    assert!(matches!(
        mb.commit_object(&p, &clash).await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(mb.get_object(&p, "b", b"other", NOW).await.is_err());
    // Another stream's segment, or a multipart upload's, is refused.
    clash.last_segment = Some(remote_segment(&object.stream_id, 1, 10));
    assert!(matches!(
        mb.commit_object(&p, &clash).await,
        Err(Error::InvalidArgument(_))
    ));
    let upload = multipart_pending(&p, b"multi", NOW);
    mb.begin_object(&upload).await.unwrap();
    let mut multipart = commit(&upload.stream_id, b"m", b"", b"", &[(1, Vec::new())]);
    multipart.last_segment = Some(inline_segment(
        &upload.stream_id,
        position(1, 0).unwrap(),
        &[1; 20],
    ));
    assert!(matches!(
        mb.commit_object(&p, &multipart).await,
        Err(Error::InvalidArgument(_))
    ));
}

async fn inline_objects_in_one_transaction(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let (first, removed) = put_inline(mb, &p, b"k", &[1; 40]).await;
    assert!(removed.is_empty());
    let found = mb.get_object(&p, "b", b"k", NOW).await.unwrap();
    assert_eq!(found.stream_id, first.stream_id);
    assert_eq!(found.plain_size, 24);
    let segments = mb.segments(&first.stream_id).await.unwrap();
    assert_eq!(segments[0].inline_data.as_deref(), Some(&[1; 40][..]));

    // It replaces an object of its key, whose pieces are then to delete.
    let remote = pending(&p, "b", b"r", NOW);
    mb.begin_object(&remote).await.unwrap();
    mb.put_segment(&p, &remote_segment(&remote.stream_id, 0, 100))
        .await
        .unwrap();
    mb.commit_object(&p, &commit(&remote.stream_id, b"", b"", b"", &[]))
        .await
        .unwrap();
    let (replacing, removed) = put_inline(mb, &p, b"r", &[2; 20]).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].pieces.len(), 4);
    let found = mb.get_object(&p, "b", b"r", NOW).await.unwrap();
    assert_eq!(found.stream_id, replacing.stream_id);
    assert!(mb.segments(&remote.stream_id).await.unwrap().is_empty());

    // Not in a missing bucket; never pending; never with a remote segment.
    let mut elsewhere = pending(&p, "nope", b"k", NOW);
    elsewhere.committed = 1;
    let segment = inline_segment(&elsewhere.stream_id, 0, &[1; 20]);
    assert!(matches!(
        mb.put_inline_object(&elsewhere, &segment, true, None).await,
        Err(Error::NotFound(_))
    ));
    let pending_one = pending(&p, "b", b"p", NOW);
    let segment = inline_segment(&pending_one.stream_id, 0, &[1; 20]);
    assert!(matches!(
        mb.put_inline_object(&pending_one, &segment, true, None)
            .await,
        Err(Error::InvalidArgument(_))
    ));
    let mut with_remote = pending(&p, "b", b"p", NOW);
    with_remote.committed = 1;
    let segment = remote_segment(&with_remote.stream_id, 0, 10);
    assert!(matches!(
        mb.put_inline_object(&with_remote, &segment, true, None)
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

fn multipart_pending(project: &[u8], key: &[u8], created_at: i64) -> Object {
    let mut object = pending(project, "b", key, created_at);
    object.multipart = 1;
    object.encrypted_metadata = b"started".to_vec();
    object
}

/// The key nonces of `count` segments made by [`remote_segment`].
fn nonces(count: usize) -> Vec<Vec<u8>> {
    vec![vec![2; 12]; count]
}

fn part_numbers(parts: &[archipel_satellite::metabase::Part]) -> Vec<i64> {
    parts.iter().map(|p| p.part_number).collect()
}

async fn multipart_uploads(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let upload = multipart_pending(&p, b"k", NOW);
    mb.begin_object(&upload).await.unwrap();
    let stream = &upload.stream_id;
    let seg = |part, index, size| remote_segment(stream, position(part, index).unwrap(), size);

    // Parts arrive in any order; position 0 is no part's.
    assert!(matches!(
        mb.put_segment(&p, &remote_segment(stream, 0, 5)).await,
        Err(Error::InvalidArgument(_))
    ));
    let first = seg(2, 0, 10);
    mb.put_segment(&p, &first).await.unwrap();
    // The same segment committed twice (a retried request) keeps its pieces.
    assert!(matches!(
        mb.put_segment(&p, &first).await,
        Err(Error::AlreadyExists(_))
    ));
    mb.put_segment(&p, &seg(2, 1, 4)).await.unwrap();
    mb.put_segment(&p, &seg(1, 0, 7)).await.unwrap();
    assert!(matches!(
        mb.commit_part(&p, stream, 2, &nonces(3), 14, b"i2", NOW)
            .await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        mb.commit_part(&p, stream, 2, &nonces(2), 99, b"i2", NOW)
            .await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        mb.commit_part(&p, stream, 0, &nonces(1), 7, b"", NOW).await,
        Err(Error::InvalidArgument(_))
    ));
    // Segments must be the ones named by their key nonces (not another
    // upload's of the same part).
    let mut mixed = nonces(2);
    mixed[1] = vec![9; 12];
    assert!(matches!(
        mb.commit_part(&p, stream, 2, &mixed, 14, b"i2", NOW).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(mb
        .commit_part(&p, stream, 2, &nonces(2), 14, b"i2", NOW)
        .await
        .unwrap()
        .is_empty());
    mb.commit_part(&p, stream, 1, &nonces(1), 7, b"i1", NOW)
        .await
        .unwrap();
    let (object, parts, more) = mb.list_parts(&p, stream, 0, 10).await.unwrap();
    assert_eq!(object.encrypted_metadata, b"started");
    assert_eq!((part_numbers(&parts), more), (vec![1, 2], false));
    assert_eq!(parts[1].encrypted_info, b"i2");
    assert_eq!((parts[1].plain_size, parts[1].segment_count), (14, 2));
    let (_, parts, more) = mb.list_parts(&p, stream, 0, 1).await.unwrap();
    assert_eq!((part_numbers(&parts), more), (vec![1], true));
    let (_, parts, _) = mb.list_parts(&p, stream, 1, 10).await.unwrap();
    assert_eq!(part_numbers(&parts), [2]);

    // Uploading part 1 again replaces its segment and unrecords it until
    // it is recorded again.
    let replaced = mb.put_segment(&p, &seg(1, 0, 8)).await.unwrap();
    assert!(replaced.is_some(), "the old segment's pieces are garbage");
    let (_, parts, _) = mb.list_parts(&p, stream, 0, 10).await.unwrap();
    assert_eq!(part_numbers(&parts), [2]);
    mb.commit_part(&p, stream, 1, &nonces(1), 8, b"i1b", NOW)
        .await
        .unwrap();
    // A shorter second upload of part 3 leaves a stale segment, which
    // recording the part removes.
    mb.put_segment(&p, &seg(3, 0, 10)).await.unwrap();
    mb.put_segment(&p, &seg(3, 1, 10)).await.unwrap();
    mb.commit_part(&p, stream, 3, &nonces(2), 20, b"i3", NOW)
        .await
        .unwrap();
    mb.put_segment(&p, &seg(3, 0, 3)).await.unwrap();
    let stale = mb
        .commit_part(&p, stream, 3, &nonces(1), 3, b"i3b", NOW)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);

    // Uploads in progress, in key order, paged.
    let other = multipart_pending(&p, b"j", NOW + 1);
    mb.begin_object(&other).await.unwrap();
    mb.begin_object(&pending(&p, "b", b"single", NOW))
        .await
        .unwrap();
    let (uploads, more) = mb.list_multipart_uploads(&p, "b", None, 10).await.unwrap();
    let streams: Vec<&[u8]> = uploads.iter().map(|o| o.stream_id.as_slice()).collect();
    assert_eq!(
        (streams, more),
        (vec![other.stream_id.as_slice(), stream.as_slice()], false)
    );
    let (first, more) = mb.list_multipart_uploads(&p, "b", None, 1).await.unwrap();
    assert!(more);
    let cursor = (
        first[0].object_key.as_slice(),
        first[0].stream_id.as_slice(),
    );
    let (rest, more) = mb
        .list_multipart_uploads(&p, "b", Some(cursor), 1)
        .await
        .unwrap();
    assert_eq!(
        (rest[0].stream_id.as_slice(), more),
        (stream.as_slice(), false)
    );

    // Completing takes the parts named, ascending and recorded.
    let part = |number: u32, info: &[u8]| (number, info.to_vec());
    let descending = [part(3, b"i3b"), part(1, b"i1b")];
    for (parts, _) in [(&descending[..], "descending"), (&[][..], "none")] {
        assert!(matches!(
            mb.commit_object(&p, &commit(stream, b"m", b"", b"", parts))
                .await,
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        mb.commit_object(
            &p,
            &commit(stream, b"m", b"", b"", &[part(1, b"i1b"), part(4, b"")])
        )
        .await,
        Err(Error::FailedPrecondition(_))
    ));
    // A part is named by its info as listed: part 1 was recorded again since
    // the info `i1` was listed.
    assert!(matches!(
        mb.commit_object(
            &p,
            &commit(stream, b"m", b"", b"", &[part(1, b"i1"), part(3, b"i3b")])
        )
        .await,
        Err(Error::FailedPrecondition(_))
    ));
    let (object, removed) = mb
        .commit_object(
            &p,
            &commit(stream, b"m", b"", b"", &[part(1, b"i1b"), part(3, b"i3b")]),
        )
        .await
        .unwrap();
    assert_eq!(removed.len(), 2, "part 2's segments are left out");
    assert_eq!((object.plain_size, object.segment_count), (11, 2));
    let segments = mb.segments(stream).await.unwrap();
    let layout: Vec<(u32, i64)> = segments
        .iter()
        .map(|s| (s.position, s.plain_offset))
        .collect();
    assert_eq!(
        layout,
        [(position(1, 0).unwrap(), 0), (position(3, 0).unwrap(), 8)]
    );
    // A completed upload lists as its object, without parts.
    let (completed, parts, more) = mb.list_parts(&p, stream, 0, 10).await.unwrap();
    assert_eq!((completed.committed, parts.len(), more), (1, 0, false));
    assert_eq!(
        mb.get_object(&p, "b", b"k", NOW).await.unwrap().stream_id,
        *stream
    );
    // A single upload is never completed with parts.
    let single = pending(&p, "b", b"s2", NOW);
    mb.begin_object(&single).await.unwrap();
    mb.put_segment(&p, &remote_segment(&single.stream_id, 0, 5))
        .await
        .unwrap();
    assert!(matches!(
        mb.commit_object(
            &p,
            &commit(&single.stream_id, b"", b"", b"", &[part(1, b"")])
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));

    // Aborting deletes the upload with its segments; once.
    mb.put_segment(
        &p,
        &remote_segment(&other.stream_id, position(1, 0).unwrap(), 5),
    )
    .await
    .unwrap();
    assert_eq!(
        mb.abort_object(&p, &other.stream_id).await.unwrap().len(),
        1
    );
    assert!(matches!(
        mb.abort_object(&p, &other.stream_id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        mb.abort_object(&p, stream).await,
        Err(Error::FailedPrecondition(_))
    ));

    // Abandoned multipart uploads live longer than abandoned single uploads.
    let old = multipart_pending(&p, b"old", NOW - 1000);
    mb.begin_object(&old).await.unwrap();
    let (count, _) = mb
        .delete_pending_before(NOW - 500, NOW - 2000, 10)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let (count, _) = mb
        .delete_pending_before(NOW - 500, NOW - 500, 10)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert!(mb
        .list_multipart_uploads(&p, "b", None, 10)
        .await
        .unwrap()
        .0
        .is_empty());
}

/// A copy of `segments`' positions' keys, as a client rewraps them.
fn copy_to(bucket: &str, key: &[u8], positions: &[u32], metadata: &[u8]) -> ObjectCopy {
    ObjectCopy {
        stream_id: rand::random::<[u8; 16]>().to_vec(),
        bucket: bucket.into(),
        object_key: key.to_vec(),
        created_at: NOW + 10,
        encrypted_metadata: metadata.to_vec(),
        encrypted_metadata_key: b"copy key".to_vec(),
        encrypted_metadata_nonce: b"copy nonce".to_vec(),
        segment_keys: positions
            .iter()
            .map(|&position| WrappedSegmentKey {
                position,
                encrypted_key: vec![7; 48],
                encrypted_key_nonce: vec![position as u8; 12],
            })
            .collect(),
        replace: true,
        lock: VersionLock::default(),
    }
}

async fn server_side_copies(mb: &Metabase) {
    let p = project(mb).await;
    let other = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    mb.create_bucket(&p, "b2", NOW).await.unwrap();
    let source = pending(&p, "b", b"source", NOW);
    mb.begin_object(&source).await.unwrap();
    let originals = vec![
        remote_segment(&source.stream_id, 0, 100),
        remote_segment(&source.stream_id, 1, 50),
        inline_segment(&source.stream_id, 2, &[5; 30]),
    ];
    for segment in &originals {
        mb.put_segment(&p, segment).await.unwrap();
    }
    mb.commit_object(&p, &commit(&source.stream_id, b"meta", b"k", b"n", &[]))
        .await
        .unwrap();

    // Keys must match the source's positions exactly; nothing is written otherwise.
    for positions in [&[0u32, 1][..], &[0, 1, 3], &[0, 1, 2, 3], &[1, 0, 2]] {
        let err = mb
            .copy_object(&p, &source.stream_id, &copy_to("b2", b"c", positions, b""))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)),
            "{positions:?}: {err}"
        );
    }
    assert!(matches!(
        mb.get_object(&p, "b2", b"c", NOW).await.unwrap_err(),
        Error::NotFound(_)
    ));
    // The source must be a committed object of the same project, the bucket exist.
    let all = [0u32, 1, 2];
    for (project, stream, bucket) in [
        (&p, &[9u8; 16][..], "b2"),
        (&other, &source.stream_id[..], "b2"),
        (&p, &source.stream_id[..], "nope"),
    ] {
        let err = mb
            .copy_object(project, stream, &copy_to(bucket, b"c", &all, b""))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
    }
    let pending_source = pending(&p, "b", b"unfinished", NOW);
    mb.begin_object(&pending_source).await.unwrap();
    assert!(matches!(
        mb.copy_object(
            &p,
            &pending_source.stream_id,
            &copy_to("b2", b"c", &[], b"")
        )
        .await
        .unwrap_err(),
        Error::NotFound(_)
    ));

    // A destination that exists is replaced; its pieces are garbage.
    let old = pending(&p, "b2", b"c", NOW);
    mb.begin_object(&old).await.unwrap();
    let old_segment = remote_segment(&old.stream_id, 0, 10);
    mb.put_segment(&p, &old_segment).await.unwrap();
    mb.commit_object(&p, &commit(&old.stream_id, b"old", b"", b"", &[]))
        .await
        .unwrap();
    let request = copy_to("b2", b"c", &all, b"copied");
    let (copy, replaced) = mb
        .copy_object(&p, &source.stream_id, &request)
        .await
        .unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(mb.unlisted(replaced.clone()).await.unwrap(), replaced);
    assert_eq!(copy.stream_id, request.stream_id);
    assert_eq!(
        (copy.committed, copy.plain_size, copy.segment_count),
        (1, 150 + 14, 3)
    );
    assert_eq!(copy.encrypted_metadata, b"copied");
    assert_eq!(mb.get_object(&p, "b2", b"c", NOW).await.unwrap(), copy);
    let copied = mb.segments(&copy.stream_id).await.unwrap();
    assert_eq!(copied.len(), originals.len());
    for ((copied, original), key) in copied.iter().zip(&originals).zip(&request.segment_keys) {
        assert_eq!(copied.root_piece_id, original.root_piece_id);
        assert_eq!(copied.pieces, original.pieces);
        assert_eq!(copied.inline_data, original.inline_data);
        assert_eq!(copied.plain_size, original.plain_size);
        assert_eq!(copied.encrypted_key, key.encrypted_key);
        assert_eq!(copied.encrypted_key_nonce, key.encrypted_key_nonce);
    }
    // The source is untouched.
    assert_eq!(mb.segments(&source.stream_id).await.unwrap(), {
        let mut committed = originals.clone();
        committed[1].plain_offset = 100;
        committed[2].plain_offset = 150;
        committed
    });

    // A copy onto itself (new metadata) replaces the source, whose pieces
    // its copy still lists.
    let (itself, replaced) = mb
        .copy_object(&p, &copy.stream_id, &copy_to("b2", b"c", &all, b"again"))
        .await
        .unwrap();
    assert_eq!(replaced.len(), 2);
    assert!(mb.unlisted(replaced).await.unwrap().is_empty());
    assert!(mb.segments(&copy.stream_id).await.unwrap().is_empty());
    assert_eq!(
        mb.get_object(&p, "b2", b"c", NOW)
            .await
            .unwrap()
            .encrypted_metadata,
        b"again"
    );

    // A repair swaps one piece of the copy: deleting the source frees only
    // the piece the copy no longer lists.
    let mut repaired = originals[0].pieces.clone();
    repaired[0].node = NodeId(rand::random());
    let key = SegmentKey {
        stream_id: itself.stream_id.clone(),
        position: 0,
    };
    assert!(mb
        .swap_pieces(&key, &originals[0].pieces, &repaired)
        .await
        .unwrap());
    let (_, removed) = delete_current(mb, &p, "b", b"source").await.unwrap();
    assert_eq!(removed.len(), 2);
    let unlisted = mb.unlisted(removed).await.unwrap();
    assert_eq!(unlisted.len(), 1);
    assert_eq!(unlisted[0].root_piece_id, originals[0].root_piece_id);
    assert_eq!(unlisted[0].pieces, vec![originals[0].pieces[0]]);
    // The last copy's pieces are all garbage once it goes.
    let (_, removed) = delete_current(mb, &p, "b2", b"c").await.unwrap();
    assert_eq!(mb.unlisted(removed.clone()).await.unwrap(), removed);
    assert_eq!(removed[0].pieces, repaired);
}

/// Copies back and forth between two keys at once (each locks its source and
/// replaces its destination): every copy either commits or finds its source
/// replaced meanwhile, never a database error, and both keys stay objects.
async fn concurrent_copies(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    put_object(mb, &p, "b", b"a").await;
    put_object(mb, &p, "b", b"z").await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let mb = mb.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let (from, to): (&[u8], &[u8]) = if i % 2 == 0 {
                    (b"a", b"z")
                } else {
                    (b"z", b"a")
                };
                let source = mb.get_object(&p, "b", from, NOW).await.unwrap();
                let copy = ObjectCopy {
                    object_key: to.to_vec(),
                    ..copy_to("b", to, &[0], b"copied")
                };
                match mb.copy_object(&p, &source.stream_id, &copy).await {
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("a copy failed: {e}"),
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for key in [&b"a"[..], b"z"] {
        let object = mb.get_object(&p, "b", key, NOW).await.unwrap();
        assert_eq!(mb.segments(&object.stream_id).await.unwrap().len(), 1);
    }
}

/// Uploads and commits an object of one remote segment; returns the segment.
async fn put_remote_object(mb: &Metabase, project: &[u8], bucket: &str, key: &[u8]) -> Segment {
    let object = pending(project, bucket, key, NOW);
    mb.begin_object(&object).await.unwrap();
    let segment = remote_segment(&object.stream_id, 0, 1000);
    mb.put_segment(project, &segment).await.unwrap();
    mb.commit_object(
        project,
        &commit(&object.stream_id, b"meta", b"mkey", b"nonce", &[]),
    )
    .await
    .unwrap();
    segment
}

async fn deletion_queue(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let doomed = put_remote_object(mb, &p, "b", b"doomed").await;
    let kept = put_remote_object(mb, &p, "b", b"kept").await;
    assert_eq!(mb.deletion_queue_length(None).await.unwrap(), 0);

    // The scan sees every piece list, from one snapshot.
    let mut seen = Vec::new();
    let segments = mb
        .scan_piece_lists(|root, pieces| seen.push((root, pieces)))
        .await
        .unwrap();
    assert_eq!(segments, 2);
    assert!(seen.contains(&(doomed.root_piece_id, doomed.pieces.clone())));
    assert!(seen.contains(&(kept.root_piece_id, kept.pieces.clone())));

    // Deleting the object queues its pieces in the same transaction.
    delete_current(mb, &p, "b", b"doomed").await.unwrap();
    assert_eq!(mb.deletion_queue_length(None).await.unwrap(), 4);
    let node = doomed.pieces[0].node;
    assert_eq!(mb.deletion_queue_length(Some(&node)).await.unwrap(), 1);

    // Claimed deletions are not handed out twice until their claim ends.
    // (Deletions are queued at the real time, not the test's NOW.)
    let now = archipel_proto::orders::unix_now();
    let claimed = mb.claim_deletions(now, now + 600, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert!(claimed
        .iter()
        .all(|d| d.root_piece_id == doomed.root_piece_id));
    assert!(mb
        .claim_deletions(now, now + 600, 10)
        .await
        .unwrap()
        .is_empty());
    mb.finish_deletions(&claimed[..2]).await.unwrap();
    mb.retry_deletions(&claimed[2..], "node away", now + 60)
        .await
        .unwrap();
    assert_eq!(mb.deletion_queue_length(None).await.unwrap(), 2);
    assert!(mb
        .claim_deletions(now + 59, now + 600, 10)
        .await
        .unwrap()
        .is_empty());
    let retried = mb.claim_deletions(now + 60, now + 600, 10).await.unwrap();
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|d| d.attempts == 1));
    mb.finish_deletions(&retried).await.unwrap();

    // A repair's swap queues the pieces it gives up, and only those.
    let mut repaired = kept.pieces.clone();
    let given_up = repaired[1];
    repaired[1] = Piece {
        num: given_up.num,
        node: NodeId(rand::random()),
        root: rand::random(),
    };
    assert!(mb
        .swap_pieces(&kept.key(), &kept.pieces, &repaired)
        .await
        .unwrap());
    // Stamped with the clock at the swap, which may have ticked since `now`.
    let swapped_at = archipel_proto::orders::unix_now();
    let queued = mb
        .claim_deletions(swapped_at, swapped_at + 600, 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].node, queued[0].piece_num),
        (given_up.node, given_up.num)
    );
    assert!(!mb
        .swap_pieces(&kept.key(), &kept.pieces, &repaired)
        .await
        .unwrap());
}

/// The version id of a committed object.
fn id_of(object: &Object) -> VersionRef {
    VersionRef::Exact(object.version_id().unwrap())
}

/// Uploads and commits an object of one remote segment (so that deleting
/// it for good has pieces to queue).
async fn put_remote(mb: &Metabase, project: &[u8], bucket: &str, key: &[u8]) -> Object {
    let object = pending(project, bucket, key, NOW);
    mb.begin_object(&object).await.unwrap();
    mb.put_segment(project, &remote_segment(&object.stream_id, 0, 100))
        .await
        .unwrap();
    mb.commit_object(project, &commit(&object.stream_id, b"m", b"", b"", &[]))
        .await
        .unwrap()
        .0
}

/// Every version of a key as rows of its own, as S3 versioning has them:
/// null versions before and while suspended, versions added while enabled,
/// delete markers, deletes of one version for good.
async fn versions_of_a_key(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let first = put_remote(mb, &p, "b", b"k").await;
    assert_eq!((first.version, first.is_null_version()), (1, true));
    assert!(matches!(
        mb.set_versioning(&p, "b", Versioning::Unversioned).await,
        Err(Error::InvalidArgument(_))
    ));
    let bucket = mb
        .set_versioning(&p, "b", Versioning::Enabled)
        .await
        .unwrap();
    assert_eq!(bucket.versioning, Versioning::Enabled);
    assert_eq!(
        mb.get_bucket(&p, "b").await.unwrap().versioning,
        Versioning::Enabled
    );

    // Writes add versions; nothing is replaced.
    let second = put_remote(mb, &p, "b", b"k").await;
    let third = put_object(mb, &p, "b", b"k").await;
    assert_eq!((second.version, third.version), (2, 3));
    assert!(!second.is_null_version());
    assert_eq!(third.written_with().unwrap(), Versioning::Enabled);
    assert_eq!(mb.get_object(&p, "b", b"k", NOW).await.unwrap(), third);
    for old in [&first, &second] {
        let found = mb
            .get_version(&p, "b", b"k", &id_of(old), NOW)
            .await
            .unwrap();
        assert_eq!(&found, old);
    }
    assert_eq!(
        mb.get_version(&p, "b", b"k", &VersionRef::Null, NOW)
            .await
            .unwrap(),
        first
    );
    // An id of this key's version under another key finds nothing.
    put_object(mb, &p, "b", b"other").await;
    assert!(matches!(
        mb.get_version(&p, "b", b"other", &id_of(&second), NOW)
            .await,
        Err(Error::NotFound(_))
    ));

    // A delete hides the key under a marker; the versions stay.
    let deletion = mb
        .delete_object(&p, "b", b"k", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    let marker = deletion.marker.unwrap();
    assert_eq!((deletion.removed, deletion.segments.len()), (None, 0));
    assert_eq!((marker.version, marker.delete_marker), (4, 1));
    assert!(matches!(
        mb.get_object(&p, "b", b"k", NOW).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        mb.get_version(&p, "b", b"k", &VersionRef::Latest, NOW)
            .await
            .unwrap(),
        marker
    );
    let (current, _) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: true,
                limit: 0,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(keys(&current), vec!["other"]);
    let (versions, more) = mb
        .list_versions(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: true,
                limit: 0,
            },
            None,
            NOW,
        )
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(keys(&versions), vec!["k@4", "k@3", "k@2", "k@1", "other@1"]);
    let latest: Vec<bool> = versions
        .iter()
        .map(|v| matches!(v, ListEntry::Version { latest: true, .. }))
        .collect();
    assert_eq!(latest, vec![true, false, false, false, true]);

    // Deleting the marker for good brings the key back; deleting a version
    // for good queues its pieces.
    let undone = mb
        .delete_object(&p, "b", b"k", &id_of(&marker), None, false)
        .await
        .unwrap();
    assert_eq!(undone.removed.as_ref().map(|o| o.delete_marker), Some(1));
    assert_eq!(mb.get_object(&p, "b", b"k", NOW).await.unwrap(), third);
    let queued = mb.deletion_queue_length(None).await.unwrap();
    let gone = mb
        .delete_object(&p, "b", b"k", &id_of(&second), None, false)
        .await
        .unwrap();
    assert_eq!(gone.removed, Some(second.clone()));
    assert_eq!(gone.segments.len(), 1);
    assert_eq!(mb.deletion_queue_length(None).await.unwrap(), queued + 4);
    assert!(matches!(
        mb.delete_object(&p, "b", b"k", &id_of(&second), None, false)
            .await,
        Err(Error::NotFound(_))
    ));

    // Suspended: a write replaces the null version (the first one, written
    // before versioning), and a delete puts a null marker in its place.
    mb.set_versioning(&p, "b", Versioning::Suspended)
        .await
        .unwrap();
    let fourth = put_object(mb, &p, "b", b"k").await;
    assert!(fourth.is_null_version());
    assert_eq!(fourth.version, 4);
    assert!(matches!(
        mb.get_version(&p, "b", b"k", &id_of(&first), NOW).await,
        Err(Error::NotFound(_))
    ));
    let deletion = mb
        .delete_object(&p, "b", b"k", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    assert_eq!(deletion.removed, Some(fourth));
    let null_marker = deletion.marker.unwrap();
    assert!(null_marker.is_null_version());
    assert_eq!(null_marker.written_with().unwrap(), Versioning::Suspended);
    assert_eq!(
        mb.get_version(&p, "b", b"k", &id_of(&third), NOW)
            .await
            .unwrap(),
        third
    );
    // A bucket holding versions is not empty.
    assert!(matches!(
        mb.delete_bucket(&p, "b").await,
        Err(Error::FailedPrecondition(_))
    ));

    // A null version that expired (the cleanup has not removed it yet)
    // still makes way for the null marker of a delete.
    let mut brief = pending(&p, "b", b"brief", NOW);
    brief.expires_at = NOW + 1;
    mb.begin_object(&brief).await.unwrap();
    mb.put_segment(&p, &inline_segment(&brief.stream_id, 0, &[5; 20]))
        .await
        .unwrap();
    mb.commit_object(&p, &commit(&brief.stream_id, b"m", b"", b"", &[]))
        .await
        .unwrap();
    let deletion = mb
        .delete_object(&p, "b", b"brief", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    assert_eq!(deletion.removed.map(|o| o.stream_id), Some(brief.stream_id));
    assert!(deletion.marker.unwrap().is_null_version());
}

/// Conditions on a key's current version are checked in the transaction
/// that commits or deletes: a failed one changes nothing.
async fn preconditions_hold_in_the_transaction(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    let original = put_object(mb, &p, "b", b"k").await;
    let original_id = original.version_id().unwrap();

    // Absent, with an object there: the commit fails and the upload stays pending.
    let upload = pending(&p, "b", b"k", NOW);
    mb.begin_object(&upload).await.unwrap();
    mb.put_segment(&p, &inline_segment(&upload.stream_id, 0, &[7; 20]))
        .await
        .unwrap();
    let absent = ObjectCommit {
        precondition: Some(Precondition::Absent),
        ..commit(&upload.stream_id, b"new", b"", b"", &[])
    };
    assert!(matches!(
        mb.commit_object(&p, &absent).await,
        Err(Error::ConditionFailed(_))
    ));
    assert_eq!(mb.get_object(&p, "b", b"k", NOW).await.unwrap(), original);
    assert_eq!(
        mb.object_by_stream(&p, &upload.stream_id)
            .await
            .unwrap()
            .committed,
        0
    );
    // On the version there: it commits, replacing it.
    let on_original = ObjectCommit {
        precondition: Some(Precondition::Current(original_id.clone())),
        ..commit(&upload.stream_id, b"new", b"", b"", &[])
    };
    let (replacement, _) = mb.commit_object(&p, &on_original).await.unwrap();
    assert_eq!(replacement.encrypted_metadata, b"new");

    // A delete on a version that is no longer current deletes nothing.
    assert!(matches!(
        mb.delete_object(
            &p,
            "b",
            b"k",
            &VersionRef::Latest,
            Some(&Precondition::Current(original_id.clone())),
            false
        )
        .await,
        Err(Error::ConditionFailed(_))
    ));
    assert_eq!(
        mb.get_object(&p, "b", b"k", NOW).await.unwrap(),
        replacement
    );
    // An inline put on a stale version stores nothing either.
    let mut inline = pending(&p, "b", b"k", NOW);
    inline.committed = 1;
    inline.segment_count = 1;
    let segment = inline_segment(&inline.stream_id, 0, &[8; 20]);
    assert!(matches!(
        mb.put_inline_object(
            &inline,
            &segment,
            true,
            Some(&Precondition::Current(original_id))
        )
        .await,
        Err(Error::ConditionFailed(_))
    ));
    assert_eq!(
        mb.get_object(&p, "b", b"k", NOW).await.unwrap(),
        replacement
    );
    mb.delete_object(
        &p,
        "b",
        b"k",
        &VersionRef::Latest,
        Some(&Precondition::Current(replacement.version_id().unwrap())),
        false,
    )
    .await
    .unwrap();
    // Absent holds for a free key, and for one whose current version is a
    // delete marker.
    mb.put_inline_object(&inline, &segment, true, Some(&Precondition::Absent))
        .await
        .unwrap();
    mb.set_versioning(&p, "b", Versioning::Enabled)
        .await
        .unwrap();
    mb.delete_object(&p, "b", b"k", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    let mut again = pending(&p, "b", b"k", NOW);
    again.committed = 1;
    again.segment_count = 1;
    let segment = inline_segment(&again.stream_id, 0, &[9; 20]);
    let (stored, removed) = mb
        .put_inline_object(&again, &segment, true, Some(&Precondition::Absent))
        .await
        .unwrap();
    assert!(removed.is_empty());
    assert_eq!(stored.version, 3);
    assert_eq!(
        mb.get_object(&p, "b", b"k", NOW).await.unwrap().stream_id,
        again.stream_id
    );
}

/// A listing of versions resumes within a key after the version it stopped
/// at, and collapses prefixes as a listing of objects does.
async fn listing_versions_page_by_page(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    mb.set_versioning(&p, "b", Versioning::Enabled)
        .await
        .unwrap();
    for key in ["a", "a", "a", "b", "d/x", "d/y", "e", "e"] {
        put_object(mb, &p, "b", key.as_bytes()).await;
    }
    mb.delete_object(&p, "b", b"e", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    let everything = vec![
        "a@3", "a@2", "a@1", "b@1", "d/x@1", "d/y@1", "e@3", "e@2", "e@1",
    ];
    for limit in 1..=4 {
        let mut seen = Vec::new();
        let mut cursor = Vec::new();
        let mut after_version = None;
        loop {
            let (page, more) = mb
                .list_versions(
                    &p,
                    "b",
                    &Listing {
                        prefix: b"",
                        cursor: &cursor,
                        recursive: true,
                        limit,
                    },
                    after_version,
                    NOW,
                )
                .await
                .unwrap();
            assert!(page.len() <= limit);
            seen.extend(keys(&page));
            if !more {
                break;
            }
            let Some(ListEntry::Version { key, object, .. }) = page.last() else {
                panic!("a recursive listing has only versions");
            };
            cursor = key.clone();
            after_version = Some(object.version);
        }
        assert_eq!(seen, everything, "pages of {limit}");
    }
    let (level, _) = mb
        .list_versions(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: false,
                limit: 0,
            },
            None,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        keys(&level),
        vec!["a@3", "a@2", "a@1", "b@1", "d/*", "e@3", "e@2", "e@1"]
    );
    // The current objects: e is hidden by its marker.
    let (current, _) = mb
        .list_objects(
            &p,
            "b",
            &Listing {
                prefix: b"",
                cursor: b"",
                recursive: true,
                limit: 0,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(keys(&current), vec!["a", "b", "d/x", "d/y"]);
}

/// Object Lock holds in the metabase's transactions: a locked version is
/// neither deleted nor weakened (governance yields only to a bypass,
/// compliance and legal holds to nothing), a locked bucket keeps its
/// versioning, and its default retention reaches every new version.
async fn object_lock_keeps_versions(mb: &Metabase) {
    let p = project(mb).await;
    let now = unix_now();
    let locked = |object: &Object| object.lock().unwrap();

    // A bucket without Object Lock takes no locked version, and enables
    // the lock only with versioning on.
    mb.create_bucket(&p, "plain", NOW).await.unwrap();
    let mut held = pending(&p, "plain", b"k", NOW);
    held.set_lock(VersionLock {
        retention: None,
        legal_hold: true,
    });
    mb.begin_object(&held).await.unwrap();
    mb.put_segment(&p, &inline_segment(&held.stream_id, 0, &[1; 20]))
        .await
        .unwrap();
    assert!(matches!(
        mb.commit_object(&p, &commit(&held.stream_id, b"m", b"k", b"n", &[]))
            .await,
        Err(Error::InvalidArgument(why)) if why.contains("Object Lock")
    ));
    let enable = ObjectLock {
        enabled: true,
        default_retention: None,
    };
    assert!(matches!(
        mb.set_object_lock(&p, "plain", enable).await,
        Err(Error::FailedPrecondition(_))
    ));

    // Created with Object Lock: versioned for good, locked for good.
    let vault = mb
        .create_bucket_with(&p, "vault", false, true, NOW)
        .await
        .unwrap();
    assert_eq!(vault.versioning, Versioning::Enabled);
    assert_eq!(
        mb.get_bucket(&p, "vault").await.unwrap().object_lock,
        enable
    );
    assert!(matches!(
        mb.set_versioning(&p, "vault", Versioning::Suspended).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        mb.set_object_lock(&p, "vault", ObjectLock::default()).await,
        Err(Error::InvalidArgument(_))
    ));
    let one_day = ObjectLock {
        enabled: true,
        default_retention: Some(DefaultRetention {
            mode: RetentionMode::Governance,
            period: RetentionPeriod::Days(1),
        }),
    };
    assert_eq!(
        mb.set_object_lock(&p, "vault", one_day)
            .await
            .unwrap()
            .object_lock,
        one_day
    );

    // The default retention reaches a version that names none.
    let first = put_object(mb, &p, "vault", b"k").await;
    let retention = locked(&first).retention.unwrap();
    assert_eq!(retention.mode, RetentionMode::Governance);
    assert!((now + 86_400..now + 86_400 + 60).contains(&retention.until));
    // A delete without a version hides it under a marker; removing the
    // version itself is refused, even to the marker's removal.
    let deletion = mb
        .delete_object(&p, "vault", b"k", &VersionRef::Latest, None, false)
        .await
        .unwrap();
    assert!(deletion.removed.is_none() && deletion.marker.is_some());
    assert!(matches!(
        mb.delete_object(&p, "vault", b"k", &id_of(&first), None, false)
            .await,
        Err(Error::ObjectLocked(why)) if why.contains("governance")
    ));

    // Shortening governance takes a bypass; compliance can only grow.
    let sooner = Retention {
        mode: RetentionMode::Governance,
        until: now + 3_600,
    };
    assert!(matches!(
        mb.set_retention(&p, "vault", b"k", &id_of(&first), Some(sooner), false)
            .await,
        Err(Error::ObjectLocked(_))
    ));
    let strict = Retention {
        mode: RetentionMode::Compliance,
        until: now + 2 * 86_400,
    };
    let first = mb
        .set_retention(&p, "vault", b"k", &id_of(&first), Some(strict), false)
        .await
        .unwrap();
    assert_eq!(locked(&first).retention, Some(strict));
    for wanted in [None, Some(sooner)] {
        assert!(matches!(
            mb.set_retention(&p, "vault", b"k", &id_of(&first), wanted, true)
                .await,
            Err(Error::ObjectLocked(why)) if why.contains("compliance")
        ));
    }
    assert!(matches!(
        mb.delete_object(&p, "vault", b"k", &id_of(&first), None, true)
            .await,
        Err(Error::ObjectLocked(_))
    ));
    assert!(matches!(
        mb.set_retention(
            &p,
            "vault",
            b"k",
            &id_of(&first),
            Some(Retention {
                until: now - 1,
                ..strict
            }),
            false
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));

    // A legal hold holds against a bypass; lifted, the bypass removes a
    // governance version.
    let second = put_object(mb, &p, "vault", b"k").await;
    mb.set_legal_hold(&p, "vault", b"k", &id_of(&second), true)
        .await
        .unwrap();
    assert!(matches!(
        mb.delete_object(&p, "vault", b"k", &id_of(&second), None, true)
            .await,
        Err(Error::ObjectLocked(why)) if why.contains("legal hold")
    ));
    let second = mb
        .set_legal_hold(&p, "vault", b"k", &id_of(&second), false)
        .await
        .unwrap();
    assert!(!locked(&second).legal_hold);
    let removed = mb
        .delete_object(&p, "vault", b"k", &id_of(&second), None, true)
        .await
        .unwrap();
    assert_eq!(removed.removed.map(|o| o.stream_id), Some(second.stream_id));

    // A copy gets the bucket's default, not its source's lock.
    let (copy, _) = mb
        .copy_object(&p, &first.stream_id, &copy_to("vault", b"copy", &[0], b"m"))
        .await
        .unwrap();
    let copied = locked(&copy).retention.unwrap();
    assert_eq!(copied.mode, RetentionMode::Governance);

    // A version that expires cannot be locked (it could not be both).
    let mut brief = pending(&p, "vault", b"brief", NOW);
    brief.expires_at = now + 3_600;
    mb.begin_object(&brief).await.unwrap();
    mb.put_segment(&p, &inline_segment(&brief.stream_id, 0, &[2; 20]))
        .await
        .unwrap();
    assert!(matches!(
        mb.commit_object(&p, &commit(&brief.stream_id, b"m", b"k", b"n", &[]))
            .await,
        Err(Error::InvalidArgument(why)) if why.contains("expiration")
    ));
    // The locked version is still there, and so is its data.
    let kept = mb
        .get_version(&p, "vault", b"k", &id_of(&first), unix_now())
        .await
        .unwrap();
    assert_eq!(kept.stream_id, first.stream_id);
    assert_eq!(mb.segments(&first.stream_id).await.unwrap().len(), 1);
}

/// An update of sealed metadata lands on the version named, in place: no
/// version is added, others keep theirs, and markers or versions that are
/// gone are `NotFound`.
async fn metadata_updates_in_place(mb: &Metabase) {
    let p = project(mb).await;
    mb.create_bucket(&p, "b", NOW).await.unwrap();
    mb.set_versioning(&p, "b", Versioning::Enabled)
        .await
        .unwrap();
    let first = put_object(mb, &p, "b", b"k").await;
    let second = put_object(mb, &p, "b", b"k").await;
    let id = first.version_id().unwrap();
    let now = unix_now();
    let updated = mb
        .update_metadata(&p, "b", b"k", &id, [b"tagged", b"tkey", b"tnonce"], now)
        .await
        .unwrap();
    assert_eq!(
        (updated.version, updated.encrypted_metadata.as_slice()),
        (first.version, &b"tagged"[..])
    );
    assert_eq!(updated.encrypted_metadata_key, b"tkey");
    assert_eq!(mb.get_object(&p, "b", b"k", now).await.unwrap(), second);
    let listing = Listing {
        prefix: b"",
        cursor: b"",
        recursive: true,
        limit: 0,
    };
    let (versions, _) = mb
        .list_versions(&p, "b", &listing, None, now)
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);

    let marker = mb
        .delete_object(&p, "b", b"k", &VersionRef::Latest, None, false)
        .await
        .unwrap()
        .marker
        .unwrap();
    for gone in [marker.version_id().unwrap(), VersionId { version: 9, ..id }] {
        assert!(matches!(
            mb.update_metadata(&p, "b", b"k", &gone, [b"x", b"y", b"z"], now)
                .await,
            Err(Error::NotFound(_))
        ));
    }
}
