//! What the CLI writes to standard output, and how it reads to people.
//!
//! Every line goes through [`print`] (the `outln!` macro), which turns a
//! closed pipe into [`CliError::ClosedPipe`] instead of panicking as
//! `println!` does: `archipel ls -r ap://b | head` ends quietly with status 0
//! once `head` has what it wants (the same holds for the bytes `cat` and
//! `cp … -` stream, see [`is_closed_pipe`]). Status 0 rather than the
//! shell's 141 for a SIGPIPE death, so that `set -o pipefail` scripts do
//! not fail because a reader stopped early, as with ripgrep or git.

use std::io::Write;
use std::time::SystemTime;

use archipel_client::Error;

use crate::CliError;

/// Writes `text` to standard output at once (whole pages of a listing go
/// out in one write, not one per line).
pub(crate) fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                CliError::ClosedPipe
            } else {
                CliError::Io {
                    action: "write",
                    path: "standard output".into(),
                    source: e,
                }
            }
        })
}

/// `println!` that returns [`CliError::ClosedPipe`] when stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Whether `error` is standard output's reader having gone away, which ends
/// the command quietly and successfully.
pub(crate) fn is_closed_pipe(error: &CliError) -> bool {
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    match error {
        CliError::ClosedPipe => true,
        CliError::Client(Error::Write(e)) => broken(e),
        _ => false,
    }
}

/// A size for people: `512 B`, `4.2 MiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A time for people, to the minute, in UTC: `2026-12-03 10:04`.
pub(crate) fn human_time(time: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    // `2026-12-03T10:04:05Z`: the date, a space, hours and minutes.
    text.get(..16).unwrap_or(&text).replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn sizes_and_times_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(4_404_019), "4.2 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
        let time = UNIX_EPOCH + Duration::from_secs(1_796_292_245);
        assert_eq!(human_time(time), "2026-12-03 10:04");
    }
}
