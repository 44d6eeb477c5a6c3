//! The node's standing with each satellite, as the satellite reported it at
//! the last check-in (audit, suspension and online scores, vetting, times),
//! with when the node last reached it and the last error. Kept in memory for
//! the dashboard and in the node's database, so a restarted node shows the
//! last known figures before its first check-in.

use std::collections::HashMap;
use std::sync::Mutex;

use archipel_proto::pb::NodeReputation;
use archipel_proto::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::PieceStore;

fn record_key(satellite: &NodeId) -> String {
    format!("standing:{satellite}")
}

/// A node's standing with one satellite, as that satellite reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    pub audit_score: f64,
    pub suspension_score: f64,
    pub online_score: f64,
    pub disqualification_threshold: f64,
    pub suspension_threshold: f64,
    pub audits: i64,
    pub audits_succeeded: i64,
    /// Successful audits needed to be vetted.
    pub vetting_audits: i64,
    pub vetted_at: Option<i64>,
    pub joined_at: Option<i64>,
    pub suspended_at: Option<i64>,
    pub disqualified_at: Option<i64>,
    pub exiting_at: Option<i64>,
}

fn time(seconds: i64) -> Option<i64> {
    (seconds != 0).then_some(seconds)
}

impl From<NodeReputation> for Reputation {
    fn from(r: NodeReputation) -> Reputation {
        Reputation {
            audit_score: r.audit_score,
            suspension_score: r.suspension_score,
            online_score: r.online_score,
            disqualification_threshold: r.disqualification_threshold,
            suspension_threshold: r.suspension_threshold,
            audits: r.audits,
            audits_succeeded: r.audits_succeeded,
            vetting_audits: r.vetting_audits,
            vetted_at: time(r.vetted_at),
            joined_at: time(r.joined_at),
            suspended_at: time(r.suspended_at),
            disqualified_at: time(r.disqualified_at),
            exiting_at: time(r.exiting_at),
        }
    }
}

/// What the node knows of its standing with one satellite.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Unix seconds of the last check-in the satellite accepted.
    pub last_contact: Option<i64>,
    /// Why the last check-in failed, if it did.
    pub last_error: Option<String>,
    /// As the satellite reported it at the last accepted check-in.
    pub reputation: Option<Reputation>,
}

/// Every trusted satellite's [`Standing`].
pub struct Standings {
    store: PieceStore,
    by_satellite: Mutex<HashMap<NodeId, Standing>>,
}

impl Standings {
    /// Reads the standings recorded for `satellites`.
    pub async fn load(store: PieceStore, satellites: &[NodeId]) -> Result<Standings> {
        let ids = satellites.to_vec();
        let recorded = store
            .with_index(move |index| {
                ids.into_iter()
                    .map(|id| Ok((id, index.record(&record_key(&id))?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        let mut by_satellite = HashMap::new();
        for (id, json) in recorded {
            let standing = json
                .and_then(|json| match serde_json::from_str(&json) {
                    Ok(standing) => Some(standing),
                    Err(e) => {
                        tracing::warn!(satellite = %id, "ignoring an unreadable standing record: {e}");
                        None
                    }
                })
                .unwrap_or_default();
            by_satellite.insert(id, standing);
        }
        Ok(Standings {
            store,
            by_satellite: Mutex::new(by_satellite),
        })
    }

    pub fn get(&self, satellite: &NodeId) -> Standing {
        self.lock().get(satellite).cloned().unwrap_or_default()
    }

    /// Records an accepted check-in at `now` and what the satellite said.
    pub async fn checked_in(
        &self,
        satellite: NodeId,
        now: i64,
        reputation: Option<NodeReputation>,
    ) -> Result<()> {
        self.update(satellite, |standing| {
            standing.last_contact = Some(now);
            standing.last_error = None;
            if let Some(reputation) = reputation {
                standing.reputation = Some(reputation.into());
            }
        })
        .await
    }

    /// Records a failed check-in.
    pub async fn failed(&self, satellite: NodeId, error: String) -> Result<()> {
        self.update(satellite, |standing| standing.last_error = Some(error))
            .await
    }

    async fn update(&self, satellite: NodeId, change: impl FnOnce(&mut Standing)) -> Result<()> {
        let json = {
            let mut all = self.lock();
            let standing = all.entry(satellite).or_default();
            change(standing);
            serde_json::to_string(standing).map_err(|e| crate::Error::Io {
                context: "cannot encode a satellite's standing".into(),
                source: std::io::Error::other(e),
            })?
        };
        self.store
            .with_index(move |index| index.set_record(&record_key(&satellite), &json))
            .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Standing>> {
        self.by_satellite.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standings_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let satellite = archipel_proto::Identity::generate().id();
        let reputation = NodeReputation {
            audit_score: 0.99,
            online_score: 1.0,
            audits: 12,
            audits_succeeded: 11,
            vetting_audits: 100,
            joined_at: 1_700_000_000,
            ..Default::default()
        };
        {
            let store = PieceStore::open(dir.path().to_path_buf(), 1_000)
                .await
                .unwrap();
            let standings = Standings::load(store.clone(), &[satellite]).await.unwrap();
            assert_eq!(standings.get(&satellite), Standing::default());
            standings
                .checked_in(satellite, 1_800_000_000, Some(reputation))
                .await
                .unwrap();
            standings
                .failed(satellite, "connection refused".into())
                .await
                .unwrap();
            store.close().await.unwrap();
        }
        let store = PieceStore::open(dir.path().to_path_buf(), 1_000)
            .await
            .unwrap();
        let standing = Standings::load(store, &[satellite])
            .await
            .unwrap()
            .get(&satellite);
        assert_eq!(standing.last_contact, Some(1_800_000_000));
        assert_eq!(standing.last_error.as_deref(), Some("connection refused"));
        let kept = standing.reputation.unwrap();
        assert_eq!(kept, Reputation::from(reputation));
        assert_eq!(kept.joined_at, Some(1_700_000_000));
        assert_eq!(kept.vetted_at, None);
    }
}
