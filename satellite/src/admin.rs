//! The admin HTTP API (the `[admin]` section): the node registry with each
//! node's status and reputation, marking nodes as exiting, the repair queue,
//! lost segments, the repair checker's last pass, a retain round on demand
//! and a node's trash restored, and `/metrics` for
//! Prometheus. Every request needs the configured bearer token; the server
//! listens on loopback unless told otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::orders::unix_now;
use archipel_proto::NodeId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gc::{RetainReport, RetainSender};
use crate::health::{self, NodeStatus};
use crate::metabase::{NodeRecord, NodeStanding, QueueEntry};
use archipel_proto::exposition::PROMETHEUS_CONTENT_TYPE;

use crate::metrics::{CheckerPass, Gauges, Metrics};
use crate::reputation::{Beta, ReputationConfig};
use crate::{Config, Error, Metabase, Result};

/// Queue entries a listing returns unless asked for fewer or more.
const DEFAULT_LIMIT: usize = 100;
/// The most queue entries one listing returns.
const MAX_LIMIT: usize = 1000;

/// The admin server's settings (the `[admin]` section of the satellite's config).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin HTTP server listens on (default 127.0.0.1:7779:
    /// loopback, as the API can change node standings).
    pub listen_address: String,
    /// The bearer token every request must carry; empty turns the server off.
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen_address: "127.0.0.1:7779".into(),
            token: String::new(),
        }
    }
}

/// Debug output without the token, so that configs can be logged.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen_address", &self.listen_address)
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .finish()
    }
}

impl AdminConfig {
    /// A fresh random token: 32 bytes in hex.
    pub fn random_token() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    pub fn enabled(&self) -> bool {
        !self.token.is_empty()
    }

    /// The listener for [`crate::run`]: bound to `listen_address`, or none
    /// (and a log line saying so) when the token is empty.
    pub async fn bind(&self) -> Result<Option<TcpListener>> {
        if !self.enabled() {
            tracing::info!("the admin API is off: the [admin] token is empty");
            return Ok(None);
        }
        TcpListener::bind(&self.listen_address)
            .await
            .map(Some)
            .map_err(|e| {
                Error::Config(format!(
                    "cannot listen on {} for the admin API: {e}",
                    self.listen_address
                ))
            })
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Admin {
    /// The token's hash: comparing hashes is constant-time (`blake3::Hash`'s
    /// equality) and says nothing about the token's length.
    token: blake3::Hash,
    online_window: Duration,
    reputation: ReputationConfig,
    metabase: Metabase,
    metrics: Arc<Metrics>,
    retain: RetainSender,
}

/// Serves the admin API on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Config,
    metabase: Metabase,
    metrics: Arc<Metrics>,
    retain: RetainSender,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let admin = Admin {
        token: blake3::hash(config.admin.token.as_bytes()),
        online_window: config.node_online_window,
        reputation: config.reputation.clone(),
        metabase,
        metrics,
        retain,
    };
    tracing::info!("admin API serving on http://{}", listener.local_addr()?);
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await?;
    Ok(())
}

fn router(admin: Admin) -> Router {
    Router::new()
        .route("/api/nodes", get(list_nodes))
        .route("/api/nodes/{id}", get(get_node))
        .route("/api/nodes/{id}/exit", post(exit_node))
        .route("/api/nodes/{id}/restore-trash", post(restore_trash))
        .route("/api/gc/retain", post(retain_round))
        .route("/api/repair/queue", get(repair_queue))
        .route("/api/segments/lost", get(lost_segments))
        .route("/api/segments/health", get(segment_health))
        .route("/metrics", get(prometheus))
        .fallback(|| async { Error::NotFound("this admin API path".into()) })
        .layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// Lets through requests with the right `Authorization: Bearer` token.
async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    match token {
        Some(token) if blake3::hash(token.as_bytes()) == admin.token => next.run(request).await,
        _ => {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "a valid `Authorization: Bearer` token is required".into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// The token of an `Authorization` header value `Bearer TOKEN`; never empty,
/// so that no request matches an empty (unset) token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidArgument(_) | Error::Proto(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::AlreadyExists(_) | Error::FailedPrecondition(_) | Error::ObjectLocked(_) => {
                StatusCode::CONFLICT
            }
            Error::ConditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::NotEnoughNodes { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unavailable(_) => StatusCode::BAD_GATEWAY,
            Error::Database(_)
            | Error::Migrate(_)
            | Error::UnsupportedDatabase(_)
            | Error::Transport(_)
            | Error::Io(_)
            | Error::Config(_)
            | Error::Corrupt(_)
            | Error::Repair(_) => {
                tracing::error!("admin API: internal error: {self}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error_response(status, self.to_string())
    }
}

/// A beta reputation with its score.
#[derive(Serialize)]
struct Reputation {
    alpha: f64,
    beta: f64,
    score: f64,
}

impl From<Beta> for Reputation {
    fn from(b: Beta) -> Self {
        Reputation {
            alpha: b.alpha,
            beta: b.beta,
            score: b.score(),
        }
    }
}

/// A node as the admin API shows it.
#[derive(Serialize)]
struct NodeView {
    id: NodeId,
    address: String,
    /// The /24 (IPv4) or /64 (IPv6) network of its address.
    network: String,
    status: NodeStatus,
    version: String,
    last_contact: i64,
    created_at: i64,
    capacity_bytes: i64,
    free_bytes: i64,
    /// Reputation for keeping data (audit successes and failures).
    audit: Reputation,
    /// Reputation for answering audits at all (unknown errors).
    unknown: Reputation,
    /// Share of audit contacts over the last 30 days that reached the node.
    online_score: f64,
    audit_total: i64,
    audit_success: i64,
    vetted: bool,
    vetted_at: Option<i64>,
    disqualified_at: Option<i64>,
    suspended_at: Option<i64>,
    exiting_at: Option<i64>,
    /// When its graceful exit ended, either way.
    exited_at: Option<i64>,
    /// Bytes of this satellite's pieces on the node, as it last reported.
    used_bytes: i64,
    trash_bytes: i64,
    /// Why the node takes no uploads (a failed disk probe), if it said so.
    disk_problem: Option<String>,
}

#[derive(Serialize)]
struct NodeList {
    nodes: Vec<NodeView>,
}

#[derive(Serialize)]
struct QueueCounts {
    /// Segments waiting for repair, lost ones included.
    queued: u64,
    /// Segments with fewer healthy pieces than `k`.
    lost: u64,
}

#[derive(Serialize)]
struct QueueView {
    counts: QueueCounts,
    /// Most at risk first.
    entries: Vec<QueueEntry>,
}

#[derive(Serialize)]
struct LostSegments {
    /// All lost segments, also those beyond `limit`.
    lost: u64,
    segments: Vec<QueueEntry>,
}

#[derive(Serialize)]
struct SegmentHealth {
    /// None until a checker pass has finished in this satellite process.
    checker_pass: Option<CheckerPass>,
    queue: QueueCounts,
}

/// The `?limit=N` of queue listings.
#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
}

impl Page {
    fn limit(query: std::result::Result<Query<Page>, QueryRejection>) -> Result<usize> {
        let Query(page) = query.map_err(|e| Error::InvalidArgument(e.body_text()))?;
        Ok(page.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT))
    }
}

impl Admin {
    async fn nodes(&self) -> Result<Vec<NodeView>> {
        let now = unix_now();
        let online_since = health::online_since(self.online_window, now);
        let scores: HashMap<NodeId, f64> = self
            .metabase
            .online_scores(now, None)
            .await?
            .into_iter()
            .collect();
        self.metabase
            .node_records(&self.reputation)
            .await?
            .into_iter()
            .map(|record| self.node_view(record, online_since, &scores))
            .collect()
    }

    async fn node(&self, id: &NodeId) -> Result<NodeView> {
        self.nodes()
            .await?
            .into_iter()
            .find(|node| node.id == *id)
            .ok_or_else(|| Error::NotFound(format!("node {id}")))
    }

    fn node_view(
        &self,
        record: NodeRecord,
        online_since: i64,
        online_scores: &HashMap<NodeId, f64>,
    ) -> Result<NodeView> {
        let NodeRecord {
            node,
            health,
            exiting_at,
            exited_at,
            used_bytes,
            trash_bytes,
            disk_problem,
        } = record;
        let id = NodeId::from_bytes(&node.id)
            .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?;
        let standing = NodeStanding {
            id,
            last_net: node.last_net,
            last_contact: node.last_contact,
            disqualified_at: health.disqualified_at,
            suspended_at: health.suspended_at,
            exiting_at,
            exited_at,
        };
        Ok(NodeView {
            id,
            status: NodeStatus::of(&standing, online_since),
            address: node.address,
            network: standing.last_net,
            version: node.version,
            last_contact: node.last_contact,
            created_at: node.created_at,
            capacity_bytes: node.capacity_bytes,
            free_bytes: node.free_bytes,
            audit: health.audit.into(),
            unknown: health.unknown.into(),
            // Nodes without audit contacts lately have missed none.
            online_score: online_scores.get(&id).copied().unwrap_or(1.0),
            audit_total: health.audit_total,
            audit_success: health.audit_success,
            vetted: health.is_vetted(&self.reputation),
            vetted_at: health.vetted_at,
            disqualified_at: health.disqualified_at,
            suspended_at: health.suspended_at,
            exiting_at,
            exited_at,
            used_bytes,
            trash_bytes,
            disk_problem,
        })
    }

    async fn queue_counts(&self) -> Result<QueueCounts> {
        let (queued, lost) = self.metabase.repair_queue_counts().await?;
        Ok(QueueCounts { queued, lost })
    }

    async fn gauges(&self) -> Result<Gauges> {
        let online_since = health::online_since(self.online_window, unix_now());
        let mut gauges = Gauges::default();
        for standing in self.metabase.node_standings().await? {
            *gauges
                .nodes
                .entry(NodeStatus::of(&standing, online_since))
                .or_default() += 1;
        }
        let counts = self.queue_counts().await?;
        gauges.repair_queue_length = counts.queued;
        gauges.segments_lost = counts.lost;
        gauges.deletion_queue_length = self.metabase.deletion_queue_length(None).await?;
        Ok(gauges)
    }
}

fn parse_node_id(text: &str) -> Result<NodeId> {
    text.parse()
        .map_err(|_| Error::InvalidArgument(format!("{text:?} is not a node id (64 hex digits)")))
}

async fn list_nodes(State(admin): State<Admin>) -> Result<Json<NodeList>> {
    Ok(Json(NodeList {
        nodes: admin.nodes().await?,
    }))
}

async fn get_node(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Json<NodeView>> {
    Ok(Json(admin.node(&parse_node_id(&id)?).await?))
}

/// Marks a node as exiting: it gets no new pieces, and repair moves its
/// pieces to other nodes.
async fn exit_node(State(admin): State<Admin>, Path(id): Path<String>) -> Result<Json<NodeView>> {
    let id = parse_node_id(&id)?;
    if !admin.metabase.set_exiting(&id, unix_now()).await? {
        return Err(Error::NotFound(format!("node {id}")));
    }
    tracing::info!("node {id} marked as exiting through the admin API");
    Ok(Json(admin.node(&id).await?))
}

/// What a node reported restoring from its trash.
#[derive(Serialize)]
struct RestoredTrash {
    pieces_restored: u64,
    bytes_restored: u64,
}

async fn restore_trash(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<RestoredTrash>> {
    let id = parse_node_id(&id)?;
    let restored = admin.retain.restore_trash(id).await?;
    tracing::info!(
        pieces = restored.pieces_restored,
        "node {id} restored its trash on request through the admin API"
    );
    Ok(Json(RestoredTrash {
        pieces_restored: restored.pieces_restored,
        bytes_restored: restored.bytes_restored,
    }))
}

async fn retain_round(State(admin): State<Admin>) -> Result<Json<RetainReport>> {
    Ok(Json(admin.retain.round().await?))
}

async fn repair_queue(
    State(admin): State<Admin>,
    page: std::result::Result<Query<Page>, QueryRejection>,
) -> Result<Json<QueueView>> {
    let limit = Page::limit(page)?;
    Ok(Json(QueueView {
        counts: admin.queue_counts().await?,
        entries: admin.metabase.repair_queue(limit, false).await?,
    }))
}

async fn lost_segments(
    State(admin): State<Admin>,
    page: std::result::Result<Query<Page>, QueryRejection>,
) -> Result<Json<LostSegments>> {
    let limit = Page::limit(page)?;
    Ok(Json(LostSegments {
        lost: admin.queue_counts().await?.lost,
        segments: admin.metabase.repair_queue(limit, true).await?,
    }))
}

async fn segment_health(State(admin): State<Admin>) -> Result<Json<SegmentHealth>> {
    Ok(Json(SegmentHealth {
        checker_pass: admin.metrics.checker_pass(),
        queue: admin.queue_counts().await?,
    }))
}

async fn prometheus(State(admin): State<Admin>) -> Result<Response> {
    let text = admin.metrics.render_prometheus(&admin.gauges().await?);
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let config = AdminConfig {
            token: "secret-token".into(),
            ..AdminConfig::default()
        };
        assert!(!format!("{config:?}").contains("secret-token"));
    }
}
