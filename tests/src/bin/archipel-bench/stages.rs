//! Where a small request's time goes: a tracing layer that adds up how long
//! the debug spans of the gateway, the client library, the satellite and the
//! nodes stay open, by span name (and the gRPC method or S3 operation they
//! carry), so that the bench can print the time per operation of each stage.
//! Installed only for `--stages` runs: enabled debug spans cost time of
//! their own, which the latency runs must not pay.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Time spent in spans, by label; cleared between the measured batches.
#[derive(Clone, Default)]
pub(crate) struct Stages {
    totals: Arc<Mutex<BTreeMap<String, (u64, Duration)>>>,
}

/// A span's label and when it opened.
struct Open {
    label: String,
    started: Instant,
}

/// Appends the values of the fields that name what a span does.
struct Label<'a>(&'a mut String);

impl Visit for Label<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if matches!(field.name(), "method" | "operation") {
            self.0.push(' ');
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if matches!(field.name(), "method" | "operation") {
            self.0.push_str(&format!(" {value:?}"));
        }
    }
}

impl Stages {
    fn totals(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, Duration)>> {
        self.totals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The totals so far, cleared.
    pub(crate) fn take(&self) -> BTreeMap<String, (u64, Duration)> {
        std::mem::take(&mut *self.totals())
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Stages {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut label = attributes.metadata().name().to_string();
        attributes.record(&mut Label(&mut label));
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(Open {
                label,
                started: Instant::now(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                values.record(&mut Label(&mut open.label));
            }
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else {
            return;
        };
        let extensions = span.extensions();
        let Some(open) = extensions.get::<Open>() else {
            return;
        };
        let mut totals = self.totals();
        let entry = totals.entry(open.label.clone()).or_default();
        entry.0 += 1;
        entry.1 += open.started.elapsed();
    }
}

/// Installs a [`Stages`] layer for the debug spans of Archipel's crates as
/// the process's subscriber and returns it.
pub(crate) fn install() -> Stages {
    use tracing_subscriber::layer::SubscriberExt;
    let stages = Stages::default();
    let filter = tracing_subscriber::EnvFilter::new(
        "warn,archipel_client=debug,archipel_gateway=debug,archipel_satellite=debug,\
         archipel_storagenode=debug,archipel_proto=debug",
    );
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(stages.clone());
    let _ = tracing::subscriber::set_global_default(subscriber);
    stages
}

/// Prints the stages of `operations` operations as Markdown rows: each label,
/// how often it ran per operation, and its time per operation.
pub(crate) fn print(what: &str, operations: usize, totals: &BTreeMap<String, (u64, Duration)>) {
    let mut rows: Vec<_> = totals.iter().collect();
    rows.sort_by_key(|(_, (_, total))| std::cmp::Reverse(*total));
    for (label, (count, total)) in rows {
        println!(
            "| {what} | {label} | {:.1} | {:.2} |",
            *count as f64 / operations as f64,
            total.as_secs_f64() * 1e3 / operations as f64
        );
    }
}
