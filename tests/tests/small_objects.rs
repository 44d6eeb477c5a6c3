//! Small objects on a real network: an object that fits the inline threshold
//! is stored with one satellite request and read with one, and survives what
//! any object does (copy, overwrite, a multipart neighbour, delete, every
//! node gone); a small object above the threshold costs two satellite
//! requests up and one down; a client whose idea of the threshold is out of
//! date falls back to storage nodes. Request counts are read from the
//! satellite's per-method latency histograms.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

mod common;

use archipel_client::{ByteRange, CopyMetadata, Error, Project, UploadOptions};
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};
use common::admin::AdminApi;

/// A planet (inline threshold 4096) and a project with bucket `bkt` whose
/// first upload, of the object `first`, taught it the satellite's limits.
async fn started(backend: Backend) -> (Planet, Project) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("bkt").await.unwrap();
    project
        .upload("bkt", "first", &b"hello"[..], UploadOptions::default())
        .await
        .unwrap();
    (planet, project)
}

async fn download(project: &Project, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    let mut out = Vec::new();
    project
        .download("bkt", key, range, &mut out, None)
        .await
        .unwrap();
    out
}

/// Satellite calls of `methods` made by `step`, in that order.
async fn calls<const N: usize>(
    admin: &AdminApi,
    methods: [&str; N],
    step: impl std::future::Future<Output = ()>,
) -> [u64; N] {
    let mut before = [0; N];
    for (count, method) in before.iter_mut().zip(methods) {
        *count = admin.rpc_calls(method).await;
    }
    step.await;
    let mut made = [0; N];
    for ((count, method), before) in made.iter_mut().zip(methods).zip(before) {
        *count = admin.rpc_calls(method).await - before;
    }
    made
}

async fn inline_objects_take_one_request_and_survive_what_others_do(backend: Backend) {
    let (mut planet, project) = started(backend).await;
    let admin = AdminApi::of(&planet);

    let small = test_data(2000, 1);
    let options = UploadOptions {
        content_type: Some("text/plain".into()),
        metadata: [("colour".to_string(), "blue".to_string())].into(),
        ..Default::default()
    };
    let [put, begun] = calls(&admin, ["PutInlineObject", "BeginObject"], async {
        let info = project
            .upload("bkt", "small", &small[..], options)
            .await
            .unwrap();
        assert!(info.segments[0].inline);
        assert_eq!(info.size, 2000);
    })
    .await;
    assert_eq!((put, begun), (1, 0));
    let [got, segments] = calls(&admin, ["GetObject", "DownloadSegment"], async {
        assert_eq!(download(&project, "small", None).await, small);
    })
    .await;
    assert_eq!((got, segments), (1, 0));
    let range = ByteRange {
        offset: 1500,
        length: Some(100),
    };
    assert_eq!(
        download(&project, "small", Some(range)).await,
        &small[1500..1600]
    );
    let info = project.stat("bkt", "small").await.unwrap();
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(info.metadata["colour"], "blue");

    // A copy, then the original replaced: each keeps its own bytes.
    project
        .copy_object("bkt", "small", "bkt", "copy", CopyMetadata::Keep)
        .await
        .unwrap();
    let replacement = test_data(3000, 2);
    project
        .upload("bkt", "small", &replacement[..], UploadOptions::default())
        .await
        .unwrap();
    assert_eq!(download(&project, "small", None).await, replacement);
    assert_eq!(download(&project, "copy", None).await, small);

    // A multipart upload beside it, of an inline part and a remote one.
    let upload = project
        .begin_multipart("bkt", "multi", UploadOptions::default())
        .await
        .unwrap();
    let tiny = test_data(10, 3);
    let large = test_data(300_000, 4);
    let mut parts = Vec::new();
    for (number, data) in [(1, &tiny), (2, &large)] {
        let part = project
            .upload_part("bkt", "multi", &upload, number, &data[..], || {
                format!("tag{number}")
            })
            .await
            .unwrap();
        parts.push(part);
    }
    project
        .complete_multipart("bkt", "multi", &upload, &parts, Default::default(), None)
        .await
        .unwrap();
    assert_eq!(
        download(&project, "multi", None).await,
        [tiny.as_slice(), large.as_slice()].concat()
    );
    assert_eq!(download(&project, "copy", None).await, small);

    // Deleting the original leaves the copy.
    project.delete_object("bkt", "small").await.unwrap();
    assert!(matches!(
        project.stat("bkt", "small").await,
        Err(Error::ObjectNotFound { .. })
    ));
    assert_eq!(download(&project, "copy", None).await, small);

    // Inline objects need no storage node at all.
    for i in 0..planet.nodes.len() {
        planet.stop_node(i).await.unwrap();
    }
    assert_eq!(download(&project, "copy", None).await, small);
    assert_eq!(download(&project, "first", None).await, b"hello");
    planet.shutdown().await.unwrap();
}

async fn small_remote_objects_take_two_requests_up_and_one_down(backend: Backend) {
    let (planet, project) = started(backend).await;
    let admin = AdminApi::of(&planet);
    let methods = [
        "BeginObject",
        "BeginSegment",
        "CommitSegment",
        "CommitObject",
    ];

    // Above the inline threshold, within one segment.
    let small = test_data(50_000, 1);
    let made = calls(&admin, methods, async {
        let info = project
            .upload("bkt", "small", &small[..], UploadOptions::default())
            .await
            .unwrap();
        assert!(!info.segments[0].inline);
    })
    .await;
    assert_eq!(made, [1, 0, 0, 1]);
    let [got, segments] = calls(&admin, ["GetObject", "DownloadSegment"], async {
        assert_eq!(download(&project, "small", None).await, small);
    })
    .await;
    assert_eq!((got, segments), (1, 0));

    // Three segments of 1 MiB: the first begins with the object, the last
    // commits with it.
    let large = test_data(2_500_000, 2);
    let made = calls(&admin, methods, async {
        let info = project
            .upload("bkt", "large", &large[..], UploadOptions::default())
            .await
            .unwrap();
        assert_eq!(info.segments.len(), 3);
    })
    .await;
    assert_eq!(made, [1, 2, 2, 1]);
    let [got, segments] = calls(&admin, ["GetObject", "DownloadSegment"], async {
        assert_eq!(download(&project, "large", None).await, large);
    })
    .await;
    assert_eq!((got, segments), (1, 2));
    // A range in the second segment comes with the object.
    let range = ByteRange {
        offset: 1_500_000,
        length: Some(10_000),
    };
    let [got, segments] = calls(&admin, ["GetObject", "DownloadSegment"], async {
        assert_eq!(
            download(&project, "large", Some(range)).await,
            &large[1_500_000..1_510_000]
        );
    })
    .await;
    assert_eq!((got, segments), (1, 0));
    planet.shutdown().await.unwrap();
}

async fn a_lowered_inline_threshold_sends_small_objects_to_nodes(backend: Backend) {
    let (mut planet, project) = started(backend).await;
    // The project heard 4096 bytes; the satellite now takes 1024.
    planet
        .restart_satellite(|config| config.inline_threshold = 1024)
        .await
        .unwrap();
    // The project's connection to the old satellite process is gone; a first
    // call finds that out (what this test is about comes after).
    let _ = project.list_buckets().await;
    let admin = AdminApi::of(&planet);
    for key in ["one", "two"] {
        let data = test_data(3000, 1);
        let info = project
            .upload("bkt", key, &data[..], UploadOptions::default())
            .await
            .unwrap();
        assert!(!info.segments[0].inline, "{key}");
        assert_eq!(download(&project, key, None).await, data);
    }
    // Only the first upload tried inline; the second knew better.
    assert_eq!(admin.rpc_calls("PutInlineObject").await, 1);
    assert_eq!(admin.rpc_calls("BeginObject").await, 2);
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    inline_objects_take_one_request_and_survive_what_others_do,
    small_remote_objects_take_two_requests_up_and_one_down,
    a_lowered_inline_threshold_sends_small_objects_to_nodes,
);
