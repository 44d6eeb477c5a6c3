//! The disk write probe: at start and every `disk_probe_interval` the node
//! writes a small file in its storage directory, syncs it, reads it back and
//! removes it. A disk that turned read-only, fails writes or hangs fails the
//! probe; the node then refuses uploads (with the reason, in its log, its
//! dashboard and its check-ins, so satellites stop selecting it) and keeps
//! serving the pieces it holds. The next probe that passes lifts the refusal.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::{spawn_blocking, PieceStore};

/// Bytes the probe writes: one page, enough to reach the device.
const PROBE_SIZE: usize = 4096;
/// A probe that takes longer than this counts as failed: a hung disk would
/// make every upload hang too.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The probe file's name in the store's temp directory (which the node
/// empties at start, so a probe interrupted by a crash leaves nothing).
const PROBE_FILE: &str = "disk-probe";

/// Writes, syncs, reads back and removes a probe file in `dir`.
fn probe_dir(dir: &Path) -> Result<()> {
    let path = dir.join(PROBE_FILE);
    let written: Vec<u8> = (0..PROBE_SIZE).map(|_| rand::random::<u8>()).collect();
    let mut file = std::fs::File::create(&path)
        .map_err(Error::io(format!("cannot create {}", path.display())))?;
    file.write_all(&written)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(format!("cannot write {}", path.display())))?;
    let mut read = Vec::with_capacity(PROBE_SIZE);
    std::fs::File::open(&path)
        .and_then(|mut file| file.read_to_end(&mut read))
        .map_err(Error::io(format!("cannot read back {}", path.display())))?;
    std::fs::remove_file(&path).map_err(Error::io(format!("cannot remove {}", path.display())))?;
    if read != written {
        return Err(Error::Io {
            context: format!("{} read back other bytes than were written", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    Ok(())
}

/// Probes the store's disk once and records the outcome in the store,
/// logging when it changes. Returns the problem found, if any.
pub async fn check(store: &PieceStore) -> Option<String> {
    let dir = store.temp_dir().to_path_buf();
    let outcome =
        match tokio::time::timeout(PROBE_TIMEOUT, spawn_blocking(move || probe_dir(&dir))).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "a write of {PROBE_SIZE} bytes took longer than {}s",
                PROBE_TIMEOUT.as_secs()
            )),
        };
    let before = store.disk_problem();
    match (&before, &outcome) {
        (None, Some(problem)) => tracing::error!(
            "the disk failed its write probe; refusing uploads and serving stored pieces: {problem}"
        ),
        (Some(_), None) => {
            tracing::info!("the disk passed its write probe; accepting uploads again")
        }
        _ => {}
    }
    store.set_disk_problem(outcome.clone());
    outcome
}

/// Probes the disk every `interval` until `cancel` fires.
pub async fn watch(store: PieceStore, interval: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        check(&store).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_probe_refuses_uploads_until_the_disk_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 10_000_000)
            .await
            .unwrap();
        assert_eq!(check(&store).await, None);
        assert!(std::fs::read_dir(store.temp_dir())
            .unwrap()
            .next()
            .is_none());

        // A file where the probe writes: creating anything in it fails, as on
        // a disk gone read-only (which root would not notice through modes).
        let temp = store.temp_dir().to_path_buf();
        std::fs::remove_dir(&temp).unwrap();
        std::fs::write(&temp, b"not a directory").unwrap();
        let problem = check(&store).await.expect("the probe fails");
        assert!(problem.contains("disk-probe"), "{problem}");
        assert_eq!(store.disk_problem(), Some(problem.clone()));
        let refused = store
            .create(
                crate::store::tests::limit(&archipel_proto::Identity::generate(), 1, 0),
                100,
            )
            .await
            .err()
            .expect("uploads are refused");
        assert!(
            matches!(refused, Error::DiskUnhealthy(ref p) if *p == problem),
            "{refused}"
        );
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::Unavailable
        );

        std::fs::remove_file(&temp).unwrap();
        std::fs::create_dir(&temp).unwrap();
        assert_eq!(check(&store).await, None);
        assert_eq!(store.disk_problem(), None);
    }
}
