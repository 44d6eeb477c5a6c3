//! The Archipel client library: access grants, client-side encryption, and the
//! segment upload and download paths that talk to the satellite and to storage
//! nodes. [`Project`] is the entry point.
//!
//! - [`access`]: access grants (satellite, API key, root key) and their text form;
//! - `crypto`: key derivation, name encryption, block encryption, sealed metadata;
//! - `ranges`: size and range arithmetic (plaintext → blocks → stripes → pieces);
//! - `metainfo`: the satellite's Metainfo API with errors mapped to sentences;
//! - `upload` / `download`: the data paths, streaming with bounded memory;
//! - `multipart`: uploads whose parts arrive separately, in any order.

pub mod access;
mod crypto;
mod download;
mod error;
mod metainfo;
mod multipart;
mod ranges;
mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use archipel_proto::{pb, Redundancy};
use tokio::io::{AsyncRead, AsyncWrite};

pub use access::Access;
pub use error::Error;
pub use multipart::{MultipartUpload, PartInfo};
pub use upload::encode_segment;

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
}

/// A client connected to one project on one satellite.
#[derive(Clone)]
pub struct Project {
    metainfo: Metainfo,
    root_key: Key,
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

fn segment_stat(info: &pb::SegmentInfo) -> Result<SegmentStat, Error> {
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
            metainfo: Metainfo::connect(&access.satellite_address, &access.api_key).await?,
            root_key: access.root_key.clone(),
        })
    }

    pub async fn create_bucket(&self, name: &str) -> Result<BucketInfo, Error> {
        let response = self.metainfo.create_bucket(name).await?;
        let bucket = response
            .bucket
            .ok_or_else(|| Error::Protocol("the created bucket is missing".into()))?;
        Ok(BucketInfo {
            name: bucket.name,
            created: from_unix(bucket.created_at),
        })
    }

    /// Removes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        self.metainfo.delete_bucket(name).await
    }

    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        let mut buckets: Vec<BucketInfo> = self
            .metainfo
            .list_buckets()
            .await?
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                created: from_unix(b.created_at),
            })
            .collect();
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(buckets)
    }

    /// Encrypts and stores everything `reader` yields as `bucket`/`key`.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        reader: impl AsyncRead + Unpin + Send,
        options: UploadOptions,
    ) -> Result<ObjectInfo, Error> {
        upload::upload_object(&self.metainfo, &self.root_key, bucket, key, reader, options).await
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
        download::download_object(
            &self.metainfo,
            &self.root_key,
            bucket,
            key,
            range,
            writer,
            progress,
        )
        .await
    }

    pub async fn stat(&self, bucket: &str, key: &str) -> Result<ObjectInfo, Error> {
        let (encrypted_key, path_key) =
            crypto::encrypt_path(&self.root_key, bucket, key.split('/'));
        let response = self
            .metainfo
            .get_object(bucket, key, &encrypted_key)
            .await?;
        let object = response
            .object
            .ok_or_else(|| Error::Protocol("the object is missing from the answer".into()))?;
        let segments = response
            .segments
            .iter()
            .map(segment_stat)
            .collect::<Result<Vec<_>, _>>()?;
        object_info(key, &object, &crypto::object_key(&path_key), segments)
    }

    /// Lists `bucket` below `prefix`: one level (sub-prefixes end with `/`), or
    /// every object below it when `recursive`. `prefix` need not end at a `/`.
    /// Entries whose names do not decrypt with this access (other passphrases)
    /// are left out.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        recursive: bool,
    ) -> Result<Vec<ListEntry>, Error> {
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let (encrypted_dir, dir_key) = match dir.strip_suffix('/') {
            Some(path) => {
                let (encrypted, key) =
                    crypto::encrypt_path(&self.root_key, bucket, path.split('/'));
                (format!("{encrypted}/"), key)
            }
            None => (
                String::new(),
                crypto::bucket_path_key(&self.root_key, bucket),
            ),
        };
        let mut entries = Vec::new();
        let mut cursor = Vec::new();
        loop {
            let page = self
                .metainfo
                .list_objects(pb::ListObjectsRequest {
                    header: self.metainfo.header(),
                    bucket: bucket.to_string(),
                    encrypted_prefix: encrypted_dir.as_bytes().to_vec(),
                    cursor: cursor.clone(),
                    recursive,
                    limit: 0,
                })
                .await?;
            for item in &page.items {
                let relative = &item.encrypted_object_key;
                let name = relative.strip_suffix(b"/").unwrap_or(relative);
                let Ok(plain) = crypto::decrypt_relative_path(&dir_key, name) else {
                    continue;
                };
                let mut key = format!("{dir}{plain}");
                if item.is_prefix {
                    key.push('/');
                }
                if !key.starts_with(prefix) {
                    continue;
                }
                let object = item.object.as_ref();
                entries.push(ListEntry {
                    key,
                    is_prefix: item.is_prefix,
                    size: object.map_or(0, |o| o.plain_size.max(0) as u64),
                    created: object.map(|o| from_unix(o.created_at)),
                });
            }
            match page.items.last() {
                Some(last) if page.more => cursor = last.encrypted_object_key.clone(),
                Some(_) => break,
                None if page.more => {
                    return Err(Error::Protocol(
                        "an object listing page was empty but claimed more".into(),
                    ))
                }
                None => break,
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Deletes an object; returns what it was.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, Error> {
        let (encrypted_key, path_key) =
            crypto::encrypt_path(&self.root_key, bucket, key.split('/'));
        let response = self
            .metainfo
            .delete_object(bucket, key, &encrypted_key)
            .await?;
        let object = response
            .object
            .ok_or_else(|| Error::Protocol("the deleted object is missing".into()))?;
        object_info(key, &object, &crypto::object_key(&path_key), Vec::new())
    }
}

/// Opens an object's sealed metadata and describes it.
fn object_info(
    key: &str,
    object: &pb::Object,
    object_key: &Key,
    segments: Vec<SegmentStat>,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Servers (the S3 gateway) run transfers on spawned tasks, so the futures
    /// must be `Send`; this fails to compile otherwise.
    #[test]
    fn transfer_futures_are_send() {
        let _ = |project: &Project| {
            is_send(project.upload("b", "k", tokio::io::empty(), UploadOptions::default()));
            is_send(project.download("b", "k", None, tokio::io::sink(), None));
            is_send(project.list("b", "", true));
            is_send(project.stat("b", "k"));
            is_send(Access::request("sat:1", "key", "pass"));
        };
    }
}
