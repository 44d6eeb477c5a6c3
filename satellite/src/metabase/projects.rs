//! Projects and their API keys: issuing, authenticating (the chain of a
//! restrictable key, see `archipel_proto::macaroon`) and revoking.

use archipel_proto::macaroon::{ApiKey, KEY_LEN};
use archipel_proto::pb;

use super::{BeginWrite, Metabase, Pool};
use crate::{Error, Result};

/// A project as an API key resolves it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Project {
    pub id: Vec<u8>,
    pub name: String,
    pub salt: Vec<u8>,
    pub created_at: i64,
}

/// What an API key proved: its project and the caveats every request
/// with it must satisfy.
#[derive(Clone, Debug)]
pub struct Credential {
    pub project: Project,
    pub caveats: Vec<pb::Caveat>,
    /// The key itself, for keys that can be restricted (all but those
    /// issued before restrictable keys existed).
    pub key: Option<ApiKey>,
}

/// Keys are found by this hash: of the head for restrictable keys, of the
/// whole key for the ones issued before them.
fn key_hash(bytes: &[u8]) -> Vec<u8> {
    blake3::hash(bytes).as_bytes().to_vec()
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Vec<u8>,
    name: String,
    salt: Vec<u8>,
    created_at: i64,
    secret: Option<Vec<u8>>,
    revocations: i64,
}

impl Metabase {
    /// Creates a project with a fresh salt and returns its first API key.
    pub async fn create_project(&self, name: &str, now: i64) -> Result<String> {
        let id: [u8; 16] = rand::random();
        let salt: [u8; 32] = rand::random();
        let secret: [u8; KEY_LEN] = rand::random();
        let key = ApiKey::issue(&secret);
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            sqlx::query("INSERT INTO projects (id, name, salt, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id.to_vec())
                .bind(name)
                .bind(salt.to_vec())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO api_keys (key_hash, project_id, created_at, secret) VALUES ($1, $2, $3, $4)",
            )
            .bind(key_hash(key.head()))
            .bind(id.to_vec())
            .bind(now)
            .bind(secret.to_vec())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(key.serialize())
    }

    /// What `key` may do, or `Unauthenticated` for a key this satellite did
    /// not issue, a tampered one, or one that was revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Credential> {
        let macaroon = ApiKey::parse(key).ok();
        let hash = match &macaroon {
            Some(macaroon) => key_hash(macaroon.head()),
            None => key_hash(key.as_bytes()),
        };
        // One query in the common case: the revoked tails of the key's
        // family are read only when there are some.
        let row: Option<KeyRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.id, p.name, p.salt, p.created_at, k.secret, \
                 (SELECT COUNT(*) FROM revoked_api_keys r WHERE r.key_hash = k.key_hash) AS revocations \
                 FROM projects p JOIN api_keys k ON k.project_id = p.id WHERE k.key_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await?
        });
        let row = row.ok_or(Error::Unauthenticated)?;
        let revoked: Vec<Vec<u8>> = if row.revocations == 0 {
            Vec::new()
        } else {
            on_pool!(self, pool => {
                sqlx::query_scalar("SELECT tail FROM revoked_api_keys WHERE key_hash = $1")
                    .bind(&hash)
                    .fetch_all(pool)
                    .await?
            })
        };
        let project = Project {
            id: row.id,
            name: row.name,
            salt: row.salt,
            created_at: row.created_at,
        };
        match (macaroon, row.secret) {
            (Some(macaroon), Some(secret)) => {
                let secret: [u8; KEY_LEN] = secret.try_into().map_err(|_| {
                    Error::Corrupt("an API key's secret has the wrong length".into())
                })?;
                let tails = macaroon
                    .verified_tails(&secret)
                    .ok_or(Error::Unauthenticated)?;
                if tails.iter().any(|tail| revoked.iter().any(|r| r == tail)) {
                    return Err(Error::Unauthenticated);
                }
                let caveats = macaroon
                    .caveats()
                    .map_err(|e| Error::PermissionDenied(e.to_string()))?;
                Ok(Credential {
                    project,
                    caveats,
                    key: Some(macaroon),
                })
            }
            // A key from before restrictable keys, found by its whole hash.
            (None, None) => Ok(Credential {
                project,
                caveats: Vec::new(),
                key: None,
            }),
            _ => Err(Error::Unauthenticated),
        }
    }

    /// Refuses `key` and every key restricted from it from now on.
    pub async fn revoke_api_key(&self, key: &ApiKey, now: i64) -> Result<()> {
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            sqlx::query(
                "INSERT INTO revoked_api_keys (key_hash, tail, revoked_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(key_hash(key.head()))
            .bind(key.tail().to_vec())
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
