//! HTTP clients for the tests: plain requests with any headers, the
//! satellite's admin API, and Prometheus histogram counts read off a
//! metrics page.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use archipel_tests::{Planet, Satellite};
use serde_json::Value;

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Status, headers (lower-case names) and body of `method url`.
pub async fn fetch(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap().to_string(),
            )
        })
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: body.to_vec(),
    }
}

/// Status and body of `method url`, with `token` as a bearer token.
pub async fn request(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The observation count of one series (`label`=`value`) of the histogram
/// `metric` on a Prometheus text page; 0 when it has none yet.
pub fn histogram_count(page: &str, metric: &str, label: &str, value: &str) -> u64 {
    let series = format!("{metric}_count{{{label}=\"{value}\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |count| count.parse().unwrap())
}

/// An HTTP client for one satellite's admin API.
pub struct AdminApi {
    url: String,
    token: String,
}

impl AdminApi {
    /// The admin API of the planet's (first) satellite.
    pub fn of(planet: &Planet) -> AdminApi {
        AdminApi::of_satellite(planet.satellite(0))
    }

    pub fn of_satellite(satellite: &Satellite) -> AdminApi {
        AdminApi {
            url: satellite.admin_url(),
            token: satellite.admin_token().to_string(),
        }
    }

    /// Status and body of `method path`, with `token` as the bearer token.
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        request(method, &format!("{}{path}", self.url), token).await
    }

    /// Status and body of `method path` with the right token.
    pub async fn call(&self, method: &str, path: &str) -> (u16, String) {
        self.send(method, path, Some(&self.token)).await
    }

    /// The JSON answer of a request that must succeed.
    pub async fn json(&self, method: &str, path: &str) -> Value {
        let (status, body) = self.call(method, path).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.call("GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// How many calls of the satellite's gRPC `method` its latency histogram counted.
    pub async fn rpc_calls(&self, method: &str) -> u64 {
        histogram_count(
            &self.metrics().await,
            "archipel_satellite_rpc_duration_seconds",
            "method",
            method,
        )
    }
}
