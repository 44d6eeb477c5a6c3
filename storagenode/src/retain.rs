//! Garbage collection on the node: retain filters from satellites move the
//! pieces they do not name to the trash, a satellite (or the operator) can
//! restore the trash, and housekeeping removes expired pieces and empties the
//! trash after its retention.
//!
//! A retain filter can only ever move pieces to the trash, never delete
//! them: a wrong filter costs a restore, not data. It only touches pieces of
//! the satellite that signed it whose order limits were created before the
//! filter's cutoff (the satellite's clock on both sides, so the node's clock
//! does not matter), which covers uploads still in progress when the
//! satellite read its metadata. A filter older than one already applied for
//! that satellite is refused, so a replayed filter cannot trash again what a
//! restore brought back.

use std::sync::Arc;
use std::time::Duration;

use archipel_proto::bloom::BloomFilter;
use archipel_proto::orders::{self, PieceId};
use archipel_proto::pb::{RestoreTrashRequest, RestoreTrashResponse, RetainFilter, RetainResponse};
use archipel_proto::{NodeId, PeerKey};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::index::Place;
use crate::metrics::NodeMetrics;
use crate::store::PieceStore;

/// How far a restore request's timestamp may be from the node's clock.
const RESTORE_CLOCK_SKEW: i64 = 600;

/// Applies a retain filter `satellite_key` signed, addressed to `node`:
/// moves the satellite's stored pieces created before the filter's cutoff
/// that it does not name to the trash.
pub async fn apply_filter(
    store: &PieceStore,
    satellite_key: &PeerKey,
    node: NodeId,
    filter: RetainFilter,
) -> Result<RetainResponse> {
    orders::verify_retain_filter(satellite_key, &filter)?;
    let satellite = satellite_key.id();
    if NodeId::from_bytes(&filter.node_id)? != node {
        return Err(Error::InvalidRequest(
            "the retain filter is addressed to another node".into(),
        ));
    }
    let bloom = BloomFilter::from_parts(&filter.seed, filter.hash_count, filter.bits)
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let last = store.last_retain(satellite).await?;
    if last.is_some_and(|last| filter.created_at < last) {
        return Err(Error::InvalidRequest(format!(
            "a retain filter created at {} is older than the one applied already (created at {})",
            filter.created_at,
            last.unwrap_or_default()
        )));
    }
    let now = orders::unix_now();
    let mut response = RetainResponse::default();
    let mut after: Option<PieceId> = None;
    loop {
        let page = store.pieces(satellite, Some(Place::Stored), after).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        let garbage: Vec<PieceId> = page
            .into_iter()
            .filter(|(_, row)| row.created < filter.created_before)
            .inspect(|_| response.pieces_checked += 1)
            .filter(|(id, _)| !bloom.contains(id))
            .map(|(id, _)| id)
            .collect();
        if garbage.is_empty() {
            continue;
        }
        let report = store.trash(satellite, garbage, now).await?;
        response.pieces_trashed += report.pieces as u64;
        response.bytes_trashed += report.bytes;
    }
    store.set_last_retain(satellite, filter.created_at).await?;
    tracing::info!(
        %satellite,
        listed = filter.piece_count,
        checked = response.pieces_checked,
        trashed = response.pieces_trashed,
        bytes = response.bytes_trashed,
        "applied a retain filter"
    );
    Ok(response)
}

/// Restores the trash of the satellite that signed `request`.
pub async fn restore(
    store: &PieceStore,
    satellite_key: &PeerKey,
    node: NodeId,
    request: RestoreTrashRequest,
) -> Result<RestoreTrashResponse> {
    orders::verify_restore_trash(satellite_key, &request)?;
    if NodeId::from_bytes(&request.node_id)? != node {
        return Err(Error::InvalidRequest(
            "the restore request is addressed to another node".into(),
        ));
    }
    if request.timestamp.abs_diff(orders::unix_now()) > RESTORE_CLOCK_SKEW.unsigned_abs() {
        return Err(Error::InvalidRequest(
            "the restore request is stale or from the future".into(),
        ));
    }
    let satellite = satellite_key.id();
    let report = store.restore_trash(satellite).await?;
    tracing::info!(%satellite, pieces = report.pieces, bytes = report.bytes, "restored the trash");
    Ok(RestoreTrashResponse {
        pieces_restored: report.pieces as u64,
        bytes_restored: report.bytes,
    })
}

/// Removes expired pieces and empties the trash of pieces older than
/// `trash_retention`, every `interval` (and once at start) until `cancel`.
pub async fn housekeeping(
    store: PieceStore,
    metrics: Arc<NodeMetrics>,
    interval: Duration,
    trash_retention: Duration,
    cancel: CancellationToken,
) {
    let retention = i64::try_from(trash_retention.as_secs()).unwrap_or(i64::MAX);
    loop {
        let now = orders::unix_now();
        let swept = store.sweep_expired(now).await;
        if let Ok(report) = &swept {
            metrics.expired(report);
        }
        match swept {
            Ok(report) if report.pieces > 0 => tracing::info!(
                removed = report.pieces,
                freed_bytes = report.bytes,
                "removed expired pieces"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("sweeping expired pieces failed: {e}"),
        }
        let emptied = store.empty_trash(now.saturating_sub(retention)).await;
        if let Ok(report) = &emptied {
            metrics.trash_emptied(report);
        }
        match emptied {
            Ok(report) if report.pieces > 0 => tracing::info!(
                removed = report.pieces,
                freed_bytes = report.bytes,
                "emptied the trash of pieces past its retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("emptying the trash failed: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use archipel_proto::Identity;

    use super::*;
    use crate::store::tests::{data, limit, put};

    struct Setup {
        _dir: tempfile::TempDir,
        store: PieceStore,
        satellite: Identity,
        node: Identity,
    }

    /// A store holding pieces 1 to 6 of one satellite, pieces 1 to 4 under
    /// orders created at 1000 and 5 and 6 at 2000.
    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path().to_path_buf(), 1 << 30)
            .await
            .unwrap();
        let (satellite, node) = (Identity::generate(), Identity::generate());
        for piece in 1..=6u8 {
            let mut order = limit(&satellite, piece, 0);
            order.order_creation = if piece <= 4 { 1000 } else { 2000 };
            put(&store, &node, order, &data(1_000 + usize::from(piece))).await;
        }
        Setup {
            _dir: dir,
            store,
            satellite,
            node,
        }
    }

    fn filter(
        satellite: &Identity,
        node: NodeId,
        keep: &[u8],
        created_at: i64,
        created_before: i64,
    ) -> RetainFilter {
        let mut bloom = BloomFilter::with_capacity(keep.len(), 0.01);
        for piece in keep {
            bloom.add(&[*piece; 32]);
        }
        orders::retain_filter(
            satellite,
            node,
            bloom,
            keep.len() as u64,
            created_at,
            created_before,
        )
    }

    fn key(identity: &Identity) -> PeerKey {
        PeerKey::for_id(identity.id(), &identity.public_key()).unwrap()
    }

    #[tokio::test]
    async fn unlisted_pieces_before_the_cutoff_go_to_the_trash_and_come_back() {
        let s = setup().await;
        let sat = s.satellite.id();
        let before = s.store.usage()[&sat];
        // Keeps 1 and 2; 3 and 4 are garbage; 5 and 6 are newer than the cutoff.
        let response = apply_filter(
            &s.store,
            &key(&s.satellite),
            s.node.id(),
            filter(&s.satellite, s.node.id(), &[1, 2], 1600, 1500),
        )
        .await
        .unwrap();
        assert_eq!(response.pieces_checked, 4);
        assert_eq!(response.pieces_trashed, 2);
        for piece in [1u8, 2, 5, 6] {
            s.store.open_piece(sat, [piece; 32]).await.unwrap();
        }
        for piece in [3u8, 4] {
            assert!(s.store.open_piece(sat, [piece; 32]).await.is_err());
        }
        assert_eq!(s.store.usage()[&sat].trash_bytes, response.bytes_trashed);

        let request = orders::sign_restore_trash(
            &s.satellite,
            RestoreTrashRequest {
                node_id: s.node.id().to_vec(),
                timestamp: orders::unix_now(),
                ..Default::default()
            },
        );
        let restored = restore(&s.store, &key(&s.satellite), s.node.id(), request)
            .await
            .unwrap();
        assert_eq!(restored.pieces_restored, 2);
        assert_eq!(s.store.usage()[&sat], before);
    }

    #[tokio::test]
    async fn forged_misaddressed_malformed_and_replayed_filters_are_refused() {
        let s = setup().await;
        let sat_key = key(&s.satellite);
        let node = s.node.id();
        let mut forged = filter(&s.satellite, node, &[], 1600, 3000);
        forged.created_before = 4000;
        let other = Identity::generate();
        let refused = [
            forged,
            filter(&s.satellite, other.id(), &[], 1600, 3000),
            filter(&other, node, &[], 1600, 3000),
            RetainFilter {
                hash_count: 0,
                ..filter(&s.satellite, node, &[], 1600, 3000)
            },
        ];
        for bad in refused {
            assert!(apply_filter(&s.store, &sat_key, node, bad).await.is_err());
        }
        assert_eq!(s.store.usage()[&s.satellite.id()].trash_pieces, 0);

        let keep_all = filter(&s.satellite, node, &[1, 2, 3, 4, 5, 6], 1600, 3000);
        apply_filter(&s.store, &sat_key, node, keep_all)
            .await
            .unwrap();
        let older = filter(&s.satellite, node, &[], 1500, 3000);
        let refused = apply_filter(&s.store, &sat_key, node, older).await;
        assert!(
            matches!(refused, Err(Error::InvalidRequest(_))),
            "{refused:?}"
        );
        assert_eq!(s.store.usage()[&s.satellite.id()].trash_pieces, 0);

        let stale = orders::sign_restore_trash(
            &s.satellite,
            RestoreTrashRequest {
                node_id: node.to_vec(),
                timestamp: orders::unix_now() - 3600,
                ..Default::default()
            },
        );
        assert!(restore(&s.store, &sat_key, node, stale).await.is_err());
    }
}
