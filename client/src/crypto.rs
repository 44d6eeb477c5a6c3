//! Client-side cryptography (all with `ring`): the passphrase → root key
//! derivation, object name encryption, the key hierarchy, per-block content
//! encryption and sealed object metadata. Nothing here touches the network.
//!
//! Key hierarchy:
//!
//! - root key = Argon2id(passphrase, project salt), m = 64 MiB, t = 3, p = 1,
//!   32-byte output. The project salt comes from the satellite, so the same
//!   passphrase gives different keys in different projects.
//! - path keys: `k0 = HMAC(root, "path" ‖ bucket)`,
//!   `k(i+1) = HMAC(k(i), "child:" ‖ component(i))`. The `"child:"` prefix keeps
//!   a child key from ever equalling the other values derived from `k(i)`
//!   below, whatever a component is called.
//! - component `i` is sealed with AES-256-GCM under `HMAC(k(i), "component key")`
//!   with nonce = first 12 bytes of `HMAC(k(i), "nonce" ‖ component)`, written as
//!   base64url(nonce ‖ ciphertext ‖ tag) without padding. Deterministic, so an
//!   exact lookup and a one-level listing work on ciphertext; the nonce is
//!   recomputed and compared on decryption (SIV style), so a component cannot be
//!   moved to another place in the tree.
//! - object key = `HMAC(k(n), "object")` for an `n`-component name. It wraps
//!   (AES-256-GCM, random nonce) a fresh random key per segment (associated data
//!   binds the segment position) and a fresh random metadata key.
//! - application secret = `HMAC(k(n), "application:" ‖ purpose)`: a key an
//!   application derives for its own data below a prefix (the backup engine).
//! - content: a segment's plaintext is sealed in blocks of `block_size` bytes,
//!   nonce = block index, associated data = segment position ‖ block index ‖
//!   last-block flag, so blocks cannot be reordered, moved between segments, or
//!   cut off. An empty segment is one empty last block.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// AES-GCM tag bytes appended to every sealed block.
pub(crate) const TAG_SIZE: u64 = 16;
/// Plaintext bytes per AEAD block for new objects.
pub(crate) const DEFAULT_BLOCK_SIZE: u32 = 64 * 1024;
/// `EncryptionParameters.cipher` value for AES-256-GCM.
pub(crate) const CIPHER_AES_256_GCM: u32 = 1;
/// Smallest AEAD block size a stored object may declare.
pub(crate) const MIN_BLOCK_SIZE: u32 = 1024;
/// Largest AEAD block size a stored object may declare: bounds a block buffer.
pub(crate) const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// Argon2id memory cost in KiB (64 MiB).
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
const ARGON2_ITERATIONS: u32 = 3;
/// Argon2id lanes.
const ARGON2_PARALLELISM: u32 = 1;

/// A 256-bit secret key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key(pub(crate) [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub(crate) fn random() -> Key {
        Key(random_bytes())
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte key is an AES-256 key"),
        )
    }

    /// HMAC-SHA256 of the concatenated `parts` under this key.
    fn derive(&self, parts: &[&[u8]]) -> Key {
        let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &self.0));
        for part in parts {
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        Key(out)
    }
}

/// An application's secret below a path key (see
/// [`crate::Project::prefix_secret`]). The `"application:"` prefix keeps it
/// apart from every other value derived from a path key.
pub(crate) fn application_secret(path_key: &Key, purpose: &str) -> [u8; 32] {
    path_key.derive(&[b"application:", purpose.as_bytes()]).0
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

/// The root key of a project: Argon2id(passphrase, project salt).
pub(crate) fn derive_root_key(passphrase: &str, salt: &[u8]) -> Result<Key, Error> {
    let params = argon2::Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        Some(32),
    )
    .map_err(|e| Error::InvalidAccess(format!("bad key derivation parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| Error::Protocol(format!("cannot derive a key from the project salt: {e}")))?;
    Ok(Key(out))
}

// ---------------------------------------------------------------- names

/// The key of the (empty) path at the top of `bucket`.
pub(crate) fn bucket_path_key(root: &Key, bucket: &str) -> Key {
    root.derive(&[b"path", bucket.as_bytes()])
}

/// The key below `component`, given the key of the level it sits in.
pub(crate) fn child_path_key(parent: &Key, component: &str) -> Key {
    parent.derive(&[b"child:", component.as_bytes()])
}

/// The key that wraps an object's segment and metadata keys.
pub(crate) fn object_key(path_key: &Key) -> Key {
    path_key.derive(&[b"object"])
}

/// Seals one name component deterministically under the key of its level.
pub(crate) fn encrypt_component(level: &Key, component: &str) -> String {
    let nonce_source = level.derive(&[b"nonce", component.as_bytes()]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&nonce_source.0[..NONCE_LEN]);
    let mut sealed = component.as_bytes().to_vec();
    level
        .derive(&[b"component key"])
        .aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .expect("sealing in memory cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(out)
}

/// Opens a component sealed by [`encrypt_component`] under the same level key.
pub(crate) fn decrypt_component(level: &Key, text: &[u8]) -> Result<String, Error> {
    let bad = Error::Decryption("an object name does not decrypt");
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad)?;
    if raw.len() < NONCE_LEN + TAG_SIZE as usize {
        return Err(Error::Decryption("an object name does not decrypt"));
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| Error::Decryption("an object name does not decrypt"))?;
    let plain = level
        .derive(&[b"component key"])
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .map_err(|_| Error::Decryption("an object name does not decrypt"))?;
    let component = String::from_utf8(plain.to_vec())
        .map_err(|_| Error::Decryption("an object name is not UTF-8"))?;
    if level.derive(&[b"nonce", component.as_bytes()]).0[..NONCE_LEN] != nonce {
        return Err(Error::Decryption("an object name is out of place"));
    }
    Ok(component)
}

/// Walks down from the level of `key` through `components`: returns each
/// component as the satellite stores it (sealed under its level's key, or
/// itself in a bucket with unencrypted names) and the path key below the last.
pub(crate) fn descend<'a>(
    key: &Key,
    components: impl IntoIterator<Item = &'a str>,
    plain_names: bool,
) -> (Vec<String>, Key) {
    let mut key = key.clone();
    let mut stored = Vec::new();
    for component in components {
        stored.push(if plain_names {
            component.to_string()
        } else {
            encrypt_component(&key, component)
        });
        key = child_path_key(&key, component);
    }
    (stored, key)
}

/// Where the satellite keeps an object: the key it stores (the encrypted
/// name, or the name itself in a bucket with unencrypted names) and the path
/// key below the name, from which the object's keys derive in both cases.
pub(crate) struct ObjectPath {
    pub(crate) stored: String,
    pub(crate) key: Key,
}

/// Decrypts a `/`-separated encrypted path relative to the level of `key`.
pub(crate) fn decrypt_relative_path(key: &Key, encrypted: &[u8]) -> Result<String, Error> {
    let mut key = key.clone();
    let mut plain = Vec::new();
    for part in encrypted.split(|&b| b == b'/') {
        let component = decrypt_component(&key, part)?;
        key = child_path_key(&key, &component);
        plain.push(component);
    }
    Ok(plain.join("/"))
}

// ---------------------------------------------------------------- keys

/// A key wrapped under another: ciphertext and nonce, as the satellite stores them.
pub(crate) struct WrappedKey {
    pub(crate) encrypted: Vec<u8>,
    pub(crate) nonce: Vec<u8>,
}

/// Associated data binding a wrapped segment key to its segment position.
pub(crate) fn segment_key_purpose(position: u32) -> Vec<u8> {
    let mut purpose = b"segment key ".to_vec();
    purpose.extend_from_slice(&position.to_be_bytes());
    purpose
}

/// Associated data of a wrapped metadata key.
pub(crate) const METADATA_KEY_PURPOSE: &[u8] = b"metadata key";

pub(crate) fn wrap_key(wrapping: &Key, key: &Key, purpose: &[u8]) -> WrappedKey {
    seal_small(wrapping, &key.0, purpose)
}

pub(crate) fn unwrap_key(
    wrapping: &Key,
    encrypted: &[u8],
    nonce: &[u8],
    purpose: &[u8],
) -> Result<Key, Error> {
    let bad = || Error::Decryption("a content key does not unwrap");
    let plain = open_small(wrapping, encrypted, nonce, purpose).ok_or_else(bad)?;
    let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| bad())?;
    Ok(Key(key))
}

/// Seals a few bytes under `wrapping` with a random nonce, bound to `purpose`.
fn seal_small(wrapping: &Key, plain: &[u8], purpose: &[u8]) -> WrappedKey {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut sealed = plain.to_vec();
    wrapping
        .aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose),
            &mut sealed,
        )
        .expect("sealing in memory cannot fail");
    WrappedKey {
        encrypted: sealed,
        nonce: nonce.to_vec(),
    }
}

/// Opens what [`seal_small`] sealed; `None` if it does not authenticate.
fn open_small(wrapping: &Key, encrypted: &[u8], nonce: &[u8], purpose: &[u8]) -> Option<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let mut sealed = encrypted.to_vec();
    let plain = wrapping
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(purpose),
            &mut sealed,
        )
        .ok()?;
    Some(plain.to_vec())
}

fn part_tag_purpose(part: u32) -> Vec<u8> {
    let mut purpose = b"part tag ".to_vec();
    purpose.extend_from_slice(&part.to_be_bytes());
    purpose
}

/// Seals the caller's tag of a multipart upload's part (an S3 ETag, say)
/// under the object's key: nonce then ciphertext.
pub(crate) fn seal_part_tag(object_key: &Key, part: u32, tag: &str) -> Vec<u8> {
    let sealed = seal_small(object_key, tag.as_bytes(), &part_tag_purpose(part));
    [sealed.nonce, sealed.encrypted].concat()
}

pub(crate) fn open_part_tag(object_key: &Key, part: u32, sealed: &[u8]) -> Result<String, Error> {
    let bad = || Error::Decryption("a part's tag does not authenticate");
    if sealed.len() < NONCE_LEN {
        return Err(bad());
    }
    let (nonce, encrypted) = sealed.split_at(NONCE_LEN);
    let plain =
        open_small(object_key, encrypted, nonce, &part_tag_purpose(part)).ok_or_else(bad)?;
    String::from_utf8(plain).map_err(|_| Error::Corrupt("a part's tag is not text".into()))
}

// ---------------------------------------------------------------- content

/// Seals and opens the blocks of one segment.
pub(crate) struct SegmentCipher {
    key: LessSafeKey,
    position: u32,
}

fn block_nonce(index: u64) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[NONCE_LEN - 8..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

fn block_aad(position: u32, index: u64, last: bool) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..4].copy_from_slice(&position.to_be_bytes());
    aad[4..12].copy_from_slice(&index.to_be_bytes());
    aad[12] = last as u8;
    aad
}

impl SegmentCipher {
    pub(crate) fn new(key: &Key, position: u32) -> Self {
        SegmentCipher {
            key: key.aead(),
            position,
        }
    }

    /// Seals block `index` in place: `block` grows by [`TAG_SIZE`].
    pub(crate) fn seal_block(&self, index: u64, last: bool, block: &mut Vec<u8>) {
        self.key
            .seal_in_place_append_tag(
                block_nonce(index),
                Aad::from(block_aad(self.position, index, last)),
                block,
            )
            .expect("sealing in memory cannot fail");
    }

    /// Opens block `index` in place and returns its plaintext.
    pub(crate) fn open_block<'a>(
        &self,
        index: u64,
        last: bool,
        block: &'a mut [u8],
    ) -> Result<&'a mut [u8], Error> {
        self.key
            .open_in_place(
                block_nonce(index),
                Aad::from(block_aad(self.position, index, last)),
                block,
            )
            .map_err(|_| Error::Decryption("a block of the object's data does not authenticate"))
    }
}

// ---------------------------------------------------------------- metadata

/// Object metadata as sealed for the satellite to keep.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ObjectMetadata {
    pub(crate) size: u64,
    pub(crate) created: SystemTime,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
}

const METADATA_AAD: &[u8] = b"archipel object metadata v1";

/// Seals `metadata` under a fresh key; returns the ciphertext and the key.
pub(crate) fn seal_metadata(metadata: &ObjectMetadata) -> (Vec<u8>, Key) {
    let key = Key::random();
    let mut sealed =
        serde_json::to_vec(metadata).expect("metadata of strings and numbers always serializes");
    // The key is fresh for this one message, so a fixed nonce is never reused.
    key.aead()
        .seal_in_place_append_tag(block_nonce(0), Aad::from(METADATA_AAD), &mut sealed)
        .expect("sealing in memory cannot fail");
    (sealed, key)
}

pub(crate) fn open_metadata(key: &Key, sealed: &[u8]) -> Result<ObjectMetadata, Error> {
    let mut sealed = sealed.to_vec();
    let plain = key
        .aead()
        .open_in_place(block_nonce(0), Aad::from(METADATA_AAD), &mut sealed)
        .map_err(|_| Error::Decryption("the object's metadata does not authenticate"))?;
    serde_json::from_slice(plain)
        .map_err(|e| Error::Corrupt(format!("the object's metadata does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Key {
        Key([7; 32])
    }

    #[test]
    fn part_tags_open_only_for_their_part_and_object() {
        let object = Key([1; 32]);
        let sealed = seal_part_tag(&object, 3, "etag-3");
        assert_eq!(open_part_tag(&object, 3, &sealed).unwrap(), "etag-3");
        assert!(open_part_tag(&object, 4, &sealed).is_err());
        assert!(open_part_tag(&Key([2; 32]), 3, &sealed).is_err());
        assert!(open_part_tag(&object, 3, &sealed[..5]).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open_part_tag(&object, 3, &tampered).is_err());
    }

    fn encrypt_path<'a>(
        root: &Key,
        bucket: &str,
        components: impl IntoIterator<Item = &'a str>,
    ) -> (String, Key) {
        let (stored, key) = descend(&bucket_path_key(root, bucket), components, false);
        (stored.join("/"), key)
    }

    fn object_path(root: &Key, bucket: &str, name: &str, plain_names: bool) -> ObjectPath {
        let (stored, key) = descend(&bucket_path_key(root, bucket), name.split('/'), plain_names);
        ObjectPath {
            stored: stored.join("/"),
            key,
        }
    }

    #[test]
    fn path_encryption_is_deterministic_and_reverses() {
        let key = "photos/2024//a b/ü.jpg";
        let (a, ka) = encrypt_path(&root(), "bucket", key.split('/'));
        let (b, kb) = encrypt_path(&root(), "bucket", key.split('/'));
        assert_eq!(a, b);
        assert_eq!(ka, kb);
        assert_eq!(a.split('/').count(), 5);
        assert!(!a.contains("photos"));
        let top = bucket_path_key(&root(), "bucket");
        assert_eq!(decrypt_relative_path(&top, a.as_bytes()).unwrap(), key);

        // The same name in another bucket, under another root, or at another
        // level encrypts differently.
        assert_ne!(encrypt_path(&root(), "other", key.split('/')).0, a);
        assert_ne!(encrypt_path(&Key([8; 32]), "bucket", key.split('/')).0, a);
        let (x, _) = encrypt_path(&root(), "bucket", ["x", "x"]);
        let (first, second) = x.split_once('/').unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn plain_names_keep_the_name_and_the_keys() {
        let encrypted = object_path(&root(), "b", "a/b c/d", false);
        let plain = object_path(&root(), "b", "a/b c/d", true);
        assert_eq!(plain.stored, "a/b c/d");
        assert_ne!(encrypted.stored, plain.stored);
        assert_eq!(encrypted.key, plain.key);
    }

    #[test]
    fn shared_prefixes_share_encrypted_prefixes() {
        let (dir, dir_key) = encrypt_path(&root(), "b", ["a", "b"]);
        let (file, _) = encrypt_path(&root(), "b", ["a", "b", "c"]);
        assert!(file.starts_with(&format!("{dir}/")));
        let rel = &file[dir.len() + 1..];
        assert_eq!(
            decrypt_relative_path(&dir_key, rel.as_bytes()).unwrap(),
            "c"
        );
    }

    #[test]
    fn empty_components_and_keys_work() {
        for key in ["", "/", "a//b", "a/", "/a"] {
            let (enc, _) = encrypt_path(&root(), "b", key.split('/'));
            let top = bucket_path_key(&root(), "b");
            assert_eq!(decrypt_relative_path(&top, enc.as_bytes()).unwrap(), key);
        }
    }

    #[test]
    fn moved_or_tampered_components_are_rejected() {
        let top = bucket_path_key(&root(), "b");
        let (enc, _) = encrypt_path(&root(), "b", ["a", "b"]);
        let (first, second) = enc.split_once('/').unwrap();
        // A component sealed at level 2 does not open at level 1.
        assert!(decrypt_component(&top, second.as_bytes()).is_err());
        let mut raw = URL_SAFE_NO_PAD.decode(first).unwrap();
        raw[14] ^= 1;
        assert!(decrypt_component(&top, URL_SAFE_NO_PAD.encode(raw).as_bytes()).is_err());
        assert!(decrypt_component(&top, b"not base64!").is_err());
        assert!(decrypt_component(&top, b"AAAA").is_err());
    }

    #[test]
    fn blocks_round_trip_and_detect_tampering_reordering_and_truncation() {
        let key = Key::random();
        let cipher = SegmentCipher::new(&key, 3);
        let mut b0 = b"first block".to_vec();
        let mut b1 = b"second".to_vec();
        cipher.seal_block(0, false, &mut b0);
        cipher.seal_block(1, true, &mut b1);
        assert_eq!(b0.len() as u64, 11 + TAG_SIZE);

        assert_eq!(
            cipher.open_block(0, false, &mut b0.clone()).unwrap(),
            b"first block"
        );
        assert_eq!(
            cipher.open_block(1, true, &mut b1.clone()).unwrap(),
            b"second"
        );
        // Reordered blocks.
        assert!(cipher.open_block(0, false, &mut b1.clone()).is_err());
        assert!(cipher.open_block(1, true, &mut b0.clone()).is_err());
        // Truncation: the first block presented as the last one.
        assert!(cipher.open_block(0, true, &mut b0.clone()).is_err());
        // Moved to another segment.
        let other = SegmentCipher::new(&key, 4);
        assert!(other.open_block(0, false, &mut b0.clone()).is_err());
        // Flipped bit.
        let mut flipped = b0.clone();
        flipped[2] ^= 0x80;
        assert!(cipher.open_block(0, false, &mut flipped).is_err());
    }

    #[test]
    fn wrapped_keys_unwrap_only_with_their_key_and_purpose() {
        let object = Key::random();
        let segment = Key::random();
        let wrapped = wrap_key(&object, &segment, &segment_key_purpose(2));
        let back = unwrap_key(
            &object,
            &wrapped.encrypted,
            &wrapped.nonce,
            &segment_key_purpose(2),
        )
        .unwrap();
        assert_eq!(back, segment);
        assert!(unwrap_key(
            &object,
            &wrapped.encrypted,
            &wrapped.nonce,
            &segment_key_purpose(1)
        )
        .is_err());
        assert!(unwrap_key(
            &Key::random(),
            &wrapped.encrypted,
            &wrapped.nonce,
            &segment_key_purpose(2)
        )
        .is_err());
        assert!(unwrap_key(
            &object,
            &wrapped.encrypted,
            b"short",
            &segment_key_purpose(2)
        )
        .is_err());
    }

    #[test]
    fn metadata_round_trips_and_rejects_tampering() {
        let metadata = ObjectMetadata {
            size: 12345,
            created: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            content_type: Some("text/plain".into()),
            metadata: BTreeMap::from([("colour".to_string(), "blue".to_string())]),
        };
        let (sealed, key) = seal_metadata(&metadata);
        assert_eq!(open_metadata(&key, &sealed).unwrap(), metadata);
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open_metadata(&key, &tampered).is_err());
        assert!(open_metadata(&Key::random(), &sealed).is_err());
    }

    #[test]
    fn root_key_depends_on_passphrase_and_salt() {
        let a = derive_root_key("correct horse", &[1; 32]).unwrap();
        assert_eq!(a, derive_root_key("correct horse", &[1; 32]).unwrap());
        assert_ne!(a, derive_root_key("correct horsf", &[1; 32]).unwrap());
        assert_ne!(a, derive_root_key("correct horse", &[2; 32]).unwrap());
        assert!(derive_root_key("x", &[]).is_err());
    }
}
