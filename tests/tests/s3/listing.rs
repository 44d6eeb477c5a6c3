//! Listings at scale through the S3 gateway and the client library: buckets
//! with unencrypted names (paged in order by the satellite, names in clear in
//! the metabase, contents still encrypted), listing snapshots of encrypted
//! levels across pages, and ListObjectVersions.

use archipel_client::{BucketOptions, Project, UploadOptions};
use archipel_gateway::Config;
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A planet with a gateway in front of it (a private copy of the fixture in
/// `gateway.rs`, with the gateway's configuration adjustable).
struct Fixture {
    planet: Planet,
    client: Client,
    stop: oneshot::Sender<()>,
    gateway: JoinHandle<Result<(), archipel_gateway::Error>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> Fixture {
        let planet = Planet::start(PlanetConfig::with_backend(backend))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let grant_file = dir.path().join("grant");
        std::fs::write(&grant_file, planet.access().serialize()).unwrap();
        let (mut config, _) =
            archipel_gateway::config::setup(dir.path(), grant_file.to_str().unwrap()).unwrap();
        configure(&mut config);
        let credential = config.credentials[0].clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = tokio::spawn(archipel_gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .force_path_style(true)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new(
                    &credential.access_key_id,
                    &credential.secret_access_key,
                    None,
                    None,
                    "test",
                ))
                .build(),
        );
        Fixture {
            planet,
            client,
            stop,
            gateway,
            _dir: dir,
        }
    }

    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.gateway.await.unwrap().unwrap();
        self.planet.shutdown().await.unwrap();
    }
}

/// The S3 error code of a failed call.
fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> String {
    error.code().unwrap_or("<none>").to_string()
}

async fn put(s3: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

async fn get(s3: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let output = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    output.body.collect().await.unwrap().to_vec()
}

/// Keys and common prefixes of a whole ListObjectsV2 walk, page by page.
async fn walk_v2(
    s3: &Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: i32,
) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(String::from))
            .max_keys(max_keys)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        let on_page = page.contents().len() + page.common_prefixes().len();
        assert!(on_page <= max_keys as usize);
        assert_eq!(page.key_count(), Some(on_page as i32));
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        prefixes.extend(
            page.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if page.is_truncated() != Some(true) {
            return (keys, prefixes);
        }
        token = page.next_continuation_token().map(String::from);
        assert!(token.is_some());
    }
}

/// Keys of a whole ListObjects (v1) walk with markers.
async fn walk_v1(s3: &Client, bucket: &str, prefix: &str, max_keys: i32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut marker = None;
    loop {
        let page = s3
            .list_objects()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(max_keys)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        if page.is_truncated() != Some(true) {
            return keys;
        }
        marker = page.next_marker().map(String::from);
    }
}

/// Names that cover levels, shared prefixes, spaces and multi-byte UTF-8.
fn keys() -> Vec<String> {
    let mut keys: Vec<String> = (0..23).map(|i| format!("level/k{i:02}")).collect();
    keys.extend(
        [
            "a/b/c.txt",
            "a/b/d.txt",
            "a/e.txt",
            "dir-1-x",
            "dir-2-y",
            "f.txt",
            "level/k1/deeper",
            "x y/z&=+?.txt",
            "ü/1",
            "日本/語",
        ]
        .map(String::from),
    );
    keys
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// Checks the walks every bucket must pass, whatever it stores names as.
async fn check_listings(s3: &Client, bucket: &str) {
    let all = sorted(keys());
    for max_keys in [1000, 4, 1] {
        assert_eq!(walk_v2(s3, bucket, "", None, max_keys).await.0, all);
    }
    assert_eq!(walk_v1(s3, bucket, "", 5).await, all);
    let level: Vec<String> = (0..23).map(|i| format!("level/k{i:02}")).collect();
    assert_eq!(
        walk_v2(s3, bucket, "level/", Some("/"), 4).await,
        (level.clone(), vec!["level/k1/".to_string()])
    );
    assert_eq!(
        walk_v2(s3, bucket, "", Some("/"), 2).await,
        (
            vec!["dir-1-x".into(), "dir-2-y".into(), "f.txt".into()],
            vec![
                "a/".into(),
                "level/".into(),
                "x y/".into(),
                "ü/".into(),
                "日本/".into()
            ]
        )
    );
    // A prefix that does not end at a '/' and a level below the top.
    assert_eq!(
        walk_v2(s3, bucket, "level/k1", Some("/"), 3).await,
        (
            (10..20).map(|i| format!("level/k{i}")).collect(),
            vec!["level/k1/".to_string()]
        )
    );
    assert_eq!(
        walk_v2(s3, bucket, "a/b", None, 1).await.0,
        vec!["a/b/c.txt".to_string(), "a/b/d.txt".to_string()]
    );
    let after = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("level/")
        .start_after("level/k20")
        .send()
        .await
        .unwrap();
    let after: Vec<_> = after.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(after, ["level/k21", "level/k22"]);
    let dash = walk_v2(s3, bucket, "dir-", Some("-"), 1).await;
    assert_eq!(dash, (vec![], vec!["dir-1-".into(), "dir-2-".into()]));
}

async fn fill(s3: &Client, bucket: &str) {
    for (i, key) in keys().iter().enumerate() {
        put(s3, bucket, key, format!("body of {key} ({i})").into_bytes()).await;
    }
}

/// A gateway configured to give buckets named `plain-*` unencrypted names:
/// they list in order with paging, the metabase holds their names in clear
/// and their contents still decrypt; other buckets keep encrypted names and
/// list the same.
async fn unencrypted_names_through_the_gateway(backend: Backend) {
    let fx = Fixture::start(backend, |config| {
        config.unencrypted_names = vec!["plain-*".into()];
    })
    .await;
    let s3 = &fx.client;
    for bucket in ["plain-logs", "secret"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
        fill(s3, bucket).await;
        check_listings(s3, bucket).await;
    }
    let big = test_data(50_000, 7);
    put(s3, "plain-logs", "big/blob.bin", big.clone()).await;
    assert_eq!(get(s3, "plain-logs", "big/blob.bin").await, big);
    assert_eq!(
        get(s3, "plain-logs", "ü/1").await,
        format!(
            "body of ü/1 ({})",
            keys().iter().position(|k| k == "ü/1").unwrap()
        )
        .into_bytes()
    );

    let metabase = fx.planet.metabase().await.unwrap();
    let project = metabase
        .authenticate(&fx.planet.api_key)
        .await
        .unwrap()
        .project;
    let stored = |bucket: &'static str| {
        let project = project.id.clone();
        async move {
            let (entries, more) = metabase
                .list_objects(
                    &project,
                    bucket,
                    &archipel_satellite::metabase::Listing {
                        prefix: b"",
                        cursor: b"",
                        recursive: true,
                        limit: 1000,
                    },
                    archipel_proto::orders::unix_now(),
                )
                .await
                .unwrap();
            assert!(!more);
            let names: Vec<String> = entries
                .iter()
                .map(|e| String::from_utf8_lossy(e.key()).into_owned())
                .collect();
            (entries, names)
        }
    };
    assert!(
        metabase
            .get_bucket(&project.id, "plain-logs")
            .await
            .unwrap()
            .plain_names
    );
    assert!(
        !metabase
            .get_bucket(&project.id, "secret")
            .await
            .unwrap()
            .plain_names
    );
    let (plain_entries, plain) = stored("plain-logs").await;
    let mut expected = keys();
    expected.push("big/blob.bin".into());
    assert_eq!(plain, sorted(expected));
    for entry in &plain_entries {
        let archipel_satellite::metabase::ListEntry::Object(key, object) = entry else {
            panic!("a recursive listing has no prefixes");
        };
        // The metadata (content type, sizes the client sealed) is still sealed:
        // the name in clear appears nowhere in it.
        assert!(!object.encrypted_metadata.is_empty());
        assert!(!object
            .encrypted_metadata
            .windows(key.len())
            .any(|w| w == key.as_slice()));
    }
    let (_, secret) = stored("secret").await;
    assert_eq!(secret.len(), keys().len());
    for key in keys() {
        assert!(!secret.iter().any(|s| s.contains(key.as_str())), "{key}");
    }
    fx.shutdown().await;
}

/// The library's own paging of a bucket with unencrypted names; a bucket
/// without them pages the same (by listing everything and cutting).
async fn library_pages_in_order(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project: Project = planet.project().await.unwrap();
    let plain = project
        .create_bucket_with(
            "plain",
            BucketOptions {
                unencrypted_names: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(plain.unencrypted_names);
    project.create_bucket("secret").await.unwrap();
    let buckets = project.list_buckets().await.unwrap();
    let modes: Vec<(&str, bool)> = buckets
        .iter()
        .map(|b| (b.name.as_str(), b.unencrypted_names))
        .collect();
    assert_eq!(modes, [("plain", true), ("secret", false)]);
    for bucket in ["plain", "secret"] {
        assert_eq!(
            project.lists_in_order(bucket).await.unwrap(),
            bucket == "plain"
        );
        for key in keys() {
            project
                .upload(bucket, &key, key.as_bytes(), UploadOptions::default())
                .await
                .unwrap();
        }
        let all: Vec<String> = project
            .list(bucket, "", true)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(all, sorted(keys()));
        let mut paged = Vec::new();
        loop {
            let page = project
                .list_after(bucket, "", true, paged.last().map(String::as_str), 3)
                .await
                .unwrap();
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            paged.extend(page.into_iter().map(|e| e.key));
        }
        assert_eq!(paged, all);
        let level: Vec<String> = project
            .list_after(bucket, "level/k1", false, Some("level/k12"), 4)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(level, ["level/k13", "level/k14", "level/k15", "level/k16"]);
        let info = project.stat(bucket, "日本/語").await.unwrap();
        assert_eq!(info.size, "日本/語".len() as u64);
        let mut body = Vec::new();
        project
            .download(bucket, "日本/語", None, &mut body, None)
            .await
            .unwrap();
        assert_eq!(body, "日本/語".as_bytes());
        project.delete_object(bucket, "f.txt").await.unwrap();
        assert!(project.list(bucket, "f", false).await.unwrap().is_empty());
    }
    assert!(matches!(
        project.lists_in_order("missing").await,
        Err(archipel_client::Error::BucketNotFound(_))
    ));
    planet.shutdown().await.unwrap();
}

/// A walk over an encrypted level is cut from the snapshot its first page
/// listed: an object put in the middle of the walk, ahead of it, is not in
/// this walk (a fresh listing per page would show it); the next walk sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_are_snapshots() {
    let fx = Fixture::start(Backend::Sqlite, |_| {}).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("snap").send().await.unwrap();
    let keys: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();
    for key in &keys {
        put(s3, "snap", key, b"x".to_vec()).await;
    }
    let first = s3
        .list_objects_v2()
        .bucket("snap")
        .max_keys(5)
        .send()
        .await
        .unwrap();
    let mut walked: Vec<String> = first
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    // Sorts into the second page, which the walk has not reached yet.
    put(s3, "snap", "k07a", b"x".to_vec()).await;
    let mut token = first.next_continuation_token().map(String::from);
    while let Some(t) = token {
        let page = s3
            .list_objects_v2()
            .bucket("snap")
            .max_keys(5)
            .continuation_token(t)
            .send()
            .await
            .unwrap();
        walked.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        token = page.next_continuation_token().map(String::from);
    }
    assert_eq!(walked, keys);
    let mut now = keys.clone();
    now.insert(8, "k07a".into());
    assert_eq!(walk_v2(s3, "snap", "", None, 5).await.0, now);
    fx.shutdown().await;
}

/// ListObjectVersions: every object is its one "null" version, the latest;
/// prefixes, delimiters, key markers and max-keys page as for objects.
async fn object_versions(backend: Backend) {
    let fx = Fixture::start(backend, |_| {}).await;
    let s3 = &fx.client;
    s3.create_bucket().bucket("versions").send().await.unwrap();
    fill(s3, "versions").await;

    let all = s3
        .list_object_versions()
        .bucket("versions")
        .send()
        .await
        .unwrap();
    assert_eq!(all.is_truncated(), Some(false));
    assert!(all.delete_markers().is_empty());
    let names: Vec<&str> = all.versions().iter().map(|v| v.key().unwrap()).collect();
    assert_eq!(names, sorted(keys()));
    for version in all.versions() {
        assert_eq!(version.version_id(), Some("null"));
        assert_eq!(version.is_latest(), Some(true));
        let key = version.key().unwrap();
        let i = keys().iter().position(|k| k == key).unwrap();
        assert_eq!(
            version.size(),
            Some(format!("body of {key} ({i})").len() as i64)
        );
        assert!(version.last_modified().is_some());
    }

    // Page by page at the top level: objects and common prefixes interleave.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = s3
            .list_object_versions()
            .bucket("versions")
            .delimiter("/")
            .max_keys(2)
            .set_key_marker(marker.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.max_keys(), Some(2));
        assert!(page.versions().len() + page.common_prefixes().len() <= 2);
        seen.extend(page.versions().iter().map(|v| v.key().unwrap().to_string()));
        seen.extend(
            page.common_prefixes()
                .iter()
                .map(|p| p.prefix().unwrap().to_string()),
        );
        if page.is_truncated() != Some(true) {
            assert_eq!(page.next_key_marker(), None);
            break;
        }
        // After an object, the version marker is its version (`null`: the
        // bucket was never versioned); after a common prefix there is none.
        let last_is_prefix = page
            .common_prefixes()
            .iter()
            .any(|p| p.prefix() == page.next_key_marker());
        let expected = (!last_is_prefix).then_some("null");
        assert_eq!(page.next_version_id_marker(), expected);
        marker = page.next_key_marker().map(String::from);
        assert!(marker.is_some());
    }
    assert_eq!(
        sorted(seen),
        sorted(
            ["dir-1-x", "dir-2-y", "f.txt", "a/", "level/", "x y/", "ü/", "日本/"]
                .map(String::from)
                .to_vec()
        )
    );

    let level = s3
        .list_object_versions()
        .bucket("versions")
        .prefix("a/")
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = level.versions().iter().map(|v| v.key().unwrap()).collect();
    assert_eq!(names, ["a/b/c.txt", "a/b/d.txt", "a/e.txt"]);
    assert_eq!(level.prefix(), Some("a/"));

    let missing = s3
        .list_object_versions()
        .bucket("no-such-bucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "NoSuchBucket");
    fx.shutdown().await;
}

on_both_backends!(
    unencrypted_names_through_the_gateway,
    library_pages_in_order,
    object_versions
);
