//! A repository: where it lives (`ap://bucket/prefix`), its config object,
//! its keys, and reading and writing its objects through the client library.
//!
//! Objects below the prefix:
//!
//! | name | what |
//! |---|---|
//! | `config` | format, key source (grant or passphrase salt), key check, chunker and pack sizes (JSON, no secrets) |
//! | `data/<pack id>` | packs of sealed blobs ([`crate::pack`]) |
//! | `index/<id>` | which pack holds which blob ([`crate::index`]) |
//! | `snapshots/<id>` | one backup each ([`crate::snapshot`]) |
//! | `locks/<id>` | who is using the repository ([`crate::lock`]) |

use std::sync::Arc;
use std::time::SystemTime;

use archipel_client::{ByteRange, Project, UploadOptions};
use tokio_util::sync::CancellationToken;

use crate::blob::PackId;
use crate::crypto::{random_bytes, Keys};
use crate::Error;

/// Largest pack size: a pack's blob offsets are 32-bit, and a pack outgrows
/// its size by up to one chunk.
pub const MAX_PACK_SIZE: u32 = 1 << 30;
/// The only repository format this version reads and writes.
const FORMAT: u32 = 1;
/// What [`Project::prefix_secret`] derives a grant-keyed repository's master key for.
const GRANT_KEY_PURPOSE: &str = "archipel backup repository master key";

/// Where a repository is: a bucket and a prefix in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoLocation {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl RepoLocation {
    /// Parses `ap://bucket` or `ap://bucket/some/prefix`.
    pub fn parse(url: &str) -> Result<RepoLocation, Error> {
        let rest = url.strip_prefix("ap://").ok_or_else(|| {
            Error::Invalid(format!(
                "{url:?} is not a repository URL (ap://bucket/prefix)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!("{url:?} names no bucket")));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|c| c.is_empty() && !prefix.is_empty())
        {
            return Err(Error::Invalid(format!(
                "{url:?} has an empty path component"
            )));
        }
        Ok(RepoLocation {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ap://{}/{}",
            self.bucket,
            self.prefix.trim_end_matches('/')
        )
    }
}

/// How a repository's master key is obtained.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeySource {
    /// From the access grant's keys for the repository's prefix.
    Grant,
    /// Argon2id of a passphrase with this salt (hex).
    Passphrase { salt: String },
}

/// Content-defined chunking sizes, fixed for a repository's life (other
/// sizes would cut the same files differently and defeat deduplication).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerSizes {
    pub min: u32,
    pub average: u32,
    pub max: u32,
}

impl ChunkerSizes {
    /// Whether FastCDC can cut with these sizes (its limits: minimum 64 B to
    /// 1 MiB, average 256 B to 4 MiB, maximum 1 KiB to 16 MiB, in order).
    pub fn check(&self) -> Result<(), String> {
        let ChunkerSizes { min, average, max } = *self;
        if (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&average)
            && (1024..=16 << 20).contains(&max)
            && min <= average
            && average <= max
        {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {min}/{average}/{max} are outside FastCDC's limits (64 B–1 MiB, 256 B–4 MiB, 1 KiB–16 MiB, in order)"
            ))
        }
    }
}

impl Default for ChunkerSizes {
    fn default() -> ChunkerSizes {
        ChunkerSizes {
            min: 512 * 1024,
            average: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

/// The `config` object.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub format: u32,
    /// Random; tells repositories apart.
    pub id: String,
    pub created: String,
    pub key: KeySource,
    /// [`Keys::check_value`] of the right key.
    pub key_check: String,
    pub chunker: ChunkerSizes,
    /// Packs are sent once they hold this many bytes: the network's segment
    /// size by default, so each pack is one segment.
    pub pack_size: u32,
}

/// Choices made when a repository is created.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Protect the repository with a passphrase instead of the grant's keys.
    pub passphrase: Option<String>,
    pub chunker: ChunkerSizes,
    pub pack_size: u32,
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        InitOptions {
            passphrase: None,
            chunker: ChunkerSizes::default(),
            pack_size: 64 * 1024 * 1024,
        }
    }
}

/// An open repository. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

struct Inner {
    project: Project,
    location: RepoLocation,
    keys: Keys,
    config: Config,
    interrupted: CancellationToken,
}

impl Repository {
    /// Creates a repository at `location`; the bucket must exist.
    pub async fn init(
        project: &Project,
        location: &RepoLocation,
        options: InitOptions,
    ) -> Result<Repository, Error> {
        if options.pack_size > MAX_PACK_SIZE {
            return Err(Error::Invalid(format!(
                "packs are at most {MAX_PACK_SIZE} bytes"
            )));
        }
        options.chunker.check().map_err(Error::Invalid)?;
        if read_config(project, location).await?.is_some() {
            return Err(Error::RepositoryExists(location.to_string()));
        }
        let (key, master) = match &options.passphrase {
            None => (KeySource::Grant, grant_master(project, location).await?),
            Some(passphrase) => {
                let salt: [u8; 16] = random_bytes();
                (
                    KeySource::Passphrase {
                        salt: hex::encode(salt),
                    },
                    Keys::master_from_passphrase(passphrase, &salt)?,
                )
            }
        };
        let keys = Keys::from_master(&master);
        let config = Config {
            format: FORMAT,
            id: hex::encode(random_bytes::<16>()),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            key,
            key_check: keys.check_value(),
            chunker: options.chunker,
            pack_size: options.pack_size.max(1024),
        };
        let bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Invalid(format!("config: {e}")))?;
        let repo = Repository::new(project, location, keys, config);
        repo.put("config", bytes).await?;
        Ok(repo)
    }

    /// Opens the repository at `location`. A passphrase-protected one needs
    /// `passphrase`; a grant-keyed one ignores it.
    pub async fn open(
        project: &Project,
        location: &RepoLocation,
        passphrase: Option<&str>,
    ) -> Result<Repository, Error> {
        let config = read_config(project, location)
            .await?
            .ok_or_else(|| Error::NoRepository(location.to_string()))?;
        if config.format != FORMAT {
            return Err(Error::UnknownFormat(config.format));
        }
        if config.pack_size > MAX_PACK_SIZE {
            return Err(Error::corrupt("config", "its pack size is out of range"));
        }
        config
            .chunker
            .check()
            .map_err(|e| Error::corrupt("config", e))?;
        let master = match &config.key {
            KeySource::Grant => grant_master(project, location).await?,
            KeySource::Passphrase { salt } => {
                let passphrase = passphrase.ok_or_else(|| {
                    Error::WrongKey(
                        "this repository is protected by a passphrase; give it (ARCHIPEL_BACKUP_PASSWORD or --password-file)".into(),
                    )
                })?;
                let salt = hex::decode(salt).map_err(|e| Error::corrupt("config", e))?;
                Keys::master_from_passphrase(passphrase, &salt)?
            }
        };
        let keys = Keys::from_master(&master);
        if keys.check_value() != config.key_check {
            return Err(Error::WrongKey(match config.key {
                KeySource::Grant => {
                    "this grant's keys do not open the repository (it was made with other keys)"
                        .into()
                }
                KeySource::Passphrase { .. } => {
                    "the passphrase does not open the repository".into()
                }
            }));
        }
        Ok(Repository::new(project, location, keys, config))
    }

    fn new(project: &Project, location: &RepoLocation, keys: Keys, config: Config) -> Repository {
        Repository {
            inner: Arc::new(Inner {
                project: project.clone(),
                location: location.clone(),
                keys,
                config,
                interrupted: CancellationToken::new(),
            }),
        }
    }

    /// Stops the command running on this repository handle (on Ctrl-C,
    /// say), and any later one on it or its clones: it ends with
    /// [`Error::Interrupted`] after releasing its lock, leaving the
    /// repository as an interrupted backup or prune leaves it (consistent).
    pub fn interrupt(&self) {
        self.inner.interrupted.cancel();
    }

    pub(crate) fn interrupted(&self) -> &CancellationToken {
        &self.inner.interrupted
    }

    pub fn location(&self) -> &RepoLocation {
        &self.inner.location
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn pack_key(id: PackId) -> String {
        format!("data/{id}")
    }

    fn full_key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.location.prefix)
    }

    /// Stores `bytes` as the object `name` (relative to the repository).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.inner
            .project
            .upload(
                &self.inner.location.bucket,
                &self.full_key(name),
                std::io::Cursor::new(bytes),
                UploadOptions::default(),
            )
            .await?;
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.inner
            .project
            .download(
                &self.inner.location.bucket,
                &self.full_key(name),
                None,
                &mut out,
                None,
            )
            .await?;
        Ok(out)
    }

    /// `length` bytes of `name` from `offset`: all of them, or an error.
    pub async fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(length as usize);
        let range = ByteRange {
            offset,
            length: Some(length),
        };
        self.inner
            .project
            .download(
                &self.inner.location.bucket,
                &self.full_key(name),
                Some(range),
                &mut out,
                None,
            )
            .await?;
        if out.len() as u64 != length {
            return Err(Error::corrupt(
                name,
                format!(
                    "{} bytes at {offset} were asked, {} came",
                    length,
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    pub async fn put_sealed(&self, name: &str, aad: &[u8], plain: &[u8]) -> Result<(), Error> {
        self.put(name, self.inner.keys.seal(aad, plain)).await
    }

    pub async fn get_sealed(&self, name: &str, aad: &[u8]) -> Result<Vec<u8>, Error> {
        let sealed = self.get(name).await?;
        self.inner
            .keys
            .open(aad, &sealed)
            .ok_or_else(|| Error::corrupt(name, "it does not decrypt with the repository's key"))
    }

    /// Every object below `dir` (which ends with `/`), names relative to the
    /// repository, with sizes.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, Error> {
        let prefix = self.full_key(dir);
        let entries = self
            .inner
            .project
            .list(&self.inner.location.bucket, &prefix, true)
            .await?;
        let cut = self.inner.location.prefix.len();
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_prefix)
            .map(|e| (e.key[cut..].to_string(), e.size))
            .collect())
    }

    /// Every pack stored, with its size (names that are not pack ids are
    /// ignored).
    pub async fn list_packs(&self) -> Result<Vec<(PackId, u64)>, Error> {
        Ok(self
            .list("data/")
            .await?
            .into_iter()
            .filter_map(|(name, size)| {
                PackId::from_hex(name.strip_prefix("data/")?).map(|id| (id, size))
            })
            .collect())
    }

    /// Deletes `name`; one already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        match self
            .inner
            .project
            .delete_object(&self.inner.location.bucket, &self.full_key(name))
            .await
        {
            Ok(_) | Err(archipel_client::Error::ObjectNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn grant_master(project: &Project, location: &RepoLocation) -> Result<[u8; 32], Error> {
    Ok(project
        .prefix_secret(&location.bucket, &location.prefix, GRANT_KEY_PURPOSE)
        .await?)
}

async fn read_config(project: &Project, location: &RepoLocation) -> Result<Option<Config>, Error> {
    let mut bytes = Vec::new();
    let key = format!("{}config", location.prefix);
    match project
        .download(&location.bucket, &key, None, &mut bytes, None)
        .await
    {
        Ok(_) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt("config", e)),
        Err(
            archipel_client::Error::ObjectNotFound { .. }
            | archipel_client::Error::BucketNotFound(_),
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let l = RepoLocation::parse("ap://b/x/y/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", "x/y/"));
        assert_eq!(l.to_string(), "ap://b/x/y");
        assert_eq!(RepoLocation::parse("ap://b").unwrap().prefix, "");
        assert!(RepoLocation::parse("s3://b").is_err());
        assert!(RepoLocation::parse("ap:///x").is_err());
        assert!(RepoLocation::parse("ap://b/x//y").is_err());
    }
}
