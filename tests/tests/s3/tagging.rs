//! S3 object tagging end to end with `aws-sdk-s3` against the in-process
//! gateway, on both metabase backends: tags from `x-amz-tagging` on PUT,
//! multipart uploads and copies (with both tagging directives), read,
//! replaced and deleted in place without adding versions, per version, and
//! S3's limits; and the tags of buckets.

use crate::common::{code, upload_in_one_part, Fixture};
use archipel_client::{Error, Permissions, Project, Share, Version};
use archipel_tests::{on_both_backends, Backend};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, MetadataDirective, Tag, Tagging, TaggingDirective,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;

on_both_backends!(
    tags_live_with_their_version,
    tags_follow_copies_and_uploads,
    buckets_have_tags_of_their_own
);

async fn tags_of(s3: &Client, key: &str, version: Option<&str>) -> Vec<(String, String)> {
    let output = s3
        .get_object_tagging()
        .bucket("tagged")
        .key(key)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .unwrap();
    output
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

fn pairs(tags: &[(&str, &str)]) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tagging(tags: &[(&str, &str)]) -> Tagging {
    Tagging::builder()
        .set_tag_set(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
                .collect(),
        ))
        .build()
        .unwrap()
}

async fn tags_live_with_their_version(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let s3 = &fixture.client;
    s3.create_bucket().bucket("tagged").send().await.unwrap();
    s3.put_bucket_versioning()
        .bucket("tagged")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first = s3
        .put_object()
        .bucket("tagged")
        .key("report")
        .body(ByteStream::from_static(b"v1"))
        .tagging("project=blue%20sky&owner=me")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    assert_eq!(
        tags_of(s3, "report", None).await,
        pairs(&[("project", "blue sky"), ("owner", "me")])
    );
    let get = s3
        .get_object()
        .bucket("tagged")
        .key("report")
        .send()
        .await
        .unwrap();
    assert_eq!(get.tag_count(), Some(2));
    let second = s3
        .put_object()
        .bucket("tagged")
        .key("report")
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    assert!(tags_of(s3, "report", None).await.is_empty());

    // Replacing the old version's tags changes it in place: no version is
    // added, the current one keeps none, the data is untouched.
    let put = s3
        .put_object_tagging()
        .bucket("tagged")
        .key("report")
        .version_id(&first)
        .tagging(tagging(&[("stage", "final")]))
        .send()
        .await
        .unwrap();
    assert_eq!(put.version_id(), Some(first.as_str()));
    assert_eq!(
        tags_of(s3, "report", Some(&first)).await,
        pairs(&[("stage", "final")])
    );
    assert!(tags_of(s3, "report", Some(&second)).await.is_empty());
    let versions = s3
        .list_object_versions()
        .bucket("tagged")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2);
    let old = s3
        .get_object()
        .bucket("tagged")
        .key("report")
        .version_id(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(old.e_tag(), get.e_tag());
    assert_eq!(old.body.collect().await.unwrap().to_vec(), b"v1");
    let deleted = s3
        .delete_object_tagging()
        .bucket("tagged")
        .key("report")
        .version_id(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.version_id(), Some(first.as_str()));
    assert!(tags_of(s3, "report", Some(&first)).await.is_empty());

    // S3's limits, and keys that hold no object.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for bad in [eleven, vec![("k", "1"), ("k", "2")], vec![("aws:x", "y")]] {
        let refused = s3
            .put_object_tagging()
            .bucket("tagged")
            .key("report")
            .tagging(tagging(&bad))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&refused), "InvalidTag");
    }
    let refused = s3
        .put_object()
        .bucket("tagged")
        .key("other")
        .body(ByteStream::from_static(b"x"))
        .tagging("a=1&a=2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "InvalidTag");
    let missing = s3
        .put_object_tagging()
        .bucket("tagged")
        .key("nothing-here")
        .tagging(tagging(&[("a", "b")]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchKey");

    // Replacing metadata destroys what was there: a grant that may read
    // and write but not delete cannot, whatever client it uses.
    let full = fixture.planet.project().await.unwrap();
    let no_delete = Share {
        permissions: Permissions {
            delete: false,
            ..Permissions::READ_WRITE
        },
        prefixes: vec![("tagged".to_string(), String::new())],
        not_before: None,
        not_after: None,
    };
    let writer = Project::open(&full.share(&no_delete).await.unwrap())
        .await
        .unwrap();
    let refused = writer
        .update_metadata("tagged", "report", &Version::Current, |m| {
            m.insert("s3:tagging".into(), "stolen=1".into());
        })
        .await;
    assert!(
        matches!(refused, Err(Error::PermissionDenied(ref why)) if why.contains("deleting")),
        "{refused:?}"
    );
    assert!(tags_of(s3, "report", None).await.is_empty());
    fixture.shutdown().await;
}

async fn tags_follow_copies_and_uploads(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let s3 = &fixture.client;
    s3.create_bucket().bucket("tagged").send().await.unwrap();
    s3.put_object()
        .bucket("tagged")
        .key("source")
        .body(ByteStream::from_static(b"data"))
        .tagging("team=red")
        .metadata("colour", "green")
        .send()
        .await
        .unwrap();
    // COPY (the default) keeps the source's tags, whatever the metadata
    // directive; REPLACE takes the request's, and keeps the metadata.
    s3.copy_object()
        .bucket("tagged")
        .key("kept")
        .copy_source("tagged/source")
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("tagged")
        .key("new-metadata")
        .copy_source("tagged/source")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("colour", "blue")
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("tagged")
        .key("new-tags")
        .copy_source("tagged/source")
        .tagging_directive(TaggingDirective::Replace)
        .tagging("team=blue&tier=gold")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(s3, "kept", None).await, pairs(&[("team", "red")]));
    assert_eq!(
        tags_of(s3, "new-metadata", None).await,
        pairs(&[("team", "red")])
    );
    assert_eq!(
        tags_of(s3, "new-tags", None).await,
        pairs(&[("team", "blue"), ("tier", "gold")])
    );
    let head = s3
        .head_object()
        .bucket("tagged")
        .key("new-tags")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("colour").map(String::as_str),
        Some("green")
    );

    upload_in_one_part(
        s3,
        s3.create_multipart_upload()
            .bucket("tagged")
            .key("parts")
            .tagging("kind=archive"),
        b"part",
    )
    .await;
    assert_eq!(
        tags_of(s3, "parts", None).await,
        pairs(&[("kind", "archive")])
    );
    fixture.shutdown().await;
}

async fn buckets_have_tags_of_their_own(backend: Backend) {
    let fixture = Fixture::start(backend).await;
    let s3 = &fixture.client;
    s3.create_bucket().bucket("costs").send().await.unwrap();
    let none = s3
        .get_bucket_tagging()
        .bucket("costs")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&none), "NoSuchTagSet");
    s3.put_bucket_tagging()
        .bucket("costs")
        .tagging(tagging(&[("team", "storage"), ("budget", "q3")]))
        .send()
        .await
        .unwrap();
    let read = s3
        .get_bucket_tagging()
        .bucket("costs")
        .send()
        .await
        .unwrap();
    let read: Vec<(String, String)> = read
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert_eq!(read, pairs(&[("team", "storage"), ("budget", "q3")]));
    // Up to 50 on a bucket, more than an object's 10.
    let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s3.put_bucket_tagging()
        .bucket("costs")
        .tagging(tagging(&many[..50]))
        .send()
        .await
        .unwrap();
    let refused = s3
        .put_bucket_tagging()
        .bucket("costs")
        .tagging(tagging(&many))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "InvalidTag");
    s3.delete_bucket_tagging()
        .bucket("costs")
        .send()
        .await
        .unwrap();
    let gone = s3
        .get_bucket_tagging()
        .bucket("costs")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NoSuchTagSet");
    let missing = s3
        .get_bucket_tagging()
        .bucket("no-such-bucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchBucket");
    fixture.shutdown().await;
}
