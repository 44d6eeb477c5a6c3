//! The operator's dashboard: a web page (`/`), the JSON report behind it
//! (`/api/node`, which `archipel-node info` prints) and Prometheus metrics
//! (`/metrics`), on an address of its own (loopback by default; reading
//! needs no login). The one action, starting a graceful exit
//! (`POST /api/exit/{satellite}`, which `archipel-node exit` sends), needs
//! the operator token the node writes to its storage directory at start, so
//! that neither a web page nor a local user without access to that
//! directory can make the node leave. Every figure is read when asked for, from the same records the
//! node works from (the piece index, the bandwidth ledger, the standings from
//! the last check-ins), so the page never lags what the node does.

use std::collections::BTreeMap;
use std::sync::Arc;

use archipel_proto::exposition::{Exposition, PROMETHEUS_CONTENT_TYPE};
use archipel_proto::orders::unix_now;
use archipel_proto::NodeId;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bandwidth::{self, Action, ByAction, Ledger};
use crate::config::TrustedSatellite;
use crate::error::{Error, Result};
use crate::exit::{ExitStatus, Exits};
use crate::metrics::{read, NodeMetrics};
use crate::standing::{Reputation, Standings};
use crate::store::PieceStore;

const PAGE: &str = include_str!("dashboard.html");
/// Below this many bytes free the node can take no piece worth having.
const FULL_BELOW_BYTES: u64 = 1 << 20;
/// Share of the allocation in use from which the dashboard warns.
const NEARLY_FULL_SHARE: f64 = 0.9;

/// The file in the storage directory holding the operator token.
pub const OPERATOR_TOKEN_FILE: &str = "operator-token";

/// Writes a fresh operator token to the storage directory, readable by its
/// owner only; returns it.
pub fn write_operator_token(storage_dir: &std::path::Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let path = storage_dir.join(OPERATOR_TOKEN_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    file.write_all(token.as_bytes())
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    Ok(token)
}

/// The operator token the running node wrote to its storage directory.
pub fn read_operator_token(storage_dir: &std::path::Path) -> Result<String> {
    let path = storage_dir.join(OPERATOR_TOKEN_FILE);
    std::fs::read_to_string(&path)
        .map(|token| token.trim().to_string())
        .map_err(Error::io(format!(
            "cannot read {} (is the node running, and may this user read its storage directory?)",
            path.display()
        )))
}

/// What the dashboard reads from.
pub struct Dashboard {
    pub node_id: NodeId,
    pub started_at: i64,
    pub satellites: Vec<TrustedSatellite>,
    pub store: PieceStore,
    pub ledger: Arc<Ledger>,
    pub standings: Arc<Standings>,
    pub metrics: Arc<NodeMetrics>,
    pub exits: Arc<Exits>,
    /// What `POST` requests must carry as a bearer token.
    pub operator_token: String,
}

/// The whole node at a glance: `/api/node`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_id: String,
    pub version: String,
    /// Unix seconds when the report was made.
    pub now: i64,
    pub started_at: i64,
    pub uptime_seconds: i64,
    pub disk: DiskReport,
    /// What the operator should look at, in plain words; empty when all is well.
    pub warnings: Vec<String>,
    /// The month the bandwidth figures cover, `YYYY-MM` (UTC).
    pub month: String,
    pub satellites: Vec<SatelliteReport>,
}

/// Space on the node, all satellites together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    pub allocated_bytes: u64,
    pub used_bytes: u64,
    pub trash_bytes: u64,
    /// Promised to uploads in progress.
    pub reserved_bytes: u64,
    /// What new pieces may still take: the allocation left, capped by the
    /// disk's real free space.
    pub free_bytes: u64,
    /// Why uploads are refused, while the disk's write probe fails.
    pub problem: Option<String>,
    /// Whether the piece index is known to match the disk.
    pub index_checked: bool,
}

/// One satellite's share of the node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SatelliteReport {
    pub id: String,
    pub address: String,
    pub pieces: u64,
    pub used_bytes: u64,
    pub trash_bytes: u64,
    /// Bytes this month by action (every action present).
    pub bandwidth: ByAction,
    pub bandwidth_total: u64,
    /// Day by day this month, oldest first, every day up to today.
    pub daily: Vec<DayReport>,
    /// Unix seconds of the last check-in the satellite accepted.
    pub last_contact: Option<i64>,
    pub last_error: Option<String>,
    /// As the satellite reported it; none before the first check-in.
    pub reputation: Option<Reputation>,
    /// The node's graceful exit from this satellite, once started.
    pub exit: Option<ExitStatus>,
}

/// One day's transfers for one satellite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayReport {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub bandwidth: ByAction,
}

fn every_action(mut bytes: ByAction) -> ByAction {
    for action in Action::ALL {
        bytes.entry(action).or_default();
    }
    bytes
}

/// A byte count as the dashboard and `info` show it: decimal units, two
/// decimals from a kilobyte on ("999 B", "1.50 kB", "2.25 GB"), rounded half
/// up in integers so that the page's script shows exactly the same.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let bytes = u128::from(bytes);
    let mut unit = 0;
    let mut size: u128 = 1000;
    while unit < UNITS.len() - 1 && bytes >= size * 1000 {
        unit += 1;
        size *= 1000;
    }
    let mut hundredths = (bytes * 100 + size / 2) / size;
    if hundredths >= 100_000 && unit < UNITS.len() - 1 {
        // 999 999 bytes round to 1.00 MB, not 1000.00 kB.
        unit += 1;
        size *= 1000;
        hundredths = (bytes * 100 + size / 2) / size;
    }
    format!(
        "{}.{:02} {}",
        hundredths / 100,
        hundredths % 100,
        UNITS[unit]
    )
}

/// A score in [0, 1] as a percentage with two decimals ("99.50 %"),
/// rounded as the page's script rounds it.
pub fn format_score(score: f64) -> String {
    let hundredths = (score * 10_000.0).round() as i64;
    format!("{}.{:02} %", hundredths / 100, hundredths % 100)
}

impl Dashboard {
    /// The report as of now.
    pub async fn report(&self) -> Result<NodeReport> {
        let now = unix_now();
        let today = bandwidth::day_of(now);
        let month_start = bandwidth::month_start(today);
        let transfers = self.ledger.since(month_start).await?;
        let usage = self.store.usage();
        let problem = self.store.disk_problem();
        let disk = DiskReport {
            allocated_bytes: self.store.allocated_bytes(),
            used_bytes: self.store.used_bytes(),
            trash_bytes: self.store.trash_bytes(),
            reserved_bytes: self.store.reserved_bytes(),
            free_bytes: self.store.available_bytes()?,
            problem: problem.clone(),
            index_checked: self.store.reconciled(),
        };
        let mut warnings = Vec::new();
        if let Some(problem) = &problem {
            warnings.push(format!(
                "The disk failed its write probe, so the node refuses uploads (it still serves \
                 what it stores): {problem}"
            ));
        }
        if disk.free_bytes < FULL_BELOW_BYTES {
            warnings.push(
                "The disk is full or the allocated space is used up: the node refuses new pieces."
                    .into(),
            );
        } else if (disk.used_bytes + disk.trash_bytes) as f64
            >= NEARLY_FULL_SHARE * disk.allocated_bytes as f64
        {
            warnings.push(format!(
                "The node uses over {:.0} % of its allocated space.",
                NEARLY_FULL_SHARE * 100.0
            ));
        }
        if !disk.index_checked {
            warnings.push(
                "The piece index is being checked against the disk; used space may be off until \
                 it finishes."
                    .into(),
            );
        }
        let mut satellites = Vec::new();
        for trusted in &self.satellites {
            let standing = self.standings.get(&trusted.id);
            let use_of = usage.get(&trusted.id).copied().unwrap_or_default();
            let days = transfers.get(&trusted.id);
            let daily: Vec<DayReport> = (month_start..=today)
                .map(|day| DayReport {
                    date: bandwidth::date_of_day(day),
                    bandwidth: every_action(
                        days.and_then(|d| d.get(&day)).cloned().unwrap_or_default(),
                    ),
                })
                .collect();
            let mut month = every_action(BTreeMap::new());
            for day in &daily {
                for (action, bytes) in &day.bandwidth {
                    *month.entry(*action).or_default() += bytes;
                }
            }
            if let Some(error) = &standing.last_error {
                warnings.push(format!(
                    "The last check-in with satellite {} failed: {error}",
                    trusted.id
                ));
            }
            let exit = self.exits.status(&trusted.id);
            if let Some(failure) = exit.as_ref().and_then(|e| e.failure.as_ref()) {
                warnings.push(format!(
                    "The graceful exit from satellite {} failed: {failure}",
                    trusted.id
                ));
            }
            if let Some(reputation) = &standing.reputation {
                if reputation.disqualified_at.is_some() {
                    warnings.push(format!(
                        "Satellite {} disqualified this node: it no longer stores or pays for its pieces.",
                        trusted.id
                    ));
                } else if reputation.suspended_at.is_some() {
                    warnings.push(format!(
                        "Satellite {} suspended this node (too many audits left unanswered): it gets \
                         no new pieces until its suspension score recovers.",
                        trusted.id
                    ));
                }
            }
            satellites.push(SatelliteReport {
                id: trusted.id.to_string(),
                address: trusted.address.clone(),
                pieces: use_of.pieces,
                used_bytes: use_of.bytes,
                trash_bytes: use_of.trash_bytes,
                bandwidth_total: month.values().sum(),
                bandwidth: month,
                daily,
                last_contact: standing.last_contact,
                last_error: standing.last_error,
                reputation: standing.reputation,
                exit,
            });
        }
        Ok(NodeReport {
            node_id: self.node_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            now,
            started_at: self.started_at,
            uptime_seconds: now.saturating_sub(self.started_at),
            disk,
            warnings,
            month: bandwidth::date_of_day(today)[..7].to_string(),
            satellites,
        })
    }

    /// The metrics in the Prometheus text format.
    pub async fn prometheus(&self) -> Result<String> {
        let mut out = Exposition::default();
        let usage = self.store.usage();
        let mut satellites: Vec<_> = usage.keys().copied().collect();
        satellites.sort();
        out.family(
            "archipel_node_pieces",
            "gauge",
            "Pieces stored (not in the trash), by satellite.",
        );
        for id in &satellites {
            out.sample(
                "archipel_node_pieces",
                &[("satellite", id.to_string().as_str())],
                usage[id].pieces,
            );
        }
        out.family(
            "archipel_node_used_bytes",
            "gauge",
            "Bytes of stored pieces, by satellite.",
        );
        for id in &satellites {
            out.sample(
                "archipel_node_used_bytes",
                &[("satellite", id.to_string().as_str())],
                usage[id].bytes,
            );
        }
        out.family(
            "archipel_node_trash_bytes",
            "gauge",
            "Bytes of pieces in the trash, by satellite.",
        );
        for id in &satellites {
            out.sample(
                "archipel_node_trash_bytes",
                &[("satellite", id.to_string().as_str())],
                usage[id].trash_bytes,
            );
        }
        out.single(
            "archipel_node_allocated_bytes",
            "gauge",
            "Disk space offered to satellites.",
            self.store.allocated_bytes(),
        );
        out.single(
            "archipel_node_free_bytes",
            "gauge",
            "Bytes new pieces may still take (allocation left, capped by the disk's free space).",
            self.store.available_bytes()?,
        );
        out.single(
            "archipel_node_disk_healthy",
            "gauge",
            "1 while the disk passes its write probe, 0 while the node refuses uploads for it.",
            u8::from(self.store.disk_problem().is_none()),
        );
        out.family(
            "archipel_node_transfers_total",
            "counter",
            "Uploads and downloads of pieces, by direction, action and result.",
        );
        for ((direction, action, outcome), count) in self.metrics.transfers() {
            out.sample(
                "archipel_node_transfers_total",
                &[
                    ("direction", direction.name()),
                    ("action", action),
                    ("result", outcome.name()),
                ],
                count,
            );
        }
        out.family(
            "archipel_node_transferred_bytes_total",
            "counter",
            "Piece bytes received and served since the node started, by satellite and action.",
        );
        for ((satellite, action), bytes) in self.ledger.since_start() {
            out.sample(
                "archipel_node_transferred_bytes_total",
                &[
                    ("satellite", satellite.to_string().as_str()),
                    ("action", action.name()),
                ],
                bytes,
            );
        }
        let m = &self.metrics;
        for (name, help, counter) in [
            (
                "archipel_node_retain_filters_total",
                "Retain filters applied.",
                &m.retain_filters,
            ),
            (
                "archipel_node_retain_trashed_pieces_total",
                "Pieces retain filters moved to the trash.",
                &m.retain_pieces_trashed,
            ),
            (
                "archipel_node_retain_trashed_bytes_total",
                "Bytes retain filters moved to the trash.",
                &m.retain_bytes_trashed,
            ),
            (
                "archipel_node_trash_removed_pieces_total",
                "Pieces removed from the trash after its retention.",
                &m.trash_pieces_removed,
            ),
            (
                "archipel_node_trash_removed_bytes_total",
                "Bytes removed from the trash after its retention.",
                &m.trash_bytes_removed,
            ),
            (
                "archipel_node_expired_pieces_total",
                "Expired pieces removed.",
                &m.expired_pieces_removed,
            ),
            (
                "archipel_node_expired_bytes_total",
                "Bytes of expired pieces removed.",
                &m.expired_bytes_removed,
            ),
        ] {
            out.single(name, "counter", help, read(counter));
        }
        out.family(
            "archipel_node_satellite_score",
            "gauge",
            "The node's scores as each satellite reported them at the last check-in.",
        );
        for trusted in &self.satellites {
            if let Some(r) = self.standings.get(&trusted.id).reputation {
                let id = trusted.id.to_string();
                for (score, value) in [
                    ("audit", r.audit_score),
                    ("suspension", r.suspension_score),
                    ("online", r.online_score),
                ] {
                    out.sample(
                        "archipel_node_satellite_score",
                        &[("satellite", id.as_str()), ("score", score)],
                        value,
                    );
                }
            }
        }
        out.family(
            "archipel_node_satellite_last_contact_seconds",
            "gauge",
            "Unix time of the last check-in each satellite accepted.",
        );
        for trusted in &self.satellites {
            if let Some(at) = self.standings.get(&trusted.id).last_contact {
                out.sample(
                    "archipel_node_satellite_last_contact_seconds",
                    &[("satellite", trusted.id.to_string().as_str())],
                    at,
                );
            }
        }
        Ok(out.finish())
    }
}

/// Reads `/api/node` from the dashboard at `address` (host:port), as
/// `archipel-node info` does: the running node is the one source of its figures.
pub fn fetch_report(address: &str) -> Result<String> {
    http(address, "GET", "/api/node", None)
}

/// Asks the node whose dashboard is at `address` to start its graceful exit
/// from `satellite`, with the operator token from its storage directory;
/// returns the exit's status as JSON.
pub fn request_exit(address: &str, satellite: &NodeId, token: &str) -> Result<String> {
    http(
        address,
        "POST",
        &format!("/api/exit/{satellite}"),
        Some(token),
    )
}

/// One HTTP/1.0 exchange with the dashboard (the server closes the
/// connection after a plain body); the body of a 200 answer.
fn http(address: &str, method: &str, path: &str, token: Option<&str>) -> Result<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let unreachable = |reason: String| Error::DashboardUnreachable {
        address: address.to_string(),
        reason,
    };
    if address.is_empty() {
        return Err(unreachable(
            "the dashboard is turned off (dashboard_address is empty)".into(),
        ));
    }
    let timeout = std::time::Duration::from_secs(10);
    let target = address
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("the address resolves to nothing".into()))?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| unreachable(e.to_string()))?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let exchange = |stream: &mut std::net::TcpStream| -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(
            format!(
                "{method} {path} HTTP/1.0\r\nHost: {address}\r\n{authorization}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    };
    let answer = exchange(&mut stream).map_err(|e| unreachable(e.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| unreachable("the answer is not HTTP".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(Error::NodeRefused(format!("{status}: {body}")));
    }
    Ok(body.to_string())
}

/// The report as `archipel-node info` prints it.
pub fn terminal_report(report: &NodeReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = &report.disk;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Node      {}", report.node_id);
    let _ = writeln!(
        out,
        "Version   {}, up {}",
        report.version,
        humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from(report.uptime_seconds).unwrap_or(0)
        ))
    );
    let _ = writeln!(
        out,
        "Disk      {} used, {} trash, {} free of {} allocated",
        format_bytes(d.used_bytes),
        format_bytes(d.trash_bytes),
        format_bytes(d.free_bytes),
        format_bytes(d.allocated_bytes)
    );
    if report.warnings.is_empty() {
        let _ = writeln!(out, "Status    all is well");
    } else {
        for warning in &report.warnings {
            let _ = writeln!(out, "WARNING   {warning}");
        }
    }
    for sat in &report.satellites {
        let _ = writeln!(out, "\nSatellite {} ({})", sat.id, sat.address);
        let contact = match sat.last_contact {
            Some(at) => format!(
                "last check-in {} ago",
                humantime::format_duration(std::time::Duration::from_secs(
                    u64::try_from(report.now.saturating_sub(at)).unwrap_or(0)
                ))
            ),
            None => "never reached".into(),
        };
        let _ = writeln!(out, "  Contact     {contact}");
        if let Some(error) = &sat.last_error {
            let _ = writeln!(out, "  Last error  {error}");
        }
        let _ = writeln!(
            out,
            "  Storage     {} used in {} pieces, {} trash",
            format_bytes(sat.used_bytes),
            sat.pieces,
            format_bytes(sat.trash_bytes)
        );
        let by_action: Vec<String> = sat
            .bandwidth
            .iter()
            .map(|(action, bytes)| format!("{} {}", action.name(), format_bytes(*bytes)))
            .collect();
        let _ = writeln!(
            out,
            "  Bandwidth   {} in {}: {}",
            format_bytes(sat.bandwidth_total),
            report.month,
            by_action.join(", ")
        );
        if let Some(exit) = &sat.exit {
            let state = match (&exit.failure, exit.succeeded(), exit.finished_at) {
                (Some(why), _, _) => format!("failed: {why}"),
                (None, true, _) => format!(
                    "completed, {} pieces deleted",
                    exit.pieces_deleted.unwrap_or(0)
                ),
                _ => "in progress".to_string(),
            };
            let _ = writeln!(
                out,
                "  Exit        {state} ({} pieces handed over, {} failed)",
                exit.pieces_transferred, exit.pieces_failed
            );
        }
        match &sat.reputation {
            None => {
                let _ = writeln!(out, "  Reputation  not reported yet");
            }
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  Scores      audit {}, suspension {}, online {}",
                    format_score(r.audit_score),
                    format_score(r.suspension_score),
                    format_score(r.online_score)
                );
                let vetting = match r.vetted_at {
                    Some(_) => "vetted".to_string(),
                    None => format!(
                        "vetting: {} of {} successful audits",
                        r.audits_succeeded.min(r.vetting_audits),
                        r.vetting_audits
                    ),
                };
                let standing = if r.disqualified_at.is_some() {
                    ", disqualified"
                } else if r.suspended_at.is_some() {
                    ", suspended"
                } else if r.exiting_at.is_some() {
                    ", exiting"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  Audits      {} ({} passed), {vetting}{standing}",
                    r.audits, r.audits_succeeded
                );
            }
        }
    }
    out
}

/// Serves the dashboard on `listener` until `cancel` fires.
pub async fn serve(
    dashboard: Arc<Dashboard>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<()> {
    let router = Router::new()
        .route("/", get(page))
        .route("/api/node", get(node_report))
        .route("/metrics", get(metrics))
        .route("/api/exit/{satellite}", post(start_exit))
        .with_state(dashboard);
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(Error::io("the dashboard server failed"))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn failed(e: Error) -> Response {
    tracing::warn!("the dashboard cannot read the node's figures: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn node_report(State(dashboard): State<Arc<Dashboard>>) -> Response {
    match dashboard.report().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failed(e),
    }
}

/// Whether `headers` carry `token` as a bearer token; compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn start_exit(
    State(dashboard): State<Arc<Dashboard>>,
    Path(satellite): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &dashboard.operator_token) {
        return (
            StatusCode::UNAUTHORIZED,
            "starting an exit needs the operator token of the node's storage directory",
        )
            .into_response();
    }
    let Ok(satellite) = satellite.parse::<NodeId>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{satellite:?} is not a satellite id"),
        )
            .into_response();
    };
    match dashboard.exits.start(satellite).await {
        Ok(status) => Json(status).into_response(),
        Err(e @ Error::UntrustedSatellite(_)) => {
            (StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn metrics(State(dashboard): State<Arc<Dashboard>>) -> Response {
    match dashboard.prometheus().await {
        Ok(text) => ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response(),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_scores_read_as_the_page_shows_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(999), "999 B");
        assert_eq!(format_bytes(1000), "1.00 kB");
        assert_eq!(format_bytes(1_536), "1.54 kB");
        assert_eq!(format_bytes(1_125), "1.13 kB");
        assert_eq!(format_bytes(999_994), "999.99 kB");
        assert_eq!(format_bytes(999_995), "1.00 MB");
        assert_eq!(format_bytes(2_250_000_000), "2.25 GB");
        assert_eq!(format_bytes(u64::MAX), "18446.74 PB");
        assert_eq!(format_score(1.0), "100.00 %");
        assert_eq!(format_score(0.995), "99.50 %");
        assert_eq!(format_score(0.0), "0.00 %");
    }
}
