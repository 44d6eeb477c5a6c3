//! The registry of registered access grants: what `POST /api/v1/access` on
//! the linksharing listener stores, so that links (`/s/<access key id>/...`)
//! and S3 clients (the same key id with its secret) can act with a grant the
//! gateway's configuration does not name.
//!
//! One SQLite file, `<state_dir>/registry.db`, one row per registration. A row
//! is found by a BLAKE3 hash of its access key id and holds the secret access
//! key, the grant and the `public` flag sealed together with AES-256-GCM under
//! a key derived from the access key id (BLAKE3 `derive_key`), with the row's
//! hash as associated data. So the file alone tells no grant, no secret and
//! not even which registrations are public: each access key id is the key to
//! its own row. (Whoever holds the file *and* a key id, from a public link
//! say, can open that row: the id is all a link carries.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use archipel_client::Access;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::{is_access_key_id, new_key_pair};
use crate::Error;

/// The registry's file name in the gateway's state directory.
pub const FILE_NAME: &str = "registry.db";

/// BLAKE3 `derive_key` contexts: one for the row's lookup hash, one for the
/// key that seals it, so that neither tells anything about the other.
const ROW_CONTEXT: &str = "archipel-gateway 2025-06 registry row id";
const SEAL_CONTEXT: &str = "archipel-gateway 2025-06 registry sealing key";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registrations (
    row_id BLOB PRIMARY KEY,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// What one access key id was registered with.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub secret_access_key: String,
    /// The serialized access grant.
    pub access: String,
    /// Whether links may serve it; any registration is an S3 credential.
    pub public: bool,
}

impl std::fmt::Debug for Entry {
    // The secret and the grant stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The answer to a registration.
pub(crate) struct Registration {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The registry, shared by the S3 service and the links.
#[derive(Clone)]
pub(crate) struct Registry {
    // SQLite calls block: they run on the blocking pool, one at a time.
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Registry {
    /// Opens (creating if needed) the registry at `path`.
    pub(crate) fn open(path: &Path) -> Result<Registry, Error> {
        let failed = |e: rusqlite::Error| Error::Registry {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Registry {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let connection = Connection::open(path).map_err(failed)?;
        connection.execute_batch(SCHEMA).map_err(failed)?;
        #[cfg(unix)]
        {
            // It holds (sealed) grants: readable by the gateway's user only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| Error::Registry {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                },
            )?;
        }
        Ok(Registry {
            connection: Arc::new(Mutex::new(connection)),
            path: path.to_path_buf(),
        })
    }

    /// Registers `grant` (checked to parse as an access grant) under a fresh
    /// key pair.
    pub(crate) async fn register(&self, grant: &str, public: bool) -> Result<Registration, Error> {
        let grant = grant.trim();
        Access::parse(grant).map_err(Error::InvalidAccess)?;
        let (access_key_id, secret_access_key) = new_key_pair();
        let entry = Entry {
            secret_access_key: secret_access_key.clone(),
            access: grant.to_string(),
            public,
        };
        let row = row_id(&access_key_id);
        let sealed = seal(&access_key_id, &row, &entry)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.call(move |connection| {
            connection.execute(
                "INSERT INTO registrations (row_id, sealed, created_at) VALUES (?1, ?2, ?3)",
                params![&row[..], sealed, created],
            )
        })
        .await?;
        Ok(Registration {
            access_key_id,
            secret_access_key,
        })
    }

    /// What `access_key_id` was registered with, if it was.
    pub(crate) async fn lookup(&self, access_key_id: &str) -> Result<Option<Entry>, Error> {
        if !is_access_key_id(access_key_id) {
            return Ok(None);
        }
        let row = row_id(access_key_id);
        let sealed: Option<Vec<u8>> = self
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT sealed FROM registrations WHERE row_id = ?1",
                        params![&row[..]],
                        |r| r.get(0),
                    )
                    .optional()
            })
            .await?;
        sealed
            .map(|sealed| open(access_key_id, &row, sealed))
            .transpose()
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let connection = self.connection.clone();
        let failed = |reason: String| Error::Registry {
            path: self.path.clone(),
            reason,
        };
        tokio::task::spawn_blocking(move || {
            // A panic while it was locked leaves SQLite's state consistent.
            let connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&connection)
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))
    }
}

/// The row's lookup key: says nothing about the id without the id.
fn row_id(access_key_id: &str) -> [u8; 32] {
    blake3::derive_key(ROW_CONTEXT, access_key_id.as_bytes())
}

fn sealing_key(access_key_id: &str) -> Result<LessSafeKey, Error> {
    let key = blake3::derive_key(SEAL_CONTEXT, access_key_id.as_bytes());
    UnboundKey::new(&AES_256_GCM, &key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::RegistryEntry("cannot make an AES-256-GCM key"))
}

/// `nonce ‖ AES-256-GCM(entry as JSON)`, bound to `row`.
fn seal(access_key_id: &str, row: &[u8; 32], entry: &Entry) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::RegistryEntry("the system has no randomness to give"))?;
    let mut data = serde_json::to_vec(entry)
        .map_err(|_| Error::RegistryEntry("cannot encode a registration"))?;
    sealing_key(access_key_id)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(row),
            &mut data,
        )
        .map_err(|_| Error::RegistryEntry("cannot seal a registration"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&data);
    Ok(sealed)
}

/// The entry sealed in a row; a row that does not open (damaged, or moved
/// to another id) is an error, never a guess.
fn open(access_key_id: &str, row: &[u8; 32], mut sealed: Vec<u8>) -> Result<Entry, Error> {
    if sealed.len() < NONCE_LEN {
        return Err(Error::RegistryEntry("a registration is cut short"));
    }
    let mut data = sealed.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&sealed)
        .map_err(|_| Error::RegistryEntry("a registration is cut short"))?;
    let plain = sealing_key(access_key_id)?
        .open_in_place(nonce, Aad::from(row), &mut data)
        .map_err(|_| Error::RegistryEntry("a registration does not decrypt"))?;
    serde_json::from_slice(plain).map_err(|_| Error::RegistryEntry("a registration is garbled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant in the version 1 text form (`client/src/access.rs`) whose
    /// satellite need not exist; checked to parse.
    fn grant() -> String {
        use base64::Engine;
        let mut bytes = vec![7u8; 32]; // satellite id
        bytes.extend([9u8; 32]); // root key
        for field in ["127.0.0.1:1", "the-api-key-that-must-not-show"] {
            bytes.extend((field.len() as u32).to_be_bytes());
            bytes.extend(field.as_bytes());
        }
        let grant = format!(
            "ap1{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        Access::parse(&grant).unwrap();
        grant
    }

    #[tokio::test]
    async fn registrations_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let registry = Registry::open(&path).unwrap();
        let grant = grant();
        let public = registry.register(&grant, true).await.unwrap();
        let private = registry.register(&grant, false).await.unwrap();
        assert!(is_access_key_id(&public.access_key_id));
        assert_eq!(public.secret_access_key.len(), 40);
        assert_ne!(public.access_key_id, private.access_key_id);

        let found = registry.lookup(&public.access_key_id).await.unwrap();
        let found = found.unwrap();
        assert_eq!(found.access, grant);
        assert_eq!(found.secret_access_key, public.secret_access_key);
        assert!(found.public);
        drop(registry);

        let reopened = Registry::open(&path).unwrap();
        let found = reopened.lookup(&private.access_key_id).await.unwrap();
        let found = found.unwrap();
        assert!(!found.public);
        assert_eq!(found.access, grant);
        assert!(reopened
            .lookup("AAAAAAAAAAAAAAAAAAAA")
            .await
            .unwrap()
            .is_none());
        assert!(reopened.lookup("not an id").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_file_holds_no_grant_secret_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let registry = Registry::open(&path).unwrap();
        let grant = grant();
        let registered = registry.register(&grant, true).await.unwrap();
        drop(registry);
        let mut bytes = std::fs::read(&path).unwrap();
        for extra in ["-wal", "-journal"] {
            if let Ok(more) = std::fs::read(format!("{}{extra}", path.display())) {
                bytes.extend(more);
            }
        }
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(grant.as_bytes()));
        assert!(!contains(&grant.as_bytes()[..32]));
        assert!(!contains(b"the-api-key-that-must-not-show"));
        assert!(!contains(registered.secret_access_key.as_bytes()));
        assert!(!contains(registered.access_key_id.as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn bad_grants_are_refused_and_damaged_rows_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let registry = Registry::open(&path).unwrap();
        assert!(matches!(
            registry.register("not a grant", true).await,
            Err(Error::InvalidAccess(_))
        ));
        let registered = registry.register(&grant(), true).await.unwrap();
        // A row moved under another id does not open with that id.
        let other = "BBBBBBBBBBBBBBBBBBBB";
        let moved = registered.access_key_id.clone();
        registry
            .call(move |c| {
                c.execute(
                    "UPDATE registrations SET row_id = ?1 WHERE row_id = ?2",
                    params![&row_id(other)[..], &row_id(&moved)[..]],
                )
            })
            .await
            .unwrap();
        assert!(matches!(
            registry.lookup(other).await,
            Err(Error::RegistryEntry(_))
        ));
        assert!(registry
            .lookup(&registered.access_key_id)
            .await
            .unwrap()
            .is_none());
    }
}
