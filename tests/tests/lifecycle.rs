//! Buckets, listings, overwrites and deletes through the whole network,
//! including that deleted and replaced objects' pieces leave the nodes' disks.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::BTreeSet;
use std::path::PathBuf;

use archipel_client::{Error, UploadOptions};
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};

/// The piece files the committed segments list, checked to be on disk.
async fn stored_pieces(planet: &Planet, expected: u32) -> BTreeSet<PathBuf> {
    let files = planet.committed_piece_files().await.unwrap();
    assert_eq!(files.len(), expected as usize);
    assert!(files.iter().all(|f| f.exists()));
    files
}

/// Waits until none of `files` is left on the nodes. Pieces of an upload's
/// cancelled long tail, which no segment lists, are garbage collection's
/// business and not counted here.
async fn wait_until_deleted(files: &BTreeSet<PathBuf>) {
    wait_for("the deleted pieces to leave the nodes", || async {
        files.iter().all(|f| !f.exists())
    })
    .await;
}

async fn buckets(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("alpha").await.unwrap();
    project.create_bucket("beta").await.unwrap();
    assert!(matches!(
        project.create_bucket("alpha").await,
        Err(Error::BucketExists(_))
    ));
    assert!(project.create_bucket("Not_Valid").await.is_err());
    let names: Vec<String> = project
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    project
        .upload("alpha", "x", &b"hello"[..], UploadOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        project.delete_bucket("alpha").await,
        Err(Error::BucketNotEmpty(_))
    ));
    project.delete_object("alpha", "x").await.unwrap();
    project.delete_bucket("alpha").await.unwrap();
    assert!(matches!(
        project.delete_bucket("alpha").await,
        Err(Error::BucketNotFound(_))
    ));
    assert!(project
        .upload("alpha", "x", &b"hello"[..], UploadOptions::default())
        .await
        .is_err());
    planet.shutdown().await.unwrap();
}

async fn listing_levels_in_order(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("list").await.unwrap();
    let keys = ["b", "a/1", "a/2", "a/sub/3", "c/", "é/ü", "a b", "z"];
    for key in keys {
        project
            .upload("list", key, key.as_bytes(), UploadOptions::default())
            .await
            .unwrap();
    }
    let top: Vec<(String, bool)> = project
        .list("list", "", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.is_prefix))
        .collect();
    let expected: Vec<(String, bool)> = [
        ("a b", false),
        ("a/", true),
        ("b", false),
        ("c/", true),
        ("z", false),
        ("é/", true),
    ]
    .into_iter()
    .map(|(k, p)| (k.to_string(), p))
    .collect();
    assert_eq!(top, expected);

    let level: Vec<String> = project
        .list("list", "a/", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(level, ["a/1", "a/2", "a/sub/"]);

    let mut all: Vec<String> = project
        .list("list", "", true)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(all, sorted);
    all.retain(|k| k.starts_with("a/"));
    assert_eq!(
        project.list("list", "a/", true).await.unwrap().len(),
        all.len()
    );

    let entry = project.list("list", "a/", false).await.unwrap().remove(0);
    assert_eq!(entry.size, 3);
    planet.shutdown().await.unwrap();
}

async fn deletes_and_overwrites_free_pieces(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("gcbucket").await.unwrap();
    let first = test_data(200_000, 1);
    let info = project
        .upload("gcbucket", "obj", &first[..], UploadOptions::default())
        .await
        .unwrap();
    let first_pieces =
        stored_pieces(&planet, info.segments.iter().map(|s| s.piece_count).sum()).await;

    // An overwrite replaces the object; the old pieces are deleted from the nodes.
    let second = test_data(300_000, 2);
    let info = project
        .upload("gcbucket", "obj", &second[..], UploadOptions::default())
        .await
        .unwrap();
    let second_pieces =
        stored_pieces(&planet, info.segments.iter().map(|s| s.piece_count).sum()).await;
    assert!(first_pieces.is_disjoint(&second_pieces));
    wait_until_deleted(&first_pieces).await;
    let mut out = Vec::new();
    project
        .download("gcbucket", "obj", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == second);

    project.delete_object("gcbucket", "obj").await.unwrap();
    wait_until_deleted(&second_pieces).await;
    assert!(planet.committed_piece_files().await.unwrap().is_empty());
    assert!(matches!(
        project
            .download("gcbucket", "obj", None, &mut Vec::new(), None)
            .await,
        Err(Error::ObjectNotFound { .. })
    ));
    assert!(matches!(
        project.delete_object("gcbucket", "obj").await,
        Err(Error::ObjectNotFound { .. })
    ));
    planet.shutdown().await.unwrap();
}

async fn metadata_and_stat(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("meta").await.unwrap();
    let options = UploadOptions {
        content_type: Some("text/plain".into()),
        metadata: [("colour".to_string(), "blue".to_string())].into(),
        ..Default::default()
    };
    let data = test_data(2_500_000, 3);
    project
        .upload("meta", "doc.txt", &data[..], options)
        .await
        .unwrap();
    let info = project.stat("meta", "doc.txt").await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        info.metadata.get("colour").map(String::as_str),
        Some("blue")
    );
    let r = planet.satellite_config.redundancy;
    assert_eq!(info.segments.len(), 3);
    for segment in &info.segments {
        assert_eq!(segment.redundancy, Some(r));
        assert!(segment.piece_count >= r.success as u32 && segment.piece_count <= r.total as u32);
    }
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    buckets,
    listing_levels_in_order,
    deletes_and_overwrites_free_pieces,
    metadata_and_stat
);
