//! S3 object headers ↔ the object's sealed metadata. Content-Type has its own
//! field in the client library; the other standard headers, the ETag and the
//! additional checksum (`s3:checksum-crc32` etc.; a multipart upload's
//! algorithm and type under `s3:multipart-checksum`) live under reserved
//! `s3:` keys, and `x-amz-meta-*` entries under their own names (HTTP header
//! names cannot contain `:`, so they never collide).

use std::collections::BTreeMap;
use std::sync::Arc;

use archipel_client::{CannedAcl, LateMetadata, ObjectInfo, UploadOptions};
use s3s::dto::{ETag, Metadata, Timestamp, TimestampFormat};

use crate::acl;
use crate::checksums::{Algorithm, Checksum, Checksummer};
use crate::part_checksums::UploadChecksum;
use crate::tagging::{self, Tags};

const ETAG: &str = "s3:etag";
const CONTENT_ENCODING: &str = "s3:content-encoding";
const CONTENT_DISPOSITION: &str = "s3:content-disposition";
const CACHE_CONTROL: &str = "s3:cache-control";
const EXPIRES: &str = "s3:expires";
const CHECKSUM_PREFIX: &str = "s3:checksum-";
/// A multipart upload's checksum algorithm and type.
const UPLOAD_CHECKSUM: &str = "s3:multipart-checksum";
const RESERVED_PREFIX: &str = "s3:";

/// The S3-visible description of an object, as PUT stores it and GET/HEAD
/// return it.
#[derive(Debug, Default)]
pub(crate) struct ObjectHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
    pub user: Option<Metadata>,
    /// The additional checksum; an upload's is read at commit, when the body
    /// has ended (a trailer's value is known only then).
    pub checksum: Option<Checksummer>,
    /// The object's tags (`x-amz-tagging`), set by the caller: the macro
    /// below leaves them empty.
    pub tags: Tags,
    /// The object's canned ACL (`x-amz-acl`), set by the caller: the macro
    /// below leaves it private.
    pub acl: CannedAcl,
}

/// The [`ObjectHeaders`] an upload request names (PutObject,
/// CreateMultipartUpload and CopyObject carry the same header fields), with
/// `$checksum` as the additional checksum.
macro_rules! request_headers {
    ($input:expr, $checksum:expr) => {
        $crate::metadata::ObjectHeaders {
            content_type: $input.content_type,
            content_encoding: $input.content_encoding,
            content_disposition: $input.content_disposition,
            cache_control: $input.cache_control,
            expires: $input.expires,
            user: $input.metadata,
            checksum: $checksum,
            tags: Vec::new(),
            acl: archipel_client::CannedAcl::Private,
        }
    };
}
pub(crate) use request_headers;

impl ObjectHeaders {
    /// The upload options that store these headers, the checksum at commit
    /// (the ETag is added at commit too, see [`etag_entry`]).
    pub(crate) fn into_upload_options(self) -> UploadOptions {
        let mut metadata = BTreeMap::new();
        for (name, value) in self.user.into_iter().flatten() {
            metadata.insert(name.to_ascii_lowercase(), value);
        }
        let text_fields = [
            (CONTENT_ENCODING, self.content_encoding),
            (CONTENT_DISPOSITION, self.content_disposition),
            (CACHE_CONTROL, self.cache_control),
            (EXPIRES, self.expires.as_ref().and_then(http_date)),
        ];
        for (key, value) in text_fields {
            if let Some(value) = value {
                metadata.insert(key.to_string(), value);
            }
        }
        tagging::set(&mut metadata, &self.tags);
        acl::set(&mut metadata, self.acl);
        let late_metadata = self.checksum.map(|checksum| -> LateMetadata {
            Arc::new(move || {
                checksum
                    .value()
                    .map(|c| checksum_entry(&c))
                    .into_iter()
                    .collect()
            })
        });
        UploadOptions {
            content_type: self.content_type,
            metadata,
            late_metadata,
            ..UploadOptions::default()
        }
    }

    /// What was stored for `info`; objects stored by other tools simply
    /// have fewer headers.
    pub(crate) fn from_object(info: &ObjectInfo) -> ObjectHeaders {
        let text = |key: &str| info.metadata.get(key).cloned();
        let user: Metadata = info
            .metadata
            .iter()
            .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        ObjectHeaders {
            content_type: info.content_type.clone(),
            content_encoding: text(CONTENT_ENCODING),
            content_disposition: text(CONTENT_DISPOSITION),
            cache_control: text(CACHE_CONTROL),
            expires: info
                .metadata
                .get(EXPIRES)
                .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok()),
            user: (!user.is_empty()).then_some(user),
            checksum: checksum(info).map(Checksummer::stored),
            tags: tagging::stored(info),
            acl: acl::stored(info),
        }
    }
}

/// The metadata entry that stores an object's ETag.
pub(crate) fn etag_entry(etag: &str) -> (String, String) {
    (ETAG.to_string(), etag.to_string())
}

/// The stored ETag (hex MD5 of the content, or S3's multipart form), if the
/// object has one.
pub(crate) fn etag(info: &ObjectInfo) -> Option<ETag> {
    info.metadata.get(ETAG).map(|hex| ETag::Strong(hex.clone()))
}

/// The stored additional checksum, if the object has one.
pub(crate) fn checksum(info: &ObjectInfo) -> Option<Checksum> {
    info.metadata.iter().find_map(|(key, value)| {
        let algorithm = Algorithm::parse(key.strip_prefix(CHECKSUM_PREFIX)?)?;
        Some(Checksum {
            algorithm,
            value: value.clone(),
        })
    })
}

/// The metadata entry that stores an object's additional checksum.
pub(crate) fn checksum_entry(checksum: &Checksum) -> (String, String) {
    (checksum_key(checksum.algorithm), checksum.value.clone())
}

/// The metadata entry that records a multipart upload's checksum.
pub(crate) fn upload_checksum_entry(checksum: UploadChecksum) -> (String, String) {
    (UPLOAD_CHECKSUM.to_string(), checksum.to_text())
}

/// The checksum a multipart upload was created with, if any.
pub(crate) fn upload_checksum(info: &ObjectInfo) -> Option<UploadChecksum> {
    info.metadata
        .get(UPLOAD_CHECKSUM)
        .and_then(|text| UploadChecksum::parse(text))
}

fn checksum_key(algorithm: Algorithm) -> String {
    format!("{CHECKSUM_PREFIX}{}", algorithm.name().to_ascii_lowercase())
}

/// An S3 timestamp for `time`, or `None` when it lies outside what HTTP dates
/// can express (a converting `From` would panic on such a time, and stored
/// times come from other writers).
pub(crate) fn timestamp(time: std::time::SystemTime) -> Option<Timestamp> {
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    let at = time::OffsetDateTime::UNIX_EPOCH
        .checked_add(time::Duration::try_from(since_epoch).ok()?)?;
    (at.year() <= 9999).then(|| Timestamp::from(at))
}

fn http_date(time: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    time.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use archipel_proto::hostile;
    use proptest::prelude::*;

    #[test]
    fn headers_survive_the_round_trip_through_metadata() {
        let expires =
            Timestamp::parse(TimestampFormat::HttpDate, "Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let headers = ObjectHeaders {
            content_type: Some("text/plain".into()),
            content_encoding: Some("gzip".into()),
            content_disposition: Some("attachment".into()),
            cache_control: Some("no-cache".into()),
            expires: Some(expires.clone()),
            user: Some([("Colour".to_string(), "blue".to_string())].into()),
            checksum: Some(Checksummer::stored(Checksum {
                algorithm: Algorithm::Sha1,
                value: "Kq5sNclPz7QV2+lfQIuc6R7oRu0=".into(),
            })),
            tags: vec![("team".into(), "blue sky".into())],
            acl: CannedAcl::PublicRead,
        };
        let mut options = headers.into_upload_options();
        assert_eq!(options.metadata.get("colour").unwrap(), "blue");
        assert!(!options.metadata.contains_key("s3:checksum-sha1"));
        let at_commit = options.late_metadata.take().unwrap()();
        assert_eq!(
            at_commit.get("s3:checksum-sha1").unwrap(),
            "Kq5sNclPz7QV2+lfQIuc6R7oRu0="
        );
        options.metadata.extend(at_commit);
        options.metadata.extend([etag_entry("abc123")]);
        let info = ObjectInfo {
            key: "k".into(),
            size: 0,
            created: std::time::SystemTime::now(),
            expires: None,
            content_type: options.content_type.clone(),
            metadata: options.metadata.clone(),
            segments: Vec::new(),
            version: None,
            lock: Default::default(),
        };
        let back = ObjectHeaders::from_object(&info);
        assert_eq!(back.tags, vec![("team".into(), "blue sky".into())]);
        assert_eq!(back.acl, CannedAcl::PublicRead);
        assert_eq!(back.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(back.content_disposition.as_deref(), Some("attachment"));
        assert_eq!(back.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(back.expires, Some(expires));
        assert_eq!(
            back.user.unwrap(),
            Metadata::from([("colour".to_string(), "blue".to_string())])
        );
        assert_eq!(etag(&info), Some(ETag::Strong("abc123".into())));
        let stored = checksum(&info).unwrap();
        assert_eq!(stored.algorithm, Algorithm::Sha1);
        assert_eq!(stored.value, "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(back.checksum.unwrap().value(), Some(stored));
    }

    /// An object's metadata as the satellite returns it (other tools may
    /// have written it): read back as headers, its ETag, its checksums and
    /// stored again as in a copy, never a panic; what is read as a checksum
    /// comes from an entry of that algorithm.
    fn stored_metadata_is_checked(metadata: BTreeMap<String, String>) -> Result<(), TestCaseError> {
        let info = ObjectInfo {
            key: "k".into(),
            size: 0,
            created: std::time::SystemTime::UNIX_EPOCH,
            expires: None,
            content_type: metadata.get("content-type").cloned(),
            metadata,
            segments: Vec::new(),
            version: None,
            lock: Default::default(),
        };
        let _ = etag(&info);
        if let Some(stored) = checksum(&info) {
            let key = format!("{CHECKSUM_PREFIX}{}", stored.algorithm.name());
            let entry = info
                .metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&key));
            prop_assert!(entry.is_some());
        }
        if let Some(upload) = upload_checksum(&info) {
            prop_assert_eq!(UploadChecksum::parse(&upload.to_text()), Some(upload));
        }
        let _ = ObjectHeaders::from_object(&info).into_upload_options();
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_stored_metadata_is_read_without_panics: prop::collection::btree_map(
            prop_oneof![
                prop::sample::select(vec![
                    ETAG, CONTENT_ENCODING, CONTENT_DISPOSITION, CACHE_CONTROL, EXPIRES,
                    UPLOAD_CHECKSUM, "s3:checksum-crc32", "s3:checksum-SHA256", "content-type",
                ])
                .prop_map(str::to_string),
                hostile::text_or_mutated("s3:checksum-crc64nvme".into()),
                hostile::text(),
            ],
            prop_oneof![
                hostile::text_or_mutated("Wed, 21 Oct 2015 07:28:00 GMT".into()),
                hostile::text_or_mutated("CRC32 COMPOSITE".into()),
                hostile::text_or_mutated("DUoRhQ==".into()),
                hostile::text(),
            ],
            0..6,
        ) => stored_metadata_is_checked;
    }
}
