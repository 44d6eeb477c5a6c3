//! Buckets, and the objects in them: pending uploads, commits, server-side
//! copies, deletes, expiry and listings, and the versions of each key.
//!
//! Every committed row of a key is one of its versions, numbered in commit
//! order; the newest one not expired is the key's current version, and the
//! key holds no object when that is a delete marker. A write while the
//! bucket's versioning is enabled adds a version; otherwise it replaces the
//! key's null version (see [`Versioning`]). Writes and deletes may carry a
//! [`Precondition`] on the current version, checked in their transaction.

use std::time::Duration;

use super::access::BucketAccess;
use super::locks::{protect_new_version, removal_refused, ObjectLock, RetentionMode, VersionLock};
use super::multipart::{choose_parts, Part};
use super::segments::{
    encode_pieces, redundancy_text, removed_segments, RemovedSegment, Segment, SegmentRecord,
    WrappedSegmentKey,
};
use super::{
    is_unique_violation, BeginWrite, Metabase, Pool, MAX_LIST_LIMIT, OBJECT_COLUMNS,
    SEGMENT_COLUMNS,
};
use crate::{Error, Result};
use archipel_proto::orders::unix_now;
use archipel_proto::version::VersionId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub created_at: i64,
    /// The client stores object names in this bucket unencrypted, so keys sort
    /// in the names' own order; chosen at creation.
    pub plain_names: bool,
    pub versioning: Versioning,
    pub object_lock: ObjectLock,
    /// Tags as (key, value), in the order set.
    pub tags: Vec<(String, String)>,
    pub access: BucketAccess,
}

/// Whether a bucket's writes keep the versions they replace, as S3's
/// versioning: once enabled it can be suspended but never turned off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a write replaces the key's (null) version.
    #[default]
    Unversioned,
    /// Every write adds a version; a delete adds a delete marker.
    Enabled,
    /// Writes and deletes replace the key's null version; other versions stay.
    Suspended,
}

impl Versioning {
    pub(crate) fn from_db(state: i64) -> Result<Versioning> {
        match state {
            0 => Ok(Versioning::Unversioned),
            1 => Ok(Versioning::Enabled),
            2 => Ok(Versioning::Suspended),
            other => Err(Error::Corrupt(format!("bucket versioning state {other}"))),
        }
    }

    pub(crate) fn to_db(self) -> i64 {
        match self {
            Versioning::Unversioned => 0,
            Versioning::Enabled => 1,
            Versioning::Suspended => 2,
        }
    }
}

/// A bucket as stored (flags are BIGINT 0/1).
#[derive(sqlx::FromRow)]
pub(super) struct BucketRow {
    pub(super) name: String,
    pub(super) created_at: i64,
    pub(super) plain_names: i64,
    pub(super) versioning: i64,
    pub(super) object_lock: i64,
    pub(super) lock_mode: i64,
    pub(super) lock_days: i64,
    pub(super) lock_years: i64,
    pub(super) tags: Vec<u8>,
    pub(super) acl: i64,
    pub(super) public_access_block: i64,
    pub(super) cors: Vec<u8>,
}

impl TryFrom<BucketRow> for Bucket {
    type Error = Error;

    fn try_from(row: BucketRow) -> Result<Bucket> {
        let object_lock = ObjectLock::from_row(&row)?;
        let access = BucketAccess::from_row(&row)?;
        let tags = <archipel_proto::pb::BucketTags as prost::Message>::decode(row.tags.as_slice())
            .map_err(|e| Error::Corrupt(format!("the tags of bucket {:?}: {e}", row.name)))?
            .tags
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect();
        Ok(Bucket {
            object_lock,
            tags,
            access,
            name: row.name,
            created_at: row.created_at,
            plain_names: row.plain_names != 0,
            versioning: Versioning::from_db(row.versioning)?,
        })
    }
}

pub(super) const BUCKET_COLUMNS: &str =
    "name, created_at, plain_names, versioning, object_lock, lock_mode, lock_days, lock_years, \
     tags, acl, public_access_block, cors";

/// Tags a bucket may have at most, and the longest key and value (in
/// characters), as S3.
const MAX_BUCKET_TAGS: usize = 50;
const MAX_TAG_KEY_CHARS: usize = 128;
const MAX_TAG_VALUE_CHARS: usize = 256;

fn check_bucket_tags(tags: &[(String, String)]) -> Result<()> {
    if tags.len() > MAX_BUCKET_TAGS {
        return Err(Error::InvalidArgument(format!(
            "a bucket has at most {MAX_BUCKET_TAGS} tags"
        )));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(Error::InvalidArgument(format!(
                "a tag key is 1 to {MAX_TAG_KEY_CHARS} characters"
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(Error::InvalidArgument(format!(
                "a tag value is at most {MAX_TAG_VALUE_CHARS} characters"
            )));
        }
        if tags[..i].iter().any(|(earlier, _)| earlier == key) {
            return Err(Error::InvalidArgument(format!(
                "the tag key {key:?} is given twice"
            )));
        }
    }
    Ok(())
}

/// Which version of a key a read or a delete means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionRef {
    /// The current one.
    Latest,
    /// The key's null version (see [`Versioning`]).
    Null,
    Exact(VersionId),
}

/// A condition on a key's current version that a write or delete needs,
/// checked in its transaction; [`Error::ConditionFailed`] otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key holds no object (nothing, or a delete marker).
    Absent,
    /// The key's current object is this version.
    Current(VersionId),
}

/// One version of a key, as a write's checks need it.
#[derive(sqlx::FromRow)]
pub(super) struct VersionRow {
    pub(super) stream_id: Vec<u8>,
    pub(super) version: i64,
    pub(super) versioning: i64,
    pub(super) delete_marker: i64,
    pub(super) expires_at: i64,
    pub(super) retention_mode: i64,
    pub(super) retain_until: i64,
    pub(super) legal_hold: i64,
}

impl VersionRow {
    /// Why Object Lock keeps this version at `now`, if it does (no bypass:
    /// nothing replaces a locked version).
    pub(super) fn removal_refused(&self, now: i64) -> Result<Option<String>> {
        let lock = VersionLock::from_db(self.retention_mode, self.retain_until, self.legal_hold)?;
        Ok(removal_refused(&lock, now, false))
    }
}

impl From<&Object> for VersionRow {
    fn from(object: &Object) -> VersionRow {
        VersionRow {
            stream_id: object.stream_id.clone(),
            version: object.version,
            versioning: object.versioning,
            delete_marker: object.delete_marker,
            expires_at: object.expires_at,
            retention_mode: object.retention_mode,
            retain_until: object.retain_until,
            legal_hold: object.legal_hold,
        }
    }
}

/// Checks `precondition` against a key's committed `versions`, newest first:
/// the current one is the newest not expired by `now`.
pub(super) fn check_precondition(
    precondition: Option<&Precondition>,
    versions: &[VersionRow],
    now: i64,
) -> Result<()> {
    let Some(precondition) = precondition else {
        return Ok(());
    };
    let current = versions
        .iter()
        .find(|v| v.expires_at == 0 || v.expires_at > now)
        .filter(|v| v.delete_marker == 0);
    match (precondition, current) {
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(Error::ConditionFailed(
            "an object exists under this key".into(),
        )),
        (Precondition::Current(id), Some(v))
            if v.stream_id == id.stream_id && v.version == id.version =>
        {
            Ok(())
        }
        (Precondition::Current(_), Some(_)) => Err(Error::ConditionFailed(
            "the object under this key is not the version the condition names".into(),
        )),
        (Precondition::Current(_), None) => {
            Err(Error::ConditionFailed("the key holds no object".into()))
        }
    }
}

/// What a delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deletion {
    /// The version deleted for good, if any.
    pub removed: Option<Object>,
    /// The delete marker added, if any.
    pub marker: Option<Object>,
    /// The bucket's versioning when the delete ran.
    pub versioning: Versioning,
    /// The remote segments of the removed version.
    pub segments: Vec<RemovedSegment>,
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
    /// Its number among its key's versions, from 1; 0 while pending.
    pub version: i64,
    /// The bucket's [`Versioning`] when this version was written, as
    /// stored (see [`Object::written_with`]); not enabled makes it the key's
    /// null version.
    pub versioning: i64,
    /// 1 for a delete marker (no segments, no metadata).
    pub delete_marker: i64,
    /// Object Lock: the retention mode as stored (see [`RetentionMode`]),
    /// its date, and 1 for a legal hold.
    pub retention_mode: i64,
    pub retain_until: i64,
    pub legal_hold: i64,
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
            version: 0,
            versioning: 0,
            delete_marker: 0,
            retention_mode: 0,
            retain_until: 0,
            legal_hold: 0,
        }
    }

    /// How Object Lock protects this version (its retention may be over).
    pub fn lock(&self) -> Result<VersionLock> {
        VersionLock::from_db(self.retention_mode, self.retain_until, self.legal_hold)
    }

    /// Asks for `lock` on this version when it is committed.
    pub fn set_lock(&mut self, lock: VersionLock) {
        self.retention_mode = RetentionMode::to_db(lock.retention.map(|r| r.mode));
        self.retain_until = lock.retention.map_or(0, |r| r.until);
        self.legal_hold = i64::from(lock.legal_hold);
    }

    /// The bucket's versioning when this version was written.
    pub fn written_with(&self) -> Result<Versioning> {
        Versioning::from_db(self.versioning)
    }

    /// Whether this is its key's null version (written while versioning
    /// was not enabled).
    pub fn is_null_version(&self) -> bool {
        self.versioning != Versioning::Enabled.to_db()
    }

    /// This committed version's id.
    pub fn version_id(&self) -> Option<VersionId> {
        Some(VersionId {
            version: self.version,
            stream_id: self.stream_id.as_slice().try_into().ok()?,
        })
        .filter(|_| self.committed != 0)
    }

    /// Whether this version is still there at `now` (not expired).
    pub fn live_at(&self, now: i64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }
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
    /// Whether the commit may replace a committed object under the key.
    pub replace: bool,
    pub precondition: Option<Precondition>,
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
    /// Whether the copy may replace a committed object under its key.
    pub replace: bool,
    /// The copy's own Object Lock (a copy does not inherit the source's).
    pub lock: VersionLock,
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
    /// A key's current object.
    Object(Vec<u8>, Box<Object>),
    /// One version of a key (a listing of versions); `latest` if it is the
    /// key's current one.
    Version {
        key: Vec<u8>,
        object: Box<Object>,
        latest: bool,
    },
}

impl ListEntry {
    pub fn key(&self) -> &[u8] {
        match self {
            ListEntry::Prefix(k) | ListEntry::Object(k, _) | ListEntry::Version { key: k, .. } => k,
        }
    }
}

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

/// The query for the `version` of a key not expired at a time: binds the
/// project, bucket, key and time, then for [`VersionRef::Exact`] the
/// version's stream id and number.
pub(super) fn version_query(version: &VersionRef) -> String {
    let which = match version {
        VersionRef::Latest => "",
        VersionRef::Null => " AND versioning <> 1",
        VersionRef::Exact(_) => " AND stream_id = $5 AND version = $6",
    };
    format!(
        "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
         AND object_key = $3 AND committed = 1 AND (expires_at = 0 OR expires_at > $4){which} \
         ORDER BY version DESC LIMIT 1"
    )
}

/// How often a commit that lost a race is tried again.
const COMMIT_ATTEMPTS: u64 = 50;

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

impl Metabase {
    // ------------------------------------------------------------ buckets

    pub async fn create_bucket(&self, project: &[u8], name: &str, now: i64) -> Result<Bucket> {
        self.create_bucket_with(project, name, false, false, now)
            .await
    }

    /// Creates a bucket whose object names are stored unencrypted if
    /// `plain_names`, with Object Lock (and so versioning) if `object_lock`.
    pub async fn create_bucket_with(
        &self,
        project: &[u8],
        name: &str,
        plain_names: bool,
        object_lock: bool,
        now: i64,
    ) -> Result<Bucket> {
        let versioning = match object_lock {
            true => Versioning::Enabled,
            false => Versioning::Unversioned,
        };
        let _writing = self.writing().await;
        let result = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO buckets (project_id, name, created_at, plain_names, versioning, \
                 object_lock) VALUES ($1, $2, $3, $4, $5, $6)",
            )
                .bind(project)
                .bind(name)
                .bind(now)
                .bind(i64::from(plain_names))
                .bind(versioning.to_db())
                .bind(i64::from(object_lock))
                .execute(pool)
                .await
                .map(|_| ())
        });
        match result {
            Ok(()) => Ok(Bucket {
                name: name.to_string(),
                created_at: now,
                plain_names,
                versioning,
                object_lock: ObjectLock {
                    enabled: object_lock,
                    default_retention: None,
                },
                tags: Vec::new(),
                access: BucketAccess::default(),
            }),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::AlreadyExists(format!("bucket {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_bucket(&self, project: &[u8], name: &str) -> Result<Bucket> {
        let sql =
            format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE project_id = $1 AND name = $2");
        let bucket: Option<BucketRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(project)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        bucket
            .ok_or_else(|| Error::NotFound(format!("bucket {name:?}")))?
            .try_into()
    }

    /// Enables or suspends a bucket's versioning; a bucket that had it
    /// cannot go back to [`Versioning::Unversioned`], and one with Object
    /// Lock cannot suspend it.
    pub async fn set_versioning(
        &self,
        project: &[u8],
        name: &str,
        versioning: Versioning,
    ) -> Result<Bucket> {
        if versioning == Versioning::Unversioned {
            return Err(Error::InvalidArgument(
                "versioning can be enabled or suspended, not turned off".into(),
            ));
        }
        let updated = on_pool!(self, pool => {
            let _writing = self.writing().await;
            sqlx::query(
                "UPDATE buckets SET versioning = $1 WHERE project_id = $2 AND name = $3 \
                 AND (object_lock = 0 OR $1 = $4)",
            )
            .bind(versioning.to_db())
            .bind(project)
            .bind(name)
            .bind(Versioning::Enabled.to_db())
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.updated_bucket(
            project,
            name,
            updated,
            "versioning cannot be suspended in a bucket with Object Lock",
        )
        .await
    }

    /// The bucket after a conditional UPDATE of its row that changed
    /// `updated` rows: `NotFound` if there is no such bucket, else
    /// `FailedPrecondition` saying `refusal` if the condition kept it.
    pub(super) async fn updated_bucket(
        &self,
        project: &[u8],
        name: &str,
        updated: u64,
        refusal: &str,
    ) -> Result<Bucket> {
        let bucket = self.get_bucket(project, name).await?;
        match updated {
            0 => Err(Error::FailedPrecondition(refusal.into())),
            _ => Ok(bucket),
        }
    }

    /// Replaces a bucket's tags (none removes them), checked against S3's
    /// limits.
    pub async fn set_bucket_tags(
        &self,
        project: &[u8],
        name: &str,
        tags: &[(String, String)],
    ) -> Result<Bucket> {
        check_bucket_tags(tags)?;
        let encoded = prost::Message::encode_to_vec(&archipel_proto::pb::BucketTags {
            tags: tags
                .iter()
                .map(|(key, value)| archipel_proto::pb::BucketTag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let updated = on_pool!(self, pool => {
            let _writing = self.writing().await;
            sqlx::query("UPDATE buckets SET tags = $1 WHERE project_id = $2 AND name = $3")
                .bind(encoded)
                .bind(project)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(Error::NotFound(format!("bucket {name:?}")));
        }
        self.get_bucket(project, name).await
    }

    /// Deletes a bucket that holds no object versions; the uploads still
    /// pending in it are aborted with it (as S3 does). Returns their remote
    /// segments, whose pieces are queued for deletion.
    pub async fn delete_bucket(&self, project: &[u8], name: &str) -> Result<Vec<RemovedSegment>> {
        let segments_sql = format!(
            "DELETE FROM segments WHERE stream_id IN (SELECT stream_id FROM objects \
             WHERE project_id = $1 AND bucket = $2 AND committed = 0) RETURNING {SEGMENT_COLUMNS}"
        );
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
            let version: Option<(Vec<u8>,)> = sqlx::query_as(
                "SELECT stream_id FROM objects WHERE project_id = $1 AND bucket = $2 \
                 AND committed = 1 LIMIT 1",
            )
            .bind(project)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if version.is_some() {
                tx.rollback().await?;
                return Err(Error::FailedPrecondition(format!("bucket {name:?} is not empty")));
            }
            let records: Vec<SegmentRecord> = sqlx::query_as(&segments_sql)
                .bind(project)
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM parts WHERE stream_id IN (SELECT stream_id FROM objects \
                 WHERE project_id = $1 AND bucket = $2 AND committed = 0)",
            )
            .bind(project)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM objects WHERE project_id = $1 AND bucket = $2")
                .bind(project)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let removed = removed_segments(records)?;
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok(removed)
        })
    }

    /// Buckets in name order, strictly after `cursor`; the flag says whether more follow.
    pub async fn list_buckets(
        &self,
        project: &[u8],
        cursor: &str,
        limit: usize,
    ) -> Result<(Vec<Bucket>, bool)> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let sql = format!(
            "SELECT {BUCKET_COLUMNS} FROM buckets WHERE project_id = $1 AND name > $2 \
             ORDER BY name LIMIT $3"
        );
        let rows: Vec<BucketRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
            .bind(project)
            .bind(cursor)
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
        });
        let mut buckets = rows
            .into_iter()
            .map(Bucket::try_from)
            .collect::<Result<Vec<_>>>()?;
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

            let now = unix_now();
            let (replaced, version, settings) = make_room!(
                tx,
                project,
                &object.bucket,
                &object.object_key,
                commit.replace,
                commit.precondition.as_ref(),
                now
            );
            removed.extend(replaced);
            protect_new_version(&mut object, &settings.object_lock, now)?;

            object.committed = 1;
            object.version = version;
            object.versioning = settings.versioning.to_db();
            object.plain_size = offset;
            object.segment_count = segments.len() as i64;
            object.encrypted_metadata = commit.encrypted_metadata.clone();
            object.encrypted_metadata_key = commit.encrypted_metadata_key.clone();
            object.encrypted_metadata_nonce = commit.encrypted_metadata_nonce.clone();
            sqlx::query(
                "UPDATE objects SET committed = 1, version = $7, versioning = $8, plain_size = $1, \
                 segment_count = $2, encrypted_metadata = $3, encrypted_metadata_key = $4, \
                 encrypted_metadata_nonce = $5, retention_mode = $9, retain_until = $10, \
                 legal_hold = $11 WHERE stream_id = $6",
            )
            .bind(object.plain_size)
            .bind(object.segment_count)
            .bind(&object.encrypted_metadata)
            .bind(&object.encrypted_metadata_key)
            .bind(&object.encrypted_metadata_nonce)
            .bind(stream_id)
            .bind(object.version)
            .bind(object.versioning)
            .bind(object.retention_mode)
            .bind(object.retain_until)
            .bind(object.legal_hold)
            .execute(&mut *tx)
            .await?;
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok((object, removed))
        })
    }

    /// Stores `object` (committed, of one segment) with its inline
    /// `segment` in one transaction as a new version of its key (its
    /// number and the bucket's versioning are set here), replacing the
    /// key's null version as a commit does if `replace` (else failing with
    /// `PermissionDenied`); returns the object stored and the replaced
    /// version's segments.
    pub async fn put_inline_object(
        &self,
        object: &Object,
        segment: &Segment,
        replace: bool,
        precondition: Option<&Precondition>,
    ) -> Result<(Object, Vec<RemovedSegment>)> {
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
                let now = unix_now();
                let (removed, version, settings) = make_room!(
                    tx,
                    &object.project_id,
                    &object.bucket,
                    &object.object_key,
                    replace,
                    precondition,
                    now
                );
                let mut object = Object {
                    version,
                    versioning: settings.versioning.to_db(),
                    ..object.clone()
                };
                protect_new_version(&mut object, &settings.object_lock, now)?;
                insert_object!(&mut *tx, &object)?;
                insert_segment!(&mut *tx, segment)?;
                queue_deletions!(tx, &removed);
                tx.commit().await?;
                Ok((object, removed))
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
                 AND project_id = $2 AND committed = 1 AND delete_marker = 0 \
                 AND (expires_at = 0 OR expires_at > $3)",
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
            let (removed, version, settings) = make_room!(
                tx,
                project,
                &copy.bucket,
                &copy.object_key,
                copy.replace,
                None,
                copy.created_at
            );
            let mut object = Object {
                stream_id: copy.stream_id.clone(),
                project_id: project.to_vec(),
                bucket: copy.bucket.clone(),
                object_key: copy.object_key.clone(),
                committed: 1,
                version,
                versioning: settings.versioning.to_db(),
                created_at: copy.created_at,
                encrypted_metadata: copy.encrypted_metadata.clone(),
                encrypted_metadata_key: copy.encrypted_metadata_key.clone(),
                encrypted_metadata_nonce: copy.encrypted_metadata_nonce.clone(),
                ..source
            };
            object.set_lock(copy.lock);
            protect_new_version(&mut object, &settings.object_lock, copy.created_at)?;
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
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok((object, removed))
        })
    }

    /// The current object under a key at `now`: `NotFound` when the key
    /// holds none (nothing, or a delete marker).
    pub async fn get_object(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        now: i64,
    ) -> Result<Object> {
        let object = self
            .get_version(project, bucket, key, &VersionRef::Latest, now)
            .await?;
        if object.delete_marker != 0 {
            return Err(Error::NotFound("the object".into()));
        }
        Ok(object)
    }

    /// A version of a key not expired by `now`, delete markers included.
    pub async fn get_version(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        version: &VersionRef,
        now: i64,
    ) -> Result<Object> {
        let sql = version_query(version);
        let object: Option<Object> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&sql).bind(project).bind(bucket).bind(key).bind(now);
            if let VersionRef::Exact(id) = version {
                query = query.bind(id.stream_id.as_slice()).bind(id.version);
            }
            query.fetch_optional(pool).await?
        });
        object.ok_or_else(|| match version {
            VersionRef::Latest => Error::NotFound("the object".into()),
            _ => Error::NotFound("the object version".into()),
        })
    }

    /// Deletes a version of a key as S3 does: the current one (`Latest`)
    /// is deleted in an unversioned bucket, hidden under a new delete
    /// marker in a versioned one, and in a suspended one replaced by a null
    /// delete marker (the null version going); a named version is deleted
    /// for good. `precondition` is checked against the current version
    /// first. Deleting the current version of an unversioned key that holds
    /// nothing, or a version that does not exist, is `NotFound`; removing a
    /// version Object Lock keeps is [`Error::ObjectLocked`] (governance
    /// mode yields to `bypass_governance`).
    pub async fn delete_object(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        target: &VersionRef,
        precondition: Option<&Precondition>,
        bypass_governance: bool,
    ) -> Result<Deletion> {
        // A delete marker takes the next version number, which a commit
        // may take first: then the next attempt numbers after it.
        retry_commit(|| {
            self.delete_object_once(
                project,
                bucket,
                key,
                target,
                precondition,
                bypass_governance,
            )
        })
        .await
    }

    async fn delete_object_once(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        target: &VersionRef,
        precondition: Option<&Precondition>,
        bypass_governance: bool,
    ) -> Result<Deletion> {
        let now = unix_now();
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let versioning = bucket_in!(tx, project, bucket).versioning;
            let rows: Vec<Object> = sqlx::query_as(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
                 AND object_key = $3 AND committed = 1 ORDER BY version DESC"
            ))
            .bind(project)
            .bind(bucket)
            .bind(key)
            .fetch_all(&mut *tx)
            .await?;
            let versions: Vec<VersionRow> = rows.iter().map(VersionRow::from).collect();
            check_precondition(precondition, &versions, now)?;
            let live = |o: &&Object| o.live_at(now);
            // Expired or not, a null version makes way for a null marker
            // (a key has one null version at most).
            let null_version = rows.iter().find(|o| o.is_null_version());
            let (doomed, add_marker) = match target {
                VersionRef::Latest => match versioning {
                    Versioning::Unversioned => {
                        let current = rows.iter().find(live).filter(|o| o.delete_marker == 0);
                        (Some(current.ok_or_else(|| Error::NotFound("the object".into()))?), false)
                    }
                    Versioning::Enabled => (None, true),
                    Versioning::Suspended => (null_version, true),
                },
                VersionRef::Null => {
                    let found = null_version.filter(|o| o.live_at(now));
                    (Some(found.ok_or_else(|| Error::NotFound("the object version".into()))?), false)
                }
                VersionRef::Exact(id) => {
                    let found = rows
                        .iter()
                        .filter(live)
                        .find(|o| o.version == id.version && o.stream_id == id.stream_id);
                    (Some(found.ok_or_else(|| Error::NotFound("the object version".into()))?), false)
                }
            };
            let mut deletion = Deletion {
                versioning,
                ..Deletion::default()
            };
            if let Some(doomed) = doomed {
                if let Some(why) = removal_refused(&doomed.lock()?, now, bypass_governance) {
                    return Err(Error::ObjectLocked(why));
                }
                deletion.segments = remove_version!(tx, &doomed.stream_id);
                sqlx::query("DELETE FROM parts WHERE stream_id = $1")
                    .bind(&doomed.stream_id)
                    .execute(&mut *tx)
                    .await?;
                deletion.removed = Some(doomed.clone());
            }
            if add_marker {
                let marker = Object {
                    committed: 1,
                    version: rows.first().map_or(1, |newest| newest.version + 1),
                    versioning: versioning.to_db(),
                    delete_marker: 1,
                    ..Object::pending(
                        rand::random::<[u8; 16]>().to_vec(),
                        project.to_vec(),
                        bucket.to_string(),
                        key.to_vec(),
                        now,
                        0,
                        0,
                        0,
                    )
                };
                insert_object!(&mut *tx, &marker)?;
                deletion.marker = Some(marker);
            }
            queue_deletions!(tx, &deletion.segments);
            tx.commit().await?;
            Ok(deletion)
        })
    }

    /// Replaces the sealed metadata of the committed version `id` of a key
    /// (not a delete marker, not expired by `now`) in place; returns the
    /// version as updated.
    pub async fn update_metadata(
        &self,
        project: &[u8],
        bucket: &str,
        key: &[u8],
        id: &VersionId,
        sealed: [&[u8]; 3],
        now: i64,
    ) -> Result<Object> {
        let [metadata, metadata_key, nonce] = sealed;
        let updated = on_pool!(self, pool => {
            let _writing = self.writing().await;
            sqlx::query(
                "UPDATE objects SET encrypted_metadata = $1, encrypted_metadata_key = $2, \
                 encrypted_metadata_nonce = $3 WHERE project_id = $4 AND bucket = $5 \
                 AND object_key = $6 AND stream_id = $7 AND version = $8 AND committed = 1 \
                 AND delete_marker = 0 AND (expires_at = 0 OR expires_at > $9)",
            )
            .bind(metadata)
            .bind(metadata_key)
            .bind(nonce)
            .bind(project)
            .bind(bucket)
            .bind(key)
            .bind(id.stream_id.as_slice())
            .bind(id.version)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            return Err(Error::NotFound("the object version".into()));
        }
        self.get_version(project, bucket, key, &VersionRef::Exact(id.clone()), now)
            .await
    }

    /// Removes an object row with its segments if its `committed` flag still
    /// has the given value: a pending upload may commit, or a committed object
    /// be replaced, in the meantime. Returns the remote segments removed, or
    /// `None` if the row was no longer there in that state.
    pub(super) async fn delete_stream(
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
            let removed = removed_segments(records)?;
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok(Some(removed))
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

    /// Lists the current objects of a bucket at `now`, as `listing` asks.
    /// Returns at most `listing.limit` entries (capped at
    /// [`MAX_LIST_LIMIT`]) and whether more follow.
    pub async fn list_objects(
        &self,
        project: &[u8],
        bucket: &str,
        listing: &Listing<'_>,
        now: i64,
    ) -> Result<(Vec<ListEntry>, bool)> {
        self.scan(project, bucket, listing, None, now).await
    }

    /// Lists every version of the keys of a bucket not expired by `now`
    /// (delete markers included), by key and newest first within a key, as
    /// [`ListEntry::Version`]s and prefixes. After `listing.cursor`, or with
    /// `after_version` after that version of the cursor's key.
    pub async fn list_versions(
        &self,
        project: &[u8],
        bucket: &str,
        listing: &Listing<'_>,
        after_version: Option<i64>,
        now: i64,
    ) -> Result<(Vec<ListEntry>, bool)> {
        self.scan(project, bucket, listing, Some(after_version), now)
            .await
    }

    /// A listing of current objects (`versions` is `None`) or of every
    /// version (`Some(after_version)`).
    async fn scan(
        &self,
        project: &[u8],
        bucket: &str,
        listing: &Listing<'_>,
        versions: Option<Option<i64>>,
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
        // The listing resumes at `lower`: inclusive or not, or within that
        // key's versions below a number.
        let mut within = versions.flatten().filter(|_| !cursor.is_empty());
        let (mut lower, mut inclusive) = if cursor.is_empty() {
            (prefix.to_vec(), true)
        } else {
            let full = [prefix, cursor].concat();
            match cursor.iter().position(|&b| b == b'/') {
                // A cursor inside (or naming) a collapsed prefix skips all of it.
                Some(i) if !recursive => {
                    within = None;
                    match prefix_end(&full[..prefix.len() + i + 1]) {
                        Some(end) => (end, true),
                        None => return Ok((Vec::new(), false)),
                    }
                }
                _ => (full, false),
            }
        };
        // Listing versions: the first row of a key is its current version,
        // unless the listing resumes within that key.
        let mut previous_key = within.map(|_| lower.clone());
        let upper_clause = if upper.is_some() {
            " AND object_key < $6"
        } else {
            ""
        };
        let version_param = if upper.is_some() { 7 } else { 6 };
        let (which, order) = match versions {
            None => (
                " AND delete_marker = 0 AND NOT EXISTS (SELECT 1 FROM objects newer \
                 WHERE newer.project_id = objects.project_id AND newer.bucket = objects.bucket \
                 AND newer.object_key = objects.object_key AND newer.committed = 1 \
                 AND newer.version > objects.version \
                 AND (newer.expires_at = 0 OR newer.expires_at > $5))",
                "object_key",
            ),
            Some(_) => ("", "object_key, version DESC"),
        };
        let sql = |inclusive: bool, within: Option<i64>| {
            let from = match (inclusive, within) {
                (_, Some(_)) => {
                    format!("(object_key > $3 OR (object_key = $3 AND version < ${version_param}))")
                }
                (true, None) => "object_key >= $3".to_string(),
                (false, None) => "object_key > $3".to_string(),
            };
            format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
                 AND committed = 1 AND (expires_at = 0 OR expires_at > $5){which} \
                 AND {from}{upper_clause} ORDER BY {order} LIMIT $4"
            )
        };
        let mut entries = Vec::new();
        'scan: while entries.len() <= limit {
            let want = (limit + 1 - entries.len()) as i64;
            let sql = sql(inclusive, within);
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
                if let Some(version) = within {
                    query = query.bind(version);
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
                                within = None;
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
                if versions.is_some() {
                    within = Some(object.version);
                    let latest = previous_key.as_ref() != Some(&object.object_key);
                    previous_key = Some(object.object_key.clone());
                    entries.push(ListEntry::Version {
                        key: relative,
                        object: Box::new(object),
                        latest,
                    });
                } else {
                    entries.push(ListEntry::Object(relative, Box::new(object)));
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_least_upper_bound() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
