//! The gateway's configuration file (TOML) and `setup`, which creates one with
//! fresh S3 credentials for an access grant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archipel_client::Access;
use rand::distributions::{Alphanumeric, Distribution, Uniform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Where the gateway listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
/// The region S3 clients sign for and `GetBucketLocation` reports.
pub const DEFAULT_REGION: &str = "us-east-1";
/// How long a client may take to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may go without a byte arriving.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Client connections served at once; more wait to be accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The whole configuration file.
///
/// Without `tls_certificate` and `tls_key` the gateway speaks plain HTTP: keep
/// it on localhost (the default), where the user's own machine is the
/// boundary, or behind a TLS-terminating proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address the S3 endpoint listens on (`host:port`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The region clients sign their requests for.
    #[serde(default = "default_region")]
    pub region: String,
    /// The S3 key pairs the gateway accepts, each bound to one access grant.
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// Base domains for virtual-hosted-style requests: with `"s3.localhost"`,
    /// `Host: photos.s3.localhost:7480` addresses bucket `photos`. Names only,
    /// no port or scheme. Path-style requests work with or without them, on
    /// any host name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_names: Vec<String>,
    /// A PEM file with the server's certificate chain, leaf first; together
    /// with `tls_key` the gateway serves HTTPS only. A relative path is
    /// relative to the configuration file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<PathBuf>,
    /// A PEM file with the private key of `tls_certificate` (PKCS#8, PKCS#1
    /// or SEC1). A relative path is relative to the configuration file's
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Which buckets created through the gateway store object names
    /// unencrypted: bucket names, `prefix*` patterns, or `"*"` for every new
    /// bucket. Their listings page in order on the satellite instead of
    /// listing a whole level per walk; the satellite sees their names, while
    /// contents and metadata stay encrypted. Existing buckets keep their mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unencrypted_names: Vec<String>,
    /// How long a client may take to send a request's headers, e.g. "30s":
    /// a client that trickles them in (slowloris) is cut off.
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// How long an upload's body may go without a byte arriving, e.g. "60s";
    /// the request then fails and the connection closes.
    #[serde(with = "humantime_serde", default = "default_body_idle_timeout")]
    pub body_idle_timeout: Duration,
    /// Client connections served at once; further ones wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Where Prometheus metrics (latency histograms of S3 operations) are
    /// served as `GET /metrics`, e.g. "127.0.0.1:7481"; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where public links and the registration of access grants are served
    /// (`host:port`, see docs/SHARING.md); `""` turns them off.
    #[serde(with = "optional_address", default = "default_linksharing_address")]
    pub linksharing_address: Option<SocketAddr>,
    /// The base URL people reach the links at (behind a proxy, say), given to
    /// whoever registers a grant; `http://<linksharing_address>` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Where the gateway keeps its state: the registry of registered access
    /// grants (`registry.db`). A relative path is relative to the
    /// configuration file's directory, which is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

/// An address that may be turned off with `""` in the file.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => s.collect_str(address),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// One S3 key pair and the Archipel access grant it acts with.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The S3 access key id clients send (20 uppercase letters and digits).
    pub access_key_id: String,
    /// The S3 secret access key clients sign with (40 characters).
    pub secret_access_key: String,
    /// The serialized Archipel access grant requests with this key act as.
    pub access: String,
}

impl std::fmt::Debug for Credential {
    // The secret and the grant (which holds the encryption root key) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Whether a new bucket called `bucket` gets unencrypted names under the
/// [`Config::unencrypted_names`] `patterns`.
pub fn unencrypted_names_for(patterns: &[String], bucket: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => bucket.starts_with(prefix),
            None => bucket == pattern,
        })
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

/// Where links are served unless told otherwise.
pub const DEFAULT_LINKSHARING_ADDRESS: &str = "127.0.0.1:7780";

fn default_linksharing_address() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 7780)))
}

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}

fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}

fn default_body_idle_timeout() -> Duration {
    DEFAULT_BODY_IDLE_TIMEOUT
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

impl Config {
    /// A configuration with the defaults and the given credentials.
    pub fn new(credentials: Vec<Credential>) -> Config {
        Config {
            listen: default_listen(),
            region: default_region(),
            credentials,
            unencrypted_names: Vec::new(),
            domain_names: Vec::new(),
            tls_certificate: None,
            tls_key: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            metrics_listen: None,
            linksharing_address: default_linksharing_address(),
            public_url: None,
            state_dir: None,
        }
    }

    /// The base URL of links, without a trailing `/`: `public_url`, else
    /// the linksharing address (none when links are off).
    pub fn links_url(&self) -> Option<String> {
        match (&self.public_url, self.linksharing_address) {
            (Some(url), _) => Some(url.trim_end_matches('/').to_string()),
            (None, Some(address)) => Some(format!("{}://{address}", self.scheme())),
            (None, None) => None,
        }
    }

    /// The registry's file, if the configuration has a state directory.
    pub fn registry_path(&self) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|dir| dir.join(crate::registry::FILE_NAME))
    }

    /// The URL scheme clients reach the gateway with.
    pub fn scheme(&self) -> &'static str {
        if self.tls_certificate.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Checks what the file format cannot: limits that would stop all service.
    pub fn validate(&self) -> Result<(), Error> {
        if self.header_read_timeout.is_zero() {
            return Err(Error::ZeroLimit("header_read_timeout"));
        }
        if self.body_idle_timeout.is_zero() {
            return Err(Error::ZeroLimit("body_idle_timeout"));
        }
        if self.max_connections == 0 {
            return Err(Error::ZeroLimit("max_connections"));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| Error::InvalidConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            for file in [&mut config.tls_certificate, &mut config.tls_key]
                .into_iter()
                .flatten()
            {
                *file = dir.join(&*file);
            }
            config.state_dir = Some(match config.state_dir.take() {
                Some(state) => dir.join(state),
                None => dir.to_path_buf(),
            });
        }
        Ok(config)
    }

    /// Writes the file readable by its owner only: it holds secrets.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let write_error = |source| Error::WriteConfig {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| Error::InvalidConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write_error)?;
        #[cfg(unix)]
        {
            // `mode` only applies to new files; an existing one is tightened too.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(write_error)?;
        }
        file.write_all(text.as_bytes()).map_err(write_error)
    }
}

impl Credential {
    /// Fresh random S3 keys for `access`, in the shape AWS uses.
    pub fn generate(access: &Access) -> Credential {
        let (access_key_id, secret_access_key) = new_key_pair();
        Credential {
            access_key_id,
            secret_access_key,
            access: access.serialize(),
        }
    }
}

/// A fresh random S3 key pair in the shape AWS uses: an access key id of 20
/// upper-case letters and digits and a secret of 40 alphanumerics.
pub(crate) fn new_key_pair() -> (String, String) {
    let mut rng = rand::thread_rng();
    let pick = Uniform::from(0..UPPER_ALNUM.len());
    let access_key_id = (0..ACCESS_KEY_ID_LEN)
        .map(|_| UPPER_ALNUM[pick.sample(&mut rng)] as char)
        .collect();
    let secret_access_key = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    (access_key_id, secret_access_key)
}

/// The characters and length of generated access key ids.
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub(crate) const ACCESS_KEY_ID_LEN: usize = 20;

/// Whether `id` has the shape of a generated access key id.
pub(crate) fn is_access_key_id(id: &str) -> bool {
    id.len() == ACCESS_KEY_ID_LEN && id.bytes().all(|b| UPPER_ALNUM.contains(&b))
}

/// `archipel-gateway setup`: reads the grant (given inline or as a file that
/// holds it), generates S3 keys and writes `dir/config.toml`. Returns the
/// written configuration and its path.
pub fn setup(dir: &Path, grant_or_file: &str) -> Result<(Config, PathBuf), Error> {
    let candidate = Path::new(grant_or_file);
    let grant = if candidate.is_file() {
        std::fs::read_to_string(candidate)
            .map_err(|source| Error::ReadConfig {
                path: candidate.to_path_buf(),
                source,
            })?
            .trim()
            .to_string()
    } else {
        grant_or_file.trim().to_string()
    };
    let access = Access::parse(&grant).map_err(Error::InvalidAccess)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::WriteConfig {
        path: dir.to_path_buf(),
        source,
    })?;
    let config = Config::new(vec![Credential::generate(&access)]);
    let path = dir.join("config.toml");
    config.save(&path)?;
    Ok((config, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_missing_fields() {
        let config: Config = toml::from_str(
            "[[credentials]]\naccess_key_id = \"A\"\nsecret_access_key = \"S\"\naccess = \"G\"\n",
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.region, DEFAULT_REGION);
        assert_eq!(config.credentials.len(), 1);
        assert!(config.domain_names.is_empty());
        assert_eq!(config.tls_certificate, None);
        assert_eq!(config.scheme(), "http");
        assert!(toml::from_str::<Config>("unknown = 1").is_err());
    }

    #[test]
    fn tls_files_are_relative_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "domain_names = [\"s3.localhost\"]\ntls_certificate = \"cert.pem\"\ntls_key = \"/etc/key.pem\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.domain_names, ["s3.localhost"]);
        assert_eq!(config.tls_certificate, Some(dir.path().join("cert.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(config.scheme(), "https");
    }

    #[test]
    fn saved_files_are_private_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut config = Config::new(vec![Credential {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            access: "grant".into(),
        }]);
        config.region = "eu-west-3".into();
        config.save(&path).unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.region, "eu-west-3");
        assert_eq!(loaded.credentials[0].secret_access_key, "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unencrypted_names_patterns() {
        assert!(!unencrypted_names_for(&[], "logs"));
        let some = ["logs".to_string(), "big-*".to_string()];
        assert!(unencrypted_names_for(&some, "logs"));
        assert!(!unencrypted_names_for(&some, "logs2"));
        assert!(unencrypted_names_for(&some, "big-1"));
        assert!(!unencrypted_names_for(&some, "bi"));
        assert!(unencrypted_names_for(&["*".to_string()], "anything"));
        let text = "unencrypted_names = [\"big-*\"]\n";
        let parsed: Config = toml::from_str(text).unwrap();
        assert_eq!(parsed.unencrypted_names, ["big-*"]);
    }

    #[test]
    fn setup_rejects_an_invalid_grant() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            setup(dir.path(), "not a grant"),
            Err(Error::InvalidAccess(_))
        ));
        assert!(!dir.path().join("config.toml").exists());
    }
}
