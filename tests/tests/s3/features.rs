//! S3 features beyond the basics, end to end with `aws-sdk-s3` against the
//! in-process gateway: additional checksums (as a header and as an
//! aws-chunked trailer), conditional writes, the versioning of a bucket
//! never versioned, virtual-hosted-style addressing, HTTPS, `NotImplemented` for what the
//! gateway does not do, the gateway's metrics page, and the satellite
//! requests a ranged GET costs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::common::{code, get_bytes, status, Fixture};
use archipel_tests::{test_data, Backend};
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resolves every name to 127.0.0.1, so that `bucket.s3.localhost` reaches
/// the gateway whatever the machine's resolver does with it.
#[derive(Clone, Debug)]
struct Loopback;

impl ResolveDns for Loopback {
    fn resolve_dns<'a>(&'a self, _name: &'a str) -> DnsFuture<'a> {
        DnsFuture::ready(Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
    }
}

/// An SDK HTTP client resolving through [`Loopback`] that trusts only
/// `trusted_pem` (nothing at all without it).
fn http_client(trusted_pem: Option<&str>) -> SharedHttpClient {
    let mut trust = TrustStore::empty();
    if let Some(pem) = trusted_pem {
        trust = trust.with_pem_certificate(pem.as_bytes());
    }
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_with_resolver(Loopback)
}

/// The checksum of `algorithm` an output carries.
macro_rules! checksum_of {
    ($output:expr, $algorithm:expr) => {{
        let output = &$output;
        match $algorithm {
            ChecksumAlgorithm::Crc32 => output.checksum_crc32(),
            ChecksumAlgorithm::Crc32C => output.checksum_crc32_c(),
            ChecksumAlgorithm::Crc64Nvme => output.checksum_crc64_nvme(),
            ChecksumAlgorithm::Sha1 => output.checksum_sha1(),
            ChecksumAlgorithm::Sha256 => output.checksum_sha256(),
            other => panic!("no checksum field for {other:?}"),
        }
        .map(str::to_string)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("sums").send().await.unwrap();
    let data = test_data(300_000, 9);
    let file = fx.dir.path().join("body");
    std::fs::write(&file, &data).unwrap();

    let algorithms = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];
    for algorithm in algorithms {
        // From memory the SDK sends the checksum as a header; from a file, as
        // an aws-chunked trailer after the data (signed, over plain HTTP).
        let mut values = Vec::new();
        for streamed in [false, true] {
            let key = format!("{}-{streamed}", algorithm.as_str());
            let body = if streamed {
                ByteStream::from_path(&file).await.unwrap()
            } else {
                ByteStream::from(data.clone())
            };
            let put = s3
                .put_object()
                .bucket("sums")
                .key(&key)
                .checksum_algorithm(algorithm.clone())
                .body(body)
                .send()
                .await
                .unwrap();
            let sent = checksum_of!(put, &algorithm).unwrap_or_else(|| {
                panic!("no {algorithm:?} in the PutObject answer (streamed: {streamed})")
            });

            // The SDK checks the body against the checksum it gets back.
            let got = s3
                .get_object()
                .bucket("sums")
                .key(&key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(checksum_of!(got, &algorithm).as_ref(), Some(&sent));
            assert!(got.body.collect().await.unwrap().to_vec() == data);
            let head = s3
                .head_object()
                .bucket("sums")
                .key(&key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            assert_eq!(checksum_of!(head, &algorithm).as_ref(), Some(&sent));
            // Only when asked for.
            let head = s3
                .head_object()
                .bucket("sums")
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(checksum_of!(head, &algorithm), None);
            values.push(sent);
        }
        assert_eq!(
            values[0], values[1],
            "{algorithm:?}: header and trailer agree"
        );
    }

    // A range gets no whole-object checksum (the SDK would reject its bytes).
    let range = s3
        .get_object()
        .bucket("sums")
        .key("CRC32-false")
        .range("bytes=10-99")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(range.checksum_crc32(), None);
    assert!(range.body.collect().await.unwrap().to_vec() == data[10..100]);

    // A copy keeps the checksum: same bytes.
    s3.copy_object()
        .copy_source("sums/SHA256-true")
        .bucket("sums")
        .key("copy")
        .send()
        .await
        .unwrap();
    let original = s3
        .head_object()
        .bucket("sums")
        .key("SHA256-true")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let copy = s3
        .head_object()
        .bucket("sums")
        .key("copy")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(copy.checksum_sha256().is_some());
    assert_eq!(copy.checksum_sha256(), original.checksum_sha256());

    // A wrong checksum is BadDigest, and the object stays as it was, whether
    // the body is spooled (no Content-MD5) or uploaded as it arrives.
    s3.put_object()
        .bucket("sums")
        .key("kept")
        .body(ByteStream::from_static(b"old content"))
        .send()
        .await
        .unwrap();
    for content_md5 in [None, Some("XrY7u+Ae7tCTyyK7j1rNww==")] {
        let e = s3
            .put_object()
            .bucket("sums")
            .key("kept")
            .checksum_crc32("AAAAAA==")
            .set_content_md5(content_md5.map(str::to_string))
            .body(ByteStream::from_static(b"hello world"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "BadDigest", "Content-MD5: {content_md5:?}");
        assert_eq!(get_bytes(s3, "sums", "kept").await, b"old content");
    }
    // Nor is a value that is no CRC32 at all accepted.
    let e = s3
        .put_object()
        .bucket("sums")
        .key("kept")
        .checksum_crc32("not a checksum")
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequest");
    assert_eq!(get_bytes(s3, "sums", "kept").await, b"old content");
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("cond").send().await.unwrap();

    // If-None-Match: * stores only on a free key.
    let first = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match("*")
        .body(ByteStream::from_static(b"first"))
        .send()
        .await
        .unwrap();
    let e = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match("*")
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    assert_eq!(status(&e), 412);
    assert_eq!(get_bytes(s3, "cond", "k").await, b"first");
    let e = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_none_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented", "If-None-Match with an ETag");

    // If-Match replaces only the content it names.
    let second = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"second"))
        .send()
        .await
        .unwrap();
    assert_eq!(get_bytes(s3, "cond", "k").await, b"second");
    let e = s3
        .put_object()
        .bucket("cond")
        .key("k")
        .if_match(first.e_tag().unwrap())
        .body(ByteStream::from_static(b"third"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "PreconditionFailed");
    assert_eq!(get_bytes(s3, "cond", "k").await, b"second");
    // As on S3, If-Match on a free key is NoSuchKey, and stores nothing.
    let e = s3
        .put_object()
        .bucket("cond")
        .key("free")
        .if_match(second.e_tag().unwrap())
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    let e = s3
        .get_object()
        .bucket("cond")
        .key("free")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");

    // A writer that takes the key while an If-None-Match upload is still
    // sending its body wins: the satellite refuses the late upload's
    // commit, which stores nothing (412), never 200.
    let presigned = s3
        .put_object()
        .bucket("cond")
        .key("race")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let path = fx.path_of(&presigned);
    let host = fx.endpoint.strip_prefix("http://").unwrap();
    let body = test_data(100_000, 4);
    let mut stream = TcpStream::connect(host).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..50_000]).await.unwrap();
    stream.flush().await.unwrap();
    s3.put_object()
        .bucket("cond")
        .key("race")
        .body(ByteStream::from_static(b"the other writer"))
        .send()
        .await
        .unwrap();
    stream.write_all(&body[50_000..]).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let status_code: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
    assert_eq!(
        status_code, 412,
        "the late conditional upload answered {response}"
    );
    assert!(response.contains("PreconditionFailed"), "{response}");
    assert_eq!(get_bytes(s3, "cond", "race").await, b"the other writer");
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unversioned_buckets_and_unsupported_operations() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("plain").send().await.unwrap();

    let versioning = s3
        .get_bucket_versioning()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status(), None);
    assert_eq!(versioning.mfa_delete(), None);
    let e = s3
        .get_bucket_versioning()
        .bucket("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchBucket");

    let e = s3
        .put_bucket_policy()
        .bucket("plain")
        .policy(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    let e = s3
        .get_bucket_website()
        .bucket("plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotImplemented");
    assert_eq!(status(&e), 501);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosted_style() {
    let fx = Fixture::start_with(Backend::Sqlite, |config, _| {
        config.domain_names = vec!["s3.localhost".into()];
    })
    .await;
    let endpoint = format!("http://s3.localhost:{}", fx.port);
    let vhost = fx.client_via(&endpoint, http_client(None), false);

    vhost
        .create_bucket()
        .bucket("vhosted")
        .send()
        .await
        .unwrap();
    vhost
        .put_object()
        .bucket("vhosted")
        .key("dir/hello.txt")
        .body(ByteStream::from_static(b"hello world"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_bytes(&vhost, "vhosted", "dir/hello.txt").await,
        b"hello world"
    );
    let listed = vhost
        .list_objects_v2()
        .bucket("vhosted")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/hello.txt"]);
    // The base domain itself is the service: ListBuckets.
    let buckets = vhost.list_buckets().send().await.unwrap();
    let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["vhosted"]);

    // The bucket travels in the Host header alone: a presigned URL of the
    // virtual-host client has it in its host name, and the gateway answers it
    // with the path naming only the key.
    let presigned = vhost
        .get_object()
        .bucket("vhosted")
        .key("dir/hello.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let authority = format!("vhosted.s3.localhost:{}", fx.port);
    let path = presigned
        .uri()
        .strip_prefix(&format!("http://{authority}"))
        .unwrap_or_else(|| panic!("not virtual-hosted: {}", presigned.uri()))
        .to_string();
    assert!(path.starts_with("/dir/hello.txt?"), "{path}");
    let mut stream = TcpStream::connect(("127.0.0.1", fx.port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello world"), "{response}");

    // Path-style keeps working, on the IP address and on any other name.
    assert_eq!(
        get_bytes(&fx.client, "vhosted", "dir/hello.txt").await,
        b"hello world"
    );
    let other_name = fx.client_via(
        &format!("http://localhost:{}", fx.port),
        http_client(None),
        true,
    );
    assert_eq!(
        get_bytes(&other_name, "vhosted", "dir/hello.txt").await,
        b"hello world"
    );
    let path_on_domain = fx.client_via(&endpoint, http_client(None), true);
    assert_eq!(
        get_bytes(&path_on_domain, "vhosted", "dir/hello.txt").await,
        b"hello world"
    );
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let certificate_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let fx = Fixture::start_with(Backend::Sqlite, |config, dir| {
        std::fs::write(dir.join("cert.pem"), &certificate_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
        config.tls_certificate = Some(dir.join("cert.pem"));
        config.tls_key = Some(dir.join("key.pem"));
    })
    .await;
    assert!(fx.endpoint.starts_with("https://127.0.0.1:"));
    let s3 = fx.client_via(&fx.endpoint, http_client(Some(&certificate_pem)), true);

    s3.create_bucket().bucket("secure").send().await.unwrap();
    // From a file: over HTTPS the SDK sends an unsigned aws-chunked body with
    // the checksum as a trailer.
    let data = test_data(200_000, 2);
    let file = fx.dir.path().join("body");
    std::fs::write(&file, &data).unwrap();
    let put = s3
        .put_object()
        .bucket("secure")
        .key("obj")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    assert!(put.checksum_crc32().is_some(), "the SDK's default checksum");
    assert!(get_bytes(&s3, "secure", "obj").await == data);
    // By host name too (the certificate names localhost).
    let by_name = fx.client_via(
        &format!("https://localhost:{}", fx.port),
        http_client(Some(&certificate_pem)),
        true,
    );
    assert!(get_bytes(&by_name, "secure", "obj").await == data);

    // A client that does not trust the certificate gets no answer at all.
    let untrusting = fx.client_via(&fx.endpoint, http_client(None), true);
    let e = untrusting.list_buckets().send().await.unwrap_err();
    assert!(matches!(e, SdkError::DispatchFailure(_)), "{e:?}");

    // Plain HTTP on the HTTPS port gets no HTTP answer, and the gateway
    // goes on serving.
    let mut stream = TcpStream::connect(("127.0.0.1", fx.port)).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    // The gateway closes the connection; a reset is as good.
    let _ = stream.read_to_end(&mut response).await;
    assert!(!response.starts_with(b"HTTP/"), "{response:?}");
    let buckets = s3.list_buckets().send().await.unwrap();
    assert_eq!(buckets.buckets().len(), 1);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_timed_on_the_metrics_page() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("timed").send().await.unwrap();
    for i in 0..3 {
        s3.put_object()
            .bucket("timed")
            .key(format!("k{i}"))
            .body(ByteStream::from(test_data(100, i)))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(get_bytes(s3, "timed", "k1").await, test_data(100, 1));
    let missing = s3.head_object().bucket("timed").key("nope").send().await;
    assert_eq!(status(&missing.unwrap_err()), 404);
    // An unsigned request is refused, and timed as well.
    let (unsigned, _) =
        crate::common::admin::request("GET", &format!("{}/timed", fx.endpoint), None).await;
    assert_eq!(unsigned, 403);

    let (code, page) = crate::common::admin::request("GET", &fx.metrics_url, None).await;
    assert_eq!(code, 200);
    let count = |operation: &str| {
        crate::common::admin::histogram_count(
            &page,
            "archipel_gateway_request_duration_seconds",
            "operation",
            operation,
        )
    };
    assert_eq!(count("CreateBucket"), 1);
    assert_eq!(count("PutObject"), 3);
    assert_eq!(count("GetObject"), 1);
    assert_eq!(count("HeadObject"), 1);
    assert_eq!(count("ListObjects"), 1);
    assert!(page.contains(
        "archipel_gateway_request_duration_seconds_bucket{operation=\"PutObject\",le=\"+Inf\"} 3"
    ));
    // The S3 endpoint itself knows no such page: a bucket may be named so
    // (none is here, which an unsigned request is told).
    let (code, body) =
        crate::common::admin::request("GET", &format!("{}/metrics", fx.endpoint), None).await;
    assert_eq!(code, 404);
    assert!(body.contains("<Code>NoSuchBucket</Code>"), "{body}");
    fx.shutdown().await;
}

/// A GET opens the object with one satellite request that also brings the
/// download of the segment its range starts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_get_reads_its_segment_with_the_object() {
    let fx = Fixture::start(Backend::Sqlite).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("ranged").send().await.unwrap();
    // Three segments of 1 MiB.
    let data = test_data(2_500_000, 9);
    s3.put_object()
        .bucket("ranged")
        .key("big")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let admin = crate::common::admin::AdminApi::of(&fx.planet);
    let before = [
        admin.rpc_calls("GetObject").await,
        admin.rpc_calls("DownloadSegment").await,
    ];
    let output = s3
        .get_object()
        .bucket("ranged")
        .key("big")
        .range("bytes=1500000-1509999")
        .send()
        .await
        .unwrap();
    let body = output.body.collect().await.unwrap().into_bytes();
    assert!(body[..] == data[1_500_000..1_510_000]);
    let after = [
        admin.rpc_calls("GetObject").await,
        admin.rpc_calls("DownloadSegment").await,
    ];
    assert_eq!([after[0] - before[0], after[1] - before[1]], [1, 0]);
    fx.shutdown().await;
}
