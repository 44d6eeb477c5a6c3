//! API keys that anyone can restrict and only the satellite can verify
//! (macaroons, as Storj and Google's paper have them).
//!
//! A key is a head (32 random bytes naming the key the satellite issued),
//! the caveats appended since, and a tail: `t0 = MAC(secret, head)`,
//! `t(i+1) = MAC(t(i), caveat(i))`, with keyed BLAKE3 as the MAC and the
//! satellite's secret for that head. Appending a caveat needs only the
//! current tail, so a holder restricts a key offline; removing one would need
//! an earlier tail, which the key no longer carries. Every intermediate tail
//! names a key in the family, so revoking a key (its final tail) revokes
//! every key restricted from it.
//!
//! Text form: `"ak1"` and base64url (no padding) of the [`pb::Macaroon`].
//! A satellite refuses a caveat it cannot read exactly (an unknown field
//! from a newer client): a restriction it does not understand must not be
//! ignored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;

use crate::pb;

const PREFIX: &str = "ak1";
/// Bytes of a head, a secret and a tail.
pub const KEY_LEN: usize = 32;
/// Refuses absurd keys before decoding them.
const MAX_TEXT_LEN: usize = 64 * 1024;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacaroonError {
    #[error("the API key is malformed: {0}")]
    Malformed(&'static str),
    #[error("the API key has a restriction this satellite cannot read")]
    UnknownCaveat,
}

/// What a request does, as caveats judge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write,
    List,
    Delete,
    /// Removing or weakening Object Lock retention in governance mode.
    BypassGovernance,
}

/// An API key as text carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    head: [u8; KEY_LEN],
    caveats: Vec<Vec<u8>>,
    tail: [u8; KEY_LEN],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tail is the credential: never print it.
        f.debug_struct("ApiKey")
            .field("caveats", &self.caveats.len())
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8; KEY_LEN], data: &[u8]) -> [u8; KEY_LEN] {
    *blake3::keyed_hash(key, data).as_bytes()
}

impl ApiKey {
    /// A new unrestricted key under `secret`, with a fresh random head.
    pub fn issue(secret: &[u8; KEY_LEN]) -> ApiKey {
        let head: [u8; KEY_LEN] = rand::random();
        ApiKey {
            head,
            caveats: Vec::new(),
            tail: mac(secret, &head),
        }
    }

    /// The head: which issued key this is (the satellite looks its secret up by it).
    pub fn head(&self) -> &[u8; KEY_LEN] {
        &self.head
    }

    /// This key with `caveat` appended: it can do at most what both allow.
    pub fn restrict(&self, caveat: &pb::Caveat) -> ApiKey {
        let encoded = caveat.encode_to_vec();
        let tail = mac(&self.tail, &encoded);
        let mut caveats = self.caveats.clone();
        caveats.push(encoded);
        ApiKey {
            head: self.head,
            caveats,
            tail,
        }
    }

    /// The caveats, decoded; a caveat that does not re-encode to its exact
    /// bytes has fields this version does not know and is refused.
    pub fn caveats(&self) -> Result<Vec<pb::Caveat>, MacaroonError> {
        self.caveats
            .iter()
            .map(|bytes| {
                let caveat = pb::Caveat::decode(bytes.as_slice())
                    .map_err(|_| MacaroonError::Malformed("a caveat does not decode"))?;
                if caveat.encode_to_vec() != *bytes {
                    return Err(MacaroonError::UnknownCaveat);
                }
                Ok(caveat)
            })
            .collect()
    }

    /// The tails of this key and of every key it was restricted from, the
    /// issued key's first: `None` unless the chain verifies under `secret`.
    pub fn verified_tails(&self, secret: &[u8; KEY_LEN]) -> Option<Vec<[u8; KEY_LEN]>> {
        let mut tails = Vec::with_capacity(self.caveats.len() + 1);
        let mut tail = mac(secret, &self.head);
        tails.push(tail);
        for caveat in &self.caveats {
            tail = mac(&tail, caveat);
            tails.push(tail);
        }
        // Compared in constant time: the tail is a secret.
        let matches = blake3::Hash::from(tail) == blake3::Hash::from(self.tail);
        matches.then_some(tails)
    }

    /// The final tail: what revoking this key records.
    pub fn tail(&self) -> &[u8; KEY_LEN] {
        &self.tail
    }

    /// Whether this key is `other` or was restricted from it: same head,
    /// and `other`'s caveats are the first of this key's. (Both must be
    /// verified for this to mean anything.)
    pub fn derives_from(&self, other: &ApiKey) -> bool {
        self.head == other.head && self.caveats.starts_with(&other.caveats)
    }

    pub fn serialize(&self) -> String {
        let message = pb::Macaroon {
            head: self.head.to_vec(),
            caveats: self.caveats.clone(),
            tail: self.tail.to_vec(),
        };
        format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(message.encode_to_vec())
        )
    }

    pub fn parse(text: &str) -> Result<ApiKey, MacaroonError> {
        let text = text.trim();
        if text.len() > MAX_TEXT_LEN {
            return Err(MacaroonError::Malformed("it is too long"));
        }
        let body = text
            .strip_prefix(PREFIX)
            .ok_or(MacaroonError::Malformed("it does not start with \"ak1\""))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| MacaroonError::Malformed("it is not base64url"))?;
        let message = pb::Macaroon::decode(bytes.as_slice())
            .map_err(|_| MacaroonError::Malformed("it does not decode"))?;
        let fixed = |bytes: Vec<u8>| -> Result<[u8; KEY_LEN], MacaroonError> {
            bytes
                .try_into()
                .map_err(|_| MacaroonError::Malformed("its head or tail has the wrong length"))
        };
        Ok(ApiKey {
            head: fixed(message.head)?,
            caveats: message.caveats,
            tail: fixed(message.tail)?,
        })
    }
}

/// Whether `key` (as the satellite stores it) is `prefix` or below it.
pub fn key_within(key: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

impl pb::Caveat {
    /// Whether the caveat lets `op` happen at `now` (unix seconds).
    pub fn allows_op(&self, op: Op, now: i64) -> bool {
        let denied = match op {
            Op::Read => self.disallow_reads,
            Op::Write => self.disallow_writes,
            Op::List => self.disallow_lists,
            Op::Delete => self.disallow_deletes,
            Op::BypassGovernance => self.disallow_bypass_governance,
        };
        !denied
            && (self.not_before == 0 || now >= self.not_before)
            && (self.not_after == 0 || now <= self.not_after)
    }

    /// Whether the caveat lets requests reach `bucket` at all.
    pub fn allows_bucket(&self, bucket: &str) -> bool {
        self.allowed_paths.is_empty() || self.allowed_paths.iter().any(|p| p.bucket == bucket)
    }

    /// Whether the caveat lets requests reach the whole of `bucket` (as
    /// creating or deleting the bucket needs).
    pub fn allows_whole_bucket(&self, bucket: &str) -> bool {
        self.allowed_paths.is_empty()
            || self
                .allowed_paths
                .iter()
                .any(|p| p.bucket == bucket && p.prefix.is_empty())
    }

    /// Whether the caveat lets requests reach the object stored as `key` in
    /// `bucket` (and, for a listing, everything below `key`).
    pub fn allows_key(&self, bucket: &str, key: &[u8]) -> bool {
        self.allowed_paths.is_empty()
            || self
                .allowed_paths
                .iter()
                .any(|p| p.bucket == bucket && key_within(key, &p.prefix))
    }

    /// Whether some allowed path lies below the stored `key` of `bucket`:
    /// listing `key` then shows the way to it, and nothing else.
    pub fn leads_to(&self, bucket: &str, key: &[u8]) -> bool {
        self.allowed_paths
            .iter()
            .any(|p| p.bucket == bucket && key_within(&p.prefix, key) && p.prefix != key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(paths: &[(&str, &str)]) -> Vec<pb::CaveatPath> {
        paths
            .iter()
            .map(|(bucket, prefix)| pb::CaveatPath {
                bucket: bucket.to_string(),
                prefix: prefix.as_bytes().to_vec(),
            })
            .collect()
    }

    #[test]
    fn a_key_verifies_with_its_secret_and_after_restriction_only_as_made() {
        let secret: [u8; KEY_LEN] = rand::random();
        let key = ApiKey::issue(&secret);
        assert_eq!(key.verified_tails(&secret).unwrap().len(), 1);
        assert!(key.verified_tails(&rand::random()).is_none());

        let read_only = pb::Caveat {
            disallow_writes: true,
            disallow_deletes: true,
            nonce: vec![1],
            ..Default::default()
        };
        let restricted = key.restrict(&read_only);
        let parsed = ApiKey::parse(&restricted.serialize()).unwrap();
        assert_eq!(parsed, restricted);
        let tails = parsed.verified_tails(&secret).unwrap();
        assert_eq!(tails.len(), 2);
        assert_eq!(tails[0], *key.tail());
        assert_eq!(tails[1], *parsed.tail());
        assert_eq!(parsed.caveats().unwrap(), vec![read_only.clone()]);
        assert!(parsed.derives_from(&key));
        assert!(!key.derives_from(&parsed));

        // Dropping the caveat, or swapping it for a looser one, breaks the chain.
        let mut stripped = parsed.clone();
        stripped.caveats.clear();
        assert!(stripped.verified_tails(&secret).is_none());
        let mut loosened = parsed.clone();
        loosened.caveats[0] = pb::Caveat::default().encode_to_vec();
        assert!(loosened.verified_tails(&secret).is_none());
    }

    #[test]
    fn a_caveat_with_unknown_fields_is_refused() {
        let secret: [u8; KEY_LEN] = rand::random();
        let mut key = ApiKey::issue(&secret).restrict(&pb::Caveat::default());
        // Field 15, varint 1: something a newer client might restrict by.
        key.caveats[0].extend_from_slice(&[15 << 3, 1]);
        assert_eq!(key.caveats(), Err(MacaroonError::UnknownCaveat));
    }

    #[test]
    fn garbage_does_not_parse() {
        let good = ApiKey::issue(&[7; KEY_LEN]).serialize();
        for bad in [
            "",
            "ak1",
            "ak_abcdef",
            &good[..good.len() - 3],
            &format!("{good}!"),
        ] {
            assert!(ApiKey::parse(bad).is_err(), "{bad:?} parsed");
        }
        let short_head = pb::Macaroon {
            head: vec![1; 5],
            caveats: vec![],
            tail: vec![2; 32],
        };
        let text = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(short_head.encode_to_vec())
        );
        assert!(ApiKey::parse(&text).is_err());
    }

    #[test]
    fn paths_match_whole_components() {
        assert!(key_within(b"photos/cat", b"photos"));
        assert!(key_within(b"photos", b"photos"));
        assert!(key_within(b"anything", b""));
        assert!(!key_within(b"photosynthesis", b"photos"));
        assert!(!key_within(b"photo", b"photos"));

        let caveat = pb::Caveat {
            allowed_paths: paths(&[("b", "photos"), ("c", "")]),
            ..Default::default()
        };
        assert!(caveat.allows_key("b", b"photos/2024/x"));
        assert!(!caveat.allows_key("b", b"docs/x"));
        assert!(caveat.allows_key("c", b"anything"));
        assert!(!caveat.allows_key("d", b"photos"));
        assert!(caveat.allows_bucket("b") && caveat.allows_bucket("c"));
        assert!(!caveat.allows_bucket("d"));
        assert!(caveat.allows_whole_bucket("c") && !caveat.allows_whole_bucket("b"));
        assert!(caveat.leads_to("b", b""));
        assert!(!caveat.leads_to("b", b"photos"));
        assert!(!caveat.leads_to("b", b"docs"));
        assert!(!caveat.leads_to("c", b""));

        let open = pb::Caveat::default();
        assert!(open.allows_key("any", b"thing") && open.allows_whole_bucket("any"));
    }

    #[test]
    fn ops_and_times() {
        let caveat = pb::Caveat {
            disallow_lists: true,
            not_before: 100,
            not_after: 200,
            ..Default::default()
        };
        assert!(caveat.allows_op(Op::Read, 150));
        assert!(!caveat.allows_op(Op::List, 150));
        assert!(!caveat.allows_op(Op::Read, 99));
        assert!(!caveat.allows_op(Op::Read, 201));
        assert!(caveat.allows_op(Op::Write, 200));
    }
}
