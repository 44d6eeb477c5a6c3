//! Buckets, listings, overwrites and deletes through the whole network,
//! including that deleted and replaced objects' pieces leave the nodes' disks.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::time::Duration;

use archipel_client::{Error, UploadOptions};
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};

fn piece_count(planet: &Planet) -> usize {
    planet.nodes.iter().map(|n| n.piece_files().len()).sum()
}

/// Waits until the nodes hold exactly `expected` pieces in all.
async fn wait_for_piece_count(planet: &Planet, expected: usize) {
    for _ in 0..100 {
        if piece_count(planet) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "nodes hold {} pieces, expected {expected}",
        piece_count(planet)
    );
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
    let stored: u32 = info.segments.iter().map(|s| s.piece_count).sum();
    wait_for_piece_count(&planet, stored as usize).await;

    // An overwrite replaces the object; the old pieces are deleted from the nodes.
    let second = test_data(300_000, 2);
    let info = project
        .upload("gcbucket", "obj", &second[..], UploadOptions::default())
        .await
        .unwrap();
    let stored: u32 = info.segments.iter().map(|s| s.piece_count).sum();
    wait_for_piece_count(&planet, stored as usize).await;
    let mut out = Vec::new();
    project
        .download("gcbucket", "obj", None, &mut out, None)
        .await
        .unwrap();
    assert!(out == second);

    project.delete_object("gcbucket", "obj").await.unwrap();
    wait_for_piece_count(&planet, 0).await;
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
