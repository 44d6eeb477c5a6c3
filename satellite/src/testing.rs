//! Fresh, empty databases of each backend for tests: a SQLite file in a given
//! directory, or a uniquely named PostgreSQL database (dropped again when the
//! guard goes), so that tests run in parallel without seeing each other.
//!
//! The PostgreSQL server is `ARCHIPEL_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`, trust authentication).

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::{Metabase, Result};

/// The metabase backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}

/// The server tests use, from `ARCHIPEL_TEST_POSTGRES`.
pub fn postgres_server_url() -> String {
    std::env::var("ARCHIPEL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// A fresh database; a PostgreSQL one is dropped when this is.
#[derive(Debug)]
pub struct FreshDatabase {
    url: String,
    postgres_name: Option<String>,
    metabase: tokio::sync::OnceCell<Metabase>,
}

impl FreshDatabase {
    /// Creates an empty database; a SQLite one as a file in `dir`.
    pub async fn create(backend: Backend, dir: &Path) -> Result<FreshDatabase> {
        let name = format!("archipel_test_{}", hex::encode(rand::random::<[u8; 8]>()));
        match backend {
            Backend::Sqlite => Ok(FreshDatabase {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.join(format!("{name}.db")).display()
                ),
                postgres_name: None,
                metabase: Default::default(),
            }),
            Backend::Postgres => {
                let server = postgres_server_url();
                let mut admin = PgConnectOptions::from_str(&server)?.connect().await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                let options = PgConnectOptions::from_str(&server)?.database(&name);
                Ok(FreshDatabase {
                    url: options.to_url_lossy().to_string(),
                    postgres_name: Some(name),
                    metabase: Default::default(),
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database opened (and migrated) once, for inspection by tests.
    pub async fn metabase(&self) -> Result<&Metabase> {
        self.metabase
            .get_or_try_init(|| Metabase::connect(&self.url))
            .await
    }

    /// How many storage nodes have checked in.
    pub async fn node_count(&self) -> Result<usize> {
        self.metabase().await?.node_count().await
    }
}

/// How many storage nodes have checked in to the satellite whose database is at `url`.
pub async fn node_count(url: &str) -> Result<usize> {
    let metabase = Metabase::connect(url).await?;
    let count = metabase.node_count().await;
    metabase.close().await;
    count
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop may run inside or outside a runtime; a thread of its own works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnectOptions::from_str(&postgres_server_url())?
                    .connect()
                    .await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok::<_, crate::Error>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop a test database: {e}"),
            Err(_) => eprintln!("dropping a test database panicked"),
        }
    }
}
