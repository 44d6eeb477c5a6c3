//! The HTTP server: connects one project per configured credential, then
//! serves the S3 service on the listener (over TLS when the configuration
//! names a certificate) until `shutdown` completes, letting requests in
//! flight finish.
//!
//! Nobody can hold the gateway up for free: at most `max_connections` are
//! served at once, a client must send its headers within
//! `header_read_timeout` (slowloris), an upload body that stalls for
//! `body_idle_timeout` fails, idle HTTP/2 connections are pinged and dropped
//! when dead, and presigned URLs valid for more than seven days are refused,
//! as AWS refuses them.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use archipel_client::{Access, Project};
use archipel_proto::latency::Latencies;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpResponse};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::metrics::{self, NameOperations, OperationName, Timed};
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
pub const MAX_PRESIGNED_EXPIRY_SECS: u64 = 604_800;

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
    if config.credentials.is_empty() {
        return Err(Error::NoCredentials);
    }
    config.validate()?;
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
    let mut projects = HashMap::new();
    for credential in &config.credentials {
        let key_id = credential.access_key_id.clone();
        if projects.contains_key(&key_id) {
            return Err(Error::DuplicateAccessKey(key_id));
        }
        let access_error = |source| Error::Access {
            key_id: key_id.clone(),
            source,
        };
        let access = Access::parse(&credential.access).map_err(access_error)?;
        let project = Project::open(&access).await.map_err(access_error)?;
        projects.insert(key_id, project);
    }
    let mut builder = S3ServiceBuilder::new(Gateway {
        projects,
        region: config.region.clone(),
        snapshots: Default::default(),
        unencrypted_names: config.unencrypted_names.clone(),
    });
    builder.set_auth(auth::key_store(&config.credentials));
    builder.set_access(NameOperations);
    if let Some(hosts) = hosts {
        builder.set_host(hosts);
    }
    let latencies = Arc::new(Latencies::default());
    let service = Limited {
        s3: builder.build(),
        body_idle_timeout: config.body_idle_timeout,
        latencies: latencies.clone(),
    };
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = metrics.map(|listener| {
        tokio::spawn(metrics::serve(listener, latencies, async {
            let _ = metrics_stopped.await;
        }))
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
    tokio::pin!(shutdown);
    loop {
        // At the cap, new clients wait in the listen backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
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
            },
            () = &mut shutdown => break,
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
    drop(listener);
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

/// Serves one accepted connection, after the TLS handshake if there is one.
/// A client that fails the handshake (plain HTTP on an HTTPS port, say) only
/// loses its own connection.
async fn serve(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    http: ConnectionBuilder<TokioExecutor>,
    service: Limited,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) {
    let Some(acceptor) = tls else {
        return serve_http(stream, &http, service, watcher).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, &http, service, watcher).await,
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn serve_http(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    http: &ConnectionBuilder<TokioExecutor>,
    service: Limited,
    watcher: Watcher,
) {
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
    body_idle_timeout: Duration,
    latencies: Arc<Latencies>,
}

impl hyper::service::Service<http::Request<Incoming>> for Limited {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<HttpResponse, HttpError>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        if presigned_expiry(request.uri()).is_some_and(|secs| secs > MAX_PRESIGNED_EXPIRY_SECS) {
            return Box::pin(std::future::ready(Ok(presigned_too_long())));
        }
        let started = std::time::Instant::now();
        let timeout = self.body_idle_timeout;
        let mut request =
            request.map(|body| s3s::Body::http_body_unsync(IdleTimeout::new(body, timeout)));
        let operation = OperationName::default();
        request.extensions_mut().insert(operation.clone());
        let s3 = self.s3.clone();
        let latencies = self.latencies.clone();
        let span = tracing::debug_span!("s3", operation = tracing::field::Empty);
        Box::pin(
            async move {
                let response = s3.call(request).await?;
                Ok(response.map(|body| {
                    s3s::Body::http_body_unsync(Timed::new(body, latencies, operation, started))
                }))
            }
            .instrument(span),
        )
    }
}

/// The `X-Amz-Expires` of a presigned URL, if it has a numeric one.
fn presigned_expiry(uri: &http::Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-Expires="))?
        .parse()
        .ok()
}

/// AWS's answer to a presigned URL valid for more than seven days.
fn presigned_too_long() -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\
         <Code>AuthorizationQueryParametersError</Code>\
         <Message>X-Amz-Expires must be less than a week (in seconds) that is; \
         {MAX_PRESIGNED_EXPIRY_SECS}</Message></Error>"
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
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
        assert_eq!(presigned_expiry(&uri("X-Amz-Expires=soon")), None);
        assert_eq!(presigned_expiry(&uri("x-X-Amz-Expires=1")), None);
        assert_eq!(presigned_expiry(&"http://h/b/k".parse().unwrap()), None);
    }
}
