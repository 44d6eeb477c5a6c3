//! Projects and their API keys.

use base64::Engine;

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

/// Generates a new API key: "ak_" and 32 random bytes in unpadded base64url.
fn new_api_key() -> String {
    let secret: [u8; 32] = rand::random();
    format!(
        "ak_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

/// Keys are stored only as this hash.
fn api_key_hash(key: &str) -> Vec<u8> {
    blake3::hash(key.as_bytes()).as_bytes().to_vec()
}

impl Metabase {
    /// Creates a project with a fresh salt and returns its first API key.
    pub async fn create_project(&self, name: &str, now: i64) -> Result<String> {
        let id: [u8; 16] = rand::random();
        let salt: [u8; 32] = rand::random();
        let key = new_api_key();
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
            sqlx::query("INSERT INTO api_keys (key_hash, project_id, created_at) VALUES ($1, $2, $3)")
                .bind(api_key_hash(&key))
                .bind(id.to_vec())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(key)
    }

    /// The project an API key belongs to, or `Unauthenticated`.
    pub async fn project_by_api_key(&self, key: &str) -> Result<Project> {
        let hash = api_key_hash(key);
        let project: Option<Project> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.id, p.name, p.salt, p.created_at FROM projects p \
                 JOIN api_keys k ON k.project_id = p.id WHERE k.key_hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await?
        });
        project.ok_or(Error::Unauthenticated)
    }
}
