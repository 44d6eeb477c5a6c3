//! The edges of S3 that conformance suites probe, end to end with
//! `aws-sdk-s3` against the in-process gateway on both metabase backends:
//! bucket names and location constraints, request ids, `max-keys=0`,
//! malformed and wrong digests,
//! owners in listings, ListBuckets pages,
//! DeleteObjects' key limit, a bucket deleted while only incomplete
//! multipart uploads remain in it, and clients with their default settings
//! (signing for another region, or with SigV2).

use crate::common::{code, raw_request, s3_client, Fixture};
use archipel_tests::{on_both_backends, Backend};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use base64::Engine;

on_both_backends!(
    listing_and_deleting_edges,
    clients_with_their_default_settings
);

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

    // Digests that are not digests are refused before anything is stored;
    // well-formed ones that differ from the body are BadDigest.
    let put = || {
        s3.put_object()
            .bucket("edge-a")
            .key("digest")
            .body(ByteStream::from_static(b"body"))
    };
    let malformed_md5 = put().content_md5("not an md5").send().await.unwrap_err();
    assert_eq!(code(&malformed_md5), "InvalidDigest");
    let malformed_crc = put().checksum_crc32("###").send().await.unwrap_err();
    assert_eq!(code(&malformed_crc), "InvalidRequest");
    let wrong_crc = put().checksum_crc32("AAAAAA==").send().await.unwrap_err();
    assert_eq!(code(&wrong_crc), "BadDigest");
    let nothing = s3
        .head_object()
        .bucket("edge-a")
        .key("digest")
        .send()
        .await
        .unwrap_err();
    assert_eq!(crate::common::status(&nothing), 404);

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

/// A SigV2 `Authorization` header (and its `Date`) for a request without a
/// body or `x-amz-*` headers.
fn sigv2_headers(
    method: &str,
    resource: &str,
    key_id: &str,
    secret: &str,
) -> Vec<(&'static str, String)> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let string_to_sign = format!("{method}\n\n\n{date}\n{resource}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    vec![
        ("Date", date),
        ("Authorization", format!("AWS {key_id}:{signature}")),
    ]
}

/// Tools that sign for a region the gateway does not name work, as the
/// signature covers the region they name; one s3s cannot read (some tools
/// default to `US`) gets the `AuthorizationHeaderMalformed` answer naming the
/// region to retry with. SigV2-signed
/// requests work on buckets as on objects, and a wrong SigV2 signature is
/// `SignatureDoesNotMatch`.
async fn clients_with_their_default_settings(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let credential = &fx.config.credentials[0];
    let (key_id, secret) = (&credential.access_key_id, &credential.secret_access_key);
    fx.client
        .create_bucket()
        .bucket("regions")
        .send()
        .await
        .unwrap();
    let client_for = |region: &str| {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&fx.endpoint)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                key_id, secret, None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    };
    // A region name of the usual form works as it is.
    let elsewhere = client_for("eu-west-1");
    elsewhere
        .put_object()
        .bucket("regions")
        .key("eu-west-1")
        .body(ByteStream::from_static(b"eu"))
        .send()
        .await
        .unwrap();
    let listed = elsewhere
        .list_objects_v2()
        .bucket("regions")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents()[0].key(), Some("eu-west-1"));
    // `US` gets AuthorizationHeaderMalformed naming the region to sign for.
    let refused = client_for("US")
        .list_objects_v2()
        .bucket("regions")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "AuthorizationHeaderMalformed");
    let raw = refused.raw_response().unwrap().body().bytes().unwrap();
    let raw = String::from_utf8_lossy(raw);
    assert!(raw.contains("<Region>us-east-1</Region>"), "{raw}");
    let us = s3_client(&fx.endpoint, key_id, secret);
    assert_eq!(
        crate::common::get_bytes(&us, "regions", "eu-west-1").await,
        b"eu"
    );

    let (status, body) = raw_request(
        &fx.endpoint,
        "GET",
        "/regions/",
        &sigv2_headers("GET", "/regions/", key_id, secret),
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Key>eu-west-1</Key>"), "{body}");
    let (status, body) = raw_request(
        &fx.endpoint,
        "GET",
        "/regions/eu-west-1",
        &sigv2_headers("GET", "/regions/eu-west-1", key_id, secret),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"eu"[..]));
    let (status, body) = raw_request(
        &fx.endpoint,
        "GET",
        "/regions/",
        &sigv2_headers("GET", "/regions/", key_id, "not the secret"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    fx.shutdown().await;
}
