//! The HTTP server: opens the registry of access grants and connects one
//! project per configured credential, then serves the S3 service on its
//! listener and the links on theirs (both over TLS when the configuration
//! names a certificate) until `shutdown` completes, letting requests in
//! flight finish.
//!
//! Nobody can hold the gateway up for free: at most `max_connections` are
//! served at once, a client must send its headers within
//! `header_read_timeout` (slowloris), an upload body that stalls for
//! `body_idle_timeout` fails, idle HTTP/2 connections are pinged and dropped
//! when dead, and presigned URLs valid for more than seven days are refused,
//! as AWS refuses them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use archipel_proto::latency::Latencies;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::HttpError;
pub(crate) use s3s::HttpResponse;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::cors;
use crate::grants::Grants;
use crate::linksharing;
use crate::metrics::{self, LinkCounters, OperationName, Timed};
use crate::public::{AccessCheck, Public};
use crate::registry::Registry;
use crate::service::Gateway;
use crate::vhost::VirtualHosts;
use crate::{auth, tls, Config, Error};

/// How long requests in flight may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: a ping this often on an idle connection, and the
/// connection dropped when one goes unanswered this long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest validity a presigned URL may ask for: seven days, as on AWS.
pub const MAX_PRESIGNED_EXPIRY_SECS: i64 = 604_800;

/// Serves S3 on `listener` (the configured `listen` address is for the
/// binary; tests pass 127.0.0.1:0) until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run_with_metrics(config, listener, None, shutdown).await
}

/// [`run`], with the latency histograms of S3 operations served as
/// Prometheus metrics (`GET /metrics`) on `metrics` if given.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let listeners = Listeners {
        s3: listener,
        metrics,
        linksharing: None,
    };
    run_with_listeners(config, listeners, shutdown).await
}

/// The sockets the gateway serves on (the configuration's addresses are for
/// the binary, which binds them; tests pass 127.0.0.1:0).
pub struct Listeners {
    /// The S3 endpoint.
    pub s3: TcpListener,
    /// Prometheus metrics (`GET /metrics`), if wanted.
    pub metrics: Option<TcpListener>,
    /// Public links and the registration of access grants (see
    /// docs/SHARING.md), if wanted; needs the configuration's `state_dir`.
    pub linksharing: Option<TcpListener>,
}

/// Serves S3, and metrics and links when their listeners are given, until
/// `shutdown` completes. S3 and links share one registry of access grants
/// and one cap on connections.
pub async fn run_with_listeners(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate()?;
    let registry = match config.registry_path() {
        Some(path) => Some(Registry::open(&path)?),
        None if listeners.linksharing.is_some() => return Err(Error::NoStateDir),
        None => None,
    };
    if config.credentials.is_empty() && registry.is_none() {
        return Err(Error::NoCredentials);
    }
    let tls = match (&config.tls_certificate, &config.tls_key) {
        (Some(certificate), Some(key)) => Some(tls::acceptor(certificate, key)?),
        (None, None) => None,
        _ => return Err(Error::TlsIncomplete),
    };
    let hosts = if config.domain_names.is_empty() {
        None
    } else {
        Some(VirtualHosts::new(&config.domain_names)?)
    };
    let grants = Arc::new(Grants::open(&config, registry).await?);
    let public = Arc::new(Public::new(grants.clone()));
    let mut builder = S3ServiceBuilder::new(Gateway {
        grants: grants.clone(),
        region: config.region.clone(),
        snapshots: Default::default(),
        unencrypted_names: config.unencrypted_names.clone(),
    });
    builder.set_auth(auth::KeyStore(grants.clone()));
    builder.set_access(AccessCheck {
        public: public.clone(),
    });
    if let Some(hosts) = &hosts {
        builder.set_host(hosts.clone());
    }
    let latencies = Arc::new(Latencies::default());
    let link_counters = Arc::new(LinkCounters::default());
    let service = Limited {
        s3: builder.build(),
        region: config.region.clone(),
        body_idle_timeout: config.body_idle_timeout,
        latencies: latencies.clone(),
        public,
        hosts: hosts.map(Arc::new),
    };
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = listeners.metrics.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            latencies,
            link_counters.clone(),
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });

    let mut http = ConnectionBuilder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let s3 = accept(
        listeners.s3,
        tls.clone(),
        http.clone(),
        service,
        connections.clone(),
        &graceful,
    );
    let links = async {
        match listeners.linksharing {
            Some(listener) => {
                // The address actually listened on, unless the configuration
                // names a public URL (tests listen on 127.0.0.1:0).
                let base_url = match &config.public_url {
                    Some(url) => url.trim_end_matches('/').to_string(),
                    None => listener_url(&config, &listener),
                };
                let links = Links {
                    router: linksharing::router(grants.clone(), base_url, link_counters.clone()),
                    body_idle_timeout: config.body_idle_timeout,
                    counters: link_counters.clone(),
                };
                accept(
                    listener,
                    tls.clone(),
                    http.clone(),
                    links,
                    connections,
                    &graceful,
                )
                .await
            }
            None => std::future::pending().await,
        }
    };
    // The accept loops run until shutdown; dropping them closes the listeners.
    tokio::select! {
        () = s3 => {}
        () = links => {}
        () = shutdown => {}
    }
    let _ = stop_metrics.send(());
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    tracing::info!("shutting down; letting requests in flight finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("requests still running after {DRAIN_TIMEOUT:?} were cut off");
        }
    }
    Ok(())
}

/// `SCHEME://ADDRESS` of a listener.
fn listener_url(config: &Config, listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(address) => format!("{}://{address}", config.scheme()),
        Err(_) => String::new(),
    }
}

/// Accepts connections on `listener` and serves each with `service`, at
/// most as many at once as `connections` has permits; never returns.
async fn accept<S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    http: ConnectionBuilder<TokioExecutor>,
    service: S,
    connections: Arc<Semaphore>,
    graceful: &GracefulShutdown,
) where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        // At the cap, new clients wait in the listen backlog.
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return; // never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, peer)) => {
                // Without it a response's small last write waits for the
                // ACK of the one before, which the client delays: 40 ms.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                stream
            }
            Err(e) => {
                // Running out of file descriptors passes; do not spin meanwhile.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(serve(
            stream,
            tls.clone(),
            http.clone(),
            service.clone(),
            graceful.watcher(),
            permit,
        ));
    }
}

/// Serves one accepted connection, after the TLS handshake if there is one.
/// A client that fails the handshake (plain HTTP on an HTTPS port, say) only
/// loses its own connection.
async fn serve<S, B>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    http: ConnectionBuilder<TokioExecutor>,
    service: S,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(acceptor) = tls else {
        return serve_http(stream, &http, service, watcher).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, &http, service, watcher).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn serve_http<S, B>(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    http: &ConnectionBuilder<TokioExecutor>,
    service: S,
    watcher: Watcher,
) where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// The S3 service behind the gateway's own request checks (presigned URL
/// validity, request bodies that may not stall), recording how long each
/// request takes.
#[derive(Clone)]
struct Limited {
    s3: S3Service,
    /// The region answers tell clients that signed for one s3s cannot read.
    region: String,
    body_idle_timeout: Duration,
    latencies: Arc<Latencies>,
    /// Answers browsers' preflights, which carry no signature.
    public: Arc<Public>,
    hosts: Option<Arc<VirtualHosts>>,
}

impl hyper::service::Service<http::Request<Incoming>> for Limited {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let request_id = new_request_id();
        let refusal = match presigned_expiry(request.uri()) {
            Some(secs) if secs > MAX_PRESIGNED_EXPIRY_SECS => Some(presigned_too_long()),
            Some(secs) if secs < 0 => Some(presigned_expired()),
            _ => unreadable_region(&request, &self.region),
        };
        if let Some(refusal) = refusal {
            return Box::pin(std::future::ready(Ok(with_request_id(
                refusal,
                &request_id,
            ))));
        }
        if request.method() == http::Method::OPTIONS {
            let public = self.public.clone();
            let hosts = self.hosts.clone();
            return Box::pin(async move {
                let response = cors::preflight(&public, hosts.as_deref(), &request).await;
                Ok(with_request_id(response, &request_id))
            });
        }
        let started = std::time::Instant::now();
        let timeout = self.body_idle_timeout;
        let mut request =
            request.map(|body| s3s::Body::http_body_unsync(IdleTimeout::new(body, timeout)));
        let operation = OperationName::default();
        request.extensions_mut().insert(operation.clone());
        let cors_headers = cors::ResponseHeaders::default();
        if cors::origin(request.headers()).is_some() {
            request.extensions_mut().insert(cors_headers.clone());
        }
        let s3 = self.s3.clone();
        let latencies = self.latencies.clone();
        let span = tracing::debug_span!(
            "s3",
            operation = tracing::field::Empty,
            request_id = request_id.as_str()
        );
        Box::pin(
            async move {
                let mut response = with_request_id(s3.call(request).await?, &request_id);
                cors_headers.apply(&mut response);
                Ok(response.map(|body| {
                    s3s::Body::http_body_unsync(Timed::new(body, latencies, operation, started))
                }))
            }
            .instrument(span),
        )
    }
}

/// The links' routes behind the same body check as S3's (a request body, a
/// registration, may not stall), counting their answers by status.
#[derive(Clone)]
struct Links {
    router: axum::Router,
    body_idle_timeout: Duration,
    counters: Arc<LinkCounters>,
}

impl hyper::service::Service<http::Request<Incoming>> for Links {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<axum::response::Response, std::convert::Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let timeout = self.body_idle_timeout;
        let request = request.map(|body| axum::body::Body::new(IdleTimeout::new(body, timeout)));
        // A router is always ready; it needs no poll_ready first.
        let mut router = self.router.clone();
        let counters = self.counters.clone();
        Box::pin(async move {
            let response = tower_service::Service::call(&mut router, request).await?;
            counters.response(response.status());
            Ok(response)
        })
    }
}

/// A request's id, as S3 makes them: 16 upper-case hex digits.
fn new_request_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

/// `response` naming its request as S3 does: in `x-amz-request-id`, and in
/// the `<RequestId>` of an error's XML body.
fn with_request_id(mut response: HttpResponse, request_id: &str) -> HttpResponse {
    if let Ok(value) = http::HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amz-request-id", value);
    }
    if response.status().is_success() {
        return response;
    }
    // Error bodies are small and whole (not streamed).
    let Some(xml) = response.body().bytes() else {
        return response;
    };
    let Ok(text) = std::str::from_utf8(&xml) else {
        return response;
    };
    if text.contains("<RequestId>") {
        return response;
    }
    if let Some(end) = text.rfind("</Error>") {
        let body = format!(
            "{}<RequestId>{request_id}</RequestId>{}",
            &text[..end],
            &text[end..]
        );
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
        *response.body_mut() = s3s::Body::from(body);
    }
    response
}

/// The `X-Amz-Expires` of a presigned URL, if it has a numeric one.
fn presigned_expiry(uri: &http::Uri) -> Option<i64> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Expires="))?
        .parse()
        .ok()
}

/// The answer to a presigned URL whose validity is negative: expired
/// before it was made, as one past its time.
fn presigned_expired() -> HttpResponse {
    xml_error(
        http::StatusCode::FORBIDDEN,
        "AccessDenied",
        "Request has expired",
        "",
    )
}

/// AWS's answer to a presigned URL valid for more than seven days.
fn presigned_too_long() -> HttpResponse {
    xml_error(
        http::StatusCode::BAD_REQUEST,
        "AuthorizationQueryParametersError",
        &format!(
            "X-Amz-Expires must be less than a week (in seconds) that is; {MAX_PRESIGNED_EXPIRY_SECS}"
        ),
        "",
    )
}

/// The region a SigV4 request was signed for (its credential scope's third
/// field), from the `Authorization` header or a presigned URL's
/// `X-Amz-Credential`; and whether it came from the URL.
fn signed_region<B>(request: &http::Request<B>) -> Option<(String, bool)> {
    let from_header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("AWS4-HMAC-SHA256"))
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|scope| scope.split(['/', ',']).nth(2))
        .map(|region| (region.to_string(), false));
    from_header.or_else(|| {
        let credential = request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("X-Amz-Credential="))?;
        let scope = percent_encoding::percent_decode_str(credential)
            .decode_utf8()
            .ok()?;
        Some((scope.split('/').nth(2)?.to_string(), true))
    })
}

/// S3's answer to a request signed for a region name s3s cannot read
/// (some tools default to `US`): `AuthorizationHeaderMalformed` (or, for a
/// presigned URL, `AuthorizationQueryParametersError`) naming the expected
/// `<Region>`, which such clients sign with on their retry. Regions of the
/// usual form need no answer: the signature covers the region the client
/// named, so they work as they are.
fn unreadable_region<B>(request: &http::Request<B>, expected: &str) -> Option<HttpResponse> {
    let (region, presigned) = signed_region(request)?;
    let readable = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if readable {
        return None;
    }
    let (code, problem) = match presigned {
        false => (
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed",
        ),
        true => (
            "AuthorizationQueryParametersError",
            "Error parsing the X-Amz-Credential parameter",
        ),
    };
    let region = xml_text(&region);
    let expected = xml_text(expected);
    Some(xml_error(
        http::StatusCode::BAD_REQUEST,
        code,
        &format!("{problem}; the region '{region}' is wrong; expecting '{expected}'"),
        &format!("<Region>{expected}</Region>"),
    ))
}

/// `text` escaped for XML character data.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// An answer with S3's error XML: `code`, `message` (already escaped) and
/// any `extra` elements.
pub(crate) fn xml_error(
    status: http::StatusCode,
    code: &str,
    message: &str,
    extra: &str,
) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message>{extra}</Error>"
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    response
}

/// A request body that fails when the client sends nothing for `timeout`
/// while the gateway waits for it. Time the gateway spends elsewhere (storing
/// what it already has) does not count.
struct IdleTimeout {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    waiting: bool,
}

impl IdleTimeout {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|frame| frame.map_err(io::Error::other)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = Instant::now() + this.timeout;
                    this.deadline.as_mut().reset(deadline);
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the request body sent nothing for {:?}", this.timeout),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_expiries_are_read_from_the_query() {
        let uri = |q: &str| format!("http://h/b/k?{q}").parse::<http::Uri>().unwrap();
        assert_eq!(
            presigned_expiry(&uri("X-Amz-Expires=604800&a=b")),
            Some(604_800)
        );
        assert_eq!(
            presigned_expiry(&uri("a=b&X-Amz-Expires=604801")),
            Some(604_801)
        );
        assert_eq!(presigned_expiry(&uri("X-Amz-Expires=-5")), Some(-5));
        assert_eq!(presigned_expiry(&uri("X-Amz-Expires=soon")), None);
        assert_eq!(presigned_expiry(&uri("x-X-Amz-Expires=1")), None);
        assert_eq!(presigned_expiry(&"http://h/b/k".parse().unwrap()), None);
    }

    #[test]
    fn regions_s3s_cannot_read_get_the_expected_one() {
        let signed = |authorization: &str, query: &str| {
            let mut request = http::Request::builder().uri(format!("/b/k{query}"));
            if !authorization.is_empty() {
                request = request.header("authorization", authorization);
            }
            request.body(()).unwrap()
        };
        let header = "AWS4-HMAC-SHA256 Credential=AKID/20261203/US/s3/aws4_request, \
                      SignedHeaders=host, Signature=00";
        let refused = unreadable_region(&signed(header, ""), "us-east-1").unwrap();
        let body = String::from_utf8(refused.body().bytes().unwrap().to_vec()).unwrap();
        assert!(
            body.contains("<Code>AuthorizationHeaderMalformed</Code>"),
            "{body}"
        );
        assert!(body.contains("<Region>us-east-1</Region>"), "{body}");
        assert!(body.contains("the region 'US' is wrong"), "{body}");
        let presigned = signed(
            "",
            "?X-Amz-Credential=AKID%2F20261203%2FUS%2Fs3%2Faws4_request",
        );
        let refused = unreadable_region(&presigned, "us-east-1").unwrap();
        let body = String::from_utf8(refused.body().bytes().unwrap().to_vec()).unwrap();
        assert!(body.contains("AuthorizationQueryParametersError"), "{body}");
        let usual = header.replace("/US/", "/eu-west-1/");
        assert!(unreadable_region(&signed(&usual, ""), "us-east-1").is_none());
        assert!(unreadable_region(&signed("AWS AKID:c2ln", ""), "us-east-1").is_none());
        assert!(unreadable_region(&signed("", ""), "us-east-1").is_none());
    }

    #[test]
    fn answers_name_their_request() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));

        let error = with_request_id(presigned_too_long(), &id);
        assert_eq!(error.headers()["x-amz-request-id"], id.as_str());
        let body = String::from_utf8(error.body().bytes().unwrap().to_vec()).unwrap();
        assert!(
            body.ends_with(&format!("<RequestId>{id}</RequestId></Error>")),
            "{body}"
        );
        // Added once only.
        let again = with_request_id(error, "OTHER");
        let body = String::from_utf8(again.body().bytes().unwrap().to_vec()).unwrap();
        assert_eq!(body.matches("<RequestId>").count(), 1, "{body}");

        let ok = with_request_id(HttpResponse::new(s3s::Body::from("data".to_string())), &id);
        assert_eq!(ok.headers()["x-amz-request-id"], id.as_str());
        assert_eq!(ok.body().bytes().unwrap(), "data");
    }
}
