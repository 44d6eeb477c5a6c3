//! The repository's keys and how its bytes are sealed.
//!
//! A repository has one 256-bit master key: by default derived from the
//! access grant ([`archipel_client::Project::prefix_secret`] of the
//! repository's prefix, so no passphrase is asked and cron can run it), or
//! from a passphrase with Argon2id and the salt in the repository's config.
//! Keys derive from it with BLAKE3's key derivation (and a 64-bit seed for
//! the chunker's gear table, see [`crate::chunker`]):
//!
//! - the **id key**: chunk ids are BLAKE3 keyed with it, so the same file in
//!   two repositories has unrelated ids and an id reveals nothing about
//!   content to someone without the key;
//! - the **data key**: every blob, pack header, index, snapshot and lock is
//!   sealed with AES-256-GCM under it, with a random 96-bit nonce stored in
//!   front (as restic does; 2^32 seals per key keep the chance of a repeated
//!   nonce negligible) and associated data that says what the bytes are (a
//!   blob's id, or the kind of object), so that nothing can be swapped for
//!   something else.
//!
//! This is on top of the network's own encryption, which already hides
//! everything from nodes and the satellite: the repository's keys also keep a
//! passphrase-protected repository closed to people who hold the grant.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// AES-GCM tag bytes.
const TAG_LEN: usize = 16;
/// What sealing adds to a plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Argon2id cost for a repository passphrase: the same as the client's own
/// passphrase derivation (64 MiB, 3 passes, 1 lane).
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_ITERATIONS: u32 = 3;

/// The repository's working keys.
pub struct Keys {
    id_key: [u8; 32],
    data_key: LessSafeKey,
    check: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Keys {
        let data = blake3::derive_key("archipel backup v1 data key", master);
        Keys {
            id_key: blake3::derive_key("archipel backup v1 chunk id key", master),
            data_key: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &data).expect("a 32-byte key is an AES-256 key"),
            ),
            check: blake3::derive_key("archipel backup v1 key check", master),
            chunker_seed: u64::from_le_bytes(
                blake3::derive_key("archipel backup v1 chunker seed", master)[..8]
                    .try_into()
                    .expect("8 bytes of 32"),
            ),
        }
    }

    /// The master key of a passphrase-protected repository.
    pub fn master_from_passphrase(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], Error> {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, 1, Some(32))
            .map_err(|e| Error::Invalid(format!("Argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut master = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), salt, &mut master)
            .map_err(|e| Error::Invalid(format!("Argon2: {e}")))?;
        Ok(master)
    }

    /// A value stored in the config that tells a right key from a wrong one
    /// without revealing anything about the key.
    pub fn check_value(&self) -> String {
        hex::encode(self.check)
    }

    /// What keys the chunker's gear table, so that chunk boundaries differ
    /// between repositories.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The keyed BLAKE3 id of a chunk or tree.
    pub fn blob_id(&self, plain: &[u8]) -> crate::BlobId {
        crate::BlobId(*blake3::keyed_hash(&self.id_key, plain).as_bytes())
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .data_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The plaintext of [`Keys::seal`]'s output, or `None` if it was not
    /// sealed with this key and `aad` or was changed since.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain_len = self
            .data_key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_the_same_key_and_purpose() {
        let keys = Keys::from_master(&[7; 32]);
        let sealed = keys.seal(b"snapshot", b"hello");
        assert_eq!(
            keys.open(b"snapshot", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(keys.open(b"index", &sealed), None);
        assert_eq!(Keys::from_master(&[8; 32]).open(b"snapshot", &sealed), None);
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(keys.open(b"snapshot", &flipped), None);
        assert_eq!(keys.open(b"snapshot", &sealed[..10]), None);
    }

    #[test]
    fn ids_are_keyed() {
        let a = Keys::from_master(&[1; 32]);
        let b = Keys::from_master(&[2; 32]);
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.check_value(), b.check_value());
    }
}
