//! The metabase: projects, API keys, buckets, objects, segments and the node
//! registry, in SQLite (embedded default) or PostgreSQL (production).
//!
//! Both backends run the same SQL text: `$N` placeholders (which SQLite also
//! understands), BIGINT numbers, byte-string keys compared as bytes, and nothing
//! CockroachDB would refuse. [`on_pool!`] expands each query once per backend.
//! Writes that read before they write run in `BEGIN IMMEDIATE` on SQLite, so two
//! writers queue on the busy timeout instead of failing on a lock upgrade.
//!
//! Each concept is a file that adds its methods to [`Metabase`]:
//! - `projects.rs`: projects and their API keys;
//! - `objects.rs`: buckets, and the objects in them: pending uploads,
//!   commits, server-side copies, deletes, expiry and listings;
//! - `segments.rs`: segments and their piece lists, and the scans of remote
//!   segments that audits and the repair checker make;
//! - `locks.rs`: Object Lock: bucket lock configurations, and the retention
//!   and legal hold of versions;
//! - `multipart.rs`: the parts of multipart uploads;
//! - `nodes.rs`: the node registry, node health and reputation;
//! - `audits.rs`: containment, the audits nodes still owe;
//! - `repair_queue.rs`: the queue of segments waiting for repair;
//! - `deletions.rs`: the queue of pieces to delete from their nodes, and the
//!   scan of every piece list that retain filters are built from.
//!
//! This file opens the database and migrates its schema, and holds the query
//! macros (defined before the modules that use them) and what several of
//! those files share.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::{Error, Result};

/// An open metabase; cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Metabase {
    pool: Pool,
    /// SQLite has one writer at a time: its write transactions queue here,
    /// in order, instead of meeting `SQLITE_BUSY` and sleeping in SQLite's
    /// busy handler (1, 2, 5, 10… ms), which turned concurrent commits into
    /// a trickle.
    writer: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend is open.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Why a key that may write but not delete cannot store over an object.
pub(crate) const OVERWRITE_REFUSED: &str =
    "an object exists under this key and the API key does not allow deleting it";

/// Inside the write transaction `$tx`, prepares the commit of a new version
/// of a key at `$now`: checks the [`Precondition`] `$precondition` (an
/// `Option<&Precondition>`) against the key's current version and, unless
/// the bucket's versioning is enabled, removes the key's null version with
/// its segments, which the new version replaces. Evaluates to the removed
/// remote segments, the new version's number, and the [`Bucket`] as the
/// transaction sees it. Unless `$replace`, a null version holding data
/// fails the transaction instead: a key that may write but not delete must
/// not destroy data by overwriting it; nor may anyone replace a null
/// version under Object Lock.
macro_rules! make_room {
    ($tx:ident, $project:expr, $bucket:expr, $key:expr, $replace:expr, $precondition:expr, $now:expr) => {{
        let settings = bucket_in!($tx, $project, $bucket);
        let versions: Vec<$crate::metabase::VersionRow> = sqlx::query_as(
            "SELECT stream_id, version, versioning, delete_marker, expires_at, retention_mode, \
             retain_until, legal_hold FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND object_key = $3 AND committed = 1 ORDER BY version DESC",
        )
        .bind($project)
        .bind($bucket)
        .bind($key)
        .fetch_all(&mut *$tx)
        .await?;
        $crate::metabase::check_precondition($precondition, &versions, $now)?;
        let next_version = versions.first().map_or(1, |newest| newest.version + 1);
        let null_version = versions.iter().find(|v| v.versioning != 1);
        let removed = match null_version {
            Some(null) if settings.versioning != $crate::metabase::Versioning::Enabled => {
                if !$replace && null.delete_marker == 0 {
                    return Err(Error::PermissionDenied(
                        $crate::metabase::OVERWRITE_REFUSED.into(),
                    ));
                }
                if let Some(why) = null.removal_refused($now)? {
                    return Err(Error::ObjectLocked(why));
                }
                remove_version!($tx, &null.stream_id)
            }
            _ => Vec::new(),
        };
        (removed, next_version, settings)
    }};
}

/// Inside the transaction `$tx`, a [`Bucket`] as the transaction sees it;
/// a missing bucket returns `NotFound` from the enclosing function.
macro_rules! bucket_in {
    ($tx:ident, $project:expr, $bucket:expr) => {{
        let row: Option<$crate::metabase::objects::BucketRow> = sqlx::query_as(&format!(
            "SELECT {} FROM buckets WHERE project_id = $1 AND name = $2",
            $crate::metabase::objects::BUCKET_COLUMNS
        ))
        .bind($project)
        .bind($bucket)
        .fetch_optional(&mut *$tx)
        .await?;
        match row {
            Some(row) => $crate::metabase::Bucket::try_from(row)?,
            None => return Err(Error::NotFound(format!("bucket {:?}", $bucket))),
        }
    }};
}

/// Inside the write transaction `$tx`, removes the committed version of
/// stream `$stream` with its segments; evaluates to its remote segments.
macro_rules! remove_version {
    ($tx:ident, $stream:expr) => {{
        // RETURNING: the piece lists as deleted, including any a repair
        // swapped in after this transaction began.
        let records: Vec<SegmentRecord> = sqlx::query_as(&format!(
            "DELETE FROM segments WHERE stream_id = $1 RETURNING {SEGMENT_COLUMNS}"
        ))
        .bind($stream)
        .fetch_all(&mut *$tx)
        .await?;
        sqlx::query("DELETE FROM objects WHERE stream_id = $1")
            .bind($stream)
            .execute(&mut *$tx)
            .await?;
        removed_segments(records)?
    }};
}

/// Inserts the [`Object`] `$object` through `$executor` (a pool or a
/// transaction); evaluates to the query's result.
macro_rules! insert_object {
    ($executor:expr, $object:expr) => {{
        let object: &Object = $object;
        sqlx::query(&format!(
            "INSERT INTO objects ({OBJECT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20, $21)"
        ))
        .bind(&object.stream_id)
        .bind(&object.project_id)
        .bind(&object.bucket)
        .bind(&object.object_key)
        .bind(object.committed)
        .bind(object.created_at)
        .bind(object.expires_at)
        .bind(object.cipher)
        .bind(object.block_size)
        .bind(&object.encrypted_metadata)
        .bind(&object.encrypted_metadata_key)
        .bind(&object.encrypted_metadata_nonce)
        .bind(object.plain_size)
        .bind(object.segment_count)
        .bind(object.multipart)
        .bind(object.version)
        .bind(object.versioning)
        .bind(object.delete_marker)
        .bind(object.retention_mode)
        .bind(object.retain_until)
        .bind(object.legal_hold)
        .execute($executor)
        .await
    }};
}

/// Inserts the [`Segment`] `$segment` through `$executor` (a pool or a
/// transaction); a segment already at its position is
/// [`Error::AlreadyExists`], any other failure the database's error.
macro_rules! insert_segment {
    ($executor:expr, $segment:expr) => {{
        let segment: &Segment = $segment;
        // Inline segments have no pieces, so no root piece id.
        let root: &[u8] = match segment.inline_data {
            Some(_) => &[],
            None => &segment.root_piece_id,
        };
        let inserted = sqlx::query(&format!(
            "INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&segment.stream_id)
        .bind(i64::from(segment.position))
        .bind(root)
        .bind(&segment.encrypted_key)
        .bind(&segment.encrypted_key_nonce)
        .bind(segment.plain_offset)
        .bind(segment.plain_size)
        .bind(segment.encrypted_size)
        .bind(segment.redundancy.as_ref().map(redundancy_text))
        .bind(&segment.inline_data)
        .bind(encode_pieces(&segment.pieces))
        .bind(segment.created_at)
        .execute($executor)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!(
                "segment {} of this object",
                segment.position
            ))),
            Err(e) => Err(Error::from(e)),
        }
    }};
}

/// Inside the write transaction `$tx`, queues the pieces of the removed
/// segments `$removed` (an iterator of `&RemovedSegment`) for the deletion
/// worker: a piece leaves the segments and enters the queue atomically, so
/// no crash or restart can forget it (see [`deletions`]).
macro_rules! queue_deletions {
    ($tx:ident, $removed:expr) => {{
        let now = archipel_proto::orders::unix_now();
        for segment in $removed {
            for piece in &segment.pieces {
                sqlx::query(
                    "INSERT INTO piece_deletions (node_id, root_piece_id, piece_num, queued_at, \
                     next_attempt_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                )
                .bind(piece.node.as_bytes().as_slice())
                .bind(segment.root_piece_id.as_slice())
                .bind(i64::from(piece.num))
                .bind(now)
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

mod access;
mod audits;
mod deletions;
mod exits;
mod locks;
mod multipart;
mod nodes;
mod objects;
mod projects;
mod repair_queue;
mod segments;

pub use access::{BucketAccess, BucketAccessUpdate, CannedAcl, PublicAccessBlock};
pub use audits::PendingAudit;
pub use deletions::QueuedDeletion;
pub use exits::ExitState;
pub use locks::{
    removal_refused, DefaultRetention, ObjectLock, Retention, RetentionMode, RetentionPeriod,
    VersionLock,
};
pub use multipart::Part;
pub use nodes::{Node, NodeRecord, NodeStanding};
use objects::{check_precondition, VersionRow};
pub use objects::{
    Bucket, Deletion, ListEntry, Listing, Object, ObjectCommit, ObjectCopy, Precondition,
    VersionRef, Versioning,
};
pub use projects::{Credential, Project};
pub use repair_queue::{QueueEntry, QueuedSegment, RepairClaim};
pub use segments::{
    decode_pieces, encode_pieces, Piece, RemovedSegment, Segment, SegmentKey, WrappedSegmentKey,
};

pub const MAX_LIST_LIMIT: usize = 1000;

const OBJECT_COLUMNS: &str = "stream_id, project_id, bucket, object_key, committed, created_at, \
     expires_at, cipher, block_size, encrypted_metadata, encrypted_metadata_key, \
     encrypted_metadata_nonce, plain_size, segment_count, multipart, version, versioning, \
     delete_marker, retention_mode, retain_until, legal_hold";

const SEGMENT_COLUMNS: &str = "stream_id, position, root_piece_id, encrypted_key, \
     encrypted_key_nonce, plain_offset, plain_size, encrypted_size, redundancy, inline_data, \
     pieces, created_at";

/// Whether a database error is a uniqueness violation.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Starts a transaction meant to write.
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Self::Db>>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

/// Serializes migrations started in this process: SQLite has no migration lock,
/// and a satellite and `create_project` often open the same new file at once.
static MIGRATION_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Metabase {
    /// Opens the database at `url` and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Metabase> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?,
            )
        } else {
            return Err(Error::UnsupportedDatabase(url.to_string()));
        };
        let metabase = Metabase {
            pool,
            writer: Arc::default(),
        };
        metabase.migrate().await?;
        Ok(metabase)
    }

    /// Waits for the turn to write, on SQLite (see [`Metabase::writer`]);
    /// PostgreSQL takes concurrent writers as they come.
    async fn writing(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.writer.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    async fn migrate(&self) -> Result<()> {
        let _guard = MIGRATION_LOCK.lock().await;
        match &self.pool {
            Pool::Sqlite(pool) => {
                // Another process may be migrating the same file; its work shows
                // up as "already applied" on the next attempt.
                let mut attempt = 0;
                loop {
                    match sqlx::migrate!("migrations/sqlite").run(pool).await {
                        Ok(()) => return Ok(()),
                        Err(e) if attempt < 10 => {
                            tracing::debug!("retrying migration after: {e}");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Pool::Postgres(pool) => Ok(sqlx::migrate!("migrations/postgres").run(pool).await?),
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}
