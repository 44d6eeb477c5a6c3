//! S3 versioning and conditional deletes end to end with `aws-sdk-s3`
//! against the in-process gateway, on both metabase backends: versions made
//! by PUT, copy and multipart completion, reads and copies of old versions,
//! delete markers and their headers, ListObjectVersions with its markers,
//! null versions while suspended, and `If-Match` on DeleteObject and on the
//! objects of DeleteObjects, which delete nothing when they do not hold.

use crate::common::{code, get_bytes, status, Fixture};
use archipel_tests::{on_both_backends, test_data, Backend};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;

on_both_backends!(
    versions_markers_and_listings,
    suspended_versioning_keeps_one_null_version,
    conditional_deletes_delete_only_what_they_name
);

async fn set_versioning(s3: &Client, bucket: &str, status: BucketVersioningStatus) {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .unwrap();
}

async fn put(s3: &Client, bucket: &str, key: &str, body: &[u8]) -> Option<String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap()
        .version_id()
        .map(str::to_string)
}

async fn get_version(s3: &Client, bucket: &str, key: &str, version: &str) -> Vec<u8> {
    let output = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .version_id(version)
        .send()
        .await
        .unwrap();
    assert_eq!(output.version_id(), Some(version));
    output.body.collect().await.unwrap().to_vec()
}

/// (key, version id, is latest, is a delete marker) of every version listed
/// below `prefix`, following the markers page by page with `max_keys`:
/// the versions in the order listed, then the delete markers in the order
/// listed (S3 answers them in two lists).
async fn all_versions(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    max_keys: i32,
) -> Vec<(String, String, bool, bool)> {
    let (mut versions, mut markers) = (Vec::new(), Vec::new());
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(max_keys)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .unwrap();
        assert!(
            page.versions().len() + page.delete_markers().len()
                <= usize::try_from(max_keys).unwrap()
        );
        versions.extend(page.versions().iter().map(|v| {
            (
                v.key().unwrap().to_string(),
                v.version_id().unwrap().to_string(),
                v.is_latest().unwrap(),
                false,
            )
        }));
        markers.extend(page.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().to_string(),
                m.version_id().unwrap().to_string(),
                m.is_latest().unwrap(),
                true,
            )
        }));
        if !page.is_truncated().unwrap() {
            versions.extend(markers);
            return versions;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
}

async fn versions_markers_and_listings(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("docs").send().await.unwrap();
    // Before versioning: no version ids in answers, the object is the null version.
    assert_eq!(put(s3, "docs", "report", b"draft 0").await, None);
    set_versioning(s3, "docs", BucketVersioningStatus::Enabled).await;
    let versioning = s3
        .get_bucket_versioning()
        .bucket("docs")
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status(), Some(&BucketVersioningStatus::Enabled));

    let v1 = put(s3, "docs", "report", b"draft 1").await.unwrap();
    let v2 = put(s3, "docs", "report", b"draft 2").await.unwrap();
    assert_ne!(v1, v2);
    assert_eq!(get_bytes(s3, "docs", "report").await, b"draft 2");
    assert_eq!(get_version(s3, "docs", "report", &v1).await, b"draft 1");
    assert_eq!(get_version(s3, "docs", "report", "null").await, b"draft 0");
    let head = s3
        .head_object()
        .bucket("docs")
        .key("report")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (head.version_id(), head.content_length()),
        (Some(v1.as_str()), Some(7))
    );
    let current = s3
        .head_object()
        .bucket("docs")
        .key("report")
        .send()
        .await
        .unwrap();
    assert_eq!(current.version_id(), Some(v2.as_str()));

    // A delete adds a marker: the key reads as missing, naming the marker.
    let deleted = s3
        .delete_object()
        .bucket("docs")
        .key("report")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.delete_marker(), Some(true));
    let marker = deleted.version_id().unwrap().to_string();
    let e = s3
        .get_object()
        .bucket("docs")
        .key("report")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e), status(&e)), ("NoSuchKey".to_string(), 404));
    let headers = e.raw_response().unwrap().headers();
    assert_eq!(headers.get("x-amz-delete-marker"), Some("true"));
    assert_eq!(headers.get("x-amz-version-id"), Some(marker.as_str()));
    // The marker itself has no data.
    let e = s3
        .get_object()
        .bucket("docs")
        .key("report")
        .version_id(&marker)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 405);
    assert_eq!(code(&e), "MethodNotAllowed");
    // The old versions are still there; listings of objects skip the key.
    assert_eq!(get_version(s3, "docs", "report", &v2).await, b"draft 2");
    let listed = s3.list_objects_v2().bucket("docs").send().await.unwrap();
    assert!(listed.contents().is_empty());
    let e = s3
        .get_object()
        .bucket("docs")
        .key("report")
        .version_id("AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");
    let e = s3
        .get_object()
        .bucket("docs")
        .key("report")
        .version_id("not a version")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");

    // Restoring an old version is copying it over the key.
    let copied = s3
        .copy_object()
        .bucket("docs")
        .key("report")
        .copy_source(format!("docs/report?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(copied.copy_source_version_id(), Some(v1.as_str()));
    let v3 = copied.version_id().unwrap().to_string();
    assert_eq!(get_bytes(s3, "docs", "report").await, b"draft 1");

    // A multipart completion adds a version too.
    let upload = s3
        .create_multipart_upload()
        .bucket("docs")
        .key("report")
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let part = s3
        .upload_part()
        .bucket("docs")
        .key("report")
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(test_data(10_000, 1)))
        .send()
        .await
        .unwrap();
    let completed = s3
        .complete_multipart_upload()
        .bucket("docs")
        .key("report")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let v4 = completed.version_id().unwrap().to_string();

    for key in ["other/a", "other/b", "other/b"] {
        put(s3, "docs", key, key.as_bytes()).await;
    }
    let expected_report = vec![
        ("report".to_string(), v4.clone(), true, false),
        ("report".to_string(), v3.clone(), false, false),
        ("report".to_string(), v2.clone(), false, false),
        ("report".to_string(), v1.clone(), false, false),
        ("report".to_string(), "null".to_string(), false, false),
        ("report".to_string(), marker.clone(), false, true),
    ];
    let whole = all_versions(s3, "docs", "report", 1000).await;
    assert_eq!(whole, expected_report);
    // Page by page, markers resume within a key.
    for max_keys in [1, 2, 4] {
        assert_eq!(
            all_versions(s3, "docs", "report", max_keys).await,
            expected_report,
            "pages of {max_keys}"
        );
    }
    let page = s3
        .list_object_versions()
        .bucket("docs")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<&str> = page
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, vec!["other/"]);
    assert_eq!(page.versions().len() + page.delete_markers().len(), 6);

    // Deleting a version for good: that version only.
    let gone = s3
        .delete_object()
        .bucket("docs")
        .key("report")
        .version_id(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.version_id(), Some(v2.as_str()));
    let e = s3
        .get_object()
        .bucket("docs")
        .key("report")
        .version_id(&v2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");
    // Deleting the marker for good says it was one.
    let unmarked = s3
        .delete_object()
        .bucket("docs")
        .key("report")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(unmarked.delete_marker(), Some(true));
    assert_eq!(all_versions(s3, "docs", "report", 1000).await.len(), 4);

    // DeleteObjects with versions: each named version goes.
    let batch = s3
        .delete_objects()
        .bucket("docs")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("report")
                        .version_id(&v3)
                        .build()
                        .unwrap(),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("report")
                        .version_id("null")
                        .build()
                        .unwrap(),
                )
                .objects(ObjectIdentifier::builder().key("other/a").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(batch.errors().is_empty(), "{:?}", batch.errors());
    let marker_of_a = batch
        .deleted()
        .iter()
        .find(|d| d.key() == Some("other/a"))
        .unwrap();
    assert_eq!(marker_of_a.delete_marker(), Some(true));
    assert!(marker_of_a.delete_marker_version_id().is_some());
    let left: Vec<String> = all_versions(s3, "docs", "report", 1000)
        .await
        .into_iter()
        .map(|(_, id, _, _)| id)
        .collect();
    assert_eq!(left, vec![v4.clone(), v1.clone()]);

    // A bucket with versions left is not empty.
    let e = s3.delete_bucket().bucket("docs").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");
    fx.shutdown().await;
}

async fn suspended_versioning_keeps_one_null_version(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("paused").send().await.unwrap();
    set_versioning(s3, "paused", BucketVersioningStatus::Enabled).await;
    let kept = put(s3, "paused", "k", b"versioned").await.unwrap();
    set_versioning(s3, "paused", BucketVersioningStatus::Suspended).await;
    let versioning = s3
        .get_bucket_versioning()
        .bucket("paused")
        .send()
        .await
        .unwrap();
    assert_eq!(
        versioning.status(),
        Some(&BucketVersioningStatus::Suspended)
    );

    // Writes while suspended replace the null version, and keep the others.
    assert_eq!(
        put(s3, "paused", "k", b"null one").await.as_deref(),
        Some("null")
    );
    assert_eq!(
        put(s3, "paused", "k", b"null two").await.as_deref(),
        Some("null")
    );
    let listed: Vec<(String, bool)> = all_versions(s3, "paused", "", 1000)
        .await
        .into_iter()
        .map(|(_, id, latest, _)| (id, latest))
        .collect();
    assert_eq!(listed, vec![("null".into(), true), (kept.clone(), false)]);
    assert_eq!(get_version(s3, "paused", "k", "null").await, b"null two");

    // A delete puts a null marker in the null version's place.
    let deleted = s3
        .delete_object()
        .bucket("paused")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (deleted.delete_marker(), deleted.version_id()),
        (Some(true), Some("null"))
    );
    let listed = all_versions(s3, "paused", "", 1000).await;
    assert_eq!(
        listed,
        vec![
            ("k".into(), kept.clone(), false, false),
            ("k".into(), "null".into(), true, true)
        ]
    );
    assert_eq!(get_version(s3, "paused", "k", &kept).await, b"versioned");

    // Versioning cannot be switched off once on.
    let e = s3
        .put_bucket_versioning()
        .bucket("paused")
        .versioning_configuration(VersioningConfiguration::builder().build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedXML");
    fx.shutdown().await;
}

async fn conditional_deletes_delete_only_what_they_name(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("cond").send().await.unwrap();
    let stored = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .body(ByteStream::from_static(b"precious"))
        .send()
        .await
        .unwrap();
    let etag = stored.e_tag().unwrap().to_string();

    // An If-Match that does not match deletes nothing (this was data loss).
    let e = s3
        .delete_object()
        .bucket("cond")
        .key("k")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e), status(&e)),
        ("PreconditionFailed".to_string(), 412)
    );
    assert_eq!(get_bytes(s3, "cond", "k").await, b"precious");
    let e = s3
        .delete_object()
        .bucket("cond")
        .key("k")
        .if_match(&etag)
        .if_match_size(3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed", "the size differs");
    assert_eq!(get_bytes(s3, "cond", "k").await, b"precious");

    // DeleteObjects: per object, the ETag must match.
    s3.put_object()
        .bucket("cond")
        .key("other")
        .body(ByteStream::from_static(b"other"))
        .send()
        .await
        .unwrap();
    let batch = s3
        .delete_objects()
        .bucket("cond")
        .delete(
            Delete::builder()
                .objects(
                    ObjectIdentifier::builder()
                        .key("k")
                        .e_tag("\"ffffffffffffffffffffffffffffffff\"")
                        .build()
                        .unwrap(),
                )
                .objects(
                    ObjectIdentifier::builder()
                        .key("other")
                        .e_tag(&etag)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(batch.deleted().is_empty());
    let codes: Vec<&str> = batch.errors().iter().filter_map(|e| e.code()).collect();
    assert_eq!(codes, vec!["PreconditionFailed", "PreconditionFailed"]);
    assert_eq!(get_bytes(s3, "cond", "k").await, b"precious");
    assert_eq!(get_bytes(s3, "cond", "other").await, b"other");

    // A matching If-Match deletes; on a key now free it is NoSuchKey.
    s3.delete_object()
        .bucket("cond")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    let e = s3
        .delete_object()
        .bucket("cond")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    // Without conditions a free key still answers 204.
    s3.delete_object()
        .bucket("cond")
        .key("k")
        .send()
        .await
        .unwrap();

    // A 304 carries the ETag and Last-Modified.
    let e = s3
        .get_object()
        .bucket("cond")
        .key("other")
        .if_none_match(
            s3.head_object()
                .bucket("cond")
                .key("other")
                .send()
                .await
                .unwrap()
                .e_tag()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 304);
    let headers = e.raw_response().unwrap().headers();
    assert!(headers.get("etag").is_some(), "a 304 names the ETag");
    assert!(headers.get("last-modified").is_some());
    fx.shutdown().await;
}
