//! Snapshots: one object `snapshots/<id>` per backup, naming its root tree,
//! time, host, user, paths, tags, parent and summary. The id is the keyed
//! hash of the object's plaintext, so an object that was renamed or changed
//! is caught when it is read. Snapshots are written last, after every blob
//! they reach is in a pack and indexed: a backup that stops earlier leaves no
//! snapshot, only packs that the next backup reuses.

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use crate::blob::BlobId;
use crate::repo::Repository;
use crate::Error;

const SNAPSHOT_AAD: &[u8] = b"archipel backup snapshot";

/// Snapshot ids are shown by their first this many hex digits.
pub const SHORT_ID: usize = 8;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Hex; not stored in the object (it is the object's name), shown in
    /// JSON listings.
    #[serde(default, skip_deserializing, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    pub tree: BlobId,
    /// The absolute paths backed up.
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<crate::archiver::BackupSummary>,
}

mod rfc3339 {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*time))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
    use serde::Deserialize;
}

impl Snapshot {
    pub fn short_id(&self) -> &str {
        &self.id[..SHORT_ID.min(self.id.len())]
    }

    /// Stores the snapshot and sets its id.
    pub async fn save(&mut self, repo: &Repository) -> Result<(), Error> {
        self.id.clear();
        let plain =
            serde_json::to_vec(self).map_err(|e| Error::Invalid(format!("snapshot: {e}")))?;
        self.id = repo.keys().blob_id(&plain).to_hex();
        repo.put_sealed(&format!("snapshots/{}", self.id), SNAPSHOT_AAD, &plain)
            .await
    }

    async fn read(repo: &Repository, id: &str) -> Result<Snapshot, Error> {
        let name = format!("snapshots/{id}");
        let plain = repo.get_sealed(&name, SNAPSHOT_AAD).await?;
        if repo.keys().blob_id(&plain).to_hex() != id {
            return Err(Error::corrupt(name, "its content does not match its name"));
        }
        let mut snapshot: Snapshot =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt(name, e))?;
        snapshot.id = id.to_string();
        Ok(snapshot)
    }

    pub async fn delete(repo: &Repository, id: &str) -> Result<(), Error> {
        repo.delete(&format!("snapshots/{id}")).await
    }
}

/// Every snapshot, oldest first.
pub async fn load_all(repo: &Repository) -> Result<Vec<Snapshot>, Error> {
    let ids = snapshot_ids(repo).await?;
    let mut snapshots: Vec<Snapshot> = futures::stream::iter(ids)
        .map(|id| async move { Snapshot::read(repo, &id).await })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    snapshots.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    Ok(snapshots)
}

async fn snapshot_ids(repo: &Repository) -> Result<Vec<String>, Error> {
    Ok(repo
        .list("snapshots/")
        .await?
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix("snapshots/").map(str::to_string))
        .filter(|id| BlobId::from_hex(id).is_some())
        .collect())
}

/// The snapshot `spec` names among `snapshots` (oldest first): `latest`, or
/// a unique prefix of an id.
pub fn find<'a>(snapshots: &'a [Snapshot], spec: &str) -> Result<&'a Snapshot, Error> {
    if spec.is_empty() {
        return Err(Error::NoSnapshot(spec.to_string()));
    }
    if spec == "latest" {
        return snapshots
            .last()
            .ok_or_else(|| Error::NoSnapshot(spec.to_string()));
    }
    let spec_lower = spec.to_ascii_lowercase();
    let mut matches = snapshots.iter().filter(|s| s.id.starts_with(&spec_lower));
    match (matches.next(), matches.next()) {
        (Some(found), None) => Ok(found),
        (Some(_), Some(_)) => Err(Error::AmbiguousSnapshot(spec.to_string())),
        _ => Err(Error::NoSnapshot(spec.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            time: SystemTime::UNIX_EPOCH,
            tree: BlobId([0; 32]),
            paths: vec![],
            hostname: "h".into(),
            username: "u".into(),
            tags: vec![],
            parent: None,
            summary: None,
        }
    }

    #[test]
    fn snapshots_are_found_by_unique_prefix_or_latest() {
        let all = vec![snapshot("abc123"), snapshot("abd456"), snapshot("ff0000")];
        assert_eq!(find(&all, "abc").unwrap().id, "abc123");
        assert_eq!(find(&all, "FF").unwrap().id, "ff0000");
        assert_eq!(find(&all, "latest").unwrap().id, "ff0000");
        assert!(matches!(find(&all, "ab"), Err(Error::AmbiguousSnapshot(_))));
        assert!(matches!(find(&all, "99"), Err(Error::NoSnapshot(_))));
        assert!(matches!(find(&all, ""), Err(Error::NoSnapshot(_))));
        assert!(matches!(find(&[], "latest"), Err(Error::NoSnapshot(_))));
    }
}
