//! The metabase: projects, API keys, buckets, objects, segments and the node
//! registry, in SQLite (embedded default) or PostgreSQL (production).
//!
//! Both backends run the same SQL text: `$N` placeholders (which SQLite also
//! understands), BIGINT numbers, byte-string keys compared as bytes, and nothing
//! CockroachDB would refuse. [`on_pool!`] expands each query once per backend.
//! Writes that read before they write run in `BEGIN IMMEDIATE` on SQLite, so two
//! writers queue on the busy timeout instead of failing on a lock upgrade.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use archipel_proto::{multipart, NodeId, Redundancy};
use base64::Engine;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::reputation::{self, AuditOutcome, Beta, NodeHealth, ReputationConfig};
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

/// Inside the write transaction `$tx`, removes the committed object under a
/// key (if any) with its segments; evaluates to the removed remote segments.
macro_rules! remove_committed {
    ($tx:ident, $project:expr, $bucket:expr, $key:expr) => {{
        let old: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT stream_id FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND object_key = $3 AND committed = 1",
        )
        .bind($project)
        .bind($bucket)
        .bind($key)
        .fetch_optional(&mut *$tx)
        .await?;
        match old {
            Some((old_stream,)) => {
                // RETURNING: the piece lists as deleted, including any a
                // repair swapped in after this transaction began.
                let records: Vec<SegmentRecord> = sqlx::query_as(&format!(
                    "DELETE FROM segments WHERE stream_id = $1 RETURNING {SEGMENT_COLUMNS}"
                ))
                .bind(&old_stream)
                .fetch_all(&mut *$tx)
                .await?;
                sqlx::query("DELETE FROM objects WHERE stream_id = $1")
                    .bind(&old_stream)
                    .execute(&mut *$tx)
                    .await?;
                removed_segments(records)?
            }
            None => Vec::new(),
        }
    }};
}

/// Inserts the [`Object`] `$object` through `$executor` (a pool or a
/// transaction); evaluates to the query's result.
macro_rules! insert_object {
    ($executor:expr, $object:expr) => {{
        let object: &Object = $object;
        sqlx::query(&format!(
            "INSERT INTO objects ({OBJECT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
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

/// A project as an API key resolves it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Project {
    pub id: Vec<u8>,
    pub name: String,
    pub salt: Vec<u8>,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub created_at: i64,
    /// The client stores object names in this bucket unencrypted, so keys sort
    /// in the names' own order; chosen at creation.
    pub plain_names: bool,
}

/// A bucket as stored (flags are BIGINT 0/1).
#[derive(sqlx::FromRow)]
struct BucketRow {
    name: String,
    created_at: i64,
    plain_names: i64,
}

impl From<BucketRow> for Bucket {
    fn from(row: BucketRow) -> Bucket {
        Bucket {
            name: row.name,
            created_at: row.created_at,
            plain_names: row.plain_names != 0,
        }
    }
}

/// An object, pending (being uploaded) or committed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Object {
    pub stream_id: Vec<u8>,
    pub project_id: Vec<u8>,
    pub bucket: String,
    pub object_key: Vec<u8>,
    pub committed: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub cipher: i64,
    pub block_size: i64,
    pub encrypted_metadata: Vec<u8>,
    pub encrypted_metadata_key: Vec<u8>,
    pub encrypted_metadata_nonce: Vec<u8>,
    pub plain_size: i64,
    pub segment_count: i64,
    /// 1 for a multipart upload (parts are recorded separately until it completes).
    pub multipart: i64,
}

impl Object {
    /// A new pending object with no segments and no metadata yet.
    #[allow(clippy::too_many_arguments)]
    pub fn pending(
        stream_id: Vec<u8>,
        project_id: Vec<u8>,
        bucket: String,
        object_key: Vec<u8>,
        created_at: i64,
        expires_at: i64,
        cipher: u32,
        block_size: u32,
    ) -> Object {
        Object {
            stream_id,
            project_id,
            bucket,
            object_key,
            committed: 0,
            created_at,
            expires_at,
            cipher: cipher.into(),
            block_size: block_size.into(),
            encrypted_metadata: Vec::new(),
            encrypted_metadata_key: Vec::new(),
            encrypted_metadata_nonce: Vec::new(),
            plain_size: 0,
            segment_count: 0,
            multipart: 0,
        }
    }
}

/// A recorded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Part {
    pub part_number: i64,
    pub plain_size: i64,
    pub segment_count: i64,
    pub encrypted_info: Vec<u8>,
    pub created_at: i64,
}

/// One stored piece of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub num: u16,
    pub node: NodeId,
    /// The piece's hash tree root as the node signed it.
    pub root: [u8; 32],
}

const PIECE_RECORD: usize = 2 + 32 + 32;

/// The piece list as one blob: per piece, its number (big-endian u16), node id and root.
pub fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.len() * PIECE_RECORD);
    for piece in pieces {
        out.extend_from_slice(&piece.num.to_be_bytes());
        out.extend_from_slice(piece.node.as_bytes());
        out.extend_from_slice(&piece.root);
    }
    out
}

pub fn decode_pieces(blob: &[u8]) -> Result<Vec<Piece>> {
    if !blob.len().is_multiple_of(PIECE_RECORD) {
        return Err(Error::Corrupt(format!(
            "a piece list of {} bytes is not a whole number of records",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(PIECE_RECORD)
        .map(|record| {
            let mut node = [0u8; 32];
            node.copy_from_slice(&record[2..34]);
            let mut root = [0u8; 32];
            root.copy_from_slice(&record[34..66]);
            Piece {
                num: u16::from_be_bytes([record[0], record[1]]),
                node: NodeId(node),
                root,
            }
        })
        .collect())
}

/// A segment of an object: inline (data kept here) or remote (pieces on nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub root_piece_id: [u8; 32],
    pub encrypted_key: Vec<u8>,
    pub encrypted_key_nonce: Vec<u8>,
    pub plain_offset: i64,
    pub plain_size: i64,
    pub encrypted_size: i64,
    /// `None` for inline segments.
    pub redundancy: Option<Redundancy>,
    pub inline_data: Option<Vec<u8>>,
    pub pieces: Vec<Piece>,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct SegmentRecord {
    stream_id: Vec<u8>,
    position: i64,
    root_piece_id: Vec<u8>,
    encrypted_key: Vec<u8>,
    encrypted_key_nonce: Vec<u8>,
    plain_offset: i64,
    plain_size: i64,
    encrypted_size: i64,
    redundancy: Option<String>,
    inline_data: Option<Vec<u8>>,
    pieces: Vec<u8>,
    created_at: i64,
}

impl TryFrom<SegmentRecord> for Segment {
    type Error = Error;
    fn try_from(r: SegmentRecord) -> Result<Segment> {
        let position = u32::try_from(r.position)
            .map_err(|_| Error::Corrupt(format!("segment position {}", r.position)))?;
        let root_piece_id: [u8; 32] = if r.root_piece_id.is_empty() {
            [0; 32]
        } else {
            r.root_piece_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("root piece id is not 32 bytes".into()))?
        };
        let redundancy = match r.redundancy {
            Some(text) => Some(
                Redundancy::from_str(&text)
                    .map_err(|e| Error::Corrupt(format!("redundancy {text:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Segment {
            stream_id: r.stream_id,
            position,
            root_piece_id,
            encrypted_key: r.encrypted_key,
            encrypted_key_nonce: r.encrypted_key_nonce,
            plain_offset: r.plain_offset,
            plain_size: r.plain_size,
            encrypted_size: r.encrypted_size,
            redundancy,
            inline_data: r.inline_data,
            pieces: decode_pieces(&r.pieces)?,
            created_at: r.created_at,
        })
    }
}

fn redundancy_text(r: &Redundancy) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        r.required, r.repair, r.success, r.total, r.share_size
    )
}

/// Queue candidates a claim tries before it reports an empty queue.
const CLAIM_CANDIDATES: i64 = 16;
/// Longest repair error text kept with a queued segment.
const MAX_ERROR_TEXT: usize = 500;

/// `text` without control characters (which PostgreSQL text refuses as NUL
/// and logs garble), cut to at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A segment's address: its stream and position.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    pub stream_id: Vec<u8>,
    pub position: u32,
}

impl Segment {
    pub fn key(&self) -> SegmentKey {
        SegmentKey {
            stream_id: self.stream_id.clone(),
            position: self.position,
        }
    }
}

const STANDING_COLUMNS: &str =
    "id, last_net, last_contact, disqualified_at, suspended_at, exiting_at";

/// A node's standing as far as the health of its pieces goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStanding {
    pub id: NodeId,
    pub last_net: String,
    pub last_contact: i64,
    pub disqualified_at: Option<i64>,
    pub suspended_at: Option<i64>,
    pub exiting_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct NodeStandingRow {
    id: Vec<u8>,
    last_net: String,
    last_contact: i64,
    disqualified_at: Option<i64>,
    suspended_at: Option<i64>,
    exiting_at: Option<i64>,
}

impl TryFrom<NodeStandingRow> for NodeStanding {
    type Error = Error;
    fn try_from(r: NodeStandingRow) -> Result<NodeStanding> {
        Ok(NodeStanding {
            id: NodeId::from_bytes(&r.id)
                .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?,
            last_net: r.last_net,
            last_contact: r.last_contact,
            disqualified_at: r.disqualified_at,
            suspended_at: r.suspended_at,
            exiting_at: r.exiting_at,
        })
    }
}

/// A segment the checker found at or below its repair threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedSegment {
    pub key: SegmentKey,
    pub healthy: u16,
    pub required: u16,
}

/// A repair worker's hold on a queued segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairClaim {
    pub key: SegmentKey,
    token: [u8; 16],
    /// Tries so far, this one included.
    pub attempts: i64,
}

/// A repair queue entry as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueueEntry {
    #[serde(with = "hex::serde")]
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub healthy: i64,
    /// Healthy pieces beyond `k`; negative: the segment cannot be rebuilt now.
    pub margin: i64,
    pub inserted_at: i64,
    pub updated_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct QueueEntryRow {
    stream_id: Vec<u8>,
    position: i64,
    healthy: i64,
    margin: i64,
    inserted_at: i64,
    updated_at: i64,
    attempts: i64,
    last_error: Option<String>,
}

impl TryFrom<QueueEntryRow> for QueueEntry {
    type Error = Error;
    fn try_from(r: QueueEntryRow) -> Result<QueueEntry> {
        Ok(QueueEntry {
            position: u32::try_from(r.position)
                .map_err(|_| Error::Corrupt(format!("segment position {}", r.position)))?,
            stream_id: r.stream_id,
            healthy: r.healthy,
            margin: r.margin,
            inserted_at: r.inserted_at,
            updated_at: r.updated_at,
            attempts: r.attempts,
            last_error: r.last_error,
        })
    }
}

/// A server-side copy of a committed object: the destination and what is
/// sealed under the destination's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCopy {
    /// The new object's stream id.
    pub stream_id: Vec<u8>,
    pub bucket: String,
    pub object_key: Vec<u8>,
    pub created_at: i64,
    pub encrypted_metadata: Vec<u8>,
    pub encrypted_metadata_key: Vec<u8>,
    pub encrypted_metadata_nonce: Vec<u8>,
    /// One per source segment, in position order.
    pub segment_keys: Vec<WrappedSegmentKey>,
}

/// A segment's key wrapped under an object's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedSegmentKey {
    pub position: u32,
    pub encrypted_key: Vec<u8>,
    pub encrypted_key_nonce: Vec<u8>,
}

/// The pieces of a removed segment, for best-effort deletion from their nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedSegment {
    pub root_piece_id: [u8; 32],
    pub pieces: Vec<Piece>,
}

impl From<Segment> for RemovedSegment {
    fn from(s: Segment) -> Self {
        RemovedSegment {
            root_piece_id: s.root_piece_id,
            pieces: s.pieces,
        }
    }
}

/// A storage node as it last checked in.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Node {
    pub id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub address: String,
    /// The /24 (IPv4) or /64 (IPv6) network of its address.
    pub last_net: String,
    pub capacity_bytes: i64,
    pub free_bytes: i64,
    pub version: String,
    pub last_contact: i64,
    pub created_at: i64,
}

const HEALTH_COLUMNS: &str = "audit_alpha, audit_beta, unknown_alpha, unknown_beta, \
     audit_total, audit_success, vetted_at, disqualified_at, suspended_at, \
     last_contact_success, last_contact_failure";

/// The health columns of a node; NULL reputations mean "never audited".
#[derive(sqlx::FromRow)]
struct HealthRow {
    audit_alpha: Option<f64>,
    audit_beta: Option<f64>,
    unknown_alpha: Option<f64>,
    unknown_beta: Option<f64>,
    audit_total: i64,
    audit_success: i64,
    vetted_at: Option<i64>,
    disqualified_at: Option<i64>,
    suspended_at: Option<i64>,
    last_contact_success: i64,
    last_contact_failure: i64,
}

impl HealthRow {
    fn into_health(self, config: &ReputationConfig) -> NodeHealth {
        let initial = config.initial();
        NodeHealth {
            audit: Beta {
                alpha: self.audit_alpha.unwrap_or(initial.alpha),
                beta: self.audit_beta.unwrap_or(initial.beta),
            },
            unknown: Beta {
                alpha: self.unknown_alpha.unwrap_or(initial.alpha),
                beta: self.unknown_beta.unwrap_or(initial.beta),
            },
            audit_total: self.audit_total,
            audit_success: self.audit_success,
            vetted_at: self.vetted_at,
            disqualified_at: self.disqualified_at,
            suspended_at: self.suspended_at,
            last_contact_success: self.last_contact_success,
            last_contact_failure: self.last_contact_failure,
        }
    }
}

/// A challenge a node left unanswered: it must answer exactly this one next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAudit {
    pub node: NodeId,
    pub stream_id: Vec<u8>,
    pub position: u32,
    pub piece_num: u16,
    /// The root the piece was committed with when challenged.
    pub piece_root: [u8; 32],
    /// The hash chunk asked for (in units of the default chunk size).
    pub chunk_index: u64,
    /// Retries that went unanswered so far.
    pub reverify_count: u32,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct PendingAuditRow {
    node_id: Vec<u8>,
    stream_id: Vec<u8>,
    position: i64,
    piece_num: i64,
    piece_root: Vec<u8>,
    chunk_index: i64,
    reverify_count: i64,
    created_at: i64,
}

impl TryFrom<PendingAuditRow> for PendingAudit {
    type Error = Error;
    fn try_from(r: PendingAuditRow) -> Result<PendingAudit> {
        let corrupt = |what: &str| Error::Corrupt(format!("a pending audit's {what}"));
        Ok(PendingAudit {
            node: NodeId::from_bytes(&r.node_id).map_err(|_| corrupt("node id"))?,
            stream_id: r.stream_id,
            position: u32::try_from(r.position).map_err(|_| corrupt("position"))?,
            piece_num: u16::try_from(r.piece_num).map_err(|_| corrupt("piece number"))?,
            piece_root: r
                .piece_root
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("piece root"))?,
            chunk_index: u64::try_from(r.chunk_index).map_err(|_| corrupt("chunk index"))?,
            reverify_count: u32::try_from(r.reverify_count).map_err(|_| corrupt("retry count"))?,
            created_at: r.created_at,
        })
    }
}

/// What a listing asks for: the entries under `prefix` strictly after
/// `cursor` (relative to the prefix), in key byte order; unless `recursive`,
/// keys with a further '/' collapse into one prefix entry per component; at
/// most `limit` of them (0: as many as allowed).
#[derive(Clone, Copy, Debug)]
pub struct Listing<'a> {
    pub prefix: &'a [u8],
    pub cursor: &'a [u8],
    pub recursive: bool,
    pub limit: usize,
}

/// What a listing returns, relative to the listed prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry {
    /// Everything below `key` (which ends with '/'), collapsed.
    Prefix(Vec<u8>),
    Object(Vec<u8>, Box<Object>),
}

impl ListEntry {
    pub fn key(&self) -> &[u8] {
        match self {
            ListEntry::Prefix(k) | ListEntry::Object(k, _) => k,
        }
    }
}

pub const MAX_LIST_LIMIT: usize = 1000;

/// How often a commit that lost a race is tried again.
const COMMIT_ATTEMPTS: u64 = 50;

/// The smallest byte string greater than every string starting with `prefix`,
/// or `None` when no such string exists (empty or all-0xFF prefix).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

const OBJECT_COLUMNS: &str = "stream_id, project_id, bucket, object_key, committed, created_at, \
     expires_at, cipher, block_size, encrypted_metadata, encrypted_metadata_key, \
     encrypted_metadata_nonce, plain_size, segment_count, multipart";

const SEGMENT_COLUMNS: &str = "stream_id, position, root_piece_id, encrypted_key, \
     encrypted_key_nonce, plain_offset, plain_size, encrypted_size, redundancy, inline_data, \
     pieces, created_at";

const NODE_COLUMNS: &str = "id, public_key, address, last_net, capacity_bytes, free_bytes, \
     version, last_contact, created_at";

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

/// Whether a transaction that failed this way may succeed when run again:
/// a uniqueness race, a serialization failure (SQLSTATE 40001) or a deadlock
/// victim (40P01: copies in opposite directions lock the same two objects).
fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.is_unique_violation()
                || e.code()
                    .is_some_and(|code| code == "40001" || code == "40P01")
        }
        _ => false,
    }
}

/// Runs a transaction that commits an object under a key until it does not
/// lose a race: two commits of one key raced (PostgreSQL) or the transaction
/// must be retried (CockroachDB), and the next attempt sees the winner. Every
/// round has a winner, so racers get through one by one; a random pause keeps
/// them from meeting again in lockstep.
async fn retry_commit<T, F, Fut>(mut transaction: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match transaction().await {
            Err(Error::Database(e)) if attempt < COMMIT_ATTEMPTS && is_retryable(&e) => {
                attempt += 1;
                tracing::debug!("retrying an object commit after: {e}");
                let pause = rand::random::<u64>() % (5 * attempt);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// Whether a database error is a uniqueness violation.
/// Splits a multipart upload's segments (in position order) into those of
/// the `chosen` parts (number, encrypted info as the client listed it), which
/// must be recorded with that info, ascending and each complete, and the rest.
fn choose_parts(
    segments: Vec<Segment>,
    recorded: &[Part],
    chosen: &[(u32, Vec<u8>)],
) -> Result<(Vec<Segment>, Vec<Segment>)> {
    if chosen.is_empty() {
        return Err(Error::InvalidArgument(
            "a multipart upload is completed with at least one part".into(),
        ));
    }
    if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::InvalidArgument(
            "the parts must be named in ascending order".into(),
        ));
    }
    let mut wanted = HashMap::new();
    for (number, info) in chosen {
        let part = recorded
            .iter()
            .find(|p| p.part_number == i64::from(*number))
            .ok_or_else(|| Error::FailedPrecondition(format!("part {number} was not uploaded")))?;
        if part.encrypted_info != *info {
            return Err(Error::FailedPrecondition(format!(
                "part {number} was recorded again since it was listed"
            )));
        }
        wanted.insert(*number, (part, 0i64, 0i64));
    }
    let (kept, dropped): (Vec<Segment>, Vec<Segment>) = segments
        .into_iter()
        .partition(|s| wanted.contains_key(&multipart::part_of(s.position)));
    for segment in &kept {
        let number = multipart::part_of(segment.position);
        if let Some((_, count, size)) = wanted.get_mut(&number) {
            if i64::from(multipart::index_in_part(segment.position)) != *count {
                return Err(Error::FailedPrecondition(format!(
                    "segment {count} of part {number} is missing"
                )));
            }
            *count += 1;
            *size = size.saturating_add(segment.plain_size);
        }
    }
    for (number, (part, count, size)) in &wanted {
        if *count != part.segment_count || *size != part.plain_size {
            return Err(Error::FailedPrecondition(format!(
                "part {number} has changed since it was recorded"
            )));
        }
    }
    Ok((kept, dropped))
}

/// The segments among `records` that have pieces on nodes, to be deleted.
fn removed_segments(records: Vec<SegmentRecord>) -> Result<Vec<RemovedSegment>> {
    let mut removed = Vec::new();
    for record in records {
        let segment = Segment::try_from(record)?;
        if !segment.pieces.is_empty() {
            removed.push(RemovedSegment::from(segment));
        }
    }
    Ok(removed)
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// What commits a pending object.
#[derive(Clone, Debug, Default)]
pub struct ObjectCommit {
    pub stream_id: Vec<u8>,
    pub encrypted_metadata: Vec<u8>,
    pub encrypted_metadata_key: Vec<u8>,
    pub encrypted_metadata_nonce: Vec<u8>,
    /// Multipart only: the parts that make the object, each by its number and
    /// its info as the client listed it.
    pub parts: Vec<(u32, Vec<u8>)>,
    /// Single uploads only: the last segment, added in the same transaction.
    pub last_segment: Option<Segment>,
}

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

    // ------------------------------------------------------------ projects

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

    // ------------------------------------------------------------ buckets

    pub async fn create_bucket(&self, project: &[u8], name: &str, now: i64) -> Result<Bucket> {
        self.create_bucket_with(project, name, false, now).await
    }

    /// Creates a bucket whose object names are stored unencrypted if `plain_names`.
    pub async fn create_bucket_with(
        &self,
        project: &[u8],
        name: &str,
        plain_names: bool,
        now: i64,
    ) -> Result<Bucket> {
        let _writing = self.writing().await;
        let result = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO buckets (project_id, name, created_at, plain_names) \
                 VALUES ($1, $2, $3, $4)",
            )
                .bind(project)
                .bind(name)
                .bind(now)
                .bind(i64::from(plain_names))
                .execute(pool)
                .await
                .map(|_| ())
        });
        match result {
            Ok(()) => Ok(Bucket {
                name: name.to_string(),
                created_at: now,
                plain_names,
            }),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists(format!("bucket {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_bucket(&self, project: &[u8], name: &str) -> Result<Bucket> {
        let bucket: Option<BucketRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT name, created_at, plain_names FROM buckets \
                 WHERE project_id = $1 AND name = $2",
            )
                .bind(project)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        bucket
            .map(Bucket::from)
            .ok_or_else(|| Error::NotFound(format!("bucket {name:?}")))
    }

    /// Deletes a bucket that holds no objects, committed or pending.
    pub async fn delete_bucket(&self, project: &[u8], name: &str) -> Result<()> {
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM buckets WHERE project_id = $1 AND name = $2")
                .bind(project)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(Error::NotFound(format!("bucket {name:?}")));
            }
            let object: Option<(Vec<u8>,)> = sqlx::query_as(
                "SELECT stream_id FROM objects WHERE project_id = $1 AND bucket = $2 LIMIT 1",
            )
            .bind(project)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if object.is_some() {
                tx.rollback().await?;
                return Err(Error::FailedPrecondition(format!("bucket {name:?} is not empty")));
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Buckets in name order, strictly after `cursor`; the flag says whether more follow.
    pub async fn list_buckets(
        &self,
        project: &[u8],
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<Bucket>, bool)> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let rows: Vec<BucketRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT name, created_at, plain_names FROM buckets \
                 WHERE project_id = $1 AND name > $2 ORDER BY name LIMIT $3",
            )
            .bind(project)
            .bind(cursor)
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
        });
        let mut buckets: Vec<Bucket> = rows.into_iter().map(Bucket::from).collect();
        let more = buckets.len() > limit;
        buckets.truncate(limit);
        Ok((buckets, more))
    }

    // ------------------------------------------------------------ objects

    /// Records a pending object; its segments are attached to `stream_id`.
    pub async fn begin_object(&self, object: &Object) -> Result<()> {
        self.get_bucket(&object.project_id, &object.bucket).await?;
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            insert_object!(pool, object)?;
        });
        Ok(())
    }

    /// The object (pending or committed) of a stream, within a project.
    pub async fn object_by_stream(&self, project: &[u8], stream_id: &[u8]) -> Result<Object> {
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE stream_id = $1 AND project_id = $2"
        );
        let object: Option<Object> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(stream_id).bind(project).fetch_optional(pool).await?
        });
        object.ok_or_else(|| Error::NotFound("the object of this stream".into()))
    }

    /// Adds a segment to a pending object. A multipart upload's part may be
    /// uploaded again: its segment then replaces the one at that position,
    /// which is returned for its pieces to be deleted, and the part's record
    /// goes until the part is recorded again.
    pub async fn put_segment(
        &self,
        project: &[u8],
        segment: &Segment,
    ) -> Result<Option<RemovedSegment>> {
        let old_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 AND position = $2"
        );
        let root = if segment.inline_data.is_some() {
            Vec::new()
        } else {
            segment.root_piece_id.to_vec()
        };
        let position = i64::from(segment.position);
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            // Touch the object first so the write lock is taken before the read.
            let pending = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 0",
            )
            .bind(&segment.stream_id)
            .bind(project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pending == 0 {
                return Err(Error::NotFound("a pending object for this stream".into()));
            }
            let (multipart,): (i64,) =
                sqlx::query_as("SELECT multipart FROM objects WHERE stream_id = $1")
                    .bind(&segment.stream_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let part = multipart::part_of(segment.position);
            if multipart != 0 && !(1..=multipart::MAX_PART).contains(&part) {
                return Err(Error::InvalidArgument(format!(
                    "position {} is not in a part of this multipart upload",
                    segment.position
                )));
            }
            let mut replaced = None;
            if multipart != 0 {
                // A part being uploaded again is no longer the part recorded:
                // if this upload fails, completing must not mix the two.
                sqlx::query("DELETE FROM parts WHERE stream_id = $1 AND part_number = $2")
                    .bind(&segment.stream_id)
                    .bind(i64::from(part))
                    .execute(&mut *tx)
                    .await?;
                let old: Option<SegmentRecord> = sqlx::query_as(&old_sql)
                    .bind(&segment.stream_id)
                    .bind(position)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(old) = old {
                    // The same segment committed again (a retried request)
                    // is not a new upload of the part: replacing it would
                    // delete its own pieces.
                    if !root.is_empty() && old.root_piece_id == root {
                        return Err(Error::AlreadyExists(format!(
                            "segment {} of this object",
                            segment.position
                        )));
                    }
                    sqlx::query("DELETE FROM segments WHERE stream_id = $1 AND position = $2")
                        .bind(&segment.stream_id)
                        .bind(position)
                        .execute(&mut *tx)
                        .await?;
                    replaced = Some(Segment::try_from(old)?)
                        .filter(|s| !s.pieces.is_empty())
                        .map(RemovedSegment::from);
                }
            }
            insert_segment!(&mut *tx, segment)?;
            tx.commit().await?;
            Ok(replaced)
        })
    }

    /// Records part `part` of a pending multipart upload as its segments
    /// `0 .. n` holding `plain_size` bytes, segment `i` committed with the
    /// key nonce `segment_key_nonces[i]` (so that they are this upload's);
    /// segments beyond them (left by an earlier, longer upload of the part)
    /// are removed and returned. Recording a part again replaces its record.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_part(
        &self,
        project: &[u8],
        stream_id: &[u8],
        part: u32,
        segment_key_nonces: &[Vec<u8>],
        plain_size: i64,
        encrypted_info: &[u8],
        now: i64,
    ) -> Result<Vec<RemovedSegment>> {
        let segment_count = u32::try_from(segment_key_nonces.len()).unwrap_or(u32::MAX);
        let Some(first) = multipart::position(part, 0) else {
            return Err(Error::InvalidArgument(format!(
                "part number {part} is not between 1 and {}",
                multipart::MAX_PART
            )));
        };
        if segment_count == 0 || segment_count > multipart::MAX_PART_SEGMENTS {
            return Err(Error::InvalidArgument(format!(
                "a part has 1 to {} segments, not {segment_count}",
                multipart::MAX_PART_SEGMENTS
            )));
        }
        let first = i64::from(first);
        let end = first + i64::from(segment_count);
        let part_end = first + i64::from(multipart::MAX_PART_SEGMENTS);
        let segments_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 \
             AND position >= $2 AND position < $3 ORDER BY position"
        );
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let pending = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 0 AND multipart = 1",
            )
            .bind(stream_id)
            .bind(project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pending == 0 {
                return Err(Error::NotFound("a pending multipart upload for this stream".into()));
            }
            let stale: Vec<SegmentRecord> = sqlx::query_as(&segments_sql)
                .bind(stream_id)
                .bind(end)
                .bind(part_end)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM segments WHERE stream_id = $1 AND position >= $2 AND position < $3")
                .bind(stream_id)
                .bind(end)
                .bind(part_end)
                .execute(&mut *tx)
                .await?;
            let records: Vec<SegmentRecord> = sqlx::query_as(&segments_sql)
                .bind(stream_id)
                .bind(first)
                .bind(end)
                .fetch_all(&mut *tx)
                .await?;
            let mut total = 0i64;
            for (index, record) in records.iter().enumerate() {
                if record.position != first + index as i64 {
                    return Err(Error::FailedPrecondition(format!(
                        "segment {index} of part {part} was not uploaded"
                    )));
                }
                if segment_key_nonces.get(index) != Some(&record.encrypted_key_nonce) {
                    return Err(Error::FailedPrecondition(format!(
                        "segment {index} of part {part} is another upload's: \
                         was the part uploaded twice at once?"
                    )));
                }
                total = total.saturating_add(record.plain_size);
            }
            if records.len() != segment_count as usize || total != plain_size {
                return Err(Error::FailedPrecondition(format!(
                    "part {part} holds {} segments of {total} bytes, not {segment_count} of \
                     {plain_size}: was it uploaded twice at once?",
                    records.len()
                )));
            }
            sqlx::query("DELETE FROM parts WHERE stream_id = $1 AND part_number = $2")
                .bind(stream_id)
                .bind(i64::from(part))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO parts (stream_id, part_number, plain_size, segment_count, \
                 encrypted_info, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(stream_id)
            .bind(i64::from(part))
            .bind(plain_size)
            .bind(i64::from(segment_count))
            .bind(encrypted_info)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            removed_segments(stale)
        })
    }

    /// The multipart upload of a stream and its parts numbered above `after`,
    /// at most `limit` of them, and whether more follow. A completed upload
    /// is its committed object (as long as that is there), with no parts.
    pub async fn list_parts(
        &self,
        project: &[u8],
        stream_id: &[u8],
        after: u32,
        limit: usize,
    ) -> Result<(Object, Vec<Part>, bool)> {
        let object = self.object_by_stream(project, stream_id).await?;
        if object.multipart == 0 {
            return Err(Error::NotFound(
                "a pending multipart upload for this stream".into(),
            ));
        }
        if object.committed != 0 {
            // Completed: the parts are the object's now.
            return Ok((object, Vec::new(), false));
        }
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let mut parts: Vec<Part> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT part_number, plain_size, segment_count, encrypted_info, created_at \
                 FROM parts WHERE stream_id = $1 AND part_number > $2 \
                 ORDER BY part_number LIMIT $3",
            )
            .bind(stream_id)
            .bind(i64::from(after))
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
        });
        let more = parts.len() > limit;
        parts.truncate(limit);
        Ok((object, parts, more))
    }

    /// Pending multipart uploads of a bucket, by key then stream id, after the
    /// one of `cursor` (a key and stream id), at most `limit`, and whether more follow.
    pub async fn list_multipart_uploads(
        &self,
        project: &[u8],
        bucket: &str,
        cursor: Option<(&[u8], &[u8])>,
        limit: usize,
    ) -> Result<(Vec<Object>, bool)> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let (key, stream) = cursor.unwrap_or((&[], &[]));
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND multipart = 1 AND committed = 0 \
             AND (object_key > $3 OR (object_key = $3 AND stream_id > $4)) \
             ORDER BY object_key, stream_id LIMIT $5"
        );
        let mut objects: Vec<Object> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(project)
                .bind(bucket)
                .bind(key)
                .bind(stream)
                .bind(limit as i64 + 1)
                .fetch_all(pool)
                .await?
        });
        let more = objects.len() > limit;
        objects.truncate(limit);
        Ok((objects, more))
    }

    /// Deletes a pending object of the project with whatever it stored;
    /// returns its remote segments.
    pub async fn abort_object(
        &self,
        project: &[u8],
        stream_id: &[u8],
    ) -> Result<Vec<RemovedSegment>> {
        let object = self.object_by_stream(project, stream_id).await?;
        if object.committed != 0 {
            return Err(Error::FailedPrecondition(
                "the upload is already complete".into(),
            ));
        }
        self.delete_stream(stream_id, 0)
            .await?
            .ok_or_else(|| Error::NotFound("a pending object for this stream".into()))
    }

    /// The segments of a stream in position order.
    pub async fn segments(&self, stream_id: &[u8]) -> Result<Vec<Segment>> {
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 ORDER BY position"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(stream_id).fetch_all(pool).await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    pub async fn segment(&self, stream_id: &[u8], position: u32) -> Result<Segment> {
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 AND position = $2"
        );
        let record: Option<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(stream_id)
                .bind(i64::from(position))
                .fetch_optional(pool)
                .await?
        });
        record
            .ok_or_else(|| Error::NotFound(format!("segment {position}")))?
            .try_into()
    }

    /// Commits a pending object: its segments must be positions 0..n, or for a
    /// multipart upload the recorded `parts` (ascending numbers, each with its
    /// encrypted info as the client listed it), whose segments are kept while
    /// those of other parts go. Replaces a committed object of the
    /// same key; returns the committed object and the segments whose pieces
    /// are now garbage (the replaced object's and the parts left out).
    pub async fn commit_object(
        &self,
        project: &[u8],
        commit: &ObjectCommit,
    ) -> Result<(Object, Vec<RemovedSegment>)> {
        retry_commit(|| self.commit_object_once(project, commit)).await
    }

    async fn commit_object_once(
        &self,
        project: &[u8],
        commit: &ObjectCommit,
    ) -> Result<(Object, Vec<RemovedSegment>)> {
        let stream_id = commit.stream_id.as_slice();
        let object_sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE stream_id = $1 AND project_id = $2"
        );
        let segments_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 ORDER BY position"
        );
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let touched = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 0",
            )
            .bind(stream_id)
            .bind(project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if touched == 0 {
                return Err(Error::NotFound("a pending object for this stream".into()));
            }
            let mut object: Object = sqlx::query_as(&object_sql)
                .bind(stream_id)
                .bind(project)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(segment) = &commit.last_segment {
                if object.multipart != 0 || segment.stream_id != stream_id {
                    return Err(Error::InvalidArgument(
                        "only a single upload commits its last segment with the object".into(),
                    ));
                }
                insert_segment!(&mut *tx, segment)?;
            }
            let records: Vec<SegmentRecord> =
                sqlx::query_as(&segments_sql).bind(stream_id).fetch_all(&mut *tx).await?;
            let segments = records
                .into_iter()
                .map(Segment::try_from)
                .collect::<Result<Vec<_>>>()?;
            let mut removed = Vec::new();
            let segments = if object.multipart != 0 {
                let recorded: Vec<Part> = sqlx::query_as(
                    "SELECT part_number, plain_size, segment_count, encrypted_info, created_at \
                     FROM parts WHERE stream_id = $1",
                )
                .bind(stream_id)
                .fetch_all(&mut *tx)
                .await?;
                let (kept, dropped) = choose_parts(segments, &recorded, &commit.parts)?;
                for segment in dropped {
                    sqlx::query("DELETE FROM segments WHERE stream_id = $1 AND position = $2")
                        .bind(stream_id)
                        .bind(i64::from(segment.position))
                        .execute(&mut *tx)
                        .await?;
                    if !segment.pieces.is_empty() {
                        removed.push(RemovedSegment::from(segment));
                    }
                }
                sqlx::query("DELETE FROM parts WHERE stream_id = $1")
                    .bind(stream_id)
                    .execute(&mut *tx)
                    .await?;
                kept
            } else if !commit.parts.is_empty() {
                return Err(Error::InvalidArgument(
                    "parts are only named when completing a multipart upload".into(),
                ));
            } else {
                if let Some(index) = segments
                    .iter()
                    .enumerate()
                    .find_map(|(index, s)| (s.position as usize != index).then_some(index))
                {
                    return Err(Error::FailedPrecondition(format!(
                        "segment {index} is missing; segments must be contiguous from 0"
                    )));
                }
                segments
            };
            let mut offset = 0i64;
            for segment in &segments {
                if segment.plain_offset != offset {
                    sqlx::query("UPDATE segments SET plain_offset = $1 WHERE stream_id = $2 AND position = $3")
                        .bind(offset)
                        .bind(stream_id)
                        .bind(i64::from(segment.position))
                        .execute(&mut *tx)
                        .await?;
                }
                offset = offset.checked_add(segment.plain_size).ok_or_else(|| {
                    Error::InvalidArgument("the object's segments are too large in total".into())
                })?;
            }

            removed.extend(remove_committed!(tx, project, &object.bucket, &object.object_key));

            object.committed = 1;
            object.plain_size = offset;
            object.segment_count = segments.len() as i64;
            object.encrypted_metadata = commit.encrypted_metadata.clone();
            object.encrypted_metadata_key = commit.encrypted_metadata_key.clone();
            object.encrypted_metadata_nonce = commit.encrypted_metadata_nonce.clone();
            sqlx::query(
                "UPDATE objects SET committed = 1, plain_size = $1, segment_count = $2, \
                 encrypted_metadata = $3, encrypted_metadata_key = $4, \
                 encrypted_metadata_nonce = $5 WHERE stream_id = $6",
            )
            .bind(object.plain_size)
            .bind(object.segment_count)
            .bind(&object.encrypted_metadata)
            .bind(&object.encrypted_metadata_key)
            .bind(&object.encrypted_metadata_nonce)
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok((object, removed))
        })
    }

    /// Stores `object` (committed, of one segment) with its inline
    /// `segment` in one transaction, replacing a committed object of its key;
    /// returns the replaced object's segments.
    pub async fn put_inline_object(
        &self,
        object: &Object,
        segment: &Segment,
    ) -> Result<Vec<RemovedSegment>> {
        if object.committed == 0
            || segment.inline_data.is_none()
            || segment.stream_id != object.stream_id
        {
            return Err(Error::InvalidArgument(
                "an inline object is committed, with its own inline segment".into(),
            ));
        }
        self.get_bucket(&object.project_id, &object.bucket).await?;
        retry_commit(|| async {
            on_pool!(self, pool => {
                let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
                let removed =
                    remove_committed!(tx, &object.project_id, &object.bucket, &object.object_key);
                insert_object!(&mut *tx, object)?;
                insert_segment!(&mut *tx, segment)?;
                tx.commit().await?;
                Ok(removed)
            })
        })
        .await
    }

    /// Commits `copy` as a new object whose segments share the pieces of the
    /// committed object `source_stream` (same root piece ids and piece lists;
    /// only the wrapped segment keys differ). Replaces a committed object of
    /// the destination key, even the source itself; returns the new object
    /// and the replaced object's segments (their pieces are still listed by
    /// the copy when it replaced its own source, see [`Metabase::unlisted`]).
    pub async fn copy_object(
        &self,
        project: &[u8],
        source_stream: &[u8],
        copy: &ObjectCopy,
    ) -> Result<(Object, Vec<RemovedSegment>)> {
        self.get_bucket(project, &copy.bucket).await?;
        retry_commit(|| self.copy_object_once(project, source_stream, copy)).await
    }

    async fn copy_object_once(
        &self,
        project: &[u8],
        source_stream: &[u8],
        copy: &ObjectCopy,
    ) -> Result<(Object, Vec<RemovedSegment>)> {
        let object_sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE stream_id = $1 AND project_id = $2"
        );
        let segments_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 ORDER BY position"
        );
        let insert_segment_sql = format!(
            "INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            // Lock the source's rows before reading them (PostgreSQL): a delete
            // of the source or a repair's piece swap then waits for the copy,
            // and sees its segments when it decides which pieces are garbage.
            // An expired source is gone, even before the cleanup removes it.
            let touched = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 1 AND (expires_at = 0 OR expires_at > $3)",
            )
            .bind(source_stream)
            .bind(project)
            .bind(copy.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if touched == 0 {
                return Err(Error::NotFound("the source object".into()));
            }
            sqlx::query("UPDATE segments SET created_at = created_at WHERE stream_id = $1")
                .bind(source_stream)
                .execute(&mut *tx)
                .await?;
            let source: Object = sqlx::query_as(&object_sql)
                .bind(source_stream)
                .bind(project)
                .fetch_one(&mut *tx)
                .await?;
            let records: Vec<SegmentRecord> =
                sqlx::query_as(&segments_sql).bind(source_stream).fetch_all(&mut *tx).await?;
            let positions: Vec<i64> = records.iter().map(|r| r.position).collect();
            let keyed: Vec<i64> = copy.segment_keys.iter().map(|k| i64::from(k.position)).collect();
            if positions != keyed {
                return Err(Error::InvalidArgument(format!(
                    "a copy needs one key for each of the source's {} segments, in order",
                    positions.len()
                )));
            }
            let removed = remove_committed!(tx, project, &copy.bucket, &copy.object_key);
            let object = Object {
                stream_id: copy.stream_id.clone(),
                project_id: project.to_vec(),
                bucket: copy.bucket.clone(),
                object_key: copy.object_key.clone(),
                committed: 1,
                created_at: copy.created_at,
                encrypted_metadata: copy.encrypted_metadata.clone(),
                encrypted_metadata_key: copy.encrypted_metadata_key.clone(),
                encrypted_metadata_nonce: copy.encrypted_metadata_nonce.clone(),
                ..source
            };
            insert_object!(&mut *tx, &object)?;
            for (record, key) in records.into_iter().zip(&copy.segment_keys) {
                sqlx::query(&insert_segment_sql)
                    .bind(&object.stream_id)
                    .bind(record.position)
                    .bind(record.root_piece_id)
                    .bind(&key.encrypted_key)
                    .bind(&key.encrypted_key_nonce)
                    .bind(record.plain_offset)
                    .bind(record.plain_size)
                    .bind(record.encrypted_size)
                    .bind(record.redundancy)
                    .bind(record.inline_data)
                    .bind(record.pieces)
                    .bind(copy.created_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok((object, removed))
        })
    }

    /// The pieces of `removed` segments that no segment lists any more, the
    /// only ones that may be deleted from their nodes: a server-side copy's
    /// segments list the same pieces (same root piece id) as their source's.
    pub async fn unlisted(&self, removed: Vec<RemovedSegment>) -> Result<Vec<RemovedSegment>> {
        let mut unlisted = Vec::with_capacity(removed.len());
        for mut segment in removed {
            if segment.pieces.is_empty() {
                continue;
            }
            let lists: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
                sqlx::query_as("SELECT pieces FROM segments WHERE root_piece_id = $1")
                    .bind(segment.root_piece_id.as_slice())
                    .fetch_all(pool)
                    .await?
            });
            for (blob,) in lists {
                let listed = decode_pieces(&blob)?;
                segment
                    .pieces
                    .retain(|p| !listed.iter().any(|l| l.node == p.node && l.num == p.num));
            }
            if !segment.pieces.is_empty() {
                unlisted.push(segment);
            }
        }
        Ok(unlisted)
    }

    /// The committed object under a key, unless it expired by `now`.
    pub async fn get_object(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        now: i64,
    ) -> Result<Object> {
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND object_key = $3 AND committed = 1 AND (expires_at = 0 OR expires_at > $4)"
        );
        let object: Option<Object> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(project)
                .bind(bucket)
                .bind(key)
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        object.ok_or_else(|| Error::NotFound("the object".into()))
    }

    /// Deletes the committed object under a key with its segments.
    pub async fn delete_object(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
    ) -> Result<(Object, Vec<RemovedSegment>)> {
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND object_key = $3 AND committed = 1"
        );
        let object: Object = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project).bind(bucket).bind(key).fetch_optional(pool).await?
        })
        .ok_or_else(|| Error::NotFound("the object".into()))?;
        // Replaced or deleted since it was read: then there is nothing to delete.
        let removed = self
            .delete_stream(&object.stream_id, 1)
            .await?
            .ok_or_else(|| Error::NotFound("the object".into()))?;
        Ok((object, removed))
    }

    /// Removes an object row with its segments if its `committed` flag still
    /// has the given value: a pending upload may commit, or a committed object
    /// be replaced, in the meantime. Returns the remote segments removed, or
    /// `None` if the row was no longer there in that state.
    async fn delete_stream(
        &self,
        stream_id: &[u8],
        committed: i64,
    ) -> Result<Option<Vec<RemovedSegment>>> {
        // RETURNING: the piece lists as deleted, including any a repair
        // swapped in after this transaction began.
        let segments_sql =
            format!("DELETE FROM segments WHERE stream_id = $1 RETURNING {SEGMENT_COLUMNS}");
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM objects WHERE stream_id = $1 AND committed = $2")
                .bind(stream_id)
                .bind(committed)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                // Someone else changed or deleted it first and owns its pieces.
                return Ok(None);
            }
            let records: Vec<SegmentRecord> =
                sqlx::query_as(&segments_sql).bind(stream_id).fetch_all(&mut *tx).await?;
            sqlx::query("DELETE FROM parts WHERE stream_id = $1")
                .bind(stream_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(removed_segments(records)?))
        })
    }

    /// Deletes up to `batch` pending objects created before `cutoff` (multipart
    /// uploads: before `multipart_cutoff`); returns how many went and the remote
    /// segments they had.
    pub async fn delete_pending_before(
        &self,
        cutoff: i64,
        multipart_cutoff: i64,
        batch: usize,
    ) -> Result<(usize, Vec<RemovedSegment>)> {
        let streams: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT stream_id FROM objects WHERE committed = 0 AND created_at < $1 \
                 AND ((multipart = 0 AND created_at < $2) OR (multipart = 1 AND created_at < $3)) \
                 ORDER BY created_at LIMIT $4",
            )
            .bind(cutoff.max(multipart_cutoff))
            .bind(cutoff)
            .bind(multipart_cutoff)
            .bind(batch as i64)
            .fetch_all(pool)
            .await?
        });
        Ok((streams.len(), self.delete_streams(&streams, 0).await?))
    }

    /// Deletes each of `streams` still in the `committed` state with its
    /// segments; returns the remote segments removed.
    async fn delete_streams(
        &self,
        streams: &[(Vec<u8>,)],
        committed: i64,
    ) -> Result<Vec<RemovedSegment>> {
        let mut removed = Vec::new();
        for (stream_id,) in streams {
            removed.extend(
                self.delete_stream(stream_id, committed)
                    .await?
                    .unwrap_or_default(),
            );
        }
        Ok(removed)
    }

    /// Deletes up to `batch` committed objects that expired by `now`, with
    /// their segments; returns how many went and the remote segments they had.
    pub async fn delete_expired(
        &self,
        now: i64,
        batch: usize,
    ) -> Result<(usize, Vec<RemovedSegment>)> {
        let streams: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT stream_id FROM objects WHERE expires_at <> 0 AND expires_at <= $1 \
                 AND committed = 1 ORDER BY expires_at LIMIT $2",
            )
            .bind(now)
            .bind(batch as i64)
            .fetch_all(pool)
            .await?
        });
        Ok((streams.len(), self.delete_streams(&streams, 1).await?))
    }

    /// Lists committed objects of a bucket not expired by `now`, as `listing`
    /// asks. Returns at most `listing.limit` entries (capped at
    /// [`MAX_LIST_LIMIT`]) and whether more follow.
    pub async fn list_objects(
        &self,
        project: &[u8],
        bucket: &str,
        listing: &Listing<'_>,
        now: i64,
    ) -> Result<(Vec<ListEntry>, bool)> {
        let &Listing {
            prefix,
            cursor,
            recursive,
            limit,
        } = listing;
        let limit = if limit == 0 {
            MAX_LIST_LIMIT
        } else {
            limit.min(MAX_LIST_LIMIT)
        };
        let upper = prefix_end(prefix);
        // The listing resumes at `lower`, inclusive or not.
        let (mut lower, mut inclusive) = if cursor.is_empty() {
            (prefix.to_vec(), true)
        } else {
            let full = [prefix, cursor].concat();
            match cursor.iter().position(|&b| b == b'/') {
                // A cursor inside (or naming) a collapsed prefix skips all of it.
                Some(i) if !recursive => match prefix_end(&full[..prefix.len() + i + 1]) {
                    Some(end) => (end, true),
                    None => return Ok((Vec::new(), false)),
                },
                _ => (full, false),
            }
        };
        let sql_lower = |inclusive: bool| {
            let op = if inclusive { ">=" } else { ">" };
            let upper_clause = if upper.is_some() {
                " AND object_key < $6"
            } else {
                ""
            };
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
                 AND committed = 1 AND (expires_at = 0 OR expires_at > $5) \
                 AND object_key {op} $3{upper_clause} ORDER BY object_key LIMIT $4"
            )
        };
        let mut entries = Vec::new();
        'scan: while entries.len() <= limit {
            let want = (limit + 1 - entries.len()) as i64;
            let sql = sql_lower(inclusive);
            let rows: Vec<Object> = on_pool!(self, pool => {
                let mut query = sqlx::query_as(&sql)
                    .bind(project)
                    .bind(bucket)
                    .bind(&lower)
                    .bind(want)
                    .bind(now);
                if let Some(upper) = &upper {
                    query = query.bind(upper);
                }
                query.fetch_all(pool).await?
            });
            if rows.is_empty() {
                break;
            }
            let exhausted = (rows.len() as i64) < want;
            for object in rows {
                let relative = object.object_key[prefix.len()..].to_vec();
                if !recursive {
                    if let Some(i) = relative.iter().position(|&b| b == b'/') {
                        let component = relative[..=i].to_vec();
                        match prefix_end(&object.object_key[..prefix.len() + i + 1]) {
                            Some(end) => {
                                lower = end;
                                inclusive = true;
                            }
                            None => {
                                entries.push(ListEntry::Prefix(component));
                                break 'scan;
                            }
                        }
                        entries.push(ListEntry::Prefix(component));
                        // Re-query past everything below this component.
                        continue 'scan;
                    }
                }
                lower = object.object_key.clone();
                inclusive = false;
                entries.push(ListEntry::Object(relative, Box::new(object)));
                if entries.len() > limit {
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
        }
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }

    // ------------------------------------------------------------ nodes

    /// Records a node's check-in, creating it on first contact.
    pub async fn upsert_node(&self, node: &Node) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO nodes (id, public_key, address, last_net, capacity_bytes, free_bytes, \
                 version, last_contact, created_at, last_contact_success) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8) \
                 ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, \
                 address = excluded.address, last_net = excluded.last_net, \
                 capacity_bytes = excluded.capacity_bytes, free_bytes = excluded.free_bytes, \
                 version = excluded.version, last_contact = excluded.last_contact, \
                 last_contact_success = excluded.last_contact",
            )
            .bind(&node.id)
            .bind(&node.public_key)
            .bind(&node.address)
            .bind(&node.last_net)
            .bind(node.capacity_bytes)
            .bind(node.free_bytes)
            .bind(&node.version)
            .bind(node.last_contact)
            .bind(node.created_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Nodes that checked in at or after `online_since` with at least `min_free`
    /// bytes free, and are neither disqualified nor suspended.
    pub async fn eligible_nodes(&self, online_since: i64, min_free: i64) -> Result<Vec<Node>> {
        let (mut vetted, unvetted) = self
            .eligible_nodes_by_vetting(online_since, min_free, 0)
            .await?;
        vetted.extend(unvetted);
        Ok(vetted)
    }

    /// The [eligible nodes](Self::eligible_nodes), split into the vetted (at
    /// least `vetting_audits` successful audits) and the others.
    pub async fn eligible_nodes_by_vetting(
        &self,
        online_since: i64,
        min_free: i64,
        vetting_audits: u64,
    ) -> Result<(Vec<Node>, Vec<Node>)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            node: Node,
            audit_success: i64,
        }
        let sql = format!(
            "SELECT {NODE_COLUMNS}, audit_success FROM nodes WHERE last_contact >= $1 \
             AND free_bytes >= $2 AND disqualified_at IS NULL AND suspended_at IS NULL \
             AND exiting_at IS NULL"
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(online_since).bind(min_free).fetch_all(pool).await?
        });
        let needed = i64::try_from(vetting_audits).unwrap_or(i64::MAX);
        let (vetted, unvetted): (Vec<Row>, Vec<Row>) =
            rows.into_iter().partition(|r| r.audit_success >= needed);
        Ok((
            vetted.into_iter().map(|r| r.node).collect(),
            unvetted.into_iter().map(|r| r.node).collect(),
        ))
    }

    pub async fn node(&self, id: &NodeId) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_vec()).fetch_optional(pool).await?
        }))
    }

    /// The known nodes among `ids`.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Node>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_pool!(self, pool => {
            let mut builder = sqlx::QueryBuilder::new(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id IN ("));
            let mut separated = builder.separated(", ");
            for id in ids {
                separated.push_bind(id.to_vec());
            }
            builder.push(")");
            builder.build_query_as().fetch_all(pool).await?
        }))
    }

    pub async fn node_count(&self) -> Result<usize> {
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM nodes").fetch_one(pool).await?
        });
        Ok(count.max(0) as usize)
    }

    // ------------------------------------------------------------ node health

    /// A node's reputation, audit counts and standing; `None` for an unknown node.
    pub async fn node_health(
        &self,
        id: &NodeId,
        config: &ReputationConfig,
    ) -> Result<Option<NodeHealth>> {
        let sql = format!("SELECT {HEALTH_COLUMNS} FROM nodes WHERE id = $1");
        let row: Option<HealthRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_vec()).fetch_optional(pool).await?
        });
        Ok(row.map(|r| r.into_health(config)))
    }

    /// Applies one audit outcome to a node's reputation, counts and contact
    /// times, then disqualifies, suspends or unsuspends it as the new numbers
    /// call for. Returns the node's health afterwards (`None`: unknown node).
    pub async fn record_audit(
        &self,
        id: &NodeId,
        outcome: AuditOutcome,
        config: &ReputationConfig,
        now: i64,
    ) -> Result<Option<NodeHealth>> {
        // The reputation moves in one UPDATE so that concurrent outcomes add up.
        let (audit, unknown, counted, succeeded) = match outcome {
            AuditOutcome::Success => (Some(true), Some(true), 1i64, 1i64),
            AuditOutcome::Failure => (Some(false), None, 1, 0),
            AuditOutcome::Unknown => (None, Some(false), 1, 0),
            AuditOutcome::Offline => (None, None, 0, 0),
        };
        let contact = if outcome == AuditOutcome::Offline {
            "last_contact_failure"
        } else {
            "last_contact_success"
        };
        // NULL reputations start from the configured initial values ($2, $3).
        let mut sets = vec![
            format!("{contact} = $4"),
            "audit_total = audit_total + $5".to_string(),
            "audit_success = audit_success + $6".to_string(),
            "vetted_at = CASE WHEN vetted_at IS NULL AND audit_success + $6 >= $7 \
             THEN $4 ELSE vetted_at END"
                .to_string(),
        ];
        let mut increments = Vec::new();
        for (prefix, good) in [("audit", audit), ("unknown", unknown)] {
            if let Some(good) = good {
                let (alpha, beta) = reputation::increments(good, config);
                // Increments bind from $8 on, two per reputation.
                let a = 8 + increments.len();
                let b = a + 1;
                sets.push(format!(
                    "{prefix}_alpha = $1 * COALESCE({prefix}_alpha, $2) + ${a}"
                ));
                sets.push(format!(
                    "{prefix}_beta = $1 * COALESCE({prefix}_beta, $3) + ${b}"
                ));
                increments.push(alpha);
                increments.push(beta);
            }
        }
        let sql = format!(
            "UPDATE nodes SET {} WHERE id = ${} RETURNING {HEALTH_COLUMNS}",
            sets.join(", "),
            8 + increments.len()
        );
        let vetting = i64::try_from(config.vetting_audits).unwrap_or(i64::MAX);
        let row: Option<HealthRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql)
                .bind(config.lambda)
                .bind(config.initial_alpha)
                .bind(config.initial_beta)
                .bind(now)
                .bind(counted)
                .bind(succeeded)
                .bind(vetting);
            for increment in &increments {
                query = query.bind(*increment);
            }
            query.bind(id.to_vec()).fetch_optional(pool).await?
        });
        let Some(mut health) = row.map(|r| r.into_health(config)) else {
            return Ok(None);
        };
        self.count_contact(id, outcome != AuditOutcome::Offline, now)
            .await?;
        let verdict = health.verdict(config);
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            if verdict.disqualify {
                sqlx::query(
                    "UPDATE nodes SET disqualified_at = $1 WHERE id = $2 AND disqualified_at IS NULL",
                )
                .bind(now)
                .bind(id.to_vec())
                .execute(pool)
                .await?;
                health.disqualified_at.get_or_insert(now);
            }
            if verdict.suspend {
                sqlx::query(
                    "UPDATE nodes SET suspended_at = $1 WHERE id = $2 AND suspended_at IS NULL",
                )
                .bind(now)
                .bind(id.to_vec())
                .execute(pool)
                .await?;
                health.suspended_at.get_or_insert(now);
            }
            if verdict.unsuspend {
                sqlx::query("UPDATE nodes SET suspended_at = NULL WHERE id = $1")
                    .bind(id.to_vec())
                    .execute(pool)
                    .await?;
                health.suspended_at = None;
            }
        });
        Ok(Some(health))
    }

    /// Counts an audit contact in the node's current online window and drops
    /// windows older than the online score looks back.
    async fn count_contact(&self, id: &NodeId, reached: bool, now: i64) -> Result<()> {
        let window = now - now.rem_euclid(reputation::ONLINE_WINDOW_SECS);
        let oldest = now.saturating_sub(reputation::ONLINE_SCORE_PERIOD_SECS);
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO node_online_windows (node_id, window_start, total, online) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (node_id, window_start) DO UPDATE \
                 SET total = node_online_windows.total + 1, \
                 online = node_online_windows.online + excluded.online",
            )
            .bind(id.to_vec())
            .bind(window)
            .bind(i64::from(reached))
            .execute(pool)
            .await?;
            sqlx::query("DELETE FROM node_online_windows WHERE node_id = $1 AND window_start < $2")
                .bind(id.to_vec())
                .bind(oldest - reputation::ONLINE_WINDOW_SECS)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every audited node's online score at `now`: the share of its audit
    /// contacts in the recent windows that reached it. Nodes never audited
    /// in that time are missing (their score is 1).
    pub async fn online_scores(&self, now: i64) -> Result<Vec<(NodeId, f64)>> {
        let oldest = now.saturating_sub(reputation::ONLINE_SCORE_PERIOD_SECS);
        let since = oldest - oldest.rem_euclid(reputation::ONLINE_WINDOW_SECS);
        let rows: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT node_id, CAST(SUM(total) AS BIGINT), CAST(SUM(online) AS BIGINT) \
                 FROM node_online_windows WHERE window_start >= $1 GROUP BY node_id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, total, online)| {
                let id = NodeId::from_bytes(&id)
                    .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))?;
                Ok((id, reputation::online_score(total, online)))
            })
            .collect()
    }

    /// The disqualified nodes: never selected again, their pieces count as lost.
    pub async fn disqualified_nodes(&self) -> Result<Vec<NodeId>> {
        let rows: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM nodes WHERE disqualified_at IS NOT NULL")
                .fetch_all(pool)
                .await?
        });
        rows.iter()
            .map(|(id,)| {
                NodeId::from_bytes(id)
                    .map_err(|_| Error::Corrupt("a node id is not 32 bytes".into()))
            })
            .collect()
    }

    /// Up to `limit` remote segments of committed objects not expired by
    /// `now`, in (stream id, position) order from the first whose stream id is
    /// at least `from`.
    pub async fn committed_remote_segments_from(
        &self,
        from: &[u8],
        limit: usize,
        now: i64,
    ) -> Result<Vec<Segment>> {
        let columns = SEGMENT_COLUMNS
            .split(", ")
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM segments s JOIN objects o ON o.stream_id = s.stream_id \
             WHERE o.committed = 1 AND s.redundancy IS NOT NULL AND s.stream_id >= $1 \
             AND (o.expires_at = 0 OR o.expires_at > $3) \
             ORDER BY s.stream_id, s.position LIMIT $2"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(from)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(now)
                .fetch_all(pool)
                .await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    // ------------------------------------------------------------ containment

    /// Puts a node in containment with the challenge it left unanswered; a node
    /// already contained keeps its first challenge. Returns whether it was added.
    pub async fn contain(&self, pending: &PendingAudit) -> Result<bool> {
        let _writing = self.writing().await;
        let added = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pending_audits (node_id, stream_id, position, piece_num, piece_root, \
                 chunk_index, reverify_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (node_id) DO NOTHING",
            )
            .bind(pending.node.to_vec())
            .bind(&pending.stream_id)
            .bind(i64::from(pending.position))
            .bind(i64::from(pending.piece_num))
            .bind(pending.piece_root.to_vec())
            .bind(i64::try_from(pending.chunk_index).unwrap_or(i64::MAX))
            .bind(i64::from(pending.reverify_count))
            .bind(pending.created_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(added > 0)
    }

    /// The challenge a contained node still owes, if any.
    pub async fn pending_audit(&self, node: &NodeId) -> Result<Option<PendingAudit>> {
        let row: Option<PendingAuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT node_id, stream_id, position, piece_num, piece_root, chunk_index, \
                 reverify_count, created_at FROM pending_audits WHERE node_id = $1",
            )
            .bind(node.to_vec())
            .fetch_optional(pool)
            .await?
        });
        row.map(PendingAudit::try_from).transpose()
    }

    /// Counts one more unanswered retry of a node's pending audit; returns the
    /// new count (`None` if the node is no longer contained).
    pub async fn count_reverification(&self, node: &NodeId) -> Result<Option<u32>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "UPDATE pending_audits SET reverify_count = reverify_count + 1 \
                 WHERE node_id = $1 RETURNING reverify_count",
            )
            .bind(node.to_vec())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(n,)| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Releases a node from containment.
    pub async fn release(&self, node: &NodeId) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM pending_audits WHERE node_id = $1")
                .bind(node.to_vec())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
    // ------------------------------------------------------------ repair

    /// What the repair checker needs to know of every node.
    pub async fn node_standings(&self) -> Result<Vec<NodeStanding>> {
        let sql = format!("SELECT {STANDING_COLUMNS} FROM nodes");
        let rows: Vec<NodeStandingRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter().map(NodeStanding::try_from).collect()
    }

    /// The standings of the known nodes among `ids`.
    pub async fn node_standings_of(&self, ids: &[NodeId]) -> Result<Vec<NodeStanding>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<NodeStandingRow> = on_pool!(self, pool => {
            let mut builder =
                sqlx::QueryBuilder::new(format!("SELECT {STANDING_COLUMNS} FROM nodes WHERE id IN ("));
            let mut separated = builder.separated(", ");
            for id in ids {
                separated.push_bind(id.to_vec());
            }
            builder.push(")");
            builder.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(NodeStanding::try_from).collect()
    }

    /// Every node with its health, for the admin API.
    pub async fn nodes_with_health(
        &self,
        config: &ReputationConfig,
    ) -> Result<Vec<(Node, NodeHealth, Option<i64>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            node: Node,
            #[sqlx(flatten)]
            health: HealthRow,
            exiting_at: Option<i64>,
        }
        let sql =
            format!("SELECT {NODE_COLUMNS}, {HEALTH_COLUMNS}, exiting_at FROM nodes ORDER BY id");
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(|r| (r.node, r.health.into_health(config), r.exiting_at))
            .collect())
    }

    /// Marks a node as exiting: it gets no new pieces and repair moves its
    /// pieces elsewhere. Returns false for an unknown node.
    pub async fn set_exiting(&self, id: &NodeId, now: i64) -> Result<bool> {
        let _writing = self.writing().await;
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE nodes SET exiting_at = COALESCE(exiting_at, $2) WHERE id = $1")
                .bind(id.to_vec())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed > 0)
    }

    /// Up to `limit` remote segments (of committed and pending objects not
    /// expired at `now`) after `after` in (stream id, position) order: one
    /// step of the checker's scan.
    pub async fn remote_segments_after(
        &self,
        after: Option<&SegmentKey>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Segment>> {
        let (stream, position) = match after {
            Some(key) => (key.stream_id.clone(), i64::from(key.position)),
            None => (Vec::new(), -1),
        };
        let columns = SEGMENT_COLUMNS
            .split(", ")
            .map(|c| format!("s.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM segments s JOIN objects o ON o.stream_id = s.stream_id \
             WHERE s.redundancy IS NOT NULL AND (o.expires_at = 0 OR o.expires_at > $3) \
             AND (s.stream_id > $1 OR (s.stream_id = $1 AND s.position > $2)) \
             ORDER BY s.stream_id, s.position LIMIT $4"
        );
        let records: Vec<SegmentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(stream)
                .bind(position)
                .bind(now)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        records.into_iter().map(Segment::try_from).collect()
    }

    /// When the pieces of a stream's segments expire (0 = never); `None` if
    /// the stream is gone.
    pub async fn stream_expiration(&self, stream_id: &[u8]) -> Result<Option<i64>> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT expires_at FROM objects WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(at,)| at))
    }

    /// Puts a segment in the repair queue, or updates its health there.
    pub async fn enqueue_repair(&self, item: &QueuedSegment, now: i64) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO repair_queue (stream_id, position, healthy, margin, inserted_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (stream_id, position) \
                 DO UPDATE SET healthy = excluded.healthy, margin = excluded.margin, \
                 updated_at = excluded.updated_at",
            )
            .bind(&item.key.stream_id)
            .bind(i64::from(item.key.position))
            .bind(i64::from(item.healthy))
            .bind(i64::from(item.healthy) - i64::from(item.required))
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Drops queue entries the checker did not see in a whole pass that
    /// started at `pass_start`: their segments are gone.
    pub async fn prune_repair_queue(&self, pass_start: i64) -> Result<u64> {
        let _writing = self.writing().await;
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM repair_queue WHERE updated_at < $1")
                .bind(pass_start)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Claims the queued segment most at risk (least margin) that nobody holds
    /// a live claim on, until `until`. Lost segments (fewer healthy pieces than
    /// `k`) are tried too: pieces on suspended, exiting or clumped nodes may
    /// still make up `k`. Several workers and
    /// satellite processes can call this at once: the claim is a conditional
    /// update, so exactly one of them wins a segment.
    pub async fn claim_repair(&self, now: i64, until: i64) -> Result<Option<RepairClaim>> {
        // The riskiest few, tried in order: workers racing for the first one
        // fall through to the next instead of idling.
        let candidates: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT stream_id, position, attempts FROM repair_queue \
                 WHERE claimed_until < $1 ORDER BY margin, inserted_at LIMIT $2",
            )
            .bind(now)
            .bind(CLAIM_CANDIDATES)
            .fetch_all(pool)
            .await?
        });
        for (stream_id, position, attempts) in candidates {
            let token: [u8; 16] = rand::random();
            let _writing = self.writing().await;
            let won = on_pool!(self, pool => {
                sqlx::query(
                    "UPDATE repair_queue SET claimed_until = $3, claim = $4, \
                     attempts = attempts + 1 \
                     WHERE stream_id = $1 AND position = $2 AND claimed_until < $5",
                )
                .bind(&stream_id)
                .bind(position)
                .bind(until)
                .bind(token.to_vec())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if won == 1 {
                let position = u32::try_from(position)
                    .map_err(|_| Error::Corrupt(format!("segment position {position}")))?;
                return Ok(Some(RepairClaim {
                    key: SegmentKey {
                        stream_id,
                        position,
                    },
                    token,
                    attempts: attempts.saturating_add(1),
                }));
            }
        }
        Ok(None)
    }

    /// Ends a claim: the segment leaves the queue (`retry_at` = None) or stays
    /// for another try after `retry_at`, with the reason it failed.
    pub async fn finish_repair(
        &self,
        claim: &RepairClaim,
        retry_at: Option<(i64, &str)>,
    ) -> Result<()> {
        let _writing = self.writing().await;
        on_pool!(self, pool => {
            match retry_at {
                None => sqlx::query(
                    "DELETE FROM repair_queue WHERE stream_id = $1 AND position = $2 AND claim = $3",
                )
                .bind(&claim.key.stream_id)
                .bind(i64::from(claim.key.position))
                .bind(claim.token.to_vec())
                .execute(pool)
                .await?,
                Some((at, why)) => sqlx::query(
                    "UPDATE repair_queue SET claimed_until = $4, last_error = $5, claim = NULL \
                     WHERE stream_id = $1 AND position = $2 AND claim = $3",
                )
                .bind(&claim.key.stream_id)
                .bind(i64::from(claim.key.position))
                .bind(claim.token.to_vec())
                .bind(at)
                .bind(printable(why, MAX_ERROR_TEXT))
                .execute(pool)
                .await?,
            };
        });
        Ok(())
    }

    /// Replaces a segment's piece list with `new` only if it still is `old`:
    /// a segment deleted, overwritten or repaired meanwhile is left alone.
    /// Returns whether the swap happened.
    pub async fn swap_pieces(
        &self,
        key: &SegmentKey,
        old: &[Piece],
        new: &[Piece],
    ) -> Result<bool> {
        let _writing = self.writing().await;
        let swapped = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE segments SET pieces = $3 WHERE stream_id = $1 AND position = $2 \
                 AND pieces = $4",
            )
            .bind(&key.stream_id)
            .bind(i64::from(key.position))
            .bind(encode_pieces(new))
            .bind(encode_pieces(old))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(swapped == 1)
    }

    /// The queue, most at risk first: at most `limit` entries, and whether
    /// only lost segments (margin < 0) are wanted.
    pub async fn repair_queue(&self, limit: usize, lost_only: bool) -> Result<Vec<QueueEntry>> {
        let sql = format!(
            "SELECT stream_id, position, healthy, margin, inserted_at, updated_at, attempts, \
             last_error FROM repair_queue {} ORDER BY margin, inserted_at LIMIT $1",
            if lost_only { "WHERE margin < 0" } else { "" }
        );
        let rows: Vec<QueueEntryRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(QueueEntry::try_from).collect()
    }

    /// How many segments wait for repair, and how many of them are lost.
    pub async fn repair_queue_counts(&self) -> Result<(u64, u64)> {
        let (queued, lost): (i64, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*), SUM(CASE WHEN margin < 0 THEN 1 ELSE 0 END) FROM repair_queue",
            )
            .fetch_one(pool)
            .await?
        });
        Ok((queued.max(0) as u64, lost.unwrap_or(0).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use archipel_proto::hostile;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn prefix_end_is_the_least_upper_bound() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn error_texts_are_printable_and_bounded() {
        assert_eq!(printable("a\0b\nc", 10), "abc");
        assert_eq!(printable("ééééé", 3), "ééé");
    }

    #[test]
    fn piece_lists_round_trip() {
        let pieces = vec![
            Piece {
                num: 3,
                node: NodeId([7; 32]),
                root: [9; 32],
            },
            Piece {
                num: 300,
                node: NodeId([1; 32]),
                root: [2; 32],
            },
        ];
        assert_eq!(decode_pieces(&encode_pieces(&pieces)).unwrap(), pieces);
        assert!(decode_pieces(&[0; 65]).is_err());
    }

    /// A piece list off the database: refused unless a whole number of
    /// records, and then decoded into pieces that encode back to it exactly.
    fn piece_list_is_checked(blob: Vec<u8>) -> Result<(), TestCaseError> {
        match decode_pieces(&blob) {
            Ok(pieces) => prop_assert_eq!(encode_pieces(&pieces), blob),
            Err(Error::Corrupt(_)) => prop_assert!(!blob.len().is_multiple_of(PIECE_RECORD)),
            Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_piece_lists_are_refused_or_decoded_exactly:
            prop::collection::vec(
                (any::<u16>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(num, node, root)| {
                    Piece {
                        num,
                        node: NodeId(node),
                        root,
                    }
                }),
                0..5,
            )
            .prop_flat_map(|pieces| hostile::bytes_or_mutated(encode_pieces(&pieces)))
            => piece_list_is_checked;
    }
}
