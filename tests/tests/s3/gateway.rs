//! The S3 gateway end to end: a planet, the gateway in-process on
//! 127.0.0.1:0 configured by `setup`, and the real `aws-sdk-s3` client (plus a
//! raw HTTP request for presigned URLs).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::common::{code, get_bytes, raw_get, s3_client, status, Fixture};
use archipel_client::UploadOptions;
use archipel_gateway::Config;
use archipel_tests::{on_both_backends, test_data, wait_for, Backend, Planet, PlanetConfig};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, Delete,
    ObjectAttributes, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn quoted_md5_of_hello_world() -> &'static str {
    "\"5eb63bbbe01eeed093cb22bb8f5acdc3\""
}

async fn bucket_and_object_crud(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;

    s3.create_bucket().bucket("photos").send().await.unwrap();
    // As S3 in us-east-1 (the gateway's region here): your own bucket again is a success.
    s3.create_bucket().bucket("photos").send().await.unwrap();
    let buckets = s3.list_buckets().send().await.unwrap();
    let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["photos"]);
    s3.head_bucket().bucket("photos").send().await.unwrap();
    let missing = s3.head_bucket().bucket("nope").send().await.unwrap_err();
    assert_eq!(status(&missing), 404);
    let location = s3
        .get_bucket_location()
        .bucket("photos")
        .send()
        .await
        .unwrap();
    // The default region is an empty location constraint, as on S3.
    assert_eq!(
        location.location_constraint().map_or("", |c| c.as_str()),
        ""
    );

    // Put with headers and user metadata; the ETag is the content's MD5.
    let put = s3
        .put_object()
        .bucket("photos")
        .key("notes/hello.txt")
        .body(ByteStream::from_static(b"hello world"))
        .content_type("text/plain; charset=utf-8")
        .content_encoding("identity")
        .content_disposition("attachment; filename=\"hello.txt\"")
        .cache_control("max-age=60")
        .metadata("colour", "blue")
        .metadata("Owner-Name", "Ada")
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some(quoted_md5_of_hello_world()));

    let got = s3
        .get_object()
        .bucket("photos")
        .key("notes/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(quoted_md5_of_hello_world()));
    assert_eq!(got.content_type(), Some("text/plain; charset=utf-8"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(
        got.content_disposition(),
        Some("attachment; filename=\"hello.txt\"")
    );
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert_eq!(got.content_length(), Some(11));
    let metadata = got.metadata().unwrap();
    assert_eq!(metadata.get("colour").map(String::as_str), Some("blue"));
    assert_eq!(metadata.get("owner-name").map(String::as_str), Some("Ada"));
    assert!(got.last_modified().is_some());
    assert_eq!(got.body.collect().await.unwrap().to_vec(), b"hello world");

    let head = s3
        .head_object()
        .bucket("photos")
        .key("notes/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(11));
    assert_eq!(head.e_tag(), Some(quoted_md5_of_hello_world()));
    assert_eq!(head.content_type(), Some("text/plain; charset=utf-8"));

    // A multi-segment object, streamed without and with Content-MD5.
    let large = test_data(3 * (1 << 20) + 17, 7);
    let large_md5 = format!("{:x}", md5_of(&large));
    let put = s3
        .put_object()
        .bucket("photos")
        .key("large.bin")
        .body(ByteStream::from(large.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some(format!("\"{large_md5}\"").as_str()));
    assert!(get_bytes(s3, "photos", "large.bin").await == large);
    let put = s3
        .put_object()
        .bucket("photos")
        .key("large-md5.bin")
        .content_md5(base64_md5(&large))
        .body(ByteStream::from(large.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.e_tag(), Some(format!("\"{large_md5}\"").as_str()));
    assert!(get_bytes(s3, "photos", "large-md5.bin").await == large);

    // A body that does not match its Content-MD5 is refused and not stored.
    // It has its own bucket: the aborted upload stays a pending object on the
    // satellite, which keeps the bucket from being deleted until the pending
    // cleanup (see the gateway report).
    s3.create_bucket().bucket("digests").send().await.unwrap();
    let bad = s3
        .put_object()
        .bucket("digests")
        .key("bad.bin")
        .content_md5(base64_md5(b"something else"))
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&bad), "BadDigest");
    let gone = s3
        .get_object()
        .bucket("digests")
        .key("bad.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NoSuchKey");

    // An empty object.
    s3.put_object()
        .bucket("photos")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    assert!(get_bytes(s3, "photos", "empty").await.is_empty());

    // Objects stored with the client library directly show through too.
    let project = fx.planet.project().await.unwrap();
    let mut options = UploadOptions::default();
    options.metadata.insert("origin".into(), "cli".into());
    project
        .upload("photos", "from-cli", &b"native"[..], options)
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("photos")
        .key("from-cli")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), None);
    assert_eq!(
        got.metadata().unwrap().get("origin").map(String::as_str),
        Some("cli")
    );

    let not_empty = s3
        .delete_bucket()
        .bucket("photos")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&not_empty), "BucketNotEmpty");

    for key in [
        "notes/hello.txt",
        "large.bin",
        "large-md5.bin",
        "empty",
        "from-cli",
    ] {
        s3.delete_object()
            .bucket("photos")
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let deleted = s3
        .get_object()
        .bucket("photos")
        .key("notes/hello.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&deleted), "NoSuchKey");
    // Deleting what is already gone succeeds, as on S3.
    s3.delete_object()
        .bucket("photos")
        .key("notes/hello.txt")
        .send()
        .await
        .unwrap();
    let no_bucket = s3
        .get_object()
        .bucket("nope")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&no_bucket), "NoSuchBucket");
    let no_bucket = s3
        .put_object()
        .bucket("nope")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&no_bucket), "NoSuchBucket");

    s3.delete_bucket().bucket("photos").send().await.unwrap();
    let buckets = s3.list_buckets().send().await.unwrap();
    let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["digests"]);
    let no_bucket = s3
        .delete_bucket()
        .bucket("photos")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&no_bucket), "NoSuchBucket");
    fx.shutdown().await;
}

on_both_backends!(
    bucket_and_object_crud,
    multipart_uploads,
    multipart_checksums,
    server_side_copies_share_pieces_until_the_last_copy_goes,
    overlapping_uploads_of_a_part_never_mix
);

fn md5_of(data: &[u8]) -> u128 {
    // The gateway's ETag must be the standard MD5; md-5 is the gateway's own
    // dependency, so the test checks against an independent implementation.
    u128::from_be_bytes(md5_reference::digest(data))
}

fn base64_md5(data: &[u8]) -> String {
    base64(&md5_reference::digest(data))
}

/// Standard base64 with padding, as S3 headers carry digests.
fn base64(digest: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// RFC 1321 MD5, small and slow, for checking ETags.
mod md5_reference {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];

    pub fn digest(data: &[u8]) -> [u8; 16] {
        let k: Vec<u32> = (0..64)
            .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
            .collect();
        let mut message = data.to_vec();
        message.push(0x80);
        while message.len() % 64 != 56 {
            message.push(0);
        }
        message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
        let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
        for block in message.chunks(64) {
            let m: Vec<u32> = block
                .chunks(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let [mut a, mut b, mut c, mut d] = h;
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f.rotate_left(S[i]));
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d]) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 16];
        for (i, word) in h.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            format!("{:032x}", u128::from_be_bytes(digest(b""))),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            format!("{:032x}", u128::from_be_bytes(digest(b"hello world"))),
            "5eb63bbbe01eeed093cb22bb8f5acdc3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_conditional_requests() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("ranges").send().await.unwrap();
    let data = test_data(100_000, 3);
    let put = s3
        .put_object()
        .bucket("ranges")
        .key("obj")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();

    for (range, start, end) in [
        ("bytes=0-9", 0, 10),
        ("bytes=99990-", 99_990, 100_000),
        ("bytes=-5", 99_995, 100_000),
        ("bytes=50-200000", 50, 100_000),
        ("bytes=65530-65545", 65_530, 65_546),
    ] {
        let got = s3
            .get_object()
            .bucket("ranges")
            .key("obj")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.content_range(),
            Some(format!("bytes {start}-{}/100000", end - 1).as_str()),
            "{range}"
        );
        assert_eq!(got.content_length(), Some((end - start) as i64));
        let body = got.body.collect().await.unwrap().to_vec();
        assert!(body == data[start..end], "{range}");
    }
    let invalid = s3
        .get_object()
        .bucket("ranges")
        .key("obj")
        .range("bytes=100000-")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&invalid), "InvalidRange");
    assert_eq!(status(&invalid), 416);

    // Conditional GETs.
    let past = DateTime::from(SystemTime::now() - Duration::from_secs(3600));
    let future = DateTime::from(SystemTime::now() + Duration::from_secs(3600));
    let get = || s3.get_object().bucket("ranges").key("obj");
    get().if_match(&etag).send().await.unwrap();
    get().if_none_match("\"other\"").send().await.unwrap();
    get().if_modified_since(past).send().await.unwrap();
    get().if_unmodified_since(future).send().await.unwrap();
    let e = get().if_match("\"other\"").send().await.unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("PreconditionFailed", 412));
    let e = get().if_unmodified_since(past).send().await.unwrap_err();
    assert_eq!(status(&e), 412);
    let e = get().if_none_match(&etag).send().await.unwrap_err();
    assert_eq!(status(&e), 304);
    let e = get().if_none_match("*").send().await.unwrap_err();
    assert_eq!(status(&e), 304);
    let e = get().if_modified_since(future).send().await.unwrap_err();
    assert_eq!(status(&e), 304);
    let head = s3
        .head_object()
        .bucket("ranges")
        .key("obj")
        .if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&head), 304);
    let head = s3
        .head_object()
        .bucket("ranges")
        .key("obj")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(100_000));
    fx.shutdown().await;
}

/// Every key of a V2 listing, page by page with `max_keys` and continuation.
async fn list_all_v2(s3: &Client, bucket: &str, max_keys: i32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(max_keys)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.contents().len() <= max_keys as usize);
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() == Some(true) {
            token = page.next_continuation_token().map(str::to_string);
            assert!(token.is_some());
        } else {
            return keys;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_multi_delete() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("list").send().await.unwrap();
    let keys = [
        "a/b/c.txt",
        "a/b/d.txt",
        "a/e.txt",
        "dir-1-x",
        "dir-2-y",
        "f.txt",
        "x y/z&=+?.txt",
        "ü/ñ key.txt",
        "日本/語",
    ];
    for (i, key) in keys.iter().enumerate() {
        s3.put_object()
            .bucket("list")
            .key(*key)
            .body(ByteStream::from(test_data(i, i as u64)))
            .send()
            .await
            .unwrap();
    }
    // Keys with spaces and non-ASCII characters round-trip.
    assert_eq!(get_bytes(s3, "list", "ü/ñ key.txt").await, test_data(7, 7));
    assert_eq!(
        get_bytes(s3, "list", "x y/z&=+?.txt").await,
        test_data(6, 6)
    );

    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(list_all_v2(s3, "list", 1000).await, sorted);
    assert_eq!(list_all_v2(s3, "list", 2).await, sorted);

    let all = s3.list_objects_v2().bucket("list").send().await.unwrap();
    assert_eq!(all.key_count(), Some(keys.len() as i32));
    let sizes: Vec<i64> = all.contents().iter().map(|o| o.size().unwrap()).collect();
    let expected: Vec<i64> = sorted
        .iter()
        .map(|k| keys.iter().position(|x| x == k).unwrap() as i64)
        .collect();
    assert_eq!(sizes, expected);

    let level = |prefix: &'static str, delimiter: &'static str| {
        s3.list_objects_v2()
            .bucket("list")
            .prefix(prefix)
            .delimiter(delimiter)
            .send()
    };
    let names = |out: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output| {
        (
            out.contents()
                .iter()
                .map(|o| o.key().unwrap().to_string())
                .collect::<Vec<_>>(),
            out.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
    };
    let root = level("", "/").await.unwrap();
    assert_eq!(
        names(&root),
        (
            vec!["dir-1-x".into(), "dir-2-y".into(), "f.txt".into()],
            vec!["a/".into(), "x y/".into(), "ü/".into(), "日本/".into()]
        )
    );
    let a = level("a/", "/").await.unwrap();
    assert_eq!(names(&a), (vec!["a/e.txt".into()], vec!["a/b/".into()]));
    let partial = level("a/b", "/").await.unwrap();
    assert_eq!(names(&partial), (vec![], vec!["a/b/".into()]));
    let deep = level("a/b/", "/").await.unwrap();
    assert_eq!(
        names(&deep),
        (vec!["a/b/c.txt".into(), "a/b/d.txt".into()], vec![])
    );
    let dashes = level("dir", "-").await.unwrap();
    assert_eq!(names(&dashes), (vec![], vec!["dir-".into()]));
    let prefixed = s3
        .list_objects_v2()
        .bucket("list")
        .prefix("a/")
        .send()
        .await
        .unwrap();
    assert_eq!(names(&prefixed).0, ["a/b/c.txt", "a/b/d.txt", "a/e.txt"]);

    // Paging through a delimited level: prefixes count towards max-keys.
    let first = s3
        .list_objects_v2()
        .bucket("list")
        .delimiter("/")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    assert_eq!(names(&first), (vec!["dir-1-x".into()], vec!["a/".into()]));
    assert_eq!(first.is_truncated(), Some(true));
    let second = s3
        .list_objects_v2()
        .bucket("list")
        .delimiter("/")
        .max_keys(2)
        .continuation_token(first.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        names(&second),
        (vec!["dir-2-y".into(), "f.txt".into()], vec![])
    );
    let after = s3
        .list_objects_v2()
        .bucket("list")
        .start_after("f.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(names(&after).0, ["x y/z&=+?.txt", "ü/ñ key.txt", "日本/語"]);

    // ListObjects (v1) with markers.
    let mut v1_keys = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = s3
            .list_objects()
            .bucket("list")
            .max_keys(4)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        v1_keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() != Some(true) {
            break;
        }
        marker = Some(page.next_marker().unwrap().to_string());
    }
    assert_eq!(v1_keys, sorted);
    let v1_root = s3
        .list_objects()
        .bucket("list")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = v1_root
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["a/", "x y/", "ü/", "日本/"]);

    let missing = s3
        .list_objects_v2()
        .bucket("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchBucket");

    // Multi-object delete: missing keys count as deleted, as on S3.
    let ids = ["a/e.txt", "f.txt", "never-there"]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
        .collect::<Vec<_>>();
    let deleted = s3
        .delete_objects()
        .bucket("list")
        .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    let mut gone: Vec<_> = deleted.deleted().iter().filter_map(|d| d.key()).collect();
    gone.sort();
    assert_eq!(gone, ["a/e.txt", "f.txt", "never-there"]);
    assert!(deleted.errors().is_empty());
    let rest: Vec<_> = sorted
        .iter()
        .filter(|k| *k != "a/e.txt" && *k != "f.txt")
        .cloned()
        .collect();
    assert_eq!(list_all_v2(s3, "list", 1000).await, rest);
    let quiet_ids = rest
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
        .collect::<Vec<_>>();
    let quiet = s3
        .delete_objects()
        .bucket("list")
        .delete(
            Delete::builder()
                .set_objects(Some(quiet_ids))
                .quiet(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(quiet.deleted().is_empty());
    assert!(list_all_v2(s3, "list", 1000).await.is_empty());
    s3.delete_bucket().bucket("list").send().await.unwrap();
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("private").send().await.unwrap();
    s3.put_object()
        .bucket("private")
        .key("dir/secret file.txt")
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap();

    let key_id = &fx.config.credentials[0].access_key_id;
    let wrong = s3_client(&fx.endpoint, key_id, &"x".repeat(40));
    let e = wrong.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    let e = wrong
        .get_object()
        .bucket("private")
        .key("dir/secret file.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    let unknown = s3_client(&fx.endpoint, "AKIAUNKNOWNUNKNOWN00", &"x".repeat(40));
    let e = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(status(&e), 403);

    // Unsigned requests are refused.
    let (status_code, _) = raw_get(&fx.endpoint, "/private/dir/secret%20file.txt").await;
    assert_eq!(status_code, 403);

    // A presigned GET works from a plain HTTP client, and only unmodified.
    let presigned = s3
        .get_object()
        .bucket("private")
        .key("dir/secret file.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let path = fx.path_of(&presigned);
    let (status_code, body) = raw_get(&fx.endpoint, &path).await;
    assert_eq!(status_code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"hello world");
    let tampered = path.replace("secret%20file", "secret%20filf");
    let (status_code, body) = raw_get(&fx.endpoint, &tampered).await;
    assert_eq!(status_code, 403);
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    // Once its time is past it is refused with AccessDenied, as on S3.
    let brief = s3
        .get_object()
        .bucket("private")
        .key("dir/secret file.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(1)).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status_code, body) = raw_get(&fx.endpoint, &fx.path_of(&brief)).await;
    assert_eq!(status_code, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    fx.shutdown().await;
}

/// Reads from `stream` until the server closes it; fails the test if that
/// takes longer than `deadline` (the server never cut the client off).
async fn until_closed(stream: &mut tokio::net::TcpStream, deadline: Duration) -> Vec<u8> {
    let mut response = Vec::new();
    tokio::time::timeout(deadline, stream.read_to_end(&mut response))
        .await
        .expect("the gateway kept a stalled connection open")
        .ok();
    response
}

/// Nobody holds the gateway up for free: headers trickled in a byte at a time
/// are cut off, an upload whose body stalls fails without storing anything,
/// and a presigned URL valid for more than seven days is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_are_cut_off() {
    let fx = Fixture::start_with(Backend::Sqlite, |config, _| {
        config.header_read_timeout = Duration::from_secs(1);
        config.body_idle_timeout = Duration::from_secs(1);
    })
    .await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("limits").send().await.unwrap();
    let host = fx.endpoint.strip_prefix("http://").unwrap().to_string();

    // Slowloris: one byte of the request head every 200 ms would take 20 s.
    let head = format!(
        "GET /limits HTTP/1.1\r\nHost: {host}\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(60)
    );
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut sent = 0;
    for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                until_closed(&mut stream, Duration::from_secs(10)).await;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(sent < head.len(), "the whole trickled head was taken");

    // An upload that sends 10 of its 1000 bytes and stalls.
    let presigned = s3
        .put_object()
        .bucket("limits")
        .key("stalled")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let path = fx.path_of(&presigned);
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let request =
        format!("PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n0123456789");
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = until_closed(&mut stream, Duration::from_secs(30)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
    let e = s3
        .head_object()
        .bucket("limits")
        .key("stalled")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 404);

    // Presigned URLs: seven days is the most, as on AWS.
    s3.put_object()
        .bucket("limits")
        .key("shared")
        .body(ByteStream::from_static(b"for a week"))
        .send()
        .await
        .unwrap();
    let week = s3
        .get_object()
        .bucket("limits")
        .key("shared")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(604_800)).unwrap())
        .await
        .unwrap();
    let path = fx.path_of(&week);
    assert!(path.contains("X-Amz-Expires=604800"), "{path}");
    let (status_code, body) = raw_get(&fx.endpoint, &path).await;
    assert_eq!(status_code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"for a week");
    let longer = path.replace("X-Amz-Expires=604800", "X-Amz-Expires=604801");
    let (status_code, body) = raw_get(&fx.endpoint, &longer).await;
    assert_eq!(status_code, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("<Code>AuthorizationQueryParametersError</Code>"),
        "{body}"
    );
    // A negative validity is expired from the start.
    let negative = path.replace("X-Amz-Expires=604800", "X-Amz-Expires=-1");
    let (status_code, body) = raw_get(&fx.endpoint, &negative).await;
    assert_eq!(status_code, 403);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    fx.shutdown().await;
}

/// Each configured key pair acts with its own grant: two grants with
/// different passphrases share the project's buckets but cannot read each
/// other's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_bound_to_their_grants() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let other_access = archipel_client::Access::request(
        &planet.satellite_url(),
        &planet.api_key,
        "another passphrase",
    )
    .await
    .unwrap();
    let credential = |id: &str, access: &archipel_client::Access| archipel_gateway::Credential {
        access_key_id: id.to_string(),
        secret_access_key: format!("{id}-secret-key-of-forty-characters-xxxx"),
        access: access.serialize(),
    };
    let config = Config::new(vec![
        credential("FIRSTKEYFIRSTKEY0001", planet.access()),
        credential("SECONDKEYSECONDKEY02", &other_access),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let gateway = tokio::spawn(archipel_gateway::run(
        config.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let first = s3_client(
        &endpoint,
        "FIRSTKEYFIRSTKEY0001",
        &config.credentials[0].secret_access_key,
    );
    let second = s3_client(
        &endpoint,
        "SECONDKEYSECONDKEY02",
        &config.credentials[1].secret_access_key,
    );
    first.create_bucket().bucket("shared").send().await.unwrap();
    first
        .put_object()
        .bucket("shared")
        .key("mine")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .unwrap();
    second
        .put_object()
        .bucket("shared")
        .key("theirs")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap();
    let listed = |client: Client| async move {
        client
            .list_objects_v2()
            .bucket("shared")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(first.clone()).await, ["mine"]);
    assert_eq!(listed(second.clone()).await, ["theirs"]);
    assert_eq!(get_bytes(&second, "shared", "theirs").await, b"second");
    let e = second
        .get_object()
        .bucket("shared")
        .key("mine")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    // A secret only signs for its own key id.
    let crossed = s3_client(
        &endpoint,
        "FIRSTKEYFIRSTKEY0001",
        &config.credentials[1].secret_access_key,
    );
    let e = crossed.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
    planet.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_object() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("src").send().await.unwrap();
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let data = test_data(2 * (1 << 20) + 5, 11);
    let put = s3
        .put_object()
        .bucket("src")
        .key("a b/ü.bin")
        .content_type("application/x-test")
        .metadata("colour", "red")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();

    // COPY keeps content, headers and the ETag.
    let copied = s3
        .copy_object()
        .copy_source("src/a%20b/%C3%BC.bin")
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        copied.copy_object_result().unwrap().e_tag(),
        Some(etag.as_str())
    );
    let got = s3
        .get_object()
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-test"));
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    assert_eq!(
        got.metadata().unwrap().get("colour").map(String::as_str),
        Some("red")
    );
    assert!(got.body.collect().await.unwrap().to_vec() == data);

    // REPLACE takes the request's headers, also onto the object itself.
    s3.copy_object()
        .copy_source("src/a%20b/%C3%BC.bin")
        .bucket("src")
        .key("a b/ü.bin")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/plain")
        .metadata("colour", "green")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("src")
        .key("a b/ü.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    assert_eq!(
        head.metadata().unwrap().get("colour").map(String::as_str),
        Some("green")
    );
    assert!(get_bytes(s3, "src", "a b/ü.bin").await == data);

    // Onto itself without REPLACE is refused, as on S3.
    let e = s3
        .copy_object()
        .copy_source("src/a%20b/%C3%BC.bin")
        .bucket("src")
        .key("a b/ü.bin")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    // Copy-source conditions.
    let e = s3
        .copy_object()
        .copy_source("src/a%20b/%C3%BC.bin")
        .copy_source_if_match("\"other\"")
        .bucket("dst")
        .key("never")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    let e = s3
        .copy_object()
        .copy_source("src/missing")
        .bucket("dst")
        .key("never")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");

    // An object without an ETag (stored by the client library) is copied
    // without one too: the copy reads no data to compute it.
    let project = fx.planet.project().await.unwrap();
    project
        .upload(
            "src",
            "native",
            &b"hello world"[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    let copied = s3
        .copy_object()
        .copy_source("src/native")
        .bucket("dst")
        .key("native-copy")
        .send()
        .await
        .unwrap();
    assert_eq!(copied.copy_object_result().unwrap().e_tag(), None);
    assert_eq!(get_bytes(s3, "dst", "native-copy").await, b"hello world");
    fx.shutdown().await;
}

/// A download that fails after the headers went out breaks the body instead
/// of ending it short; a part copy whose source cannot be read stores
/// nothing, while a CopyObject, which reads no data, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_downloads_are_never_short_successes() {
    let mut fx = Fixture::start(Backend::Sqlite).await;
    let s3 = fx.client.clone();
    s3.create_bucket().bucket("fragile").send().await.unwrap();
    let data = test_data(300_000, 5);
    s3.put_object()
        .bucket("fragile")
        .key("obj")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let upload = create_upload(&s3, "fragile", "assembled").await;
    // Fewer nodes than the 4 pieces a segment needs stay up.
    for i in 0..7 {
        fx.planet.stop_node(i).await.unwrap();
    }
    match s3.get_object().bucket("fragile").key("obj").send().await {
        Ok(output) => assert!(output.body.collect().await.is_err()),
        Err(e) => assert!(status(&e) >= 500),
    }
    let e = s3
        .upload_part_copy()
        .bucket("fragile")
        .key("assembled")
        .upload_id(&upload)
        .part_number(1)
        .copy_source("fragile/obj")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InternalError");
    let parts = s3
        .list_parts()
        .bucket("fragile")
        .key("assembled")
        .upload_id(&upload)
        .send()
        .await
        .unwrap();
    assert!(parts.parts().is_empty());
    s3.copy_object()
        .copy_source("fragile/obj")
        .bucket("fragile")
        .key("copy")
        .send()
        .await
        .unwrap();
    let listed = s3.list_objects_v2().bucket("fragile").send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["copy", "obj"]);
    for i in 0..7 {
        fx.planet.restart_node(i).await.unwrap();
    }
    assert!(get_bytes(&s3, "fragile", "copy").await == data);
    fx.shutdown().await;
}

/// Waits up to 10 s until every file of `pieces` is `present` or every one is gone.
async fn wait_for_pieces(pieces: &BTreeSet<PathBuf>, present: bool) {
    let settled = || pieces.iter().all(|file| file.exists() == present);
    for _ in 0..100 {
        if settled() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled(), "pieces present: {present}");
}

/// CopyObject moves no data: the copy lists the source's pieces, which stay
/// on the nodes while any copy lists them and go with the last one.
async fn server_side_copies_share_pieces_until_the_last_copy_goes(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("src").send().await.unwrap();
    s3.create_bucket().bucket("dst").send().await.unwrap();
    // Three remote segments of 1 MiB and a bit.
    let data = test_data(2 * MIB + 4321, 17);
    s3.put_object()
        .bucket("src")
        .key("big")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let stored = fx.planet.committed_piece_files().await.unwrap();
    assert!(stored.len() >= 3 * 8, "{} pieces", stored.len());
    wait_for_pieces(&stored, true).await;

    s3.copy_object()
        .copy_source("src/big")
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .copy_source("dst/copy")
        .bucket("dst")
        .key("copy")
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .metadata("note", "renamed onto itself")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fx.planet.committed_piece_files().await.unwrap(),
        stored,
        "a copy stored pieces"
    );

    // Deleting the source leaves the copy's pieces in place. A marker deleted
    // afterwards shows the deletions have run: its pieces go, no other does.
    s3.put_object()
        .bucket("src")
        .key("marker")
        .body(ByteStream::from(test_data(100_000, 3)))
        .send()
        .await
        .unwrap();
    let marker: BTreeSet<PathBuf> = fx
        .planet
        .committed_piece_files()
        .await
        .unwrap()
        .difference(&stored)
        .cloned()
        .collect();
    assert!(!marker.is_empty());
    wait_for_pieces(&marker, true).await;
    s3.delete_object()
        .bucket("src")
        .key("big")
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket("src")
        .key("marker")
        .send()
        .await
        .unwrap();
    wait_for_pieces(&marker, false).await;
    // Every queued deletion has been sent or dropped as still listed.
    let metabase = fx.planet.metabase().await.unwrap();
    wait_for("the deletion queue to drain", || async {
        metabase.deletion_queue_length(None).await.unwrap() == 0
    })
    .await;
    assert!(stored.iter().all(|file| file.exists()));
    assert!(get_bytes(s3, "dst", "copy").await == data);
    let head = s3
        .head_object()
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap().get("note").map(String::as_str),
        Some("renamed onto itself")
    );
    assert_eq!(head.content_length(), Some(data.len() as i64));

    // The last copy takes the pieces with it.
    s3.delete_object()
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    wait_for_pieces(&stored, false).await;
    fx.shutdown().await;
}

// ---------------------------------------------------------------- multipart

const MIB: usize = 1 << 20;

/// S3's ETag of a multipart object made of `parts`.
fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut digests = Vec::new();
    for part in parts {
        digests.extend_from_slice(&md5_reference::digest(part));
    }
    format!(
        "\"{:032x}-{}\"",
        u128::from_be_bytes(md5_reference::digest(&digests)),
        parts.len()
    )
}

async fn upload_part(
    s3: &Client,
    (bucket, key, upload_id): (&str, &str, &str),
    number: i32,
    data: Vec<u8>,
) -> String {
    s3.upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap()
        .e_tag
        .unwrap()
}

fn completed(parts: &[(i32, &str)]) -> aws_sdk_s3::types::CompletedMultipartUpload {
    aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(number, etag)| {
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(*number)
                        .e_tag(*etag)
                        .build()
                })
                .collect(),
        ))
        .build()
}

async fn create_upload(s3: &Client, bucket: &str, key: &str) -> String {
    s3.create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap()
}

/// Two uploads of one part at once (an SDK retrying an UploadPart whose
/// first attempt is still running), each of several segments: whatever is
/// recorded is all of one of them, never a mix, and the completed object is
/// exactly the body its ETag names.
async fn overlapping_uploads_of_a_part_never_mix(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("race").send().await.unwrap();
    let bodies = [test_data(3 * MIB + 7, 41), test_data(3 * MIB + 7, 42)];
    for round in 0..3 {
        let key = format!("part-{round}");
        let upload_id = create_upload(s3, "race", &key).await;
        let attempts = bodies.iter().map(|body| {
            s3.upload_part()
                .bucket("race")
                .key(&key)
                .upload_id(&upload_id)
                .part_number(1)
                .body(ByteStream::from(body.clone()))
                .send()
        });
        let answers = futures::future::join_all(attempts).await;
        // An attempt that finds its segments mixed with the other's fails
        // with a 500, which SDKs retry.
        for answer in &answers {
            if let Err(e) = answer {
                assert_eq!(code(e), "InternalError", "{e:?}");
            }
        }
        let listed = s3
            .list_parts()
            .bucket("race")
            .key(&key)
            .upload_id(&upload_id)
            .send()
            .await
            .unwrap();
        let Some(part) = listed.parts().first() else {
            // Both attempts found their segments mixed: nothing recorded.
            continue;
        };
        let etag = part.e_tag().unwrap().to_string();
        let body = bodies
            .iter()
            .find(|b| format!("\"{:032x}\"", md5_of(b)) == etag)
            .expect("the recorded part's ETag is one attempt's");
        s3.complete_multipart_upload()
            .bucket("race")
            .key(&key)
            .upload_id(&upload_id)
            .multipart_upload(completed(&[(1, &etag)]))
            .send()
            .await
            .unwrap();
        assert!(get_bytes(s3, "race", &key).await == *body);
    }
    fx.shutdown().await;
}

async fn multipart_uploads(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let key = "videos/ünï côde+&=.bin";
    let created = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key(key)
        .content_type("video/mp4")
        .cache_control("max-age=60")
        .metadata("origin", "camera")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id.unwrap();
    let id = ("mpu", key, upload_id.as_str());

    // Three parts uploaded at once, out of order; part 2 is uploaded twice
    // and the second upload counts.
    let parts = [
        test_data(5 * MIB, 1),
        test_data(5 * MIB + 123, 2),
        test_data(MIB / 2 + 7, 3),
    ];
    let (third, first, stale) = tokio::join!(
        upload_part(s3, id, 3, parts[2].clone()),
        upload_part(s3, id, 1, parts[0].clone()),
        upload_part(s3, id, 2, test_data(6 * MIB, 9)),
    );
    assert_ne!(stale, format!("\"{:032x}\"", md5_of(&parts[1])));
    let second = upload_part(s3, id, 2, parts[1].clone()).await;
    for (etag, data) in [
        (&first, &parts[0]),
        (&second, &parts[1]),
        (&third, &parts[2]),
    ] {
        assert_eq!(*etag, format!("\"{:032x}\"", md5_of(data)));
    }

    let listed = s3
        .list_parts()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    let listed_parts: Vec<(i32, String, i64)> = listed
        .parts()
        .iter()
        .map(|p| {
            (
                p.part_number.unwrap(),
                p.e_tag.clone().unwrap(),
                p.size.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed_parts,
        [
            (1, first.clone(), parts[0].len() as i64),
            (2, second.clone(), parts[1].len() as i64),
            (3, third.clone(), parts[2].len() as i64),
        ]
    );
    let page = s3
        .list_parts()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.parts().len(), 2);
    assert_eq!(page.is_truncated, Some(true));
    let rest = s3
        .list_parts()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .part_number_marker(page.next_part_number_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.parts()[0].part_number, Some(3));

    let uploads = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    let listed: Vec<(&str, &str)> = uploads
        .uploads()
        .iter()
        .map(|u| (u.key().unwrap(), u.upload_id().unwrap()))
        .collect();
    assert_eq!(listed, [(key, upload_id.as_str())]);
    let rolled_up = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    assert!(rolled_up.uploads().is_empty());
    assert_eq!(rolled_up.common_prefixes()[0].prefix(), Some("videos/"));
    // Not an object until completed.
    let missing = s3.head_object().bucket("mpu").key(key).send().await;
    assert_eq!(status(&missing.unwrap_err()), 404);

    let done = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(completed(&[(1, &first), (2, &second), (3, &third)]))
        .send()
        .await
        .unwrap();
    let whole: Vec<u8> = parts.concat();
    let expected_etag = multipart_etag(&[&parts[0], &parts[1], &parts[2]]);
    assert_eq!(done.e_tag(), Some(expected_etag.as_str()));
    assert_eq!(get_bytes(s3, "mpu", key).await, whole);
    let head = s3
        .head_object()
        .bucket("mpu")
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(expected_etag.as_str()));
    assert_eq!(head.content_length, Some(whole.len() as i64));
    assert_eq!(head.content_type(), Some("video/mp4"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.metadata().unwrap().get("origin").unwrap(), "camera");
    // Ranges across part boundaries, as a video player asks for them.
    for (start, end) in [(5 * MIB - 10, 5 * MIB + 10), (10 * MIB, whole.len() - 1)] {
        let ranged = s3
            .get_object()
            .bucket("mpu")
            .key(key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        let bytes = ranged.body.collect().await.unwrap().to_vec();
        assert_eq!(bytes, &whole[start..=end]);
    }
    let uploads = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
    let gone = s3
        .list_parts()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .send()
        .await;
    assert_eq!(code(&gone.unwrap_err()), "NoSuchUpload");
    // A completion retried (its answer lost) is answered as the first was;
    // one naming other parts finds no upload.
    let complete_again = |parts: aws_sdk_s3::types::CompletedMultipartUpload| {
        s3.complete_multipart_upload()
            .bucket("mpu")
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(parts)
            .send()
    };
    let retried = complete_again(completed(&[(1, &first), (2, &second), (3, &third)]))
        .await
        .unwrap();
    assert_eq!(retried.e_tag(), Some(expected_etag.as_str()));
    let other = complete_again(completed(&[(1, &first), (2, &second)])).await;
    assert_eq!(code(&other.unwrap_err()), "NoSuchUpload");
    let part = s3
        .upload_part()
        .bucket("mpu")
        .key(key)
        .upload_id(&upload_id)
        .part_number(4)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await;
    assert_eq!(code(&part.unwrap_err()), "NoSuchUpload");
    // Once another object replaces it, the upload is gone for good.
    s3.put_object()
        .bucket("mpu")
        .key(key)
        .body(ByteStream::from_static(b"newer"))
        .send()
        .await
        .unwrap();
    let replaced = complete_again(completed(&[(1, &first), (2, &second), (3, &third)])).await;
    assert_eq!(code(&replaced.unwrap_err()), "NoSuchUpload");
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_errors_and_aborts() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let upload_id = create_upload(s3, "mpu", "k").await;
    let id = ("mpu", "k", upload_id.as_str());
    let small = upload_part(s3, id, 1, test_data(1000, 1)).await;
    let last = upload_part(s3, id, 2, test_data(2000, 2)).await;
    let complete = |parts: Vec<(i32, String)>| {
        let parts: Vec<(i32, &str)> = parts.iter().map(|(n, e)| (*n, e.as_str())).collect();
        s3.complete_multipart_upload()
            .bucket("mpu")
            .key("k")
            .upload_id(&upload_id)
            .multipart_upload(completed(&parts))
            .send()
    };
    let error = complete(vec![(1, small.clone()), (2, last.clone())])
        .await
        .unwrap_err();
    assert_eq!(code(&error), "EntityTooSmall");
    let error = complete(vec![(2, last.clone()), (1, small.clone())])
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidPartOrder");
    let error = complete(vec![(1, "\"0123\"".into())]).await.unwrap_err();
    assert_eq!(code(&error), "InvalidPart");
    let error = complete(vec![(7, small.clone())]).await.unwrap_err();
    assert_eq!(code(&error), "InvalidPart");
    for number in [0, 10_001] {
        let error = s3
            .upload_part()
            .bucket("mpu")
            .key("k")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error), "InvalidArgument", "part {number}");
    }
    // Unknown, malformed and other keys' upload ids are all NoSuchUpload.
    let other = create_upload(s3, "mpu", "other").await;
    for (key, upload) in [("k", "bm9wZQ"), ("k", "!!"), ("k", other.as_str())] {
        let error = s3
            .upload_part()
            .bucket("mpu")
            .key(key)
            .upload_id(upload)
            .part_number(1)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error), "NoSuchUpload", "{upload}");
    }
    let error = s3
        .create_multipart_upload()
        .bucket("nope")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "NoSuchBucket");
    // A body that differs from its Content-MD5 is refused, and the part
    // recorded before stays.
    let error = s3
        .upload_part()
        .bucket("mpu")
        .key("k")
        .upload_id(&upload_id)
        .part_number(1)
        .content_md5(base64_md5(b"something else"))
        .body(ByteStream::from(test_data(1000, 5)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "BadDigest");
    // Checksums on parts: verified before the part is recorded, and answered.
    let error = s3
        .upload_part()
        .bucket("mpu")
        .key("k")
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from(test_data(1000, 5)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "BadDigest");
    let checked = s3
        .upload_part()
        .bucket("mpu")
        .key("k")
        .upload_id(&upload_id)
        .part_number(3)
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .body(ByteStream::from(test_data(3000, 3)))
        .send()
        .await
        .unwrap();
    assert!(checked.checksum_sha256().is_some());
    let parts = s3
        .list_parts()
        .bucket("mpu")
        .key("k")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    let numbers: Vec<i32> = parts.parts().iter().filter_map(|p| p.part_number).collect();
    assert_eq!(
        numbers,
        [1, 2, 3],
        "the refused uploads of part 1 left it as it was"
    );

    // A single last part may be small; parts left out are not in the object.
    let done = complete(vec![(2, last.clone())]).await.unwrap();
    assert!(done.e_tag().unwrap().ends_with("-1\""));
    assert_eq!(get_bytes(s3, "mpu", "k").await, test_data(2000, 2));

    // Aborting: the upload is gone, its key was never an object, and the
    // bucket can be deleted.
    s3.abort_multipart_upload()
        .bucket("mpu")
        .key("other")
        .upload_id(&other)
        .send()
        .await
        .unwrap();
    let error = s3
        .abort_multipart_upload()
        .bucket("mpu")
        .key("other")
        .upload_id(&other)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "NoSuchUpload");
    let error = s3.head_object().bucket("mpu").key("other").send().await;
    assert_eq!(status(&error.unwrap_err()), 404);
    s3.delete_object()
        .bucket("mpu")
        .key("k")
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket("mpu").send().await.unwrap();
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_assembles_ranges_of_objects() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("src").send().await.unwrap();
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let source = test_data(6 * MIB + 500, 11);
    s3.put_object()
        .bucket("src")
        .key("a b/source")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    let upload_id = create_upload(s3, "dst", "joined").await;
    let copy_part = |number: i32, range: Option<String>| {
        s3.upload_part_copy()
            .bucket("dst")
            .key("joined")
            .upload_id(&upload_id)
            .part_number(number)
            .copy_source("src/a%20b/source")
            .set_copy_source_range(range)
            .send()
    };
    let whole = copy_part(1, None).await.unwrap();
    let tail = copy_part(2, Some(format!("bytes=100-{}", 2 * MIB)))
        .await
        .unwrap();
    let error = copy_part(3, Some(format!("bytes=0-{}", source.len())))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRange");
    let error = s3
        .upload_part_copy()
        .bucket("dst")
        .key("joined")
        .upload_id(&upload_id)
        .part_number(3)
        .copy_source("src/missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "NoSuchKey");
    let etag = |r: &aws_sdk_s3::operation::upload_part_copy::UploadPartCopyOutput| {
        r.copy_part_result().unwrap().e_tag().unwrap().to_string()
    };
    let expected = [source.clone(), source[100..=2 * MIB].to_vec()];
    assert_eq!(etag(&whole), format!("\"{:032x}\"", md5_of(&expected[0])));
    s3.complete_multipart_upload()
        .bucket("dst")
        .key("joined")
        .upload_id(&upload_id)
        .multipart_upload(completed(&[(1, &etag(&whole)), (2, &etag(&tail))]))
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(s3, "dst", "joined").await, expected.concat());
    fx.shutdown().await;
}

/// A bitwise reflected CRC with an all-ones start and final xor (CRC32,
/// CRC32C, CRC64NVME), big-endian as S3 encodes it: the reference the
/// gateway's table-driven CRCs and CRC combination are checked against.
fn crc_reference(poly: u64, width: u32, data: &[u8]) -> Vec<u8> {
    let mask = u64::MAX >> (64 - width);
    let mut crc = mask;
    for &byte in data {
        crc ^= u64::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
        }
    }
    (crc ^ mask).to_be_bytes()[(8 - width as usize / 8)..].to_vec()
}

fn crc32(data: &[u8]) -> Vec<u8> {
    crc_reference(0xEDB8_8320, 32, data)
}

fn crc64nvme(data: &[u8]) -> Vec<u8> {
    crc_reference(0x9A6C_9329_AC4B_C9B5, 64, data)
}

async fn copy_part(
    s3: &Client,
    (bucket, key, upload_id): (&str, &str, &str),
    number: i32,
    source: &str,
) -> aws_sdk_s3::types::CopyPartResult {
    s3.upload_part_copy()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .copy_source(source)
        .send()
        .await
        .unwrap()
        .copy_part_result
        .unwrap()
}

fn completed_part(number: i32, etag: &str, crc32: Option<String>) -> CompletedPart {
    CompletedPart::builder()
        .part_number(number)
        .e_tag(etag)
        .set_checksum_crc32(crc32)
        .build()
}

fn parts_list(parts: Vec<CompletedPart>) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build()
}

/// Multipart uploads created with a checksum: parts carry one of its
/// algorithm (the client's, or one the gateway computes for a copied part),
/// completion checks the parts' checksums named and makes the object's as
/// S3 does (composite, or CRCs combined into the whole object's), and GET
/// reads single parts.
async fn multipart_checksums(backend: Backend) {
    let fx = Fixture::start(backend).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("sums").send().await.unwrap();
    assert_eq!(base64(&crc32(b"hello world")), "DUoRhQ==");
    assert_eq!(base64(&crc64nvme(b"hello world")), "jSnVw/bqjr4=");
    let first = test_data(5 * MIB + 3, 61);
    let second = test_data(1000, 62);
    let whole = [first.clone(), second.clone()].concat();
    s3.put_object()
        .bucket("sums")
        .key("source")
        .body(ByteStream::from(second.clone()))
        .send()
        .await
        .unwrap();

    // CRC32, composite by default.
    let created = s3
        .create_multipart_upload()
        .bucket("sums")
        .key("composite")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.checksum_algorithm(),
        Some(&ChecksumAlgorithm::Crc32)
    );
    assert_eq!(created.checksum_type(), Some(&ChecksumType::Composite));
    let upload_id = created.upload_id.unwrap();
    let part1 = s3
        .upload_part()
        .bucket("sums")
        .key("composite")
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(first.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        part1.checksum_crc32(),
        Some(base64(&crc32(&first)).as_str())
    );
    // A copied part gets its checksum from the gateway.
    let part2 = copy_part(s3, ("sums", "composite", &upload_id), 2, "sums/source").await;
    assert_eq!(
        part2.checksum_crc32(),
        Some(base64(&crc32(&second)).as_str())
    );
    let listed = s3
        .list_parts()
        .bucket("sums")
        .key("composite")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.checksum_algorithm(), Some(&ChecksumAlgorithm::Crc32));
    assert_eq!(listed.checksum_type(), Some(&ChecksumType::Composite));
    let listed_sums: Vec<Option<&str>> =
        listed.parts().iter().map(|p| p.checksum_crc32()).collect();
    assert_eq!(
        listed_sums,
        [part1.checksum_crc32(), part2.checksum_crc32()]
    );
    let etags = [part1.e_tag().unwrap(), part2.e_tag().unwrap()];
    let sums = [base64(&crc32(&first)), base64(&crc32(&second))];
    let named = |crcs: [Option<&String>; 2]| {
        parts_list(vec![
            completed_part(1, etags[0], crcs[0].cloned()),
            completed_part(2, etags[1], crcs[1].cloned()),
        ])
    };
    let complete = |parts| {
        s3.complete_multipart_upload()
            .bucket("sums")
            .key("composite")
            .upload_id(&upload_id)
            .multipart_upload(parts)
    };
    // A composite upload's completion names every part's checksum (S3's rule).
    let error = complete(named([Some(&sums[0]), None]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");
    let error = complete(named([Some(&sums[1]), Some(&sums[1])]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidPart");
    // The whole object's CRC is not its composite checksum.
    let error = complete(named([Some(&sums[0]), Some(&sums[1])]))
        .checksum_crc32(base64(&crc32(&whole)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "BadDigest");
    let error = complete(named([Some(&sums[0]), Some(&sums[1])]))
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");
    let error = complete(named([Some(&sums[0]), Some(&sums[1])]))
        .mpu_object_size(whole.len() as i64 + 1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");
    let mut digests = crc32(&first);
    digests.extend(crc32(&second));
    let composite = format!("{}-2", base64(&crc32(&digests)));
    let done = complete(named([Some(&sums[0]), Some(&sums[1])]))
        .checksum_crc32(&composite)
        .mpu_object_size(whole.len() as i64)
        .send()
        .await
        .unwrap();
    assert_eq!(done.checksum_crc32(), Some(composite.as_str()));
    assert_eq!(done.checksum_type(), Some(&ChecksumType::Composite));
    // A retried completion answers the same.
    let again = complete(named([Some(&sums[0]), Some(&sums[1])]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.checksum_crc32(), Some(composite.as_str()));
    assert_eq!(again.e_tag(), done.e_tag());
    let head = s3
        .head_object()
        .bucket("sums")
        .key("composite")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32(), Some(composite.as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::Composite));
    // GetObjectAttributes tells the same without the data, and lists the
    // parts with their checksums, a page at a time.
    let attributes = |marker: Option<&str>| {
        s3.get_object_attributes()
            .bucket("sums")
            .key("composite")
            .object_attributes(ObjectAttributes::Etag)
            .object_attributes(ObjectAttributes::Checksum)
            .object_attributes(ObjectAttributes::ObjectParts)
            .object_attributes(ObjectAttributes::ObjectSize)
            .object_attributes(ObjectAttributes::StorageClass)
            .max_parts(1)
            .set_part_number_marker(marker.map(str::to_string))
            .send()
    };
    let first_page = attributes(None).await.unwrap();
    assert_eq!(
        first_page.e_tag().map(|e| e.trim_matches('"')),
        done.e_tag().map(|e| e.trim_matches('"'))
    );
    assert_eq!(first_page.object_size(), Some(whole.len() as i64));
    assert_eq!(
        first_page.storage_class(),
        Some(&aws_sdk_s3::types::StorageClass::Standard)
    );
    let object_sum = first_page.checksum().unwrap();
    assert_eq!(object_sum.checksum_crc32(), Some(composite.as_str()));
    assert_eq!(object_sum.checksum_type(), Some(&ChecksumType::Composite));
    let parts = first_page.object_parts().unwrap();
    assert_eq!(
        (parts.total_parts_count(), parts.is_truncated()),
        (Some(2), Some(true))
    );
    let listed = &parts.parts()[0];
    assert_eq!(
        (listed.part_number(), listed.size(), listed.checksum_crc32()),
        (Some(1), Some(first.len() as i64), Some(sums[0].as_str()))
    );
    let second_page = attributes(parts.next_part_number_marker()).await.unwrap();
    let parts = second_page.object_parts().unwrap();
    assert_eq!(parts.is_truncated(), Some(false));
    let listed = &parts.parts()[0];
    assert_eq!(
        (listed.part_number(), listed.checksum_crc32()),
        (Some(2), Some(sums[1].as_str()))
    );
    let nothing_asked = s3
        .get_object_attributes()
        .bucket("sums")
        .key("composite")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&nothing_asked), 400);
    // The SDK leaves a composite checksum unchecked; the bytes are right.
    let got = s3
        .get_object()
        .bucket("sums")
        .key("composite")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(got.body.collect().await.unwrap().to_vec() == whole);

    // One part at a time.
    let part = s3
        .get_object()
        .bucket("sums")
        .key("composite")
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(part.parts_count(), Some(2));
    assert_eq!(
        part.content_range(),
        Some(format!("bytes 0-{}/{}", first.len() - 1, whole.len()).as_str())
    );
    assert!(part.body.collect().await.unwrap().to_vec() == first);
    let head = s3
        .head_object()
        .bucket("sums")
        .key("composite")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(second.len() as i64));
    assert_eq!(head.parts_count(), Some(2));
    let error = s3
        .get_object()
        .bucket("sums")
        .key("composite")
        .part_number(3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidPartNumber");
    assert_eq!(status(&error), 416);
    let error = s3
        .get_object()
        .bucket("sums")
        .key("composite")
        .part_number(1)
        .range("bytes=0-9")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");

    // CRC64NVME: always a full-object checksum, the parts' CRCs combined
    // into the whole object's, which the SDK checks on GET.
    let created = s3
        .create_multipart_upload()
        .bucket("sums")
        .key("full")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .send()
        .await
        .unwrap();
    assert_eq!(created.checksum_type(), Some(&ChecksumType::FullObject));
    let upload_id = created.upload_id.unwrap();
    let mut etags = Vec::new();
    for (number, data) in [(1, &first), (2, &second)] {
        let part = s3
            .upload_part()
            .bucket("sums")
            .key("full")
            .upload_id(&upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            part.checksum_crc64_nvme(),
            Some(base64(&crc64nvme(data)).as_str())
        );
        etags.push(part.e_tag.unwrap());
    }
    let full = base64(&crc64nvme(&whole));
    let done = s3
        .complete_multipart_upload()
        .bucket("sums")
        .key("full")
        .upload_id(&upload_id)
        .multipart_upload(parts_list(vec![
            completed_part(1, &etags[0], None),
            completed_part(2, &etags[1], None),
        ]))
        .checksum_crc64_nvme(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(done.checksum_crc64_nvme(), Some(full.as_str()));
    assert_eq!(done.checksum_type(), Some(&ChecksumType::FullObject));
    let got = s3
        .get_object()
        .bucket("sums")
        .key("full")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_crc64_nvme(), Some(full.as_str()));
    assert!(got.body.collect().await.unwrap().to_vec() == whole);

    // Parts of another algorithm than the upload's are refused; so are
    // types an algorithm cannot have.
    let upload_id = s3
        .create_multipart_upload()
        .bucket("sums")
        .key("sha")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id
        .unwrap();
    let error = s3
        .upload_part()
        .bucket("sums")
        .key("sha")
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .body(ByteStream::from(second.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");
    for (algorithm, kind) in [
        (ChecksumAlgorithm::Crc64Nvme, ChecksumType::Composite),
        (ChecksumAlgorithm::Sha1, ChecksumType::FullObject),
    ] {
        let error = s3
            .create_multipart_upload()
            .bucket("sums")
            .key("refused")
            .checksum_algorithm(algorithm)
            .checksum_type(kind)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error), "InvalidRequest");
    }

    // Without an upload checksum, parts keep theirs and a completion may
    // name them, but there is no object checksum to give.
    let upload_id = create_upload(s3, "sums", "plain").await;
    let part = s3
        .upload_part()
        .bucket("sums")
        .key("plain")
        .upload_id(&upload_id)
        .part_number(1)
        .checksum_algorithm(ChecksumAlgorithm::Sha1)
        .body(ByteStream::from(second.clone()))
        .send()
        .await
        .unwrap();
    let sha1 = part.checksum_sha1().unwrap().to_string();
    let with_sha1 = || {
        parts_list(vec![CompletedPart::builder()
            .part_number(1)
            .e_tag(part.e_tag().unwrap())
            .checksum_sha1(&sha1)
            .build()])
    };
    let complete = || {
        s3.complete_multipart_upload()
            .bucket("sums")
            .key("plain")
            .upload_id(&upload_id)
            .multipart_upload(with_sha1())
    };
    let error = complete()
        .checksum_crc32(base64(&crc32(&second)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "InvalidRequest");

    // A part stored without a checksum (copied into an upload created
    // without one, or uploaded before the gateway kept part checksums)
    // leaves nothing to check a named one against: the completion goes on.
    let upload_id = create_upload(s3, "sums", "legacy").await;
    let copied = copy_part(s3, ("sums", "legacy", &upload_id), 1, "sums/source").await;
    assert_eq!(copied.checksum_crc32(), None);
    let done = s3
        .complete_multipart_upload()
        .bucket("sums")
        .key("legacy")
        .upload_id(&upload_id)
        .multipart_upload(parts_list(vec![completed_part(
            1,
            copied.e_tag().unwrap(),
            Some(base64(&crc32(&second))),
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(done.checksum_crc32(), None);

    // Conditional completion, against an object stored meanwhile: failed
    // conditions leave it as it was.
    let old = s3
        .put_object()
        .bucket("sums")
        .key("plain")
        .body(ByteStream::from_static(b"old"))
        .send()
        .await
        .unwrap();
    let error = complete().if_none_match("*").send().await.unwrap_err();
    assert_eq!(code(&error), "PreconditionFailed");
    let error = complete()
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&error), "PreconditionFailed");
    assert_eq!(get_bytes(s3, "sums", "plain").await, b"old");
    complete()
        .if_match(old.e_tag().unwrap())
        .send()
        .await
        .unwrap();
    assert!(get_bytes(s3, "sums", "plain").await == second);
    let head = s3
        .head_object()
        .bucket("sums")
        .key("plain")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha1(), None);
    assert_eq!(head.checksum_type(), None);
    fx.shutdown().await;
}

/// A 1 GiB object through multipart, as `aws s3 cp` sends big files: parts
/// uploaded four at a time, read back as a stream and compared by hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_multipart_round_trip() {
    const PART: usize = 64 * MIB;
    const PARTS: u64 = 16;
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("big").send().await.unwrap();
    let upload_id = create_upload(s3, "big", "gib").await;
    let id = ("big", "gib", upload_id.as_str());
    let mut expected = blake3::Hasher::new();
    let mut etags = Vec::new();
    for batch in (1..=PARTS).collect::<Vec<_>>().chunks(4) {
        let data: Vec<Vec<u8>> = batch.iter().map(|&n| test_data(PART, 1000 + n)).collect();
        for part in &data {
            expected.update(part);
        }
        let uploads = batch
            .iter()
            .zip(data)
            .map(|(&n, part)| upload_part(s3, id, n as i32, part));
        etags.extend(futures::future::join_all(uploads).await);
    }
    let numbered: Vec<(i32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as i32 + 1, e.as_str()))
        .collect();
    let done = s3
        .complete_multipart_upload()
        .bucket("big")
        .key("gib")
        .upload_id(&upload_id)
        .multipart_upload(completed(&numbered))
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-16\""));
    let object = s3
        .get_object()
        .bucket("big")
        .key("gib")
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_length, Some(PARTS as i64 * PART as i64));
    let mut body = object.body.into_async_read();
    let mut actual = blake3::Hasher::new();
    let mut buffer = vec![0u8; MIB];
    loop {
        let n = body.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        actual.update(&buffer[..n]);
    }
    assert_eq!(actual.finalize(), expected.finalize());
    fx.shutdown().await;
}
