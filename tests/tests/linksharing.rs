//! Public links end to end: a planet, the gateway in-process with its S3,
//! metrics and linksharing listeners, grants registered over HTTP, and the
//! pages, bytes, ranges and conditional answers of the links; registered key
//! pairs used as S3 credentials with `aws-sdk-s3`; and a real MP4 played from
//! its middle in headless Chromium, with the gateway's counters showing that
//! it was served by ranges, not whole.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use archipel_client::{Permissions, Share, UploadOptions};
use archipel_gateway::{Config, Listeners};
use archipel_tests::{test_data, Planet, PlanetConfig};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use common::admin::{fetch, Answer};
use common::s3_client;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The gateway in-process, with every listener.
struct Gateway {
    config: Config,
    s3: String,
    links: String,
    metrics: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), archipel_gateway::Error>>,
}

impl Gateway {
    /// Writes (first time) or reuses the configuration in `dir` and serves.
    async fn start(planet: &Planet, dir: &Path) -> Gateway {
        let path = dir.join("config.toml");
        if !path.exists() {
            archipel_gateway::config::setup(dir, &planet.access().serialize()).unwrap();
        }
        let config = Config::load(&path).unwrap();
        assert_eq!(config.state_dir.as_deref(), Some(dir));
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let (s3, metrics, links) = (bind().await, bind().await, bind().await);
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().unwrap());
        let (s3_url, metrics_url, links_url) = (url(&s3), url(&metrics), url(&links));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(archipel_gateway::run_with_listeners(
            config.clone(),
            Listeners {
                s3,
                metrics: Some(metrics),
                linksharing: Some(links),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Gateway {
            config,
            s3: s3_url,
            links: links_url,
            metrics: format!("{metrics_url}/metrics"),
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }

    /// Registers `grant`; returns (access key id, secret, endpoint).
    async fn register(&self, grant: &str, public: bool) -> (String, String, String) {
        let body = serde_json::json!({ "access_grant": grant, "public": public }).to_string();
        let answer = fetch(
            "POST",
            &format!("{}/api/v1/access", self.links),
            &[("content-type", "application/json")],
            body.into(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let json: Value = serde_json::from_slice(&answer.body).unwrap();
        let field = |name: &str| json[name].as_str().unwrap().to_string();
        (
            field("access_key_id"),
            field("secret_access_key"),
            field("endpoint"),
        )
    }

    /// A sample of the gateway's Prometheus page (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let page = fetch("GET", &self.metrics, &[], Bytes::new()).await.text();
        page.lines()
            .find_map(|line| line.strip_prefix(&format!("{series} ")))
            .map_or(0.0, |value| value.parse().unwrap())
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    fetch("GET", url, headers, Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_serve_pages_bytes_and_ranges() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&planet, dir.path()).await;
    let credential = &gateway.config.credentials[0];
    let s3 = s3_client(
        &gateway.s3,
        &credential.access_key_id,
        &credential.secret_access_key,
    );

    // Objects: a multi-segment one through S3 (with an MD5 ETag), a small
    // one with a name that needs escaping, one through the library (no
    // ETag), and enough small ones for a listing to page.
    s3.create_bucket().bucket("photos").send().await.unwrap();
    let large = test_data(3 * (1 << 20) + 4321, 11);
    let put = s3
        .put_object()
        .bucket("photos")
        .key("clips/large.bin")
        .content_type("application/x-test")
        .body(ByteStream::from(large.clone()))
        .send()
        .await
        .unwrap();
    let odd_key = "notes/<em>Tom & \"Jerry\" 'n' co.txt";
    s3.put_object()
        .bucket("photos")
        .key(odd_key)
        .content_type("text/plain")
        .body(ByteStream::from_static(b"hello links"))
        .send()
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project
        .upload(
            "photos",
            "plain.txt",
            &b"stored by the library"[..],
            UploadOptions::default(),
        )
        .await
        .unwrap();
    for i in 0..205 {
        project
            .upload(
                "photos",
                &format!("many/{i:03}.txt"),
                &b"x"[..],
                UploadOptions::default(),
            )
            .await
            .unwrap();
    }

    // Registration: a bad grant is a clear JSON 400; good ones get keys.
    let grant = planet.access().serialize();
    for body in [
        serde_json::json!({ "access_grant": "ap1nonsense", "public": true }).to_string(),
        "not json".to_string(),
    ] {
        let refused = fetch(
            "POST",
            &format!("{}/api/v1/access", gateway.links),
            &[],
            body.into(),
        )
        .await;
        assert_eq!(refused.status, 400);
        let json: Value = serde_json::from_slice(&refused.body).unwrap();
        assert!(!json["error"].as_str().unwrap().is_empty(), "{json}");
    }
    let (id, secret, endpoint) = gateway.register(&grant, true).await;
    assert_eq!(endpoint, gateway.links);
    assert_eq!(id.len(), 20);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert_eq!(secret.len(), 40);
    let (private_id, private_secret, _) = gateway.register(&grant, false).await;
    let share = format!("{}/s/{id}", gateway.links);
    let raw = format!("{}/raw/{id}", gateway.links);

    // The object page.
    let page = get(&format!("{share}/photos/clips/large.bin"), &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("<h1>large.bin</h1>"), "{html}");
    assert!(html.contains("application/x-test"), "{html}");
    assert!(
        html.contains(&format!("data-size=\"{}\"", large.len())),
        "{html}"
    );
    assert!(html.contains("3.0 MiB"), "{html}");
    assert!(
        html.contains(&format!("href=\"{share}/photos/clips/large.bin?download\"")),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains(&grant), "a page shows the grant");
    // Names are escaped wherever they appear.
    let odd_page = get(
        &format!("{share}/photos/notes/%3Cem%3ETom%20%26%20%22Jerry%22%20%27n%27%20co.txt"),
        &[],
    )
    .await;
    assert_eq!(odd_page.status, 200, "{}", odd_page.text());
    let odd_html = odd_page.text();
    assert!(odd_html.contains("&lt;em&gt;Tom &amp; &quot;Jerry&quot; &#39;n&#39; co.txt"));
    assert!(!odd_html.contains("<em>Tom"), "{odd_html}");

    // The bytes, whole: headers from the object, ETag the content's MD5.
    let whole = get(&format!("{raw}/photos/clips/large.bin"), &[]).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == large, "the raw bytes differ from the object");
    assert_eq!(whole.header("content-type"), Some("application/x-test"));
    assert_eq!(
        whole.header("content-length"),
        Some(large.len().to_string().as_str())
    );
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.header("last-modified").is_some());
    let etag = whole.header("etag").unwrap().to_string();
    assert_eq!(Some(etag.as_str()), put.e_tag(), "the ETag S3 answered");
    let download = get(&format!("{share}/photos/clips/large.bin?download"), &[]).await;
    assert_eq!(download.status, 200);
    assert!(download.body == large);
    assert_eq!(
        download.header("content-disposition"),
        Some("attachment; filename*=UTF-8''large.bin")
    );
    let head = fetch(
        "HEAD",
        &format!("{raw}/photos/clips/large.bin"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(large.len().to_string().as_str())
    );

    // Ranges: each answer is exactly its slice, across segment boundaries too.
    let size = large.len() as u64;
    let cases: [(&str, u64, u64); 6] = [
        ("bytes=0-99", 0, 99),
        ("bytes=1048000-1049999", 1_048_000, 1_049_999),
        ("bytes=2097152-", 2_097_152, size - 1),
        ("bytes=-500", size - 500, size - 1),
        ("bytes=10-20, 30-40", 10, 20),
        ("bytes=3000000-99999999", 3_000_000, size - 1),
    ];
    for (range, first, last) in cases {
        let part = get(
            &format!("{raw}/photos/clips/large.bin"),
            &[("range", range)],
        )
        .await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(
            part.header("content-length"),
            Some((last - first + 1).to_string().as_str())
        );
        assert!(
            part.body == large[first as usize..=last as usize],
            "the bytes of {range} differ from the object's"
        );
    }
    let unsatisfiable = get(
        &format!("{raw}/photos/clips/large.bin"),
        &[("range", &format!("bytes={size}-"))],
    )
    .await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    // An If-Range naming another version gets the whole object.
    let stale = get(
        &format!("{raw}/photos/clips/large.bin"),
        &[("range", "bytes=0-9"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body.len(), large.len());

    // Conditional GETs.
    let cached = get(
        &format!("{raw}/photos/clips/large.bin"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    let changed = get(
        &format!("{raw}/photos/clips/large.bin"),
        &[("if-none-match", "\"something else\"")],
    )
    .await;
    assert_eq!(changed.status, 200);
    // An object without a stored ETag gets a weak one, good for 304s too.
    let plain = get(&format!("{raw}/photos/plain.txt"), &[]).await;
    assert_eq!(plain.body, b"stored by the library");
    assert_eq!(
        plain.header("content-type"),
        Some("application/octet-stream")
    );
    let weak = plain.header("etag").unwrap().to_string();
    assert!(weak.starts_with("W/\""), "{weak}");
    let again = get(
        &format!("{raw}/photos/plain.txt"),
        &[("if-none-match", &weak)],
    )
    .await;
    assert_eq!(again.status, 304);

    // Listings: folders and objects, escaped, paged.
    let root = get(&format!("{share}/photos/"), &[]).await;
    assert_eq!(root.status, 200);
    let root_html = root.text();
    for entry in ["clips/", "notes/", "many/", "plain.txt"] {
        assert!(root_html.contains(&format!(">{entry}</a>")), "{root_html}");
    }
    assert_eq!(get(&format!("{share}/photos"), &[]).await.status, 200);
    let notes = get(&format!("{share}/photos/notes/"), &[]).await.text();
    assert!(notes.contains("&lt;em&gt;Tom &amp; &quot;Jerry&quot; &#39;n&#39; co.txt"));
    assert!(!notes.contains("<em>Tom"), "{notes}");
    let many = get(&format!("{share}/photos/many/"), &[]).await;
    assert_eq!(many.status, 200);
    let many_html = many.text();
    assert!(many_html.contains(">199.txt</a>"));
    assert!(!many_html.contains(">200.txt</a>"));
    let more = format!("{share}/photos/many/?after=many/199.txt");
    assert!(
        many_html.contains(&format!("class=\"more\" href=\"{more}\"")),
        "{many_html}"
    );
    let next = get(&more, &[]).await.text();
    assert!(next.contains(">200.txt</a>") && next.contains(">204.txt</a>"));
    assert!(!next.contains(">199.txt</a>") && !next.contains("class=\"more\""));
    let buckets = get(&format!("{share}/"), &[]).await.text();
    assert!(buckets.contains(">photos/</a>"), "{buckets}");

    // What is not there, or not shared, is 404 alike.
    for url in [
        format!("{share}/photos/missing.txt"),
        format!("{raw}/photos/missing.txt"),
        format!("{share}/nobucket/x"),
        format!("{share}/photos/nothing/"),
        format!("{}/s/AAAAAAAAAAAAAAAAAAAA/photos/plain.txt", gateway.links),
        format!(
            "{}/raw/AAAAAAAAAAAAAAAAAAAA/photos/plain.txt",
            gateway.links
        ),
        format!("{}/s/{private_id}/photos/plain.txt", gateway.links),
        format!("{}/raw/{private_id}/photos/plain.txt", gateway.links),
        format!(
            "{}/s/{}/photos/plain.txt",
            gateway.links, credential.access_key_id
        ),
        format!("{}/elsewhere", gateway.links),
    ] {
        let missing = get(&url, &[]).await;
        assert_eq!(missing.status, 404, "{url}");
        assert!(missing
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(!missing.text().contains(&grant));
    }

    // Registered key pairs are S3 credentials, private ones included.
    for (key_id, secret) in [(&id, &secret), (&private_id, &private_secret)] {
        let registered = s3_client(&gateway.s3, key_id, secret);
        let listed = registered
            .list_objects_v2()
            .bucket("photos")
            .prefix("notes/")
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, [odd_key]);
        registered
            .put_object()
            .bucket("photos")
            .key(format!("by/{key_id}"))
            .body(ByteStream::from_static(b"via a registered key"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            common::get_bytes(&registered, "photos", &format!("by/{key_id}")).await,
            b"via a registered key"
        );
    }
    let wrong = s3_client(&gateway.s3, &id, "0000000000000000000000000000000000000000");
    let refused = wrong.list_buckets().send().await.unwrap_err();
    assert_eq!(common::code(&refused), "SignatureDoesNotMatch");
    let unknown = s3_client(&gateway.s3, "AAAAAAAAAAAAAAAAAAAA", &secret);
    let refused = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(common::code(&refused), "InvalidAccessKeyId");

    // The counters saw the ranges.
    assert!(
        gateway
            .metric("archipel_gateway_link_responses_total{status=\"206\"}")
            .await
            >= 6.0
    );
    assert!(
        gateway
            .metric("archipel_gateway_link_body_bytes_total")
            .await
            >= 3.0 * size as f64
    );

    // The registry outlives the gateway: the same link and keys work after
    // a restart.
    gateway.stop().await;
    let gateway = Gateway::start(&planet, dir.path()).await;
    let share = format!("{}/s/{id}", gateway.links);
    let after = get(&format!("{share}/photos/plain.txt?download"), &[]).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, b"stored by the library");
    let registered = s3_client(&gateway.s3, &private_id, &private_secret);
    registered
        .head_object()
        .bucket("photos")
        .key("plain.txt")
        .send()
        .await
        .unwrap();
    let db = std::fs::read(dir.path().join("registry.db")).unwrap();
    assert!(!db.windows(grant.len()).any(|w| w == grant.as_bytes()));
    gateway.stop().await;
    planet.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_grants_serve_their_prefix_until_revoked() {
    // A read-only grant of one prefix (`archipel share`) made public: its
    // links serve that prefix only, and from its revocation on answer 403,
    // never telling the grant.
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&planet, dir.path()).await;
    let project = planet.project().await.unwrap();
    project.create_bucket("photos").await.unwrap();
    for key in ["clips/a.txt", "private/b.txt"] {
        project
            .upload("photos", key, key.as_bytes(), UploadOptions::default())
            .await
            .unwrap();
    }
    let shared = project
        .share(&Share {
            permissions: Permissions::READ_ONLY,
            prefixes: vec![("photos".into(), "clips/".into())],
            not_before: None,
            not_after: None,
        })
        .await
        .unwrap();
    let grant = shared.serialize();
    let (id, secret, _) = gateway.register(&grant, true).await;
    let share = format!("{}/s/{id}", gateway.links);
    let raw = format!("{}/raw/{id}", gateway.links);

    // As S3 credentials the registration is restricted alike.
    let s3 = s3_client(&gateway.s3, &id, &secret);
    assert_eq!(
        common::get_bytes(&s3, "photos", "clips/a.txt").await,
        b"clips/a.txt"
    );
    let denied = s3
        .get_object()
        .bucket("photos")
        .key("private/b.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(common::code(&denied), "AccessDenied");

    let served = get(&format!("{raw}/photos/clips/a.txt"), &[]).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.body, b"clips/a.txt");
    let listing = get(&format!("{share}/photos/clips/"), &[]).await;
    assert_eq!(listing.status, 200, "{}", listing.text());
    assert!(listing.text().contains(">a.txt</a>"));
    let root = get(&format!("{share}/photos/"), &[]).await;
    assert!(!root.text().contains("private"), "{}", root.text());
    for url in [
        format!("{raw}/photos/private/b.txt"),
        format!("{share}/photos/private/b.txt"),
        format!("{share}/photos/private/"),
    ] {
        let outside = get(&url, &[]).await;
        assert!(
            [403, 404].contains(&outside.status),
            "{url}: {} {}",
            outside.status,
            outside.text()
        );
        assert!(!outside.text().contains("private/b.txt"));
    }

    project.revoke(&shared.api_key).await.unwrap();
    for url in [
        format!("{raw}/photos/clips/a.txt"),
        format!("{share}/photos/clips/a.txt"),
        format!("{share}/photos/clips/"),
    ] {
        let refused = get(&url, &[]).await;
        assert_eq!(refused.status, 403, "{url}: {}", refused.text());
        assert!(!refused.text().contains(&grant));
        assert!(!refused.text().contains(&shared.api_key));
    }
    gateway.stop().await;
    planet.shutdown().await.unwrap();
}

// ---- The browser ----------------------------------------------------------

/// Debian's package installs `chromium`; other systems name it otherwise.
fn program(names: &[&str], install: &str) -> PathBuf {
    for name in names {
        if let Ok(output) = Command::new("which").arg(name).output() {
            if output.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            }
        }
    }
    panic!("this test needs {}: {install}", names[0]);
}

/// A two-minute H.264 MP4 (moov atom first, a key frame every 2 s) of about
/// 45 MB: noise keeps the encoder from squeezing it. A player that seeks to
/// the middle reads a few megabytes from the start (what it buffers before
/// the seek) and the second half at most, so one that fetched it whole
/// would show in the byte count.
fn make_video(dir: &Path) -> PathBuf {
    let ffmpeg = program(
        &["ffmpeg"],
        "install Debian's `ffmpeg` package (.ci/run does)",
    );
    let out = dir.join("clip.mp4");
    let made = Command::new(ffmpeg)
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=duration=120:size=640x360:rate=25,noise=alls=30:allf=t")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
            "-maxrate",
            "3M",
            "-bufsize",
            "6M",
            "-g",
            "50",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    out
}

/// The page Chromium opens: the link in a `<video>`, sought to the middle
/// once its metadata is in, then played; what happens is reported back to
/// the page's own server as `/report?...` requests.
fn player_page(video: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html><body>
<video id="v" muted playsinline preload="metadata" src="{video}"></video>
<script>
const v = document.getElementById('v');
const report = (what) => fetch('/report?' + what).catch(() => {{}});
let soughtTo = null;
let done = false;
v.addEventListener('error', () => report('error=' + (v.error ? v.error.code + ':' + encodeURIComponent(v.error.message) : '?')));
v.addEventListener('loadedmetadata', () => {{
  report('duration=' + v.duration);
  v.currentTime = v.duration / 2;
}});
v.addEventListener('seeked', () => {{
  if (soughtTo !== null) return;
  soughtTo = v.currentTime;
  report('seeked=' + soughtTo);
  v.play().catch((e) => report('error=play:' + encodeURIComponent(String(e))));
}});
v.addEventListener('timeupdate', () => {{
  if (!done && soughtTo !== null && v.currentTime > soughtTo + 1.0) {{
    done = true;
    report('played=' + v.currentTime + '&from=' + soughtTo);
  }}
}});
</script>
</body></html>
"#
    )
}

/// Serves `page` for every path but `/report?...`, whose query goes to
/// `reports`. One request per connection (`Connection: close`).
async fn serve_page(listener: TcpListener, page: String, reports: mpsc::UnboundedSender<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let page = page.clone();
        let reports = reports.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, kind, body) = match target.strip_prefix("/report?") {
                Some(query) => {
                    let _ = reports.send(query.to_string());
                    ("204 No Content", "text/plain", String::new())
                }
                None => ("200 OK", "text/html; charset=utf-8", page),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Headless Chromium on a page, in a process group of its own so that its
/// helper processes stop with it.
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str, log: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let chromium = program(
            &["chromium", "chromium-browser", "google-chrome"],
            "install Debian's `chromium` package (.ci/run does)",
        );
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        // The group this test created for the browser, and only it.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_a_shared_video_from_its_middle() {
    let work = tempfile::tempdir().unwrap();
    let video_path = make_video(work.path());
    let video = std::fs::read(&video_path).unwrap();
    let size = video.len() as f64;

    let planet = Planet::start(PlanetConfig {
        max_segment_size: 4 << 20,
        ..PlanetConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&planet, dir.path()).await;
    let project = planet.project().await.unwrap();
    project.create_bucket("videos").await.unwrap();
    project
        .upload(
            "videos",
            "clips/test pattern.mp4",
            &video[..],
            UploadOptions {
                content_type: Some("video/mp4".into()),
                ..UploadOptions::default()
            },
        )
        .await
        .unwrap();
    let (id, _, _) = gateway.register(&planet.access().serialize(), true).await;

    // The object page previews it with a <video> of the raw link.
    let raw = format!("{}/raw/{id}/videos/clips/test%20pattern.mp4", gateway.links);
    let page = get(
        &format!("{}/s/{id}/videos/clips/test%20pattern.mp4", gateway.links),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains(&format!(
            "<video controls preload=\"metadata\" src=\"{raw}\">"
        )),
        "{}",
        page.text()
    );
    let bytes_before = gateway
        .metric("archipel_gateway_link_body_bytes_total")
        .await;
    let partial_before = gateway
        .metric("archipel_gateway_link_responses_total{status=\"206\"}")
        .await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_url = format!("http://{}/player.html", listener.local_addr().unwrap());
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve_page(listener, player_page(&raw), reports_tx));
    let log = work.path().join("chromium.log");
    let browser = Browser::open(&page_url, &log);

    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(report) = reports.recv().await {
            seen.push(report.clone());
            if report.starts_with("played=") || report.starts_with("error=") {
                return report;
            }
        }
        String::from("the page server stopped")
    })
    .await;
    drop(browser);
    server.abort();
    let outcome = outcome.unwrap_or_else(|_| {
        panic!(
            "the video did not play from its middle within 3 minutes; the page reported {seen:?}; \
             Chromium said:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let fields: BTreeMap<&str, &str> = outcome
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let (Some(played), Some(from)) = (fields.get("played"), fields.get("from")) else {
        panic!("the video failed to play: {outcome} (reports {seen:?})");
    };
    let played: f64 = played.parse().unwrap();
    let from: f64 = from.parse().unwrap();
    assert!(
        (55.0..65.0).contains(&from),
        "the seek went to {from}s, not the middle"
    );
    assert!(
        played > from + 1.0,
        "currentTime did not advance past the seek"
    );

    // Served by ranges, not whole: the seek took a request of its own, and
    // much of the first half never left the gateway.
    let partial = gateway
        .metric("archipel_gateway_link_responses_total{status=\"206\"}")
        .await
        - partial_before;
    let sent = gateway
        .metric("archipel_gateway_link_body_bytes_total")
        .await
        - bytes_before;
    println!(
        "the browser played {from:.1}s → {played:.1}s with {partial} ranged responses, \
         {sent} of {size} bytes sent"
    );
    assert!(
        partial >= 2.0,
        "the browser made {partial} range requests; a seek needs one of its own"
    );
    assert!(
        sent < 0.8 * size,
        "the gateway sent {sent} bytes of a {size}-byte video: the whole file, not ranges"
    );
    gateway.stop().await;
    planet.shutdown().await.unwrap();
}
