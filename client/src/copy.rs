//! Server-side copies. The satellite hands out the source's segment keys
//! wrapped under the source object's key; the client unwraps each and wraps it
//! again under the destination's key (the position stays bound in), seals the
//! metadata under a fresh key, and the satellite commits a new object whose
//! segments list the source's pieces. Content keys never leave the client and
//! no piece data moves.

use std::collections::BTreeMap;
use std::time::SystemTime;

use archipel_proto::pb;

use crate::crypto::{self, ObjectPath};
use crate::metainfo::Metainfo;
use crate::upload::SealedMetadata;
use crate::{object_info, version_not_found, Error, ObjectInfo, Version, VersionLock};

/// The metadata a copy gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CopyMetadata {
    /// The source's content type and user metadata.
    #[default]
    Keep,
    /// These instead.
    Replace {
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    },
}

/// Copies the object at `source` (bucket, name, version, path) to `target`
/// with the metadata `decide` chooses for the source version it is shown.
pub(crate) async fn copy_object<E>(
    metainfo: &Metainfo,
    source: (&str, &str, &Version, ObjectPath),
    target: (&str, &str, ObjectPath, VersionLock),
    decide: impl FnOnce(&ObjectInfo) -> Result<CopyMetadata, E>,
) -> Result<Result<ObjectInfo, E>, Error> {
    let (source_bucket, source_name, source_version, source_path) = source;
    let (bucket, name, target_path, lock) = target;
    let begun = metainfo
        .begin_copy_object(
            source_bucket,
            source_name,
            &source_path.stored,
            source_version,
        )
        .await
        .map_err(|e| version_not_found(e, source_version))?;
    let object = begun
        .object
        .ok_or_else(|| Error::Protocol("the copy source is missing from the answer".into()))?;
    let source_key = crypto::object_key(&source_path.key);
    let target_key = crypto::object_key(&target_path.key);
    let segment_keys = rewrap_segment_keys(&begun.segment_keys, &source_key, &target_key)?;

    let source_info = object_info(
        source_name,
        &object,
        &source_key,
        Vec::new(),
        Some(begun.versioning),
    )?;
    let metadata = match decide(&source_info) {
        Ok(metadata) => metadata,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut sealed = crypto::ObjectMetadata {
        size: source_info.size,
        created: SystemTime::now(),
        content_type: source_info.content_type,
        metadata: source_info.metadata,
    };
    if let CopyMetadata::Replace {
        content_type,
        metadata,
    } = metadata
    {
        sealed.content_type = content_type;
        sealed.metadata = metadata;
    }
    let SealedMetadata { data, key } = SealedMetadata::new(&target_key, &sealed);
    let finished = metainfo
        .finish_copy_object(
            pb::FinishCopyObjectRequest {
                header: metainfo.header(),
                stream_id: object.stream_id,
                bucket: bucket.to_string(),
                encrypted_object_key: target_path.stored.into_bytes(),
                encrypted_metadata: data,
                encrypted_metadata_key: key.encrypted,
                encrypted_metadata_nonce: key.nonce,
                segment_keys,
                lock: lock.to_pb(),
            },
            (source_bucket, source_name),
        )
        .await?;
    let copy = finished
        .object
        .ok_or_else(|| Error::Protocol("the copy is missing from the answer".into()))?;
    object_info(
        name,
        &copy,
        &target_key,
        Vec::new(),
        Some(finished.versioning),
    )
    .map(Ok)
}

/// Each segment key unwrapped from under `from` and wrapped under `to`, bound
/// to the same position. Positions must ascend: the satellite gives them in order.
fn rewrap_segment_keys(
    keys: &[pb::SegmentKey],
    from: &crypto::Key,
    to: &crypto::Key,
) -> Result<Vec<pb::SegmentKey>, Error> {
    if keys.windows(2).any(|w| w[0].position >= w[1].position) {
        return Err(Error::Protocol(
            "the copy source's segments are not in order".into(),
        ));
    }
    keys.iter()
        .map(|k| {
            let purpose = crypto::segment_key_purpose(k.position);
            let key = crypto::unwrap_key(from, &k.encrypted_key, &k.encrypted_key_nonce, &purpose)?;
            let wrapped = crypto::wrap_key(to, &key, &purpose);
            Ok(pb::SegmentKey {
                position: k.position,
                encrypted_key: wrapped.encrypted,
                encrypted_key_nonce: wrapped.nonce,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[test]
    fn rewrapped_keys_open_under_the_new_key_at_their_position_only() {
        let (from, to) = (Key::random(), Key::random());
        let segment_keys: Vec<Key> = (0..3).map(|_| Key::random()).collect();
        let positions = [0u32, 1 << 18, (2 << 18) | 1];
        let wrapped: Vec<pb::SegmentKey> = positions
            .iter()
            .zip(&segment_keys)
            .map(|(&position, key)| {
                let w = crypto::wrap_key(&from, key, &crypto::segment_key_purpose(position));
                pb::SegmentKey {
                    position,
                    encrypted_key: w.encrypted,
                    encrypted_key_nonce: w.nonce,
                }
            })
            .collect();
        let rewrapped = rewrap_segment_keys(&wrapped, &from, &to).unwrap();
        for ((k, original), position) in rewrapped.iter().zip(&segment_keys).zip(positions) {
            assert_eq!(k.position, position);
            let opened = crypto::unwrap_key(
                &to,
                &k.encrypted_key,
                &k.encrypted_key_nonce,
                &crypto::segment_key_purpose(position),
            )
            .unwrap();
            assert_eq!(&opened, original);
            // Bound to its position, and no longer openable with the old key.
            assert!(crypto::unwrap_key(
                &to,
                &k.encrypted_key,
                &k.encrypted_key_nonce,
                &crypto::segment_key_purpose(position + 1)
            )
            .is_err());
            assert!(crypto::unwrap_key(
                &from,
                &k.encrypted_key,
                &k.encrypted_key_nonce,
                &crypto::segment_key_purpose(position)
            )
            .is_err());
        }
        // A key of another object does not unwrap: the copy fails, nothing is sent.
        assert!(rewrap_segment_keys(&wrapped, &Key::random(), &to).is_err());
        let mut unordered = wrapped.clone();
        unordered.swap(0, 1);
        assert!(rewrap_segment_keys(&unordered, &from, &to).is_err());
    }
}
