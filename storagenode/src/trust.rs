//! The satellites this node trusts and their public keys.
//!
//! A satellite is configured by id; its public key is learned at check-in
//! (and must derive to that id). Keys are cached on disk under
//! `storage_dir/satellites/<id>.key`, so a restarted node verifies order
//! limits even while the satellite is unreachable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use archipel_proto::{NodeId, PeerKey};
use tokio::sync::watch;

use crate::config::TrustedSatellite;
use crate::error::{Error, Result};

/// Trusted satellites and the keys known for them.
pub struct SatelliteKeys {
    dir: PathBuf,
    trusted: Vec<TrustedSatellite>,
    keys: watch::Sender<HashMap<NodeId, PeerKey>>,
}

impl SatelliteKeys {
    /// Loads the cached keys of `trusted` satellites from `storage_dir`.
    pub async fn load(
        storage_dir: &std::path::Path,
        trusted: Vec<TrustedSatellite>,
    ) -> Result<Self> {
        let dir = storage_dir.join("satellites");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        let mut keys = HashMap::new();
        for satellite in &trusted {
            let path = dir.join(format!("{}.key", satellite.id));
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
            };
            let key = hex::decode(text.trim())
                .map_err(|e| e.to_string())
                .and_then(|bytes| PeerKey::for_id(satellite.id, &bytes).map_err(|e| e.to_string()));
            match key {
                Ok(key) => {
                    keys.insert(satellite.id, key);
                }
                // A bad cache entry is relearned at the next check-in.
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring a bad cached satellite key: {e}")
                }
            }
        }
        Ok(SatelliteKeys {
            dir,
            trusted,
            keys: watch::Sender::new(keys),
        })
    }

    pub fn is_trusted(&self, id: NodeId) -> bool {
        self.trusted.iter().any(|s| s.id == id)
    }

    /// The key of trusted satellite `id`, waiting up to `wait` for a check-in
    /// to learn it: a satellite may hand out order limits for a node in the
    /// moment between registering its check-in and the node reading the answer.
    pub async fn key(&self, id: NodeId, wait: Duration) -> Result<PeerKey> {
        if !self.is_trusted(id) {
            return Err(Error::UntrustedSatellite(id));
        }
        let mut receiver = self.keys.subscribe();
        let found =
            tokio::time::timeout(wait, receiver.wait_for(|keys| keys.contains_key(&id))).await;
        match found {
            Ok(Ok(keys)) => keys.get(&id).cloned().ok_or(Error::SatelliteKeyUnknown(id)),
            _ => Err(Error::SatelliteKeyUnknown(id)),
        }
    }

    /// Accepts the key a satellite presented, if it derives to the satellite's
    /// id, and caches it on disk when it is new.
    pub async fn learn(&self, id: NodeId, public_key: &[u8]) -> Result<()> {
        let key = PeerKey::for_id(id, public_key).map_err(|source| Error::SatelliteKey {
            satellite: id,
            source,
        })?;
        if self.keys.borrow().contains_key(&id) {
            return Ok(());
        }
        let path = self.dir.join(format!("{id}.key"));
        let temp = self.dir.join(format!("{id}.key.new"));
        let text = format!("{}\n", hex::encode(key.public_key()));
        async {
            tokio::fs::write(&temp, text).await?;
            tokio::fs::rename(&temp, &path).await
        }
        .await
        .map_err(Error::io(format!(
            "cannot cache the key of satellite {id} in {}",
            path.display()
        )))?;
        self.keys.send_modify(|keys| {
            keys.insert(id, key);
        });
        tracing::info!(satellite = %id, "learned the satellite's public key");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::Identity;

    #[tokio::test]
    async fn keys_are_checked_against_ids_cached_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let sat = Identity::generate();
        let other = Identity::generate();
        let trusted = vec![TrustedSatellite {
            id: sat.id(),
            address: "127.0.0.1:1".into(),
        }];
        let keys = SatelliteKeys::load(dir.path(), trusted.clone())
            .await
            .unwrap();
        assert!(matches!(
            keys.key(sat.id(), Duration::from_millis(10)).await,
            Err(Error::SatelliteKeyUnknown(_))
        ));
        assert!(matches!(
            keys.key(other.id(), Duration::from_millis(10)).await,
            Err(Error::UntrustedSatellite(_))
        ));
        assert!(matches!(
            keys.learn(sat.id(), &other.public_key()).await,
            Err(Error::SatelliteKey { .. })
        ));
        keys.learn(sat.id(), &sat.public_key()).await.unwrap();
        assert_eq!(
            keys.key(sat.id(), Duration::ZERO)
                .await
                .unwrap()
                .public_key(),
            sat.public_key()
        );

        let reloaded = SatelliteKeys::load(dir.path(), trusted).await.unwrap();
        assert_eq!(
            reloaded
                .key(sat.id(), Duration::ZERO)
                .await
                .unwrap()
                .public_key(),
            sat.public_key()
        );
    }

    #[tokio::test]
    async fn a_waiting_lookup_sees_a_key_learned_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let sat = Identity::generate();
        let keys = std::sync::Arc::new(
            SatelliteKeys::load(
                dir.path(),
                vec![TrustedSatellite {
                    id: sat.id(),
                    address: "127.0.0.1:1".into(),
                }],
            )
            .await
            .unwrap(),
        );
        let waiter = {
            let keys = keys.clone();
            let id = sat.id();
            tokio::spawn(async move { keys.key(id, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        keys.learn(sat.id(), &sat.public_key()).await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().id(), sat.id());
    }
}
