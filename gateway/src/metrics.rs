//! The gateway's metrics: how long each S3 operation takes, from the
//! request's arrival until its response body is sent (or given up), and what
//! the links answered ([`LinkCounters`]), served in
//! Prometheus' text format on a listener of their own, so that no path of the
//! S3 endpoint (a bucket named `metrics`) is shadowed.
//!
//! s3s knows a request's operation only once it has routed it, which happens
//! inside the service; [`name_operation`] writes the name into the request's
//! [`OperationName`] slot, which the server's request wrapper reads when the
//! response ends.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use archipel_proto::latency::Latencies;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::access::S3AccessContext;
use tokio::net::TcpListener;

/// The Prometheus name of the operation latency histograms.
const METRIC: &str = "archipel_gateway_request_duration_seconds";

/// What the links answered: responses by status, and the object bytes sent
/// (counted as body frames leave, so a download the client gave up counts
/// only what it was sent).
#[derive(Default)]
pub(crate) struct LinkCounters {
    responses: Mutex<BTreeMap<u16, u64>>,
    body_bytes: AtomicU64,
}

impl LinkCounters {
    pub(crate) fn response(&self, status: http::StatusCode) {
        let mut responses = self
            .responses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *responses.entry(status.as_u16()).or_default() += 1;
    }

    pub(crate) fn sent(&self, bytes: u64) {
        self.body_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let responses = self
            .responses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP {LINK_RESPONSES} Responses of the links (pages, downloads, registrations), by status.\n# TYPE {LINK_RESPONSES} counter"
        );
        for (status, count) in responses {
            let _ = writeln!(out, "{LINK_RESPONSES}{{status=\"{status}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP {LINK_BYTES} Object bytes the links sent.\n# TYPE {LINK_BYTES} counter\n{LINK_BYTES} {}",
            self.body_bytes.load(Ordering::Relaxed)
        );
    }
}

const LINK_RESPONSES: &str = "archipel_gateway_link_responses_total";
const LINK_BYTES: &str = "archipel_gateway_link_body_bytes_total";

/// Where a request's S3 operation name is written once s3s has routed it.
#[derive(Clone, Default)]
pub(crate) struct OperationName(Arc<OnceLock<String>>);

impl OperationName {
    /// The operation, or what kept the request from having one.
    fn get(&self) -> &str {
        self.0.get().map_or("Unrouted", String::as_str)
    }
}

/// Writes the operation s3s routed a request to into its [`OperationName`]
/// slot and its log span.
pub(crate) fn name_operation(cx: &mut S3AccessContext<'_>) {
    let name = cx.s3_op().name().to_string();
    tracing::Span::current().record("operation", name.as_str());
    if let Some(slot) = cx.extensions_mut().get::<OperationName>() {
        let _ = slot.0.set(name);
    }
}

/// A response body that records its request's latency when it is dropped:
/// after its last byte was sent, or when the client went away.
pub(crate) struct Timed<B> {
    inner: B,
    latencies: Arc<Latencies>,
    operation: OperationName,
    started: Instant,
}

impl<B> Timed<B> {
    pub(crate) fn new(
        inner: B,
        latencies: Arc<Latencies>,
        operation: OperationName,
        started: Instant,
    ) -> Self {
        Timed {
            inner,
            latencies,
            operation,
            started,
        }
    }
}

impl<B> Drop for Timed<B> {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        tracing::debug!(
            operation = self.operation.get(),
            ms = elapsed.as_secs_f64() * 1e3,
            "S3 request done"
        );
        self.latencies.record(self.operation.get(), elapsed);
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Timed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    latencies: Arc<Latencies>,
    links: Arc<LinkCounters>,
    shutdown: impl Future<Output = ()>,
) {
    let http = ConnectionBuilder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let latencies = latencies.clone();
        let links = links.clone();
        let service = hyper::service::service_fn(move |request: http::Request<_>| {
            let latencies = latencies.clone();
            let links = links.clone();
            async move { Ok::<_, Infallible>(answer(&request, &latencies, &links)) }
        });
        let http = http.clone();
        tokio::spawn(async move {
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("metrics: connection ended with an error: {e}");
            }
        });
    }
}

fn answer<B>(
    request: &http::Request<B>,
    latencies: &Latencies,
    links: &LinkCounters,
) -> http::Response<String> {
    let mut response = http::Response::new(String::new());
    if request.method() != http::Method::GET || request.uri().path() != "/metrics" {
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        return response;
    }
    latencies.render(
        METRIC,
        "operation",
        "Time from an S3 request's arrival until its response body was sent, by operation.",
        response.body_mut(),
    );
    links.render(response.body_mut());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_answered() {
        let latencies = Latencies::default();
        latencies.record("GetObject", std::time::Duration::from_millis(3));
        let links = LinkCounters::default();
        links.response(http::StatusCode::PARTIAL_CONTENT);
        links.response(http::StatusCode::PARTIAL_CONTENT);
        links.sent(1234);
        let get = |method: http::Method, path: &str| {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            answer(&request, &latencies, &links)
        };
        let metrics = get(http::Method::GET, "/metrics");
        assert_eq!(metrics.status(), http::StatusCode::OK);
        assert!(metrics.body().contains(
            "archipel_gateway_request_duration_seconds_count{operation=\"GetObject\"} 1"
        ));
        assert!(metrics
            .body()
            .contains("archipel_gateway_link_responses_total{status=\"206\"} 2\n"));
        assert!(metrics
            .body()
            .contains("archipel_gateway_link_body_bytes_total 1234\n"));
        assert_eq!(
            get(http::Method::GET, "/other").status(),
            http::StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(http::Method::POST, "/metrics").status(),
            http::StatusCode::NOT_FOUND
        );
    }
}
