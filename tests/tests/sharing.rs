//! Restricted access grants on a real network (issue 14): every caveat kind
//! against every kind of request, a table of grant × operation →
//! allowed/denied; what a shared grant sees of listings; that it cannot
//! decrypt names or data outside its prefixes even with an unrestricted API
//! key; revocation of a grant and of everything shared from it; expiry; a
//! grant that may not delete adding versions where a bucket keeps them.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::{Duration, SystemTime};

use archipel_client::{
    Access, CopyMetadata, Error, Permissions, Project, Share, UploadOptions, Version, Versioning,
};
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};

/// Above the planet's inline threshold: stored on nodes.
const REMOTE: usize = 9000;

fn share(permissions: Permissions, prefixes: &[(&str, &str)]) -> Share {
    Share {
        permissions,
        prefixes: prefixes
            .iter()
            .map(|(b, p)| (b.to_string(), p.to_string()))
            .collect(),
        not_before: None,
        not_after: None,
    }
}

async fn put(project: &Project, bucket: &str, key: &str, data: &[u8]) {
    project
        .upload(bucket, key, data, UploadOptions::default())
        .await
        .unwrap();
}

async fn get(project: &Project, bucket: &str, key: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    project.download(bucket, key, None, &mut out, None).await?;
    Ok(out)
}

/// The operations of the table, by column.
const OPERATIONS: [&str; 15] = [
    "get bucket",
    "list buckets",
    "create bucket",
    "upload remote",
    "upload inline",
    "overwrite",
    "download photos",
    "download docs",
    "list photos",
    "list root",
    "delete",
    "multipart",
    "list uploads",
    "copy",
    "delete bucket",
];

/// Runs operation `op` with `p` (the grant under test); `full` prepares what
/// it needs and checks that a refused operation changed nothing. `cell`
/// makes names unique to this cell of the table.
async fn operate(op: &str, full: &Project, p: &Project, cell: &str) -> Result<(), Error> {
    match op {
        "get bucket" => p.lists_in_order("bkt").await.map(drop),
        "list buckets" => p.list_buckets().await.map(drop),
        "create bucket" => p.create_bucket(&format!("new-{cell}")).await.map(drop),
        "upload remote" => {
            let key = format!("photos/remote-{cell}");
            let data = test_data(REMOTE, 1);
            p.upload("bkt", &key, &data[..], UploadOptions::default())
                .await?;
            assert_eq!(get(full, "bkt", &key).await.unwrap(), data);
            Ok(())
        }
        "upload inline" => p
            .upload(
                "bkt",
                &format!("photos/inline-{cell}"),
                &b"small"[..],
                UploadOptions::default(),
            )
            .await
            .map(drop),
        "overwrite" => {
            let key = format!("photos/overwrite-{cell}");
            put(full, "bkt", &key, b"original").await;
            // On nodes and inline: the two ways an upload commits (a remote
            // one is refused when it begins, an inline one when it commits).
            let mut results = Vec::new();
            let mut current = b"original".to_vec();
            for replacement in [test_data(REMOTE, 2), b"replaced".to_vec()] {
                let result = p
                    .upload("bkt", &key, &replacement[..], UploadOptions::default())
                    .await
                    .map(drop);
                if result.is_ok() {
                    current = replacement;
                }
                assert_eq!(get(full, "bkt", &key).await.unwrap(), current);
                results.push(result);
            }
            assert_eq!(results[0].is_ok(), results[1].is_ok(), "{results:?}");
            results.pop().unwrap_or(Ok(()))
        }
        "download photos" => {
            let data = get(p, "bkt", "photos/x").await?;
            assert_eq!(data, test_data(REMOTE, 7));
            Ok(())
        }
        "download docs" => get(p, "bkt", "docs/y").await.map(drop),
        "list photos" => {
            let entries = p.list("bkt", "photos/", false).await?;
            assert!(entries.iter().any(|e| e.key == "photos/x"));
            Ok(())
        }
        "list root" => p.list("bkt", "", false).await.map(drop),
        "delete" => {
            let key = format!("photos/delete-{cell}");
            put(full, "bkt", &key, b"doomed").await;
            let result = p.delete_object("bkt", &key).await.map(drop);
            assert_eq!(full.stat("bkt", &key).await.is_ok(), result.is_err());
            result
        }
        "multipart" => {
            let key = format!("photos/multipart-{cell}");
            let upload = p
                .begin_multipart("bkt", &key, UploadOptions::default())
                .await?;
            let part = p
                .upload_part("bkt", &key, &upload, 1, &b"part one"[..], || "tag".into())
                .await?;
            p.complete_multipart("bkt", &key, &upload, &[part], Default::default(), None)
                .await?;
            assert_eq!(get(full, "bkt", &key).await.unwrap(), b"part one");
            Ok(())
        }
        "list uploads" => p.list_multipart_uploads("bkt", "").await.map(drop),
        "copy" => p
            .copy_object(
                "bkt",
                "photos/x",
                "bkt",
                &format!("photos/copy-{cell}"),
                CopyMetadata::Keep,
            )
            .await
            .map(drop),
        "delete bucket" => {
            let bucket = format!("empty-{cell}");
            full.create_bucket(&bucket).await.unwrap();
            let result = p.delete_bucket(&bucket).await;
            let listed = full.list_buckets().await.unwrap();
            assert_eq!(listed.iter().any(|b| b.name == bucket), result.is_err());
            result
        }
        other => unreachable!("no operation {other}"),
    }
}

/// Each grant and, per operation in [`OPERATIONS`]' order, whether it is
/// allowed (`Y`) or refused (`.`).
fn table(now: SystemTime) -> Vec<(&'static str, Option<Share>, &'static str)> {
    let hour = Duration::from_secs(3600);
    vec![
        ("full", None, "YYYYYYYYYYYYYYY"),
        (
            "read-only bkt",
            Some(share(Permissions::READ_ONLY, &[("bkt", "")])),
            "YY....YYYY..Y..",
        ),
        (
            "write-only bkt",
            Some(share(Permissions::WRITE_ONLY, &[("bkt", "")])),
            "YY.YY...YY.YY..",
        ),
        (
            "everything in bkt/photos/",
            Some(share(Permissions::ALL, &[("bkt", "photos/")])),
            "YY.YYYY.YYYYYY.",
        ),
        (
            "read-only bkt/photos",
            Some(share(Permissions::READ_ONLY, &[("bkt", "photos")])),
            "YY....Y.YY..Y..",
        ),
        (
            "delete-only bkt",
            Some(share(
                Permissions {
                    read: false,
                    write: false,
                    list: false,
                    delete: true,
                    bypass_governance: false,
                },
                &[("bkt", "")],
            )),
            "Y.........Y....",
        ),
        (
            "everything in other",
            Some(share(Permissions::ALL, &[("other", "")])),
            ".Y.............",
        ),
        (
            "expired",
            Some(Share {
                not_after: Some(now - hour),
                ..share(Permissions::ALL, &[("bkt", "")])
            }),
            "...............",
        ),
        (
            "not yet valid",
            Some(Share {
                not_before: Some(now + hour),
                ..share(Permissions::ALL, &[("bkt", "")])
            }),
            "...............",
        ),
    ]
}

async fn every_caveat_for_every_request(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let full = planet.project().await.unwrap();
    for bucket in ["bkt", "other"] {
        full.create_bucket(bucket).await.unwrap();
    }
    put(&full, "bkt", "photos/x", &test_data(REMOTE, 7)).await;
    put(&full, "bkt", "docs/y", b"not shared").await;
    put(&full, "other", "z", b"another bucket").await;

    let mut failures = Vec::new();
    for (row, (name, restriction, expected)) in table(SystemTime::now()).into_iter().enumerate() {
        let grant = match &restriction {
            None => planet.access().clone(),
            Some(restriction) => full.share(restriction).await.unwrap(),
        };
        for (column, (op, allowed)) in OPERATIONS.iter().zip(expected.chars()).enumerate() {
            // A project of its own per cell: nothing cached from another.
            let p = Project::open(&grant).await.unwrap();
            let result = operate(op, &full, &p, &format!("{row}-{column}")).await;
            match (allowed, &result) {
                ('Y', Ok(())) | ('.', Err(Error::PermissionDenied(_))) => {}
                _ => failures.push(format!("{name} × {op}: expected {allowed}, got {result:?}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn shared_grants_see_only_their_prefixes(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let full = planet.project().await.unwrap();
    for bucket in ["bkt", "other"] {
        full.create_bucket(bucket).await.unwrap();
    }
    for key in [
        "photos/2024/a",
        "photos/2025/b",
        "photos/top",
        "docs/y",
        "photosynthesis",
    ] {
        put(&full, "bkt", key, key.as_bytes()).await;
    }
    put(&full, "other", "z", b"z").await;

    let year = full
        .share(&share(Permissions::READ_ONLY, &[("bkt", "photos/2024/")]))
        .await
        .unwrap();
    let p = Project::open(&year).await.unwrap();
    let names = |entries: Vec<archipel_client::ListEntry>| -> Vec<String> {
        entries.into_iter().map(|e| e.key).collect()
    };
    let buckets: Vec<String> = p
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(buckets, ["bkt"]);
    // Above the shared prefix only the way down shows.
    assert_eq!(names(p.list("bkt", "", false).await.unwrap()), ["photos/"]);
    assert_eq!(
        names(p.list("bkt", "photos/", false).await.unwrap()),
        ["photos/2024/"]
    );
    assert_eq!(
        names(p.list("bkt", "", true).await.unwrap()),
        ["photos/2024/a"]
    );
    assert_eq!(
        get(&p, "bkt", "photos/2024/a").await.unwrap(),
        b"photos/2024/a"
    );
    for outside in ["photos/top", "photos/2025/b", "docs/y", "photosynthesis"] {
        assert!(
            matches!(
                get(&p, "bkt", outside).await,
                Err(Error::PermissionDenied(_))
            ),
            "{outside}"
        );
    }

    // The keys alone do not open anything else: with the project's
    // unrestricted API key, names outside the prefix still do not decrypt
    // and their data cannot be asked for.
    let mut unrestricted_key = year.clone();
    unrestricted_key.api_key = planet.access().api_key.clone();
    let p = Project::open(&unrestricted_key).await.unwrap();
    assert_eq!(
        names(p.list("bkt", "", true).await.unwrap()),
        ["photos/2024/a"]
    );
    assert!(matches!(
        p.list("other", "", true).await,
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        get(&p, "bkt", "docs/y").await,
        Err(Error::PermissionDenied(_))
    ));
    let info = year.inspect().unwrap();
    assert!(!info.full_keys);
    assert_eq!(info.prefixes, ["bkt/photos/2024"]);

    // A grant shared from a shared grant stays inside it.
    let narrower = Project::open(&year).await.unwrap();
    assert!(matches!(
        narrower
            .share(&share(Permissions::READ_ONLY, &[("bkt", "docs/")]))
            .await,
        Err(Error::PermissionDenied(_))
    ));
    let widened = narrower
        .share(&share(Permissions::ALL, &[("bkt", "photos/2024/")]))
        .await
        .unwrap();
    let p = Project::open(&widened).await.unwrap();
    assert!(matches!(
        p.upload(
            "bkt",
            "photos/2024/new",
            &b"x"[..],
            UploadOptions::default()
        )
        .await,
        Err(Error::PermissionDenied(_))
    ));
}

async fn revocation_reaches_every_grant_shared_from_one(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let full = planet.project().await.unwrap();
    full.create_bucket("bkt").await.unwrap();
    put(&full, "bkt", "photos/2024/a", b"a").await;

    let parent = full
        .share(&share(Permissions::ALL, &[("bkt", "photos/")]))
        .await
        .unwrap();
    let child = Project::open(&parent)
        .await
        .unwrap()
        .share(&share(Permissions::READ_ONLY, &[("bkt", "photos/2024/")]))
        .await
        .unwrap();
    let sibling = full
        .share(&share(Permissions::READ_ONLY, &[("bkt", "photos/")]))
        .await
        .unwrap();
    let works = |grant: Access| async move {
        let p = Project::open(&grant).await.unwrap();
        get(&p, "bkt", "photos/2024/a").await
    };
    for grant in [&parent, &child, &sibling] {
        assert_eq!(works(grant.clone()).await.unwrap(), b"a");
    }

    // Only the grant itself or one it was shared from may revoke it.
    let as_sibling = Project::open(&sibling).await.unwrap();
    assert!(matches!(
        as_sibling.revoke(&parent.api_key).await,
        Err(Error::PermissionDenied(_))
    ));
    let as_child = Project::open(&child).await.unwrap();
    assert!(matches!(
        as_child.revoke(&parent.api_key).await,
        Err(Error::PermissionDenied(_))
    ));

    full.revoke(&parent.api_key).await.unwrap();
    for grant in [&parent, &child] {
        assert!(matches!(
            works(grant.clone()).await,
            Err(Error::Unauthenticated)
        ));
    }
    assert_eq!(works(sibling.clone()).await.unwrap(), b"a");
    assert_eq!(get(&full, "bkt", "photos/2024/a").await.unwrap(), b"a");

    // A grant may revoke itself.
    as_sibling.revoke(&sibling.api_key).await.unwrap();
    assert!(matches!(works(sibling).await, Err(Error::Unauthenticated)));
}

async fn a_grant_expires_on_time(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let full = planet.project().await.unwrap();
    full.create_bucket("bkt").await.unwrap();
    put(&full, "bkt", "k", b"v").await;
    let brief = full
        .share(&Share {
            not_after: Some(SystemTime::now() + Duration::from_secs(2)),
            ..share(Permissions::READ_ONLY, &[("bkt", "")])
        })
        .await
        .unwrap();
    let p = Project::open(&brief).await.unwrap();
    assert_eq!(get(&p, "bkt", "k").await.unwrap(), b"v");
    // The satellite's clock counts in whole seconds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    match get(&p, "bkt", "k").await {
        Err(Error::PermissionDenied(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("an expired grant read: {other:?}"),
    }
}

/// A grant that may write but not delete cannot replace an object, but in
/// a bucket that keeps versions its writes destroy nothing: they add
/// versions, inline or on nodes, and the old ones stay readable.
async fn write_only_grants_add_versions(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let full = planet.project().await.unwrap();
    full.create_bucket("bkt").await.unwrap();
    put(&full, "bkt", "k", b"original").await;
    let no_delete = Permissions {
        delete: false,
        ..Permissions::ALL
    };
    let writer = full.share(&share(no_delete, &[("bkt", "")])).await.unwrap();
    let writer = Project::open(&writer).await.unwrap();
    let refused = writer
        .upload("bkt", "k", &b"over"[..], UploadOptions::default())
        .await;
    assert!(
        matches!(refused, Err(Error::PermissionDenied(_))),
        "{refused:?}"
    );

    full.set_versioning("bkt", Versioning::Enabled)
        .await
        .unwrap();
    put(&writer, "bkt", "k", b"inline version").await;
    let large = test_data(300_000, 5);
    put(&writer, "bkt", "k", &large).await;
    assert_eq!(get(&full, "bkt", "k").await.unwrap(), large);
    let versions = full.list_versions("bkt", "", true).await.unwrap();
    assert_eq!(versions.len(), 3);
    let oldest = versions.last().unwrap().version.as_ref().unwrap();
    let mut read = Vec::new();
    full.open_version("bkt", "k", &Version::Id(oldest.id.clone()), 0)
        .await
        .unwrap()
        .download(None, &mut read, None)
        .await
        .unwrap();
    assert_eq!(read, b"original");
    let deleted = writer.delete_object("bkt", "k").await;
    assert!(
        matches!(deleted, Err(Error::PermissionDenied(_))),
        "{deleted:?}"
    );
}

on_both_backends!(
    every_caveat_for_every_request,
    shared_grants_see_only_their_prefixes,
    revocation_reaches_every_grant_shared_from_one,
    a_grant_expires_on_time,
    write_only_grants_add_versions,
);
