//! The edges of S3 that conformance suites probe, end to end with
//! `aws-sdk-s3` against the in-process gateway on both metabase backends:
//! bucket names and location constraints, request ids, `max-keys=0`,
//! owners in listings, ListBuckets pages,
//! DeleteObjects' key limit, and a bucket deleted while only incomplete
//! multipart uploads remain in it.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

mod common;

use archipel_tests::{on_both_backends, Backend};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use common::{code, Fixture};

on_both_backends!(listing_and_deleting_edges);

async fn listing_and_deleting_edges(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    for bucket in ["edge-a", "edge-b", "edge-c", "other"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    s3.put_object()
        .bucket("edge-a")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    // Bucket names are checked with S3's code; a location constraint
    // other than the gateway's region is refused.
    for bad in ["ab", "UPPER", "under_score", "-edge", "a..b", "192.168.1.1"] {
        let e = s3.create_bucket().bucket(bad).send().await.unwrap_err();
        assert_eq!(code(&e), "InvalidBucketName", "{bad}");
    }
    let e = s3
        .create_bucket()
        .bucket("elsewhere")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IllegalLocationConstraintException");
    // Errors name their request, in the XML and in x-amz-request-id.
    let body = String::from_utf8_lossy(e.raw_response().unwrap().body().bytes().unwrap());
    let id = e.request_id().unwrap();
    assert_eq!(id.len(), 16);
    assert!(
        body.contains(&format!("<RequestId>{id}</RequestId>")),
        "{body}"
    );

    // max-keys=0: nothing, and not truncated.
    let empty = s3
        .list_objects_v2()
        .bucket("edge-a")
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(empty.contents().is_empty());
    assert_eq!(empty.is_truncated(), Some(false));
    let empty = s3
        .list_object_versions()
        .bucket("edge-a")
        .max_keys(0)
        .send()
        .await
        .unwrap();
    assert!(empty.versions().is_empty());
    assert_eq!(empty.is_truncated(), Some(false));

    // Owners: ListObjects v1 names them, v2 with fetch-owner only.
    let key_id = fx.config.credentials[0].access_key_id.as_str();
    let v2 = s3.list_objects_v2().bucket("edge-a").send().await.unwrap();
    assert_eq!(v2.contents()[0].owner(), None);
    let v2 = s3
        .list_objects_v2()
        .bucket("edge-a")
        .fetch_owner(true)
        .send()
        .await
        .unwrap();
    assert_eq!(v2.contents()[0].owner().and_then(|o| o.id()), Some(key_id));
    let v1 = s3.list_objects().bucket("edge-a").send().await.unwrap();
    assert_eq!(v1.contents()[0].owner().and_then(|o| o.id()), Some(key_id));

    // ListBuckets pages with max-buckets and a continuation token, and a prefix.
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_buckets()
            .max_buckets(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.buckets().len() <= 2);
        names.extend(page.buckets().iter().map(|b| b.name().unwrap().to_string()));
        token = page.continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, vec!["edge-a", "edge-b", "edge-c", "other"]);
    let prefixed = s3.list_buckets().prefix("edge-").send().await.unwrap();
    assert_eq!(prefixed.buckets().len(), 3);
    assert_eq!(prefixed.prefix(), Some("edge-"));

    // DeleteObjects names at most 1000 keys.
    let mut too_many = Delete::builder();
    for i in 0..1001 {
        too_many = too_many.objects(
            ObjectIdentifier::builder()
                .key(format!("k{i}"))
                .build()
                .unwrap(),
        );
    }
    let e = s3
        .delete_objects()
        .bucket("edge-a")
        .delete(too_many.build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedXML");

    // A bucket with only an incomplete multipart upload in it is deleted,
    // the upload with it.
    let upload = s3
        .create_multipart_upload()
        .bucket("edge-b")
        .key("unfinished")
        .send()
        .await
        .unwrap();
    s3.upload_part()
        .bucket("edge-b")
        .key("unfinished")
        .upload_id(upload.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from(vec![7; 100_000]))
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket("edge-b").send().await.unwrap();
    let e = s3
        .list_multipart_uploads()
        .bucket("edge-b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");
    // One with an object still is not.
    let e = s3
        .delete_bucket()
        .bucket("edge-a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");
    fx.shutdown().await;
}
