//! Ed25519 identities of satellites and storage nodes, and the 32-byte ids derived
//! from their public keys.
//!
//! An id's difficulty is its number of trailing zero bits: a proof of work,
//! since finding a key whose id has `d` of them takes about 2^d key
//! generations, while checking it takes one hash. Satellites refuse nodes
//! below a minimum difficulty, so minting thousands of identities costs real
//! CPU time (Storj's identities work the same way).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::{Error, Result};

/// Id of a satellite or storage node: BLAKE3 (derive-key mode) of its Ed25519
/// public key, so an id commits to exactly one key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        NodeId(blake3::derive_key("archipel v1 node id", public_key))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidIdLength(bytes.len()))?;
        Ok(NodeId(array))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Trailing zero bits of the id, counted from its last byte.
    pub fn difficulty(&self) -> u32 {
        let mut bits = 0;
        for byte in self.0.iter().rev() {
            bits += byte.trailing_zeros();
            if *byte != 0 {
                break;
            }
        }
        bits
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &hex::encode(self.0)[..16])
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bytes = hex::decode(s).map_err(|_| Error::InvalidIdText(s.to_string()))?;
        NodeId::from_bytes(&bytes).map_err(|_| Error::InvalidIdText(s.to_string()))
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where to reach a satellite or node and who must answer there: `ID@HOST:PORT`,
/// as Storj's node URLs. Connections to it are refused unless the peer proves
/// it holds the key of `id` (see [`crate::transport`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUrl {
    pub id: NodeId,
    /// host:port.
    pub address: String,
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.address)
    }
}

impl FromStr for NodeUrl {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidNodeUrl(format!("{text:?} {why}"));
        let (id, address) = text
            .split_once('@')
            .ok_or_else(|| bad("should be written ID@HOST:PORT"))?;
        let id = id.parse().map_err(|_| bad("has a bad id"))?;
        if address.contains("://") {
            return Err(bad("names a scheme; write HOST:PORT"));
        }
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(bad("has no HOST:PORT address")),
        }
        Ok(NodeUrl {
            id,
            address: address.to_string(),
        })
    }
}

impl serde::Serialize for NodeUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A party's key pair and the id derived from it.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret key.
        f.debug_struct("Identity").field("id", &self.id).finish()
    }
}

impl Identity {
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Generates identities until one's id has at least `difficulty` trailing
    /// zero bits: about 2^difficulty tries, spread over every core.
    pub fn generate_with_difficulty(difficulty: u32) -> Self {
        let found = std::sync::OnceLock::new();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    // The thread's CSPRNG (seeded from the OS) saves a system
                    // call per try.
                    let mut rng = rand::thread_rng();
                    while found.get().is_none() {
                        let identity = Self::from_signing_key(SigningKey::generate(&mut rng));
                        if identity.id.difficulty() >= difficulty {
                            let _ = found.set(identity);
                        }
                    }
                });
            }
        });
        // The threads only stop once one of them has found an identity.
        found
            .into_inner()
            .expect("the search ends only when an identity is found")
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let id = NodeId::from_public_key(key.verifying_key().as_bytes());
        Identity { key, id }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    /// The secret key as PKCS#8 v1 DER (RFC 8410), the form TLS libraries
    /// load: a fixed prefix and the 32-byte seed.
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        const ED25519_PKCS8_PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&self.key.to_bytes());
        der
    }

    /// The on-disk form: the 32-byte secret seed as hex on one line.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.key.to_bytes()))
    }

    pub fn from_file_text(text: &str) -> Result<Self> {
        let seed =
            hex::decode(text.trim()).map_err(|_| Error::InvalidIdentityFile("not hex".into()))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| Error::InvalidIdentityFile("expected a 32-byte seed".into()))?;
        Ok(Self::from_signing_key(SigningKey::from_bytes(&seed)))
    }

    /// Writes the identity with owner-only permissions.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.write_all(self.to_file_text().as_bytes())?;
        file.sync_all()
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidIdentityFile(format!("{}: {e}", path.display())))?;
        Self::from_file_text(&text)
    }
}

/// A public key checked against the id it must belong to.
#[derive(Clone, Debug)]
pub struct PeerKey {
    key: VerifyingKey,
    id: NodeId,
}

impl PeerKey {
    /// Accepts `public_key` only if it derives to `expected` id.
    pub fn for_id(expected: NodeId, public_key: &[u8]) -> Result<Self> {
        let key = Self::from_public_key(public_key)?;
        if key.id != expected {
            return Err(Error::KeyIdMismatch(expected));
        }
        Ok(key)
    }

    pub fn from_public_key(public_key: &[u8]) -> Result<Self> {
        let bytes: [u8; 32] = public_key.try_into().map_err(|_| Error::InvalidPublicKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| Error::InvalidPublicKey)?;
        Ok(PeerKey {
            key,
            id: NodeId::from_public_key(&bytes),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
        self.key
            .verify(message, &signature)
            .map_err(|_| Error::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;
    use crate::hostile;

    #[test]
    fn difficulty_counts_trailing_zero_bits() {
        let mut id = [0xffu8; 32];
        assert_eq!(NodeId(id).difficulty(), 0);
        id[31] = 0b1000_0000;
        assert_eq!(NodeId(id).difficulty(), 7);
        id[31] = 0;
        id[30] = 0b0000_0100;
        assert_eq!(NodeId(id).difficulty(), 10);
        assert_eq!(NodeId([0; 32]).difficulty(), 256);
        for difficulty in [0, 4, 9] {
            let identity = Identity::generate_with_difficulty(difficulty);
            assert!(identity.id().difficulty() >= difficulty);
        }
    }

    #[test]
    fn identity_round_trips_through_its_file_form() {
        let identity = Identity::generate();
        let loaded = Identity::from_file_text(&identity.to_file_text()).unwrap();
        assert_eq!(identity.id(), loaded.id());
        assert_eq!(identity.public_key(), loaded.public_key());
    }

    #[test]
    fn peer_key_must_match_its_id() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert!(PeerKey::for_id(a.id(), &a.public_key()).is_ok());
        assert!(matches!(
            PeerKey::for_id(a.id(), &b.public_key()),
            Err(Error::KeyIdMismatch(_))
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message() {
        let a = Identity::generate();
        let key = PeerKey::from_public_key(&a.public_key()).unwrap();
        let sig = a.sign(b"hello");
        assert!(key.verify(b"hello", &sig).is_ok());
        assert!(key.verify(b"hellp", &sig).is_err());
    }

    #[test]
    fn node_urls_round_trip_through_their_text_form() {
        let id = Identity::generate().id();
        let url: NodeUrl = format!("{id}@sat.example:7070").parse().unwrap();
        assert_eq!(url.id, id);
        assert_eq!(url.address, "sat.example:7070");
        assert_eq!(url.to_string().parse::<NodeUrl>().unwrap(), url);
        for bad in [
            format!("{id}"),
            format!("{id}@noport"),
            format!("{id}@:7"),
            format!("{id}@host:port"),
            format!("{id}@http://host:7"),
            "abc@host:1".to_string(),
        ] {
            assert!(
                matches!(bad.parse::<NodeUrl>(), Err(Error::InvalidNodeUrl(_))),
                "{bad} parsed"
            );
        }
    }

    #[test]
    fn node_id_text_round_trips() {
        let id = Identity::generate().id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
    }

    /// A fixed identity, so that strategies and properties agree on its key.
    static PEER: LazyLock<Identity> =
        LazyLock::new(|| Identity::from_file_text(&hex::encode([3; 32])).unwrap());

    /// Ids and public keys off the wire (order limits, check-ins, the
    /// satellite's database), and signatures made with such keys.
    fn keys_and_signatures_are_checked(
        (id, key, signature): (Vec<u8>, Vec<u8>, Vec<u8>),
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(NodeId::from_bytes(&id).is_ok(), id.len() == 32);
        if let Ok(peer) = PeerKey::from_public_key(&key) {
            prop_assert_eq!(peer.id(), NodeId::from_public_key(&peer.public_key()));
        }
        if let Ok(id) = NodeId::from_bytes(&id) {
            if let Ok(peer) = PeerKey::for_id(id, &key) {
                prop_assert_eq!(peer.id(), id);
            }
        }
        // Only the peer's own key belongs to its id.
        if PeerKey::for_id(PEER.id(), &key).is_ok() {
            prop_assert_eq!(key, PEER.public_key().to_vec());
        }
        let peer = PeerKey::from_public_key(&PEER.public_key()).unwrap();
        if peer.verify(b"hello", &signature).is_ok() {
            prop_assert_eq!(signature, PEER.sign(b"hello"));
        }
        Ok(())
    }

    /// Node ids and URLs from configuration, the command line and access
    /// grants, and identity files: what parses prints back as itself.
    fn texts_are_checked((id, url, file): (String, String, String)) -> Result<(), TestCaseError> {
        if let Ok(parsed) = id.parse::<NodeId>() {
            prop_assert_eq!(parsed.to_string().parse::<NodeId>().unwrap(), parsed);
        }
        if let Ok(parsed) = url.parse::<NodeUrl>() {
            prop_assert_eq!(parsed.to_string().parse::<NodeUrl>().unwrap(), parsed);
        }
        if let Ok(identity) = Identity::from_file_text(&file) {
            let again = Identity::from_file_text(&identity.to_file_text()).unwrap();
            prop_assert_eq!(again.id(), identity.id());
        }
        Ok(())
    }

    crate::hostile_tests! {
        hostile_ids_keys_and_signatures_are_refused_or_genuine: (
            hostile::bytes_or_mutated(PEER.id().to_vec()),
            hostile::bytes_or_mutated(PEER.public_key().to_vec()),
            hostile::bytes_or_mutated(PEER.sign(b"hello")),
        ) => keys_and_signatures_are_checked;
        hostile_id_url_and_identity_texts_are_refused_or_round_trip: (
            hostile::text_or_mutated(PEER.id().to_string()),
            hostile::text_or_mutated(format!("{}@sat.example:7070", PEER.id())),
            hostile::text_or_mutated(PEER.to_file_text()),
        ) => texts_are_checked;
    }
}
