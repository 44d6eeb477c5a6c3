//! The node's configuration: one serde struct, read from a TOML file (flags of
//! the binary may override the addresses), plus the satellite and byte-size
//! notations used in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Space offered when the operator does not say: 1 TB, which the node further
/// caps at the disk's real free space.
pub const DEFAULT_ALLOCATED_BYTES: u64 = 1_000_000_000_000;
/// Address the binary listens on when the operator does not say.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:7777";
const DEFAULT_CHECK_IN_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_EXPIRATION_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Far longer than any healthy sender pauses between 64 KiB messages.
const DEFAULT_UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the dashboard listens when the operator does not say: loopback only.
pub const DEFAULT_DASHBOARD_ADDRESS: &str = "127.0.0.1:7778";
/// Often enough to stop taking uploads soon after a disk fails, rarely
/// enough to cost the disk nothing.
const DEFAULT_DISK_PROBE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A week: long enough for an operator or a satellite to notice a bad retain
/// filter and restore.
pub const DEFAULT_TRASH_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A satellite this node works for, written `ID@HOST:PORT`: the node dials
/// its `Node` service there and accepts it only if it proves that id.
pub type TrustedSatellite = archipel_proto::NodeUrl;

/// Everything a storage node needs to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the pieces, unfinished uploads and the cached public
    /// keys of satellites. Relative paths in a config file are relative to the file.
    pub storage_dir: PathBuf,
    /// File holding the node's secret identity; read by the binary only.
    pub identity_path: PathBuf,
    /// host:port the piecestore service listens on; used by the binary only
    /// (the library is handed a bound listener).
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    /// host:port announced to satellites at check-in; by default the address
    /// the listener is bound to, which is only right when clients can reach it.
    #[serde(default)]
    pub advertised_address: Option<String>,
    /// Bytes of disk the node offers, headers included. Written as a number of
    /// bytes or as text like "500 GB" or "2TiB". Capped at the disk's free space.
    #[serde(with = "byte_size", default = "default_allocated_bytes")]
    pub allocated_bytes: u64,
    /// Satellites whose order limits this node honours, as "ID@HOST:PORT".
    #[serde(default)]
    pub satellites: Vec<TrustedSatellite>,
    /// Time between two check-ins with each satellite, e.g. "60s" or "5m".
    #[serde(with = "humantime_serde", default = "default_check_in_interval")]
    pub check_in_interval: Duration,
    /// Time between two sweeps that remove pieces past their expiration and
    /// empty the trash of pieces past `trash_retention`.
    #[serde(
        with = "humantime_serde",
        default = "default_expiration_sweep_interval"
    )]
    pub expiration_sweep_interval: Duration,
    /// How long pieces that garbage collection moved to the trash are kept
    /// (restorable) before they are removed, e.g. "7days".
    #[serde(with = "humantime_serde", default = "default_trash_retention")]
    pub trash_retention: Duration,
    /// How long an upload may go without a message before the node abandons
    /// it and releases the space it reserved, e.g. "60s".
    #[serde(with = "humantime_serde", default = "default_upload_idle_timeout")]
    pub upload_idle_timeout: Duration,
    /// host:port of the web dashboard, its JSON API (`/api/node`, which
    /// `archipel-node info` reads) and its Prometheus metrics (`/metrics`).
    /// It has no login: keep it on a loopback address. Empty turns it off.
    #[serde(default = "default_dashboard_address")]
    pub dashboard_address: String,
    /// Time between two write probes of the disk, e.g. "5m".
    #[serde(with = "humantime_serde", default = "default_disk_probe_interval")]
    pub disk_probe_interval: Duration,
    /// How the node logs to stderr: "human" (default) or "json" (one object
    /// per line, for log collectors).
    #[serde(default)]
    pub log_format: archipel_proto::daemon::LogFormat,
}

fn default_listen_address() -> String {
    DEFAULT_LISTEN_ADDRESS.to_string()
}
fn default_allocated_bytes() -> u64 {
    DEFAULT_ALLOCATED_BYTES
}
fn default_check_in_interval() -> Duration {
    DEFAULT_CHECK_IN_INTERVAL
}
fn default_expiration_sweep_interval() -> Duration {
    DEFAULT_EXPIRATION_SWEEP_INTERVAL
}
fn default_trash_retention() -> Duration {
    DEFAULT_TRASH_RETENTION
}

fn default_dashboard_address() -> String {
    DEFAULT_DASHBOARD_ADDRESS.to_string()
}

fn default_disk_probe_interval() -> Duration {
    DEFAULT_DISK_PROBE_INTERVAL
}

fn default_upload_idle_timeout() -> Duration {
    DEFAULT_UPLOAD_IDLE_TIMEOUT
}

impl Config {
    /// Defaults for everything but the storage directory; the identity path is
    /// `storage_dir/identity`, and no satellite is trusted yet.
    pub fn new(storage_dir: PathBuf) -> Self {
        Config {
            identity_path: storage_dir.join("identity"),
            storage_dir,
            listen_address: default_listen_address(),
            advertised_address: None,
            allocated_bytes: DEFAULT_ALLOCATED_BYTES,
            satellites: Vec::new(),
            check_in_interval: DEFAULT_CHECK_IN_INTERVAL,
            expiration_sweep_interval: DEFAULT_EXPIRATION_SWEEP_INTERVAL,
            trash_retention: DEFAULT_TRASH_RETENTION,
            upload_idle_timeout: DEFAULT_UPLOAD_IDLE_TIMEOUT,
            dashboard_address: default_dashboard_address(),
            disk_probe_interval: DEFAULT_DISK_PROBE_INTERVAL,
            log_format: Default::default(),
        }
    }

    /// Reads a TOML config file; relative paths in it are taken relative to
    /// the file's directory, so a node directory can be moved as a whole.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.storage_dir = base.join(&config.storage_dir);
        config.identity_path = base.join(&config.identity_path);
        config.validate()?;
        Ok(config)
    }

    /// The TOML form of this config, as `setup` writes it.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("cannot write the configuration as TOML: {e}")))?;
        Ok(format!(
            "# Archipel storage node configuration (see `archipel-node --help`).\n\n{body}"
        ))
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if self.check_in_interval.is_zero() {
            return Err(Error::Config("check_in_interval must not be zero".into()));
        }
        if self.upload_idle_timeout.is_zero() {
            return Err(Error::Config("upload_idle_timeout must not be zero".into()));
        }
        if self.disk_probe_interval.is_zero() {
            return Err(Error::Config("disk_probe_interval must not be zero".into()));
        }
        if self.expiration_sweep_interval.is_zero() {
            return Err(Error::Config(
                "expiration_sweep_interval must not be zero".into(),
            ));
        }
        for (i, a) in self.satellites.iter().enumerate() {
            if self.satellites[..i].iter().any(|b| b.id == a.id) {
                return Err(Error::Config(format!("satellite {} is listed twice", a.id)));
            }
        }
        Ok(())
    }
}

/// Parses a byte size: a number with an optional unit, decimal (kB, MB, GB, TB,
/// PB; K, M, G, T, P) or binary (KiB, MiB, GiB, TiB, PiB), case-insensitive.
pub fn parse_byte_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::Config(format!(
            "{text:?} is not a size; write it like 500000, \"500 GB\" or \"2 TiB\""
        ))
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let fractional: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (fractional * multiplier as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Serde for a byte count written as a number or as a size text.
mod byte_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*bytes)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(n),
            Written::Text(text) => super::parse_byte_size(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_in_both_unit_families() {
        assert_eq!(parse_byte_size("123").unwrap(), 123);
        assert_eq!(parse_byte_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_byte_size("10 gb").unwrap(), 10_000_000_000);
        assert_eq!(parse_byte_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_byte_size("1.5 KB").unwrap(), 1500);
        assert!(parse_byte_size("ten GB").is_err());
        assert!(parse_byte_size("10 parsecs").is_err());
        assert!(parse_byte_size("99999999999999 PB").is_err());
    }

    #[test]
    fn satellites_round_trip_through_their_text_form() {
        let id = archipel_proto::Identity::generate().id();
        let sat: TrustedSatellite = format!("{id}@sat.example:7070").parse().unwrap();
        assert_eq!(sat.id, id);
        assert_eq!(sat.address, "sat.example:7070");
        assert_eq!(sat.to_string().parse::<TrustedSatellite>().unwrap(), sat);
        assert!(format!("{id}").parse::<TrustedSatellite>().is_err());
        assert!(format!("{id}@noport").parse::<TrustedSatellite>().is_err());
        assert!("abc@host:1".parse::<TrustedSatellite>().is_err());
    }

    #[test]
    fn config_round_trips_through_toml_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("storage".into());
        config.identity_path = "identity".into();
        config.satellites.push(TrustedSatellite {
            id: archipel_proto::Identity::generate().id(),
            address: "127.0.0.1:7070".into(),
        });
        config.check_in_interval = Duration::from_secs(90);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config.to_toml().unwrap()).unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.storage_dir, dir.path().join("storage"));
        assert_eq!(loaded.identity_path, dir.path().join("identity"));
        assert_eq!(loaded.satellites, config.satellites);
        assert_eq!(loaded.check_in_interval, Duration::from_secs(90));
        assert_eq!(loaded.allocated_bytes, DEFAULT_ALLOCATED_BYTES);
    }

    #[test]
    fn config_accepts_sizes_as_text_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "storage_dir = \"s\"\nidentity_path = \"i\"\nallocated_bytes = \"2 GB\"\ncheck_in_interval = \"5m\"\n",
        )
        .unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.allocated_bytes, 2_000_000_000);
        assert_eq!(loaded.check_in_interval, Duration::from_secs(300));

        std::fs::write(
            &path,
            "storage_dir = \"s\"\nidentity_path = \"i\"\nalocated = 1\n",
        )
        .unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(Error::ConfigParse { .. })
        ));
    }
}
