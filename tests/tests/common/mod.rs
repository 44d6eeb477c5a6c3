//! What the whole-network test files share: the gateway fixture (a planet,
//! the gateway in-process on 127.0.0.1:0 configured by `setup`, and an
//! `aws-sdk-s3` client for it) and, in [`admin`], HTTP clients for admin and
//! metrics pages.

// Each test file that includes this module uses a different part of it.
#![allow(dead_code)]

pub mod admin;

use std::path::Path;

use archipel_gateway::Config;
use archipel_tests::{Backend, Planet, PlanetConfig};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A planet with a gateway in front of it.
pub struct Fixture {
    pub planet: Planet,
    pub config: Config,
    /// `SCHEME://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    /// A path-style client for `endpoint` with the configured key pair.
    pub client: Client,
    /// `http://127.0.0.1:PORT/metrics`: the gateway's Prometheus metrics.
    pub metrics_url: String,
    stop: oneshot::Sender<()>,
    gateway: JoinHandle<Result<(), archipel_gateway::Error>>,
    /// The gateway's directory (config.toml and any files `start_with` adds).
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start(backend: Backend) -> Fixture {
        Fixture::start_with(backend, |_, _| {}).await
    }

    /// Like `start`, with `configure` changing the configuration `setup`
    /// wrote (it gets the gateway's directory for files it needs).
    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut Config, &Path),
    ) -> Fixture {
        let planet = Planet::start(PlanetConfig::with_backend(backend))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The grant goes through a file, as `setup --access FILE` reads it.
        let grant_file = dir.path().join("grant");
        std::fs::write(&grant_file, planet.access().serialize()).unwrap();
        let (config, path) =
            archipel_gateway::config::setup(dir.path(), grant_file.to_str().unwrap()).unwrap();
        let mut config_loaded = Config::load(&path).unwrap();
        let credential = &config_loaded.credentials[0];
        assert_eq!(
            credential.access_key_id,
            config.credentials[0].access_key_id
        );
        assert_eq!(credential.access_key_id.len(), 20);
        assert!(credential
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(credential.secret_access_key.len(), 40);
        configure(&mut config_loaded, dir.path());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = format!("{}://127.0.0.1:{port}", config_loaded.scheme());
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_url = format!("http://{}/metrics", metrics.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = tokio::spawn(archipel_gateway::run_with_metrics(
            config_loaded.clone(),
            listener,
            Some(metrics),
            async move {
                let _ = stopped.await;
            },
        ));
        let credential = &config_loaded.credentials[0];
        let client = s3_client(
            &endpoint,
            &credential.access_key_id,
            &credential.secret_access_key,
        );
        Fixture {
            planet,
            config: config_loaded,
            endpoint,
            port,
            client,
            metrics_url,
            stop,
            gateway,
            dir,
        }
    }

    /// A client with the configured key pair for `endpoint` through
    /// `http_client`, path-style or virtual-hosted-style.
    pub fn client_via(
        &self,
        endpoint: &str,
        http_client: SharedHttpClient,
        path_style: bool,
    ) -> Client {
        let credential = &self.config.credentials[0];
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .force_path_style(path_style)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                &credential.access_key_id,
                &credential.secret_access_key,
                None,
                None,
                "test",
            ))
            .http_client(http_client)
            .build();
        Client::from_conf(config)
    }

    /// The path and query of a presigned request to this gateway, for a raw
    /// HTTP client.
    pub fn path_of(&self, presigned: &aws_sdk_s3::presigning::PresignedRequest) -> String {
        presigned
            .uri()
            .strip_prefix(&self.endpoint)
            .unwrap()
            .to_string()
    }

    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.gateway.await.unwrap().unwrap();
        self.planet.shutdown().await.unwrap();
    }
}

pub fn s3_client(endpoint: &str, key_id: &str, secret: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "test"))
        .build();
    Client::from_conf(config)
}

/// The S3 error code of a failed call.
pub fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> String {
    error.code().unwrap_or("<none>").to_string()
}

/// The HTTP status of a failed call.
pub fn status<E>(error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    error.raw_response().unwrap().status().as_u16()
}

/// The whole content of an object.
pub async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let output = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    output.body.collect().await.unwrap().to_vec()
}

/// Sends one raw HTTP/1.1 GET to the gateway at `endpoint` (http://…);
/// returns status and body.
pub async fn raw_get(endpoint: &str, path_and_query: &str) -> (u16, Vec<u8>) {
    raw_request(endpoint, "GET", path_and_query, &[]).await
}

/// Sends one raw HTTP/1.1 request without a body, with `headers`; returns
/// status and body (dechunked).
pub async fn raw_request(
    endpoint: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Uploads `body` as the only part of the multipart upload `create` begins
/// (for the bucket and key it names) and completes it.
pub async fn upload_in_one_part(
    s3: &Client,
    create: aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    body: &'static [u8],
) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let bucket = create.get_bucket().clone().unwrap();
    let key = create.get_key().clone().unwrap();
    let upload = create.send().await.unwrap();
    let upload_id = upload.upload_id().unwrap();
    let part = s3
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(upload_id)
        .part_number(1)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
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
}
