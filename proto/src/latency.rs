//! Request latencies by name (a gRPC method, an S3 operation) as Prometheus
//! histograms, and a tower layer that records every call a gRPC server
//! handles, with a debug-level span per call so that `RUST_LOG=debug` logs
//! each call's duration.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::http;
use tracing::Instrument;

/// Upper bounds of the histogram buckets, in seconds: from half a
/// millisecond (a loopback round trip) to half a minute (a whole segment).
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Per bucket, the observations at most its bound (not cumulative).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(bucket) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[bucket] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// Latency histograms by request name; shared by the tasks that serve requests.
#[derive(Debug, Default)]
pub struct Latencies {
    by_name: Mutex<BTreeMap<String, Histogram>>,
}

impl Latencies {
    pub fn record(&self, name: &str, elapsed: Duration) {
        let mut by_name = self
            .by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match by_name.get_mut(name) {
            Some(histogram) => histogram.observe(elapsed.as_secs_f64()),
            None => {
                let mut histogram = Histogram::default();
                histogram.observe(elapsed.as_secs_f64());
                by_name.insert(name.to_string(), histogram);
            }
        }
    }

    /// Appends the histograms in Prometheus' text format as `metric` (a
    /// name ending in `_seconds`), one series per request name in the label
    /// `label`.
    pub fn render(&self, metric: &str, label: &str, help: &str, out: &mut String) {
        let by_name = self
            .by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for (name, histogram) in by_name {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{metric}_bucket{{{label}=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{metric}_bucket{{{label}=\"{name}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "{metric}_sum{{{label}=\"{name}\"}} {}",
                histogram.sum_seconds
            );
            let _ = writeln!(
                out,
                "{metric}_count{{{label}=\"{name}\"}} {}",
                histogram.count
            );
        }
    }
}

/// A tower layer for gRPC servers: records how long each call takes until
/// its response (headers) is ready, by method name, in `Latencies`.
#[derive(Clone)]
pub struct RecordLatency {
    latencies: Arc<Latencies>,
}

impl RecordLatency {
    pub fn new(latencies: Arc<Latencies>) -> Self {
        RecordLatency { latencies }
    }
}

impl<S> tower::Layer<S> for RecordLatency {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            latencies: self.latencies.clone(),
        }
    }
}

/// The service [`RecordLatency`] wraps.
#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    latencies: Arc<Latencies>,
}

/// The method of a gRPC request path (`/package.Service/Method`).
fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<S, B> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path()).to_string();
        let span = tracing::debug_span!("rpc", method = %method);
        let latencies = self.latencies.clone();
        let started = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await;
                latencies.record(&method, started.elapsed());
                response
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_per_name() {
        let latencies = Latencies::default();
        latencies.record("GetObject", Duration::from_micros(300));
        latencies.record("GetObject", Duration::from_millis(3));
        latencies.record("GetObject", Duration::from_secs(60));
        latencies.record("BeginObject", Duration::from_millis(1));
        let mut text = String::new();
        latencies.render("x_seconds", "method", "How long.", &mut text);
        assert!(text.starts_with("# HELP x_seconds How long.\n# TYPE x_seconds histogram\n"));
        for line in [
            "x_seconds_bucket{method=\"BeginObject\",le=\"0.001\"} 1",
            "x_seconds_bucket{method=\"GetObject\",le=\"0.0005\"} 1",
            "x_seconds_bucket{method=\"GetObject\",le=\"0.0025\"} 1",
            "x_seconds_bucket{method=\"GetObject\",le=\"0.005\"} 2",
            "x_seconds_bucket{method=\"GetObject\",le=\"30\"} 2",
            "x_seconds_bucket{method=\"GetObject\",le=\"+Inf\"} 3",
            "x_seconds_count{method=\"GetObject\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum{method=\"GetObject\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 60.0033).abs() < 1e-9);
    }

    #[test]
    fn methods_are_the_last_path_segment() {
        assert_eq!(
            method_of("/archipel.v1.Metainfo/BeginObject"),
            "BeginObject"
        );
        assert_eq!(method_of("odd"), "odd");
    }
}
