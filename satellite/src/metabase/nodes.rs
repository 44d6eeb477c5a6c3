//! The node registry (what nodes report when they check in, and which of
//! them may take new pieces), node health and reputation, and node standing
//! as the repair checker and graceful exit see it.

use archipel_proto::NodeId;

use super::{Metabase, Pool};
use crate::reputation::{self, AuditOutcome, Beta, NodeHealth, ReputationConfig};
use crate::{Error, Result};

/// A storage node as it last checked in.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Node {
    pub id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub address: String,
    /// The /24 (IPv4) or /64 (IPv6) network of its address.
    pub last_net: String,
    pub capacity_bytes: i64,
    pub free_bytes: i64,
    pub version: String,
    pub last_contact: i64,
    pub created_at: i64,
}

const NODE_COLUMNS: &str = "id, public_key, address, last_net, capacity_bytes, free_bytes, \
     version, last_contact, created_at";

const HEALTH_COLUMNS: &str = "audit_alpha, audit_beta, unknown_alpha, unknown_beta, \
     audit_total, audit_success, vetted_at, disqualified_at, suspended_at, \
     last_contact_success, last_contact_failure";

/// The health columns of a node; NULL reputations mean "never audited".
#[derive(sqlx::FromRow)]
struct HealthRow {
    audit_alpha: Option<f64>,
    audit_beta: Option<f64>,
    unknown_alpha: Option<f64>,
    unknown_beta: Option<f64>,
    audit_total: i64,
    audit_success: i64,
    vetted_at: Option<i64>,
    disqualified_at: Option<i64>,
    suspended_at: Option<i64>,
    last_contact_success: i64,
    last_contact_failure: i64,
}

impl HealthRow {
    fn into_health(self, config: &ReputationConfig) -> NodeHealth {
        let initial = config.initial();
        NodeHealth {
            audit: Beta {
                alpha: self.audit_alpha.unwrap_or(initial.alpha),
                beta: self.audit_beta.unwrap_or(initial.beta),
            },
            unknown: Beta {
                alpha: self.unknown_alpha.unwrap_or(initial.alpha),
                beta: self.unknown_beta.unwrap_or(initial.beta),
            },
            audit_total: self.audit_total,
            audit_success: self.audit_success,
            vetted_at: self.vetted_at,
            disqualified_at: self.disqualified_at,
            suspended_at: self.suspended_at,
            last_contact_success: self.last_contact_success,
            last_contact_failure: self.last_contact_failure,
        }
    }
}

const STANDING_COLUMNS: &str =
    "id, last_net, last_contact, disqualified_at, suspended_at, exiting_at, exit_finished_at";

/// A node's standing as far as the health of its pieces goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStanding {
    pub id: NodeId,
    pub last_net: String,
    pub last_contact: i64,
    pub disqualified_at: Option<i64>,
    pub suspended_at: Option<i64>,
    pub exiting_at: Option<i64>,
    /// When its graceful exit ended, either way.
    pub exited_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct NodeStandingRow {
    id: Vec<u8>,
    last_net: String,
    last_contact: i64,
    disqualified_at: Option<i64>,
    suspended_at: Option<i64>,
    exiting_at: Option<i64>,
    exit_finished_at: Option<i64>,
}

impl TryFrom<NodeStandingRow> for NodeStanding {
    type Error = Error;
    fn try_from(r: NodeStandingRow) -> Result<NodeStanding> {
        Ok(NodeStanding {
            id: NodeId::from_bytes(&r.id)
                .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?,
            last_net: r.last_net,
            last_contact: r.last_contact,
            disqualified_at: r.disqualified_at,
            suspended_at: r.suspended_at,
            exiting_at: r.exiting_at,
            exited_at: r.exit_finished_at,
        })
    }
}

/// Everything the satellite knows of a node: its check-in, health, standing
/// and what it reported about its disk.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub node: Node,
    pub health: NodeHealth,
    pub exiting_at: Option<i64>,
    /// When its graceful exit ended, either way.
    pub exited_at: Option<i64>,
    /// Bytes of this satellite's pieces on the node, in use and in its trash.
    pub used_bytes: i64,
    pub trash_bytes: i64,
    /// Why the node takes no uploads, as it said at its last check-in.
    pub disk_problem: Option<String>,
}

const REPORT_COLUMNS: &str = "exiting_at, exit_finished_at, used_bytes, trash_bytes, disk_problem";

#[derive(sqlx::FromRow)]
struct RecordRow {
    #[sqlx(flatten)]
    node: Node,
    #[sqlx(flatten)]
    health: HealthRow,
    exiting_at: Option<i64>,
    exit_finished_at: Option<i64>,
    used_bytes: i64,
    trash_bytes: i64,
    disk_problem: Option<String>,
}

impl RecordRow {
    fn into_record(self, config: &ReputationConfig) -> NodeRecord {
        NodeRecord {
            node: self.node,
            health: self.health.into_health(config),
            exiting_at: self.exiting_at,
            exited_at: self.exit_finished_at,
            used_bytes: self.used_bytes,
            trash_bytes: self.trash_bytes,
            disk_problem: self.disk_problem,
        }
    }
}

impl Metabase {
    // ------------------------------------------------------------ nodes

    /// Records a node's check-in, creating it on first contact.
    pub async fn upsert_node(&self, node: &Node) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO nodes (id, public_key, address, last_net, capacity_bytes, free_bytes, \
                 version, last_contact, created_at, last_contact_success) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8) \
                 ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, \
                 address = excluded.address, last_net = excluded.last_net, \
                 capacity_bytes = excluded.capacity_bytes, free_bytes = excluded.free_bytes, \
                 version = excluded.version, last_contact = excluded.last_contact, \
                 last_contact_success = excluded.last_contact",
            )
            .bind(&node.id)
            .bind(&node.public_key)
            .bind(&node.address)
            .bind(&node.last_net)
            .bind(node.capacity_bytes)
            .bind(node.free_bytes)
            .bind(&node.version)
            .bind(node.last_contact)
            .bind(node.created_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records what a node said at check-in about the space this
    /// satellite's pieces take on it (in use and in its trash) and about its
    /// disk: a node whose disk failed its write probe takes no new pieces.
    pub async fn record_node_report(
        &self,
        id: &NodeId,
        used: i64,
        trash: i64,
        disk_problem: Option<&str>,
    ) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE nodes SET used_bytes = $2, trash_bytes = $3, disk_problem = $4 WHERE id = $1",
            )
            .bind(id.to_vec())
            .bind(used)
            .bind(trash)
            .bind(disk_problem)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Nodes that checked in at or after `online_since` with at least `min_free`
    /// bytes free, and are neither disqualified, suspended, exiting nor
    /// reporting a failing disk.
    pub async fn eligible_nodes(&self, online_since: i64, min_free: i64) -> Result<Vec<Node>> {
        let (mut vetted, unvetted) = self
            .eligible_nodes_by_vetting(online_since, min_free, 0)
            .await?;
        vetted.extend(unvetted);
        Ok(vetted)
    }

    /// The [eligible nodes](Self::eligible_nodes), split into the vetted (at
    /// least `vetting_audits` successful audits) and the others.
    pub async fn eligible_nodes_by_vetting(
        &self,
        online_since: i64,
        min_free: i64,
        vetting_audits: u64,
    ) -> Result<(Vec<Node>, Vec<Node>)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            node: Node,
            audit_success: i64,
        }
        let sql = format!(
            "SELECT {NODE_COLUMNS}, audit_success FROM nodes WHERE last_contact >= $1 \
             AND free_bytes >= $2 AND disqualified_at IS NULL AND suspended_at IS NULL \
             AND exiting_at IS NULL AND disk_problem IS NULL"
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(online_since).bind(min_free).fetch_all(pool).await?
        });
        let needed = i64::try_from(vetting_audits).unwrap_or(i64::MAX);
        let (vetted, unvetted): (Vec<Row>, Vec<Row>) =
            rows.into_iter().partition(|r| r.audit_success >= needed);
        Ok((
            vetted.into_iter().map(|r| r.node).collect(),
            unvetted.into_iter().map(|r| r.node).collect(),
        ))
    }

    pub async fn node(&self, id: &NodeId) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_vec()).fetch_optional(pool).await?
        }))
    }

    /// Every node that is not disqualified, with its address: the nodes a
    /// retain round sends filters to.
    pub async fn retain_targets(&self) -> Result<Vec<(NodeId, String)>> {
        let rows: Vec<(Vec<u8>, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, address FROM nodes WHERE disqualified_at IS NULL ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(id, address)| {
                let id = NodeId::from_bytes(&id).map_err(|_| Error::Corrupt("a node id".into()))?;
                Ok((id, address))
            })
            .collect()
    }

    /// The known nodes among `ids`.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Node>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_pool!(self, pool => {
            let mut builder = sqlx::QueryBuilder::new(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id IN ("));
            let mut separated = builder.separated(", ");
            for id in ids {
                separated.push_bind(id.to_vec());
            }
            builder.push(")");
            builder.build_query_as().fetch_all(pool).await?
        }))
    }

    pub async fn node_count(&self) -> Result<usize> {
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM nodes").fetch_one(pool).await?
        });
        Ok(count.max(0) as usize)
    }

    // ------------------------------------------------------------ node health

    /// A node's reputation, audit counts and standing; `None` for an unknown node.
    pub async fn node_health(
        &self,
        id: &NodeId,
        config: &ReputationConfig,
    ) -> Result<Option<NodeHealth>> {
        let sql = format!("SELECT {HEALTH_COLUMNS} FROM nodes WHERE id = $1");
        let row: Option<HealthRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_vec()).fetch_optional(pool).await?
        });
        Ok(row.map(|r| r.into_health(config)))
    }

    /// Applies one audit outcome to a node's reputation, counts and contact
    /// times, then disqualifies, suspends or unsuspends it as the new numbers
    /// call for. Returns the node's health afterwards (`None`: unknown node).
    pub async fn record_audit(
        &self,
        id: &NodeId,
        outcome: AuditOutcome,
        config: &ReputationConfig,
        now: i64,
    ) -> Result<Option<NodeHealth>> {
        // The reputation moves in one UPDATE so that concurrent outcomes add up.
        let (audit, unknown, counted, succeeded) = match outcome {
            AuditOutcome::Success => (Some(true), Some(true), 1i64, 1i64),
            AuditOutcome::Failure => (Some(false), None, 1, 0),
            AuditOutcome::Unknown => (None, Some(false), 1, 0),
            AuditOutcome::Offline => (None, None, 0, 0),
        };
        let contact = if outcome == AuditOutcome::Offline {
            "last_contact_failure"
        } else {
            "last_contact_success"
        };
        // NULL reputations start from the configured initial values ($2, $3).
        let mut sets = vec![
            format!("{contact} = $4"),
            "audit_total = audit_total + $5".to_string(),
            "audit_success = audit_success + $6".to_string(),
            "vetted_at = CASE WHEN vetted_at IS NULL AND audit_success + $6 >= $7 \
             THEN $4 ELSE vetted_at END"
                .to_string(),
        ];
        let mut increments = Vec::new();
        for (prefix, good) in [("audit", audit), ("unknown", unknown)] {
            if let Some(good) = good {
                let (alpha, beta) = reputation::increments(good, config);
                // Increments bind from $8 on, two per reputation.
                let a = 8 + increments.len();
                let b = a + 1;
                sets.push(format!(
                    "{prefix}_alpha = $1 * COALESCE({prefix}_alpha, $2) + ${a}"
                ));
                sets.push(format!(
                    "{prefix}_beta = $1 * COALESCE({prefix}_beta, $3) + ${b}"
                ));
                increments.push(alpha);
                increments.push(beta);
            }
        }
        let sql = format!(
            "UPDATE nodes SET {} WHERE id = ${} RETURNING {HEALTH_COLUMNS}",
            sets.join(", "),
            8 + increments.len()
        );
        let vetting = i64::try_from(config.vetting_audits).unwrap_or(i64::MAX);
        let row: Option<HealthRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql)
                .bind(config.lambda)
                .bind(config.initial_alpha)
                .bind(config.initial_beta)
                .bind(now)
                .bind(counted)
                .bind(succeeded)
                .bind(vetting);
            for increment in &increments {
                query = query.bind(*increment);
            }
            query.bind(id.to_vec()).fetch_optional(pool).await?
        });
        let Some(mut health) = row.map(|r| r.into_health(config)) else {
            return Ok(None);
        };
        self.count_contact(id, outcome != AuditOutcome::Offline, now)
            .await?;
        let verdict = health.verdict(config);
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            if verdict.disqualify {
                sqlx::query(
                    "UPDATE nodes SET disqualified_at = $1 WHERE id = $2 AND disqualified_at IS NULL",
                )
                .bind(now)
                .bind(id.to_vec())
                .execute(pool)
                .await?;
                health.disqualified_at.get_or_insert(now);
            }
            if verdict.suspend {
                sqlx::query(
                    "UPDATE nodes SET suspended_at = $1 WHERE id = $2 AND suspended_at IS NULL",
                )
                .bind(now)
                .bind(id.to_vec())
                .execute(pool)
                .await?;
                health.suspended_at.get_or_insert(now);
            }
            if verdict.unsuspend {
                sqlx::query("UPDATE nodes SET suspended_at = NULL WHERE id = $1")
                    .bind(id.to_vec())
                    .execute(pool)
                    .await?;
                health.suspended_at = None;
            }
        });
        Ok(Some(health))
    }

    /// Counts an audit contact in the node's current online window and drops
    /// windows older than the online score looks back.
    async fn count_contact(&self, id: &NodeId, reached: bool, now: i64) -> Result<()> {
        let window = now - now.rem_euclid(reputation::ONLINE_WINDOW_SECS);
        let oldest = now.saturating_sub(reputation::ONLINE_SCORE_PERIOD_SECS);
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO node_online_windows (node_id, window_start, total, online) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (node_id, window_start) DO UPDATE \
                 SET total = node_online_windows.total + 1, \
                 online = node_online_windows.online + excluded.online",
            )
            .bind(id.to_vec())
            .bind(window)
            .bind(i64::from(reached))
            .execute(pool)
            .await?;
            sqlx::query("DELETE FROM node_online_windows WHERE node_id = $1 AND window_start < $2")
                .bind(id.to_vec())
                .bind(oldest - reputation::ONLINE_WINDOW_SECS)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every audited node's online score at `now`, or only `only`'s: the
    /// share of its audit contacts in the recent windows that reached it.
    /// Nodes never audited in that time are missing (their score is 1).
    pub async fn online_scores(
        &self,
        now: i64,
        only: Option<&NodeId>,
    ) -> Result<Vec<(NodeId, f64)>> {
        let oldest = now.saturating_sub(reputation::ONLINE_SCORE_PERIOD_SECS);
        let since = oldest - oldest.rem_euclid(reputation::ONLINE_WINDOW_SECS);
        let rows: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT node_id, CAST(SUM(total) AS BIGINT), CAST(SUM(online) AS BIGINT) \
                 FROM node_online_windows WHERE window_start >= $1 \
                 AND ($2 IS NULL OR node_id = $2) GROUP BY node_id",
            )
            .bind(since)
            .bind(only.map(|id| id.to_vec()))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, total, online)| {
                let id = NodeId::from_bytes(&id)
                    .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?;
                Ok((id, reputation::online_score(total, online)))
            })
            .collect()
    }

    /// The disqualified nodes: never selected again, their pieces count as lost.
    pub async fn disqualified_nodes(&self) -> Result<Vec<NodeId>> {
        let rows: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM nodes WHERE disqualified_at IS NOT NULL")
                .fetch_all(pool)
                .await?
        });
        rows.iter()
            .map(|(id,)| {
                NodeId::from_bytes(id)
                    .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))
            })
            .collect()
    }

    // ------------------------------------------------------------ standing

    /// What the repair checker needs to know of every node.
    pub async fn node_standings(&self) -> Result<Vec<NodeStanding>> {
        let sql = format!("SELECT {STANDING_COLUMNS} FROM nodes");
        let rows: Vec<NodeStandingRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(NodeStanding::try_from).collect()
    }

    /// The standings of the known nodes among `ids`.
    pub async fn node_standings_of(&self, ids: &[NodeId]) -> Result<Vec<NodeStanding>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<NodeStandingRow> = on_pool!(self, pool => {
            let mut builder =
                sqlx::QueryBuilder::new(format!("SELECT {STANDING_COLUMNS} FROM nodes WHERE id IN ("));
            let mut separated = builder.separated(", ");
            for id in ids {
                separated.push_bind(id.to_vec());
            }
            builder.push(")");
            builder.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(NodeStanding::try_from).collect()
    }

    /// Every node with its health and what it last reported, for the admin API.
    pub async fn node_records(&self, config: &ReputationConfig) -> Result<Vec<NodeRecord>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS}, {HEALTH_COLUMNS}, {REPORT_COLUMNS} FROM nodes ORDER BY id"
        );
        let rows: Vec<RecordRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows.into_iter().map(|r| r.into_record(config)).collect())
    }

    /// One node's record; `None` for an unknown node.
    pub async fn node_record(
        &self,
        id: &NodeId,
        config: &ReputationConfig,
    ) -> Result<Option<NodeRecord>> {
        let sql = format!(
            "SELECT {NODE_COLUMNS}, {HEALTH_COLUMNS}, {REPORT_COLUMNS} FROM nodes WHERE id = $1"
        );
        let row: Option<RecordRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_vec()).fetch_optional(pool).await?
        });
        Ok(row.map(|r| r.into_record(config)))
    }

    /// Marks a node as exiting: it gets no new pieces and repair moves its
    /// pieces elsewhere. Returns false for an unknown node.
    pub async fn set_exiting(&self, id: &NodeId, now: i64) -> Result<bool> {
        let _writing = self.writing().await;
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE nodes SET exiting_at = COALESCE(exiting_at, $2) WHERE id = $1")
                .bind(id.to_vec())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed > 0)
    }
}
