//! Text in the Prometheus exposition format, shared by the daemons that
//! serve `/metrics` (the satellite's admin API, the node's dashboard).

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Text in the Prometheus exposition format 0.0.4, a metric family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let _ = write!(self.text, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram with a bucket at 0 and at each value seen.
    pub fn histogram(&mut self, name: &str, help: &str, counts: &BTreeMap<u16, u64>) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = counts.get(&0).copied().unwrap_or(0);
        self.sample(&bucket, &[("le", "0")], cumulative);
        let mut sum = 0u64;
        for (&value, &count) in counts {
            sum = sum.saturating_add(u64::from(value).saturating_mul(count));
            if value > 0 {
                cumulative = cumulative.saturating_add(count);
                self.sample(&bucket, &[("le", &value.to_string())], cumulative);
            }
        }
        self.sample(&bucket, &[("le", "+Inf")], cumulative);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.text
    }
}
