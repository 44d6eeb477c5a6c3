//! Small-object latency: batches of PUTs then GETs of one object size, each
//! operation timed on its own, one at a time or several in flight; reported
//! as p50, p99 and operations per second.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use nix::sys::resource::UsageWho;

use crate::{cpu_seconds, BenchError};

/// The duration of every operation of one batch, the batch's wall time,
/// and the CPU time this process (client, gateway and network) used meanwhile.
pub(crate) struct Latencies {
    sorted: Vec<Duration>,
    wall: Duration,
    cpu_seconds: f64,
}

impl Latencies {
    /// The nearest-rank percentile `q` (0 < q ≤ 1) of the operations.
    pub(crate) fn percentile(&self, q: f64) -> Duration {
        let rank = (q * self.sorted.len() as f64).ceil() as usize;
        self.sorted
            .get(rank.clamp(1, self.sorted.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn count(&self) -> usize {
        self.sorted.len()
    }

    pub(crate) fn ops_per_s(&self) -> f64 {
        self.sorted.len() as f64 / self.wall.as_secs_f64()
    }

    /// `p50 ms | p99 ms | ops/s | CPU ms per op` for a Markdown table.
    pub(crate) fn cells(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{:.1} | {:.1} | {:.1} | {:.2}",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            self.ops_per_s(),
            self.cpu_seconds * 1e3 / self.sorted.len().max(1) as f64
        )
    }
}

/// Runs `operation(0..count)` with up to `in_flight` at once, timing each.
pub(crate) async fn timed<F, Fut>(
    count: usize,
    in_flight: usize,
    operation: F,
) -> Result<Latencies, BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let operation = &operation;
    let cpu_before = cpu_seconds(UsageWho::RUSAGE_SELF);
    let started = Instant::now();
    let mut sorted: Vec<Duration> = futures::stream::iter(0..count)
        .map(|i| async move {
            let began = Instant::now();
            operation(i).await?;
            Ok::<_, BenchError>(began.elapsed())
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    let wall = started.elapsed();
    let cpu_seconds = cpu_seconds(UsageWho::RUSAGE_SELF) - cpu_before;
    sorted.sort();
    Ok(Latencies {
        sorted,
        wall,
        cpu_seconds,
    })
}

/// A batch's PUTs and the GETs of the same objects.
pub(crate) struct PutGet {
    pub(crate) put: Latencies,
    pub(crate) get: Latencies,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let latencies = Latencies {
            sorted: (1..=100).map(Duration::from_millis).collect(),
            wall: Duration::from_secs(2),
            cpu_seconds: 0.5,
        };
        assert_eq!(latencies.percentile(0.5), Duration::from_millis(50));
        assert_eq!(latencies.percentile(0.99), Duration::from_millis(99));
        assert_eq!(latencies.percentile(1.0), Duration::from_millis(100));
        assert_eq!(latencies.ops_per_s(), 50.0);
        assert_eq!(latencies.cells(), "50.0 | 99.0 | 50.0 | 5.00");
        let one = Latencies {
            sorted: vec![Duration::from_millis(7)],
            wall: Duration::from_millis(7),
            cpu_seconds: 0.0,
        };
        assert_eq!(one.percentile(0.5), Duration::from_millis(7));
        assert_eq!(one.percentile(0.99), Duration::from_millis(7));
    }
}
