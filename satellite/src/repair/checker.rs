//! The repair checker: walks every remote segment in (stream id, position)
//! order, a batch per step, and judges its pieces against a fresh view of the
//! node registry. Segments at or below their repair threshold go into the
//! repair queue with their healthy count (the queue orders them by risk);
//! segments below `k` are counted and logged as lost. At the end of a pass the
//! queue loses entries the pass did not confirm (their segments are gone), and
//! the pass's figures go to the metrics.

use std::sync::Arc;
use std::time::Instant;

use archipel_proto::orders::unix_now;

use crate::health::{self, NetworkView};
use crate::metabase::{QueuedSegment, Segment, SegmentKey};
use crate::metrics::{CheckerPass, Metrics};
use crate::worker::{Progress, Work};
use crate::{Config, Metabase, Result};

/// The checker's place in its current pass.
struct Pass {
    started_at: i64,
    clock: Instant,
    after: Option<SegmentKey>,
    figures: CheckerPass,
}

/// Scans segments and fills the repair queue.
pub struct Checker {
    config: Config,
    metabase: Metabase,
    metrics: Arc<Metrics>,
    pass: Option<Pass>,
}

/// What the checker concluded about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// At or below the repair threshold, still rebuildable.
    NeedsRepair,
    /// Fewer healthy pieces than `k`.
    Lost,
}

/// The verdict on a segment with `healthy` healthy pieces.
pub fn verdict(healthy: u16, redundancy: &archipel_proto::Redundancy) -> Verdict {
    if healthy < redundancy.required {
        Verdict::Lost
    } else if healthy <= redundancy.repair {
        Verdict::NeedsRepair
    } else {
        Verdict::Healthy
    }
}

impl Checker {
    pub fn new(config: Config, metabase: Metabase, metrics: Arc<Metrics>) -> Self {
        Checker {
            config,
            metabase,
            metrics,
            pass: None,
        }
    }

    /// Judges one segment and records the result in the queue and the pass.
    async fn check(
        &self,
        view: &NetworkView,
        segment: &Segment,
        figures: &mut CheckerPass,
        now: i64,
    ) -> Result<()> {
        let Some(redundancy) = segment.redundancy else {
            return Ok(());
        };
        let healthy = view.classify(&segment.pieces).healthy_count();
        figures.segments += 1;
        *figures.healthy_pieces.entry(healthy).or_default() += 1;
        let verdict = verdict(healthy, &redundancy);
        if verdict == Verdict::Healthy {
            return Ok(());
        }
        figures.below_repair_threshold += 1;
        if verdict == Verdict::Lost {
            figures.lost += 1;
            tracing::warn!(
                "segment {} of stream {} is lost for now: {healthy} healthy pieces, {} needed",
                segment.position,
                hex::encode(&segment.stream_id),
                redundancy.required
            );
        }
        self.metabase
            .enqueue_repair(
                &QueuedSegment {
                    key: segment.key(),
                    healthy,
                    required: redundancy.required,
                },
                now,
            )
            .await
    }
}

impl Work for Checker {
    async fn run_once(&mut self) -> Result<Progress> {
        let now = unix_now();
        let mut pass = self.pass.take().unwrap_or_else(|| Pass {
            started_at: now,
            clock: Instant::now(),
            after: None,
            figures: CheckerPass::default(),
        });
        let view = health::current_view(&self.metabase, &self.config, now).await?;
        let batch = self
            .metabase
            .remote_segments_after(pass.after.as_ref(), self.config.repair.checker_batch, now)
            .await?;
        for segment in &batch {
            self.check(&view, segment, &mut pass.figures, now).await?;
        }
        if let Some(last) = batch.last() {
            pass.after = Some(last.key());
        }
        if batch.len() == self.config.repair.checker_batch {
            self.pass = Some(pass);
            return Ok(Progress::Busy);
        }
        let pruned = self.metabase.prune_repair_queue(pass.started_at).await?;
        let mut figures = pass.figures;
        figures.finished_at = unix_now();
        figures.duration_ms = u64::try_from(pass.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            "checked {} segments in {} ms: {} to repair, {} lost, {pruned} gone from the queue",
            figures.segments,
            figures.duration_ms,
            figures.below_repair_threshold,
            figures.lost
        );
        self.metrics.set_checker_pass(figures);
        Ok(Progress::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_thresholds() {
        let r: archipel_proto::Redundancy = "4/6/8/10/256".parse().unwrap();
        assert_eq!(verdict(10, &r), Verdict::Healthy);
        assert_eq!(verdict(7, &r), Verdict::Healthy);
        assert_eq!(verdict(6, &r), Verdict::NeedsRepair);
        assert_eq!(verdict(4, &r), Verdict::NeedsRepair);
        assert_eq!(verdict(3, &r), Verdict::Lost);
        assert_eq!(verdict(0, &r), Verdict::Lost);
    }
}
