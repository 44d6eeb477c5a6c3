//! The Archipel client library: access grants, client-side encryption, and the
//! segment upload and download paths that talk to the satellite and to storage
//! nodes. [`Project`] is the entry point.
//!
//! - [`access`]: access grants (satellite, API key, root key) and their text form;
//! - `crypto`: key derivation, name encryption, block encryption, sealed metadata;
//! - `ranges`: size and range arithmetic (plaintext → blocks → stripes → pieces);
//! - `metainfo`: the satellite's Metainfo API with errors mapped to sentences;
//! - `nodes`: the pooled channels to storage nodes;
//! - `upload` / `download`: the data paths, streaming with bounded memory;
//! - `multipart`: uploads whose parts arrive separately, in any order;
//! - `copy`: server-side copies (only keys are rewrapped, no data moves);
//! - `versions`: object versions, bucket versioning and preconditions.

pub mod access;
mod bucket_access;
mod copy;
mod crypto;
mod download;
mod error;
mod keystore;
mod locks;
mod metainfo;
mod multipart;
mod nodes;
mod ranges;
mod upload;
mod versions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archipel_proto::{pb, Redundancy};
use tokio::io::{AsyncRead, AsyncWrite};

pub use access::{Access, AccessInfo, Permissions, RestrictionInfo, Share};
pub use bucket_access::{BucketAccess, BucketAccessUpdate, CannedAcl, CorsRule, PublicAccessBlock};
pub use copy::CopyMetadata;
pub use error::Error;
pub use locks::{
    BucketLock, DefaultRetention, Retention, RetentionMode, RetentionPeriod, VersionLock,
};
pub use multipart::{MultipartUpload, PartInfo, UploadParts};
pub use upload::encode_segment;
pub use versions::{
    DeleteOptions, Deleted, ListedVersion, Precondition, Version, VersionId, VersionInfo,
    Versioning,
};

use crate::crypto::Key;
use crate::metainfo::Metainfo;

/// Called with the number of bytes done so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A bucket of a project.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BucketInfo {
    pub name: String,
    #[serde(serialize_with = "rfc3339::required")]
    pub created: SystemTime,
    /// Object names are stored unencrypted (see [`BucketOptions`]).
    pub unencrypted_names: bool,
    pub versioning: Versioning,
    pub object_lock: BucketLock,
    /// Tags as (key, value). Unlike object names and metadata they are not
    /// encrypted: the satellite's operator can read them, as bucket names.
    pub tags: Vec<(String, String)>,
    /// Its ACL, public access block and CORS rules, also in the clear.
    pub access: BucketAccess,
}

impl From<pb::Bucket> for BucketInfo {
    fn from(mut bucket: pb::Bucket) -> BucketInfo {
        BucketInfo {
            access: BucketAccess::from_pb(&mut bucket),
            name: bucket.name,
            created: from_unix(bucket.created_at),
            unencrypted_names: bucket.plain_names,
            versioning: Versioning::from_pb(bucket.versioning),
            object_lock: BucketLock::from_pb(bucket.object_lock.as_ref()),
            tags: bucket.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        }
    }
}

/// Choices for a new bucket, fixed for its life.
#[derive(Clone, Copy, Debug, Default)]
pub struct BucketOptions {
    /// Store object names as they are instead of encrypted. The satellite
    /// then keeps keys in the names' own order, so a listing reads only the
    /// page it returns instead of a whole level; the satellite sees the
    /// names. Contents and metadata stay encrypted.
    pub unencrypted_names: bool,
    /// Object Lock, which needs versioning: the bucket starts with it
    /// enabled, for good.
    pub object_lock: bool,
}

/// Choices for one upload.
#[derive(Clone, Default)]
pub struct UploadOptions {
    /// When the network may forget the object; `None` keeps it until deleted.
    pub expires: Option<SystemTime>,
    pub content_type: Option<String>,
    /// User metadata, stored encrypted.
    pub metadata: BTreeMap<String, String>,
    /// More user metadata, known only once all the data is read (a digest of
    /// it, say): called just before the object commits and merged into `metadata`.
    pub late_metadata: Option<LateMetadata>,
    pub progress: Option<Progress>,
    /// Segments uploaded at once. 0 or 1: one after the other, streaming
    /// (nothing is held but the batch being sent). N > 1: up to N segments
    /// in flight, each read whole into memory before it is sent, so an
    /// upload holds at most N × the satellite's maximum segment size
    /// (64 MiB by default) of plaintext. Segments are still committed in
    /// order; progress counts the bytes sent over all of them.
    pub parallelism: usize,
    /// A condition on the key's current object, checked when the upload
    /// commits: a failed one stores nothing ([`Error::ConditionFailed`]).
    pub precondition: Option<Precondition>,
    /// The new version's Object Lock; none asks for the bucket's default
    /// retention, if it has one.
    pub lock: VersionLock,
}

/// Produces user metadata at commit time; see [`UploadOptions::late_metadata`].
pub type LateMetadata = Arc<dyn Fn() -> BTreeMap<String, String> + Send + Sync>;

/// A plaintext byte range of an object: `length: None` reads to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub length: Option<u64>,
}

/// What is known about a stored object.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    #[serde(serialize_with = "rfc3339::required")]
    pub created: SystemTime,
    #[serde(serialize_with = "rfc3339::optional")]
    pub expires: Option<SystemTime>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Filled in by [`Project::stat`] and [`Project::upload`]; empty otherwise.
    pub segments: Vec<SegmentStat>,
    /// Which version this is; `None` for an upload not completed yet, or
    /// where the call does not tell (a completed multipart upload described
    /// again).
    pub version: Option<VersionInfo>,
    /// How Object Lock protects this version.
    pub lock: VersionLock,
}

/// How one segment of an object is stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SegmentStat {
    pub position: u32,
    pub plain_size: u64,
    pub encrypted_size: u64,
    pub inline: bool,
    /// Absent for inline segments.
    pub redundancy: Option<Redundancy>,
    /// Pieces the satellite knows of.
    pub piece_count: u32,
    /// Of those, the pieces that count towards the segment's health now (on
    /// nodes that are online and in good standing); 0 for inline segments.
    pub healthy_pieces: u32,
    /// What the healthy pieces mean for the segment.
    pub health: SegmentHealth,
}

/// A segment's state as its healthy pieces tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentHealth {
    /// Above the repair threshold (inline segments always are).
    Healthy,
    /// At or below the repair threshold: the satellite rebuilds pieces.
    RepairPending,
    /// Fewer healthy pieces than needed to read it right now.
    Lost,
}

impl SegmentHealth {
    pub(crate) fn of(redundancy: Option<&Redundancy>, healthy: u32) -> SegmentHealth {
        match redundancy {
            Some(r) if healthy < u32::from(r.required) => SegmentHealth::Lost,
            Some(r) if healthy <= u32::from(r.repair) => SegmentHealth::RepairPending,
            _ => SegmentHealth::Healthy,
        }
    }
}

impl std::fmt::Display for SegmentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SegmentHealth::Healthy => "healthy",
            SegmentHealth::RepairPending => "repair pending",
            SegmentHealth::Lost => "LOST",
        })
    }
}

/// One line of an object listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ListEntry {
    /// The full plaintext key; a prefix ends with `/`.
    pub key: String,
    pub is_prefix: bool,
    pub size: u64,
    /// Absent for prefixes.
    #[serde(serialize_with = "rfc3339::optional")]
    pub created: Option<SystemTime>,
    /// In a listing of versions ([`Project::list_versions`]), which version
    /// this is; `None` in other listings and for prefixes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ListedVersion>,
}

/// A client connected to one project on one satellite.
#[derive(Clone)]
pub struct Project {
    metainfo: Metainfo,
    /// The grant the project was opened with (its keys name and open objects).
    access: Access,
    /// Per bucket, whether it stores names unencrypted: asked once, then
    /// remembered (a bucket's mode is fixed when it is created).
    plain_names: Arc<Mutex<HashMap<String, bool>>>,
}

/// An object opened by [`Project::open_object`], ready to be read.
pub struct ObjectDownload {
    open: download::OpenObject,
    parallelism: usize,
}

impl ObjectDownload {
    /// Reads up to `parallelism` segments at once (0 and 1: one after the
    /// other, streaming). Each segment in flight is read whole into memory
    /// before it is written out in order, so a download holds at most
    /// `parallelism` segments' plaintext.
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// The object, as [`Project::stat`] describes it.
    pub fn info(&self) -> &ObjectInfo {
        &self.open.info
    }

    /// Writes the object (or `range` of it) to `writer`, as
    /// [`Project::download`] does; returns the bytes written.
    pub async fn download(
        self,
        range: Option<ByteRange>,
        writer: impl AsyncWrite + Unpin + Send,
        progress: Option<Progress>,
    ) -> Result<u64, Error> {
        self.open
            .download(range, writer, progress, self.parallelism)
            .await
    }
}

/// Times in JSON output as RFC 3339 text, which people and scripts can read.
mod rfc3339 {
    use std::time::SystemTime;

    pub fn required<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    pub fn optional<S: serde::Serializer>(
        time: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => required(time, s),
            None => s.serialize_none(),
        }
    }
}

pub(crate) fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

pub(crate) fn to_unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn segment_stat(info: &pb::SegmentInfo) -> Result<SegmentStat, Error> {
    let redundancy = match (&info.redundancy, info.inline) {
        (Some(scheme), false) => Some(
            Redundancy::from_pb(scheme)
                .map_err(|e| Error::Protocol(format!("segment {}: {e}", info.position)))?,
        ),
        _ => None,
    };
    Ok(SegmentStat {
        position: info.position,
        plain_size: non_negative(info.plain_size, "segment plain size")?,
        encrypted_size: non_negative(info.encrypted_size, "segment encrypted size")?,
        inline: info.inline,
        health: SegmentHealth::of(redundancy.as_ref(), info.healthy_pieces),
        redundancy,
        piece_count: info.piece_count,
        healthy_pieces: info.healthy_pieces,
    })
}

pub(crate) fn non_negative(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Protocol(format!("{what} is negative ({value})")))
}

impl Project {
    /// Connects to the satellite named in `access`.
    pub async fn open(access: &Access) -> Result<Project, Error> {
        Ok(Project {
            metainfo: Metainfo::connect(&access.satellite(), &access.api_key).await?,
            access: access.clone(),
            plain_names: Arc::default(),
        })
    }

    /// A new grant that can do only what `share` allows: a caveat appended to
    /// this grant's API key (offline: the satellite is asked only how each
    /// bucket stores names) and the keys of `share`'s prefixes alone. It
    /// never allows more than this grant does.
    pub async fn share(&self, share: &Share) -> Result<Access, Error> {
        if share.prefixes.is_empty() {
            return Err(Error::InvalidAccess(
                "a shared grant opens at least one bucket or prefix".into(),
            ));
        }
        let mut prefixes = Vec::with_capacity(share.prefixes.len());
        for (bucket, prefix) in &share.prefixes {
            let plain = self.has_plain_names(bucket).await?;
            let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
            let components: Vec<&str> = if prefix.is_empty() {
                Vec::new()
            } else {
                prefix.split('/').collect()
            };
            prefixes.push(self.access.keys.share(bucket, &components, plain)?);
        }
        self.access.restricted(share, prefixes)
    }

    /// Revokes the grant whose API key is `api_key` and every grant shared
    /// from it, from their next request on. This project's own grant must be
    /// that grant or one it was shared from.
    pub async fn revoke(&self, api_key: &str) -> Result<(), Error> {
        self.metainfo.revoke_api_key(api_key).await
    }

    /// Creates a bucket whose object names are encrypted.
    pub async fn create_bucket(&self, name: &str) -> Result<BucketInfo, Error> {
        self.create_bucket_with(name, BucketOptions::default())
            .await
    }

    pub async fn create_bucket_with(
        &self,
        name: &str,
        options: BucketOptions,
    ) -> Result<BucketInfo, Error> {
        let response = self
            .metainfo
            .create_bucket(name, options.unencrypted_names, options.object_lock)
            .await?;
        let bucket = answered_bucket(response)?;
        self.remember_names(&bucket.name, bucket.unencrypted_names);
        Ok(bucket)
    }

    /// A bucket's settings.
    pub async fn bucket(&self, name: &str) -> Result<BucketInfo, Error> {
        let bucket = answered_bucket(self.metainfo.get_bucket(name).await?)?;
        self.remember_names(&bucket.name, bucket.unencrypted_names);
        Ok(bucket)
    }

    /// Enables or suspends a bucket's versioning (it cannot be turned off
    /// once enabled); needs a grant that may write and delete in the whole
    /// bucket.
    pub async fn set_versioning(
        &self,
        name: &str,
        versioning: Versioning,
    ) -> Result<BucketInfo, Error> {
        let response = self
            .metainfo
            .set_bucket_versioning(name, versioning.to_pb())
            .await?;
        answered_bucket(response)
    }

    /// Sets a bucket's Object Lock: enables it (for good; the bucket's
    /// versioning must be enabled) and sets or clears its default retention.
    pub async fn set_object_lock(&self, name: &str, lock: BucketLock) -> Result<BucketInfo, Error> {
        let response = self
            .metainfo
            .set_bucket_object_lock(name, lock.to_pb())
            .await?;
        answered_bucket(response)
    }

    /// Sets (or with `None` removes) the retention of a version. It can
    /// always be extended; shortening or removing one not over takes
    /// `bypass_governance` in governance mode, and is refused in compliance
    /// mode ([`Error::ObjectLocked`]).
    pub async fn set_retention(
        &self,
        bucket: &str,
        key: &str,
        version: &Version,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<VersionLock, Error> {
        let path = self.object_path(bucket, key).await?;
        let request = pb::SetObjectRetentionRequest {
            header: self.metainfo.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: path.stored.into_bytes(),
            version: version.to_pb(),
            retention: retention.map(Retention::to_pb),
            bypass_governance,
        };
        let response = self
            .metainfo
            .set_object_retention(key, request)
            .await
            .map_err(|e| version_not_found(e, version))?;
        Ok(VersionLock::from_pb(
            response.object.and_then(|o| o.lock).as_ref(),
        ))
    }

    /// Changes the user metadata of a version in place, adding no version
    /// (as S3's object tagging does): `change` edits the metadata as the
    /// version has it, and the result is sealed again under the object's
    /// key. Returns the version as updated; a concurrent update of the same
    /// version may win instead (the last one stays).
    pub async fn update_metadata(
        &self,
        bucket: &str,
        key: &str,
        version: &Version,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<ObjectInfo, Error> {
        let path = self.object_path(bucket, key).await?;
        let found = self
            .metainfo
            .get_object(bucket, key, &path.stored, version, None)
            .await
            .map_err(|e| version_not_found(e, version))?;
        let object = readable((bucket, key, version), found.object, found.versioning)?;
        let object_key = crypto::object_key(&path.key);
        let info = object_info(key, &object, &object_key, Vec::new(), None)?;
        let mut metadata = info.metadata;
        change(&mut metadata);
        let sealed = upload::SealedMetadata::new(
            &object_key,
            &crypto::ObjectMetadata {
                size: info.size,
                created: info.created,
                content_type: info.content_type,
                metadata,
            },
        );
        let request = pb::UpdateObjectMetadataRequest {
            header: self.metainfo.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: path.stored.into_bytes(),
            version_id: object.version_id,
            encrypted_metadata: sealed.data,
            encrypted_metadata_key: sealed.key.encrypted,
            encrypted_metadata_nonce: sealed.key.nonce,
        };
        let updated = self
            .metainfo
            .update_object_metadata(key, request)
            .await
            .map_err(|e| version_not_found(e, version))?
            .object
            .ok_or_else(|| Error::Protocol("the object is missing from the answer".into()))?;
        object_info(
            key,
            &updated,
            &object_key,
            Vec::new(),
            Some(found.versioning),
        )
    }

    /// Puts a legal hold on a version, or lifts it.
    pub async fn set_legal_hold(
        &self,
        bucket: &str,
        key: &str,
        version: &Version,
        legal_hold: bool,
    ) -> Result<VersionLock, Error> {
        let path = self.object_path(bucket, key).await?;
        let request = pb::SetObjectLegalHoldRequest {
            header: self.metainfo.header(),
            bucket: bucket.to_string(),
            encrypted_object_key: path.stored.into_bytes(),
            version: version.to_pb(),
            legal_hold,
        };
        let response = self
            .metainfo
            .set_object_legal_hold(key, request)
            .await
            .map_err(|e| version_not_found(e, version))?;
        Ok(VersionLock::from_pb(
            response.object.and_then(|o| o.lock).as_ref(),
        ))
    }

    /// Replaces a bucket's tags (none removes them). They are stored
    /// unencrypted, as the bucket's name.
    pub async fn set_bucket_tags(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<BucketInfo, Error> {
        let request = pb::SetBucketTagsRequest {
            header: self.metainfo.header(),
            name: name.to_string(),
            tags: tags
                .iter()
                .map(|(key, value)| pb::BucketTag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let response = self.metainfo.set_bucket_tags(name, request).await?;
        answered_bucket(response)
    }

    /// Replaces the parts of a bucket's access settings (ACL, public access
    /// block, CORS rules) that `update` names. They are stored unencrypted,
    /// as the bucket's name.
    pub async fn set_bucket_access(
        &self,
        name: &str,
        update: &BucketAccessUpdate,
    ) -> Result<BucketInfo, Error> {
        let request = update.to_pb(self.metainfo.header(), name);
        let response = self.metainfo.set_bucket_access(name, request).await?;
        answered_bucket(response)
    }

    /// Removes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        self.metainfo.delete_bucket(name).await?;
        self.known_names().remove(name);
        Ok(())
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        let mut buckets: Vec<BucketInfo> = self
            .metainfo
            .list_buckets()
            .await?
            .into_iter()
            .map(BucketInfo::from)
            .collect();
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        for bucket in &buckets {
            self.remember_names(&bucket.name, bucket.unencrypted_names);
        }
        Ok(buckets)
    }

    fn known_names(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        // A plain map stays valid whatever panicked while it was locked.
        self.plain_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember_names(&self, bucket: &str, plain: bool) {
        self.known_names().insert(bucket.to_string(), plain);
    }

    /// Whether `bucket` stores object names unencrypted.
    async fn has_plain_names(&self, bucket: &str) -> Result<bool, Error> {
        if let Some(plain) = self.known_names().get(bucket).copied() {
            return Ok(plain);
        }
        Ok(self.bucket(bucket).await?.unencrypted_names)
    }

    /// Where the satellite keeps `bucket`/`key` and the path key below it.
    async fn object_path(&self, bucket: &str, key: &str) -> Result<crypto::ObjectPath, Error> {
        let plain = self.has_plain_names(bucket).await?;
        self.access.keys.object_path(bucket, key, plain)
    }

    /// A 256-bit secret bound to `bucket`/`prefix` and `purpose`, which only a
    /// grant holding the keys of that prefix (or of one above it) can compute:
    /// the same for every such grant, different for every prefix and purpose.
    /// Applications that keep their own encrypted data under a prefix derive
    /// their keys from it, so that the grant is the only secret to keep (the
    /// backup engine's repository keys, say). `prefix` is a whole path
    /// (components separated by `/`; empty: the whole bucket).
    pub async fn prefix_secret(
        &self,
        bucket: &str,
        prefix: &str,
        purpose: &str,
    ) -> Result<[u8; 32], Error> {
        let plain = self.has_plain_names(bucket).await?;
        let prefix = prefix.trim_end_matches('/');
        let components: Vec<&str> = match prefix {
            "" => Vec::new(),
            prefix => prefix.split('/').collect(),
        };
        let located = self.access.keys.share(bucket, &components, plain)?;
        Ok(crypto::application_secret(&located.key, purpose))
    }

    /// Whether the satellite keeps `bucket`'s keys in the names' own order
    /// (the bucket was created with unencrypted names), so that
    /// [`Project::list_after`] reads only the entries it returns.
    pub async fn lists_in_order(&self, bucket: &str) -> Result<bool, Error> {
        self.has_plain_names(bucket).await
    }

    /// Encrypts and stores everything `reader` yields as `bucket`/`key`.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        reader: impl AsyncRead + Unpin + Send,
        options: UploadOptions,
    ) -> Result<ObjectInfo, Error> {
        let path = self.object_path(bucket, key).await?;
        upload::upload_object(&self.metainfo, path, bucket, key, reader, options).await
    }

    /// Writes the object (or `range` of it) to `writer`; returns the bytes written.
    /// A range starting past the end of the object is [`Error::InvalidRange`]; a
    /// range running past the end is cut at the end.
    pub async fn download(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        writer: impl AsyncWrite + Unpin + Send,
        progress: Option<Progress>,
    ) -> Result<u64, Error> {
        let offset = range.map_or(0, |range| range.offset);
        self.open_object(bucket, key, offset)
            .await?
            .download(range, writer, progress)
            .await
    }

    /// Opens an object for reading: one request to the satellite describes
    /// it (as [`Project::stat`] does) and prepares the read of the segment
    /// holding plaintext `offset`, so that a small object is read with one
    /// satellite round trip. The download reads this very version of the
    /// object, even if it is replaced meanwhile.
    pub async fn open_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<ObjectDownload, Error> {
        self.open_version(bucket, key, &Version::Current, offset)
            .await
    }

    /// [`Project::open_object`] of a given version.
    pub async fn open_version(
        &self,
        bucket: &str,
        key: &str,
        version: &Version,
        offset: u64,
    ) -> Result<ObjectDownload, Error> {
        let path = self.object_path(bucket, key).await?;
        let open =
            download::open_object(&self.metainfo, path, (bucket, key, version), offset).await?;
        Ok(ObjectDownload {
            open,
            parallelism: 1,
        })
    }

    pub async fn stat(&self, bucket: &str, key: &str) -> Result<ObjectInfo, Error> {
        self.stat_version(bucket, key, &Version::Current).await
    }

    /// What is known about a version of an object. A delete marker is
    /// [`Error::ObjectNotFound`] as the current version (naming it) and
    /// [`Error::IsDeleteMarker`] when asked for by id.
    pub async fn stat_version(
        &self,
        bucket: &str,
        key: &str,
        version: &Version,
    ) -> Result<ObjectInfo, Error> {
        let path = self.object_path(bucket, key).await?;
        let response = self
            .metainfo
            .get_object(bucket, key, &path.stored, version, None)
            .await
            .map_err(|e| version_not_found(e, version))?;
        let object = readable((bucket, key, version), response.object, response.versioning)?;
        let segments = response
            .segments
            .iter()
            .map(segment_stat)
            .collect::<Result<Vec<_>, _>>()?;
        object_info(
            key,
            &object,
            &crypto::object_key(&path.key),
            segments,
            Some(response.versioning),
        )
    }

    /// Lists `bucket` below `prefix`: one level (sub-prefixes end with `/`), or
    /// every object below it when `recursive`. `prefix` need not end at a `/`.
    /// Entries whose names do not decrypt with this access (other passphrases)
    /// are left out. With encrypted names this reads the whole level (or
    /// everything below the prefix) from the satellite, whose order is not the
    /// names' order, and sorts it.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
    ) -> Result<Vec<ListEntry>, Error> {
        let mut entries = self
            .scan(bucket, prefix, recursive, None, usize::MAX)
            .await?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Every version of the objects of `bucket` below `prefix` (one level,
    /// or everything below it when `recursive`), delete markers included,
    /// sorted by key and newest first within a key; each object entry says
    /// which version it is ([`ListEntry::version`]). Reads the whole
    /// listing from the satellite, page by page.
    pub async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
    ) -> Result<Vec<ListEntry>, Error> {
        let level = self.level(bucket, prefix).await?;
        let mut cursor = Vec::new();
        let mut cursor_version = Vec::new();
        let mut entries = Vec::new();
        loop {
            let page = self
                .read_page(
                    &level,
                    bucket,
                    prefix,
                    recursive,
                    cursor,
                    None,
                    MAX_LIST_PAGE,
                    Some(cursor_version),
                )
                .await?;
            entries.extend(page.entries);
            match page.next {
                Some(next) => {
                    cursor = next;
                    cursor_version = page.next_version;
                }
                None => break,
            }
        }
        // Keys by name, then a key's versions newest first; prefixes have none.
        entries.sort_by(|a, b| {
            a.key.cmp(&b.key).then_with(|| {
                let number = |e: &ListEntry| e.version.as_ref().map(|v| v.id.version);
                number(b).cmp(&number(a))
            })
        });
        Ok(entries)
    }

    /// The first `limit` entries of [`Project::list`] that sort after `after`
    /// (a full key). In a bucket with unencrypted names this reads about only
    /// those entries from the satellite; with encrypted names it lists as
    /// [`Project::list`] does and cuts.
    pub async fn list_after(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListEntry>, Error> {
        if self.has_plain_names(bucket).await? {
            return self.scan(bucket, prefix, recursive, after, limit).await;
        }
        let mut entries = self.list(bucket, prefix, recursive).await?;
        let start = after.map_or(0, |after| {
            entries.partition_point(|e| e.key.as_str() <= after)
        });
        entries.truncate(start.saturating_add(limit));
        entries.drain(..start);
        Ok(entries)
    }

    /// One page of the listing of `bucket` below `prefix` (one level, or
    /// everything below it when `recursive`), continuing after `cursor`
    /// (`None`: from the start). Pages follow the satellite's order, which is
    /// the names' order only in a bucket with unencrypted names; with
    /// encrypted names it is the order of the encrypted names, so each page
    /// is sorted but the pages are not in order with one another. Each call
    /// reads one page of at most 1000 entries from the satellite and holds
    /// nothing else, so a walk over millions of objects costs the memory of
    /// a page. A page may be empty (its names were not readable with this
    /// access) and still have a `next`. Entries whose names do not decrypt
    /// with this access are left out, as in [`Project::list`].
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
        cursor: Option<&ListCursor>,
    ) -> Result<ListPage, Error> {
        let level = self.level(bucket, prefix).await?;
        let cursor = match cursor {
            Some(cursor) => cursor.0.clone(),
            None if level.plain => match start_cursor(&level.dir, prefix, None) {
                Some(cursor) => cursor,
                None => {
                    return Ok(ListPage {
                        entries: Vec::new(),
                        next: None,
                    })
                }
            },
            None => Vec::new(),
        };
        let page = self
            .read_page(
                &level,
                bucket,
                prefix,
                recursive,
                cursor,
                None,
                MAX_LIST_PAGE,
                None,
            )
            .await?;
        let mut entries = page.entries;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ListPage {
            entries,
            next: page.next.map(ListCursor),
        })
    }

    /// Reads the listing from the satellite page by page, keeping up to
    /// `limit` entries below `prefix` after `after`, in the satellite's order
    /// (the names' order only in a bucket with unencrypted names, where the
    /// scan also starts at `prefix` and `after` and stops past the prefix).
    async fn scan(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListEntry>, Error> {
        if limit == 0 {
            self.has_plain_names(bucket).await?;
            return Ok(Vec::new());
        }
        let level = self.level(bucket, prefix).await?;
        let mut cursor = if level.plain {
            match start_cursor(&level.dir, prefix, after) {
                Some(cursor) => cursor,
                None => return Ok(Vec::new()),
            }
        } else {
            Vec::new()
        };
        let mut entries = Vec::new();
        loop {
            let wanted = limit.saturating_sub(entries.len()).min(MAX_LIST_PAGE);
            let page = self
                .read_page(
                    &level, bucket, prefix, recursive, cursor, after, wanted, None,
                )
                .await?;
            entries.extend(page.entries);
            if entries.len() >= limit {
                entries.truncate(limit);
                return Ok(entries);
            }
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(entries),
            }
        }
    }

    /// Where the listing of `prefix`'s level in `bucket` happens, and with
    /// which key its names open.
    async fn level(&self, bucket: &str, prefix: &str) -> Result<Level, Error> {
        let plain = self.has_plain_names(bucket).await?;
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let dir_components: Vec<&str> = dir
            .strip_suffix('/')
            .map(|path| path.split('/').collect())
            .unwrap_or_default();
        let located = self
            .access
            .keys
            .locate(bucket, &dir_components, plain)
            .ok_or_else(|| {
                Error::PermissionDenied(format!(
                    "the access grant holds no key for {bucket}/{dir} (it was shared for other prefixes)"
                ))
            })?;
        let stored_dir = if dir_components.is_empty() {
            String::new()
        } else {
            format!("{}/", located.stored.join("/"))
        };
        Ok(Level {
            plain,
            dir: dir.to_string(),
            depth: dir_components.len(),
            dir_key: located.key,
            stored_dir,
        })
    }

    /// Reads one page of at most `wanted` items from the satellite after
    /// `cursor`, keeping the entries below `prefix` (and after `after`);
    /// the page's `next` is where the listing goes on, `None` at its end.
    /// With `versions`, the page lists versions, after that version of the
    /// cursor's key (empty: after all of that key).
    #[allow(clippy::too_many_arguments)]
    async fn read_page(
        &self,
        level: &Level,
        bucket: &str,
        prefix: &str,
        recursive: bool,
        cursor: Vec<u8>,
        after: Option<&str>,
        wanted: usize,
        versions: Option<Vec<u8>>,
    ) -> Result<RawPage, Error> {
        let page_of_versions = versions.is_some();
        let page = self
            .metainfo
            .list_objects(pb::ListObjectsRequest {
                header: self.metainfo.header(),
                bucket: bucket.to_string(),
                encrypted_prefix: level.stored_dir.as_bytes().to_vec(),
                cursor,
                recursive,
                limit: wanted as u32,
                versions: versions.is_some(),
                cursor_version: versions.unwrap_or_default(),
            })
            .await?;
        let mut entries = Vec::new();
        for item in &page.items {
            let relative = &item.encrypted_object_key;
            let name = relative.strip_suffix(b"/").unwrap_or(relative);
            let name = match (&level.dir_key, level.plain) {
                (_, true) => std::str::from_utf8(name).ok().map(str::to_string),
                (Some(dir_key), false) => crypto::decrypt_relative_path(dir_key, name).ok(),
                // Above a shared prefix: only the way to it is readable.
                (None, false) => {
                    let full = [level.stored_dir.as_bytes(), name].concat();
                    self.access
                        .keys
                        .reveal(bucket, &full, false)
                        .map(|components| components[level.depth..].join("/"))
                }
            };
            let Some(name) = name else {
                continue;
            };
            let mut key = format!("{}{name}", level.dir);
            if item.is_prefix {
                key.push('/');
            }
            if !key.starts_with(prefix) {
                if level.plain && key.as_str() > prefix {
                    // In order: everything further is past the prefix too.
                    return Ok(RawPage {
                        entries,
                        next: None,
                        next_version: Vec::new(),
                    });
                }
                continue;
            }
            if after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let object = item.object.as_ref();
            let version = match object {
                Some(o) if page_of_versions => Some(ListedVersion {
                    id: VersionId::from_bytes(&o.version_id)
                        .map_err(|e| Error::Protocol(format!("the satellite listed {e}")))?,
                    null: o.null_version,
                    latest: item.is_latest,
                    delete_marker: o.delete_marker,
                }),
                _ => None,
            };
            entries.push(ListEntry {
                key,
                is_prefix: item.is_prefix,
                size: object.map_or(0, |o| o.plain_size.max(0) as u64),
                created: object.map(|o| from_unix(o.created_at)),
                version,
            });
        }
        let next_version = match page.items.last().and_then(|last| last.object.as_ref()) {
            Some(object) if page_of_versions => object.version_id.clone(),
            _ => Vec::new(),
        };
        let next = match page.items.last() {
            Some(last) if page.more => Some(last.encrypted_object_key.clone()),
            Some(_) => None,
            None if page.more => {
                return Err(Error::Protocol(
                    "an object listing page was empty but claimed more".into(),
                ))
            }
            None => None,
        };
        Ok(RawPage {
            entries,
            next,
            next_version,
        })
    }

    /// Copies `source_bucket`/`source_key` to `bucket`/`key` on the satellite:
    /// the copy's segments share the source's pieces and only the segment
    /// keys are rewrapped under the new name's key, so no data moves however
    /// large the object. Replaces an object under the new name (the source
    /// itself when both names are the same: a change of metadata).
    pub async fn copy_object(
        &self,
        source_bucket: &str,
        source_key: &str,
        bucket: &str,
        key: &str,
        metadata: CopyMetadata,
    ) -> Result<ObjectInfo, Error> {
        let copied = self
            .copy_object_if(
                (source_bucket, source_key, &Version::Current),
                (bucket, key, VersionLock::default()),
                |_| Ok::<_, std::convert::Infallible>(metadata),
            )
            .await?;
        Ok(copied.unwrap_or_else(|never| match never {}))
    }

    /// [`Project::copy_object`] of a version of the source (bucket, key,
    /// version) to the target (bucket, key, and the copy's own Object Lock;
    /// a copy never inherits its source's), with the copy's metadata
    /// decided by `decide` from the very version being copied: a source
    /// deleted after `decide` saw it fails the copy
    /// ([`Error::ObjectNotFound`]), so conditions checked there hold for
    /// what is copied. `Ok(Err(e))` is `decide` refusing: nothing was copied.
    pub async fn copy_object_if<E>(
        &self,
        source: (&str, &str, &Version),
        target: (&str, &str, VersionLock),
        decide: impl FnOnce(&ObjectInfo) -> Result<CopyMetadata, E>,
    ) -> Result<Result<ObjectInfo, E>, Error> {
        let (source_bucket, source_key, source_version) = source;
        let (bucket, key, lock) = target;
        let source_path = self.object_path(source_bucket, source_key).await?;
        let target = self.object_path(bucket, key).await?;
        copy::copy_object(
            &self.metainfo,
            (source_bucket, source_key, source_version, source_path),
            (bucket, key, target, lock),
            decide,
        )
        .await
    }

    /// Deletes an object: in a versioned bucket, hides it under a delete
    /// marker (see [`Project::delete`]).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Deleted, Error> {
        self.delete(bucket, key, &DeleteOptions::default()).await
    }

    /// Deletes a version of an object, or hides the current one under a
    /// delete marker, as `options` say. A version that does not exist is
    /// [`Error::VersionNotFound`]; the current object of an unversioned key
    /// that holds none, [`Error::ObjectNotFound`].
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, Error> {
        let path = self.object_path(bucket, key).await?;
        let response = self
            .metainfo
            .delete_object(bucket, key, &path.stored, options)
            .await
            .map_err(|e| version_not_found(e, &options.version))?;
        let version = |object: Option<pb::Object>| match object {
            Some(object) => VersionInfo::of(&object, response.versioning),
            None => Ok(None),
        };
        Ok(Deleted {
            removed: version(response.object.clone())?,
            removed_delete_marker: response.object.as_ref().is_some_and(|o| o.delete_marker),
            marker: version(response.marker.clone())?,
        })
    }
}

/// The bucket a satellite's answer about one describes.
fn answered_bucket(response: pb::BucketResponse) -> Result<BucketInfo, Error> {
    response
        .bucket
        .map(BucketInfo::from)
        .ok_or_else(|| Error::Protocol("the bucket is missing from the answer".into()))
}

/// The object a read of `version` of `bucket`/`key` found, unless it is a
/// delete marker: the current version is then not found (the error names
/// the marker), and a marker asked for by id has no data.
pub(crate) fn readable(
    (bucket, key, version): (&str, &str, &Version),
    object: Option<pb::Object>,
    versioning: i32,
) -> Result<pb::Object, Error> {
    let object =
        object.ok_or_else(|| Error::Protocol("the object is missing from the answer".into()))?;
    if !object.delete_marker {
        return Ok(object);
    }
    let marker = VersionInfo::of(&object, versioning)?
        .ok_or_else(|| Error::Protocol("a delete marker without a version id".into()))?;
    Err(match version {
        Version::Current => Error::ObjectNotFound {
            bucket: bucket.to_string(),
            key: key.to_string(),
            delete_marker: Some(marker),
        },
        Version::Null | Version::Id(_) => Error::IsDeleteMarker {
            bucket: bucket.to_string(),
            key: key.to_string(),
            marker,
        },
    })
}

/// A satellite's "not found" for a call naming `version` of an object, as
/// the version not found.
pub(crate) fn version_not_found(error: Error, version: &Version) -> Error {
    let version_id = match version {
        Version::Current => return error,
        Version::Null => "null".to_string(),
        Version::Id(id) => id.to_string(),
    };
    match error {
        Error::ObjectNotFound { bucket, key, .. } => Error::VersionNotFound {
            bucket,
            key,
            version_id,
        },
        other => other,
    }
}

/// Entries the satellite returns per listing page at most.
const MAX_LIST_PAGE: usize = 1000;

/// A level of a bucket as the satellite stores it: see [`Project::level`].
struct Level {
    plain: bool,
    /// The plaintext directory listed, ending with `/` (or empty).
    dir: String,
    /// Its number of path components.
    depth: usize,
    /// The key its names open with; `None` above a shared prefix.
    dir_key: Option<Key>,
    /// The directory as the satellite stores it, ending with `/` (or empty).
    stored_dir: String,
}

/// One satellite page of a listing, in the satellite's order.
struct RawPage {
    entries: Vec<ListEntry>,
    next: Option<Vec<u8>>,
    /// Listing versions: the version of `next`'s key the listing goes on
    /// after (empty after a prefix).
    next_version: Vec<u8>,
}

/// One page of [`Project::list_page`].
#[derive(Clone, Debug)]
pub struct ListPage {
    /// Sorted by key within the page.
    pub entries: Vec<ListEntry>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<ListCursor>,
}

/// Where a paged listing goes on: opaque, valid for the same bucket, prefix
/// and recursion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor(Vec<u8>);

/// Where a scan of the level `dir` in a bucket with unencrypted names starts
/// (a satellite cursor, relative to `dir`: the listing continues strictly
/// after it) to find the keys below `prefix` after `after`; `None` when no key
/// of the level sorts after `after`.
fn start_cursor(dir: &str, prefix: &str, after: Option<&str>) -> Option<Vec<u8>> {
    let rest = &prefix.as_bytes()[dir.len()..];
    // Every key starting with `rest` sorts after `rest` without its last byte.
    let start = rest[..rest.len().saturating_sub(1)].to_vec();
    let Some(after) = after else {
        return Some(start);
    };
    match after.as_bytes().strip_prefix(dir.as_bytes()) {
        Some(relative) => Some(start.max(relative.to_vec())),
        None if after < dir => Some(start),
        None => None,
    }
}

/// Opens an object's sealed metadata and describes it.
pub(crate) fn object_info(
    key: &str,
    object: &pb::Object,
    object_key: &Key,
    segments: Vec<SegmentStat>,
    versioning: Option<i32>,
) -> Result<ObjectInfo, Error> {
    let metadata_key = crypto::unwrap_key(
        object_key,
        &object.encrypted_metadata_key,
        &object.encrypted_metadata_nonce,
        crypto::METADATA_KEY_PURPOSE,
    )?;
    let metadata = crypto::open_metadata(&metadata_key, &object.encrypted_metadata)?;
    Ok(ObjectInfo {
        key: key.to_string(),
        size: metadata.size,
        created: metadata.created,
        expires: (object.expires_at > 0).then(|| from_unix(object.expires_at)),
        content_type: metadata.content_type,
        metadata: metadata.metadata,
        segments,
        version: match versioning {
            Some(versioning) => VersionInfo::of(object, versioning)?,
            None => None,
        },
        lock: VersionLock::from_pb(object.lock.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    #[test]
    fn scans_in_order_start_before_the_prefix_and_after_the_marker() {
        assert_eq!(start_cursor("", "", None), Some(vec![]));
        assert_eq!(start_cursor("d/", "d/abc", None), Some(b"ab".to_vec()));
        assert_eq!(
            start_cursor("d/", "d/abc", Some("d/b")),
            Some(b"b".to_vec())
        );
        assert_eq!(
            start_cursor("d/", "d/abc", Some("d/a")),
            Some(b"ab".to_vec())
        );
        assert_eq!(start_cursor("d/", "d/", Some("a")), Some(vec![]));
        assert_eq!(start_cursor("d/", "d/", Some("e")), None);
    }

    /// Servers (the S3 gateway) run transfers on spawned tasks, so the futures
    /// must be `Send`; this fails to compile otherwise.
    #[test]
    fn transfer_futures_are_send() {
        let _ = |project: &Project| {
            is_send(project.upload("b", "k", tokio::io::empty(), UploadOptions::default()));
            is_send(project.download("b", "k", None, tokio::io::sink(), None));
            is_send(project.list("b", "", true));
            is_send(project.list_after("b", "", true, Some("a"), 10));
            is_send(project.list_page("b", "", true, None));
            is_send(project.stat("b", "k"));
            let satellite = archipel_proto::NodeUrl {
                id: archipel_proto::NodeId([1; 32]),
                address: "sat:1".into(),
            };
            is_send(Access::request(&satellite, "key", "pass"));
        };
    }
}
