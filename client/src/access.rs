//! Access grants: everything needed to use a project — the satellite's address
//! and id, the API key, and the encryption keys — in one printable string;
//! and sharing: a grant restricted offline to fewer operations, prefixes and
//! a time window, carrying only the keys of the prefixes it opens.
//!
//! Serialized form, version 2: `"ap2"` followed by base64url (no padding) of
//! a protobuf [`GrantMessage`]. Version 1 (`"ap1"`: `satellite id (32) ‖ root
//! key (32) ‖ u32 BE length ‖ address ‖ u32 BE length ‖ API key`) still
//! parses, so grants saved before keep working.

use std::time::SystemTime;

use archipel_proto::macaroon::ApiKey;
use archipel_proto::{pb, NodeId, NodeUrl};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;

use crate::crypto::{derive_root_key, Key};
use crate::keystore::{KeyStore, PrefixKey};
use crate::metainfo::Metainfo;
use crate::Error;

const PREFIX_V1: &str = "ap1";
const PREFIX_V2: &str = "ap2";
/// Refuses absurd grants before decoding them.
const MAX_GRANT_LEN: usize = 1 << 20;

/// The right to use one project (or part of it), with the keys that encrypt its data.
#[derive(Clone)]
pub struct Access {
    pub satellite_address: String,
    pub satellite_id: NodeId,
    pub api_key: String,
    pub(crate) keys: KeyStore,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the API key or the keys.
        f.debug_struct("Access")
            .field("satellite_address", &self.satellite_address)
            .field("satellite_id", &self.satellite_id)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What a shared grant may do (see [`crate::Project::share`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub read: bool,
    pub write: bool,
    pub list: bool,
    pub delete: bool,
    /// Shorten or remove Object Lock retentions in governance mode, and
    /// delete the versions they hold. A grant for backups leaves it off,
    /// so that whoever steals it cannot destroy what is locked.
    pub bypass_governance: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        read: true,
        write: true,
        list: true,
        delete: true,
        bypass_governance: true,
    };
    /// Everything but bypassing governance retention.
    pub const READ_WRITE: Permissions = Permissions {
        bypass_governance: false,
        ..Permissions::ALL
    };
    /// Download and list.
    pub const READ_ONLY: Permissions = Permissions {
        read: true,
        write: false,
        list: true,
        delete: false,
        bypass_governance: false,
    };
    /// Upload and list, but neither read nor delete (nor overwrite).
    pub const WRITE_ONLY: Permissions = Permissions {
        read: false,
        write: true,
        list: true,
        delete: false,
        bypass_governance: false,
    };
}

/// A restriction of a grant: what, where and when.
#[derive(Clone, Debug)]
pub struct Share {
    pub permissions: Permissions,
    /// `(bucket, prefix)` pairs; a prefix is whole path components (a
    /// trailing `/` is optional: `photos` opens the object `photos` and
    /// everything below `photos/`); an empty prefix opens the whole bucket.
    pub prefixes: Vec<(String, String)>,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
}

/// What a grant allows, as `archipel access inspect` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AccessInfo {
    pub satellite: String,
    /// The grant holds the project's root key.
    pub full_keys: bool,
    /// The prefixes it holds keys for, as `bucket/prefix`.
    pub prefixes: Vec<String>,
    /// Each restriction of the API key, in the order they were added; the
    /// grant can do only what all of them allow.
    pub restrictions: Vec<RestrictionInfo>,
}

/// One caveat of the API key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestrictionInfo {
    pub read: bool,
    pub write: bool,
    pub list: bool,
    pub delete: bool,
    pub bypass_governance: bool,
    /// Where the caveat lets requests reach (`bucket/prefix`, names
    /// decrypted where the grant can); empty: everywhere.
    pub paths: Vec<String>,
    #[serde(serialize_with = "crate::rfc3339::optional")]
    pub not_before: Option<SystemTime>,
    #[serde(serialize_with = "crate::rfc3339::optional")]
    pub not_after: Option<SystemTime>,
}

/// Version 2 of the serialized grant.
#[derive(Clone, PartialEq, prost::Message)]
struct GrantMessage {
    #[prost(bytes = "vec", tag = "1")]
    satellite_id: Vec<u8>,
    #[prost(string, tag = "2")]
    satellite_address: String,
    #[prost(string, tag = "3")]
    api_key: String,
    /// 32 bytes in a full grant; empty in a shared one.
    #[prost(bytes = "vec", tag = "4")]
    root_key: Vec<u8>,
    #[prost(message, repeated, tag = "5")]
    prefixes: Vec<PrefixMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PrefixMessage {
    #[prost(string, tag = "1")]
    bucket: String,
    #[prost(string, repeated, tag = "2")]
    path: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    stored: Vec<String>,
    #[prost(bytes = "vec", tag = "4")]
    key: Vec<u8>,
}

impl Access {
    /// Asks the satellite at `satellite` (`ID@HOST:PORT`: the connection is
    /// refused unless the satellite proves that id) for the project's salt, and
    /// derives the root key from `passphrase` with Argon2id (64 MiB, 3 passes,
    /// 1 lane).
    pub async fn request(
        satellite: &NodeUrl,
        api_key: &str,
        passphrase: &str,
    ) -> Result<Access, Error> {
        let metainfo = Metainfo::connect(satellite, api_key).await?;
        let info = metainfo.project_info().await?;
        // TLS proved the id already; a satellite that says otherwise is broken.
        match NodeId::from_bytes(&info.satellite_id) {
            Ok(id) if id == satellite.id => {}
            _ => {
                return Err(Error::Protocol(format!(
                    "the satellite at {} does not call itself {}",
                    satellite.address, satellite.id
                )))
            }
        }
        let passphrase = passphrase.to_string();
        // Argon2 takes a noticeable moment of CPU; keep it off the async workers.
        let root_key =
            tokio::task::spawn_blocking(move || derive_root_key(&passphrase, &info.project_salt))
                .await
                .map_err(|e| Error::Interrupted(format!("key derivation stopped: {e}")))??;
        Ok(Access {
            satellite_address: satellite.address.clone(),
            satellite_id: satellite.id,
            api_key: api_key.to_string(),
            keys: KeyStore::Root(root_key),
        })
    }

    /// The satellite this grant is for, as a client dials it.
    pub fn satellite(&self) -> NodeUrl {
        NodeUrl {
            id: self.satellite_id,
            address: self.satellite_address.clone(),
        }
    }

    /// This grant restricted by `share`: its API key with one more caveat
    /// and only the keys of `prefixes`, which [`KeyStore::share`] made from
    /// this grant's keys for `share`'s prefixes.
    pub(crate) fn restricted(
        &self,
        share: &Share,
        prefixes: Vec<PrefixKey>,
    ) -> Result<Access, Error> {
        let api_key = ApiKey::parse(&self.api_key).map_err(|_| {
            Error::InvalidAccess(
                "its API key was issued before keys could be restricted; ask for a new one".into(),
            )
        })?;
        let unix = |time: Option<SystemTime>| time.map_or(0, crate::to_unix);
        let caveat = pb::Caveat {
            disallow_reads: !share.permissions.read,
            disallow_writes: !share.permissions.write,
            disallow_lists: !share.permissions.list,
            disallow_deletes: !share.permissions.delete,
            disallow_bypass_governance: !share.permissions.bypass_governance,
            allowed_paths: prefixes
                .iter()
                .map(|p| pb::CaveatPath {
                    bucket: p.bucket.clone(),
                    prefix: p.stored.join("/").into_bytes(),
                })
                .collect(),
            not_before: unix(share.not_before),
            not_after: unix(share.not_after),
            nonce: crate::crypto::random_bytes::<16>().to_vec(),
        };
        Ok(Access {
            satellite_address: self.satellite_address.clone(),
            satellite_id: self.satellite_id,
            api_key: api_key.restrict(&caveat).serialize(),
            keys: KeyStore::Prefixes(prefixes),
        })
    }

    /// What this grant allows, from its API key's caveats and its keys.
    pub fn inspect(&self) -> Result<AccessInfo, Error> {
        let prefixes = match &self.keys {
            KeyStore::Root(_) => Vec::new(),
            KeyStore::Prefixes(prefixes) => prefixes
                .iter()
                .map(|p| format!("{}/{}", p.bucket, p.path.join("/")))
                .collect(),
        };
        let caveats = match ApiKey::parse(&self.api_key) {
            Ok(key) => key
                .caveats()
                .map_err(|e| Error::InvalidAccess(e.to_string()))?,
            // A key from before restrictable keys: no caveats.
            Err(_) => Vec::new(),
        };
        let time = |unix: i64| (unix != 0).then(|| crate::from_unix(unix));
        let restrictions = caveats
            .into_iter()
            .map(|caveat| RestrictionInfo {
                read: !caveat.disallow_reads,
                write: !caveat.disallow_writes,
                list: !caveat.disallow_lists,
                delete: !caveat.disallow_deletes,
                bypass_governance: !caveat.disallow_bypass_governance,
                paths: caveat
                    .allowed_paths
                    .iter()
                    .map(|path| {
                        let name = self
                            .keys
                            .reveal(&path.bucket, &path.prefix, false)
                            .map(|c| c.join("/"))
                            .unwrap_or_else(|| {
                                "(a prefix whose name this grant cannot read)".into()
                            });
                        format!("{}/{}", path.bucket, name)
                    })
                    .collect(),
                not_before: time(caveat.not_before),
                not_after: time(caveat.not_after),
            })
            .collect();
        Ok(AccessInfo {
            satellite: self.satellite().to_string(),
            full_keys: matches!(self.keys, KeyStore::Root(_)),
            prefixes,
            restrictions,
        })
    }

    pub fn serialize(&self) -> String {
        let (root_key, prefixes) = match &self.keys {
            KeyStore::Root(root) => (root.0.to_vec(), Vec::new()),
            KeyStore::Prefixes(prefixes) => (
                Vec::new(),
                prefixes
                    .iter()
                    .map(|p| PrefixMessage {
                        bucket: p.bucket.clone(),
                        path: p.path.clone(),
                        stored: p.stored.clone(),
                        key: p.key.0.to_vec(),
                    })
                    .collect(),
            ),
        };
        let message = GrantMessage {
            satellite_id: self.satellite_id.to_vec(),
            satellite_address: self.satellite_address.clone(),
            api_key: self.api_key.clone(),
            root_key,
            prefixes,
        };
        format!(
            "{PREFIX_V2}{}",
            URL_SAFE_NO_PAD.encode(message.encode_to_vec())
        )
    }

    pub fn parse(s: &str) -> Result<Access, Error> {
        let s = s.trim();
        if s.len() > MAX_GRANT_LEN {
            return Err(bad("it is too long"));
        }
        let access = if let Some(body) = s.strip_prefix(PREFIX_V2) {
            parse_v2(body)?
        } else if let Some(body) = s.strip_prefix(PREFIX_V1) {
            parse_v1(body)?
        } else {
            return Err(bad("it does not start with \"ap2\" (or \"ap1\")"));
        };
        if access.satellite_address.is_empty() {
            return Err(bad("it names no satellite"));
        }
        Ok(access)
    }
}

fn bad(why: &str) -> Error {
    Error::InvalidAccess(why.to_string())
}

fn key_of(bytes: &[u8]) -> Result<Key, Error> {
    bytes
        .try_into()
        .map(Key)
        .map_err(|_| bad("a key in it is not 32 bytes"))
}

fn parse_v2(body: &str) -> Result<Access, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("it is not valid base64url"))?;
    let message = GrantMessage::decode(bytes.as_slice()).map_err(|_| bad("it does not decode"))?;
    let satellite_id =
        NodeId::from_bytes(&message.satellite_id).map_err(|e| bad(&e.to_string()))?;
    let keys = match (message.root_key.is_empty(), message.prefixes.is_empty()) {
        (false, true) => KeyStore::Root(key_of(&message.root_key)?),
        (true, false) => KeyStore::Prefixes(
            message
                .prefixes
                .into_iter()
                .map(|p| {
                    if p.path.len() != p.stored.len() {
                        return Err(bad("a prefix in it is damaged"));
                    }
                    Ok(PrefixKey {
                        key: key_of(&p.key)?,
                        bucket: p.bucket,
                        path: p.path,
                        stored: p.stored,
                    })
                })
                .collect::<Result<_, Error>>()?,
        ),
        _ => return Err(bad("it holds either the root key or some prefixes' keys")),
    };
    Ok(Access {
        satellite_address: message.satellite_address,
        satellite_id,
        api_key: message.api_key,
        keys,
    })
}

fn parse_v1(body: &str) -> Result<Access, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("it is not valid base64url"))?;
    let mut reader = Reader(&bytes);
    let satellite_id = NodeId::from_bytes(reader.take(32).ok_or_else(|| bad("it is cut short"))?)
        .map_err(|e| bad(&e.to_string()))?;
    let root = key_of(reader.take(32).ok_or_else(|| bad("it is cut short"))?)?;
    let satellite_address = reader
        .string()
        .ok_or_else(|| bad("the satellite address is damaged"))?;
    let api_key = reader
        .string()
        .ok_or_else(|| bad("the API key is damaged"))?;
    if !reader.0.is_empty() {
        return Err(bad("it has trailing bytes"));
    }
    Ok(Access {
        satellite_address,
        satellite_id,
        api_key,
        keys: KeyStore::Root(root),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use archipel_proto::hostile;
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Access {
        Access {
            satellite_address: "127.0.0.1:7777".into(),
            satellite_id: NodeId([5; 32]),
            api_key: "key-ÄÖ-123".into(),
            keys: KeyStore::Root(Key([9; 32])),
        }
    }

    fn shared_sample() -> Access {
        let root = KeyStore::Root(Key([9; 32]));
        Access {
            keys: KeyStore::Prefixes(vec![
                root.share("photos", &["2024", "summer"], false).unwrap(),
                root.share("docs", &[], true).unwrap(),
            ]),
            ..sample()
        }
    }

    #[test]
    fn serialize_parse_round_trip() {
        for access in [sample(), shared_sample()] {
            let text = access.serialize();
            assert!(text.starts_with("ap2"));
            assert!(text.chars().all(|c| c.is_ascii_graphic()));
            let back = Access::parse(&text).unwrap();
            assert_eq!(back.satellite_address, access.satellite_address);
            assert_eq!(back.satellite_id, access.satellite_id);
            assert_eq!(back.api_key, access.api_key);
            assert!(back.keys == access.keys);
            // Surrounding whitespace (a file with a newline) is fine.
            assert!(Access::parse(&format!("  {text}\n")).is_ok());
            // Debug output keeps the secrets out.
            let debug = format!("{access:?}");
            assert!(!debug.contains("key-"));
        }
    }

    #[test]
    fn version_1_grants_still_parse() {
        let mut bytes = vec![5; 32];
        bytes.extend_from_slice(&[9; 32]);
        for field in ["127.0.0.1:7777", "ak_old"] {
            bytes.extend_from_slice(&(field.len() as u32).to_be_bytes());
            bytes.extend_from_slice(field.as_bytes());
        }
        let access = Access::parse(&format!("ap1{}", URL_SAFE_NO_PAD.encode(&bytes))).unwrap();
        assert_eq!(access.satellite_address, "127.0.0.1:7777");
        assert_eq!(access.api_key, "ak_old");
        assert!(access.keys == KeyStore::Root(Key([9; 32])));
        bytes.push(0);
        assert!(Access::parse(&format!("ap1{}", URL_SAFE_NO_PAD.encode(&bytes))).is_err());
    }

    #[test]
    fn restricting_adds_a_caveat_and_keeps_only_the_prefix_keys() {
        let full = Access {
            api_key: ApiKey::issue(&[4; 32]).serialize(),
            ..sample()
        };
        let prefix = full.keys.share("photos", &["2024"], false).unwrap();
        let stored = prefix.stored.join("/");
        let share = Share {
            permissions: Permissions::READ_ONLY,
            prefixes: vec![("photos".into(), "2024/".into())],
            not_before: None,
            not_after: Some(crate::from_unix(2_000_000_000)),
        };
        let restricted = full.restricted(&share, vec![prefix]).unwrap();
        let key = ApiKey::parse(&restricted.api_key).unwrap();
        assert!(key.derives_from(&ApiKey::parse(&full.api_key).unwrap()));
        let caveats = key.caveats().unwrap();
        assert_eq!(caveats.len(), 1);
        assert!(caveats[0].disallow_writes && caveats[0].disallow_deletes);
        assert!(!caveats[0].disallow_reads && !caveats[0].disallow_lists);
        assert_eq!(caveats[0].not_after, 2_000_000_000);
        assert_eq!(caveats[0].allowed_paths[0].prefix, stored.as_bytes());
        assert!(!restricted
            .serialize()
            .contains(&URL_SAFE_NO_PAD.encode([9u8; 32])));

        let info = restricted.inspect().unwrap();
        assert!(!info.full_keys);
        assert_eq!(info.prefixes, ["photos/2024"]);
        assert_eq!(info.restrictions[0].paths, ["photos/2024"]);
        assert!(info.restrictions[0].read && !info.restrictions[0].write);

        // A key from before restrictable keys cannot be restricted.
        assert!(matches!(
            sample().restricted(&share, Vec::new()),
            Err(Error::InvalidAccess(_))
        ));
    }

    #[test]
    fn garbage_is_rejected() {
        let text = sample().serialize();
        for bad in [
            String::new(),
            "ap2".to_string(),
            "ap3".to_string() + &text[3..],
            text[..text.len() - 4].to_string(),
            text.clone() + "AAAA",
            text.replace('A', "!"),
            "hello world".to_string(),
        ] {
            assert!(
                matches!(Access::parse(&bad), Err(Error::InvalidAccess(_))),
                "{bad:?} parsed"
            );
        }
    }

    fn access() -> impl Strategy<Value = Access> {
        (
            hostile::text(),
            any::<[u8; 32]>(),
            hostile::text(),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |(satellite_address, satellite_id, api_key, root_key)| Access {
                    satellite_address,
                    satellite_id: NodeId(satellite_id),
                    api_key,
                    keys: KeyStore::Root(Key(root_key)),
                },
            )
    }

    /// A grant pasted or read from a file: refused with `InvalidAccess`, or
    /// parsed into one that serializes to a grant parsing to the same.
    fn grant_is_checked((original, text): (Access, String)) -> Result<(), TestCaseError> {
        let intact = text == original.serialize();
        let access = match Access::parse(&text) {
            Ok(access) => access,
            Err(Error::InvalidAccess(_)) => {
                prop_assert!(!intact || original.satellite_address.is_empty());
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
        };
        let again = Access::parse(&access.serialize()).unwrap();
        prop_assert_eq!(&again.satellite_address, &access.satellite_address);
        prop_assert_eq!(again.satellite_id, access.satellite_id);
        prop_assert_eq!(&again.api_key, &access.api_key);
        prop_assert!(again.keys == access.keys);
        if intact {
            prop_assert_eq!(&access.satellite_address, &original.satellite_address);
            prop_assert_eq!(access.satellite_id, original.satellite_id);
            prop_assert_eq!(&access.api_key, &original.api_key);
            prop_assert!(access.keys == original.keys);
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_grants_are_refused_or_round_trip: access().prop_flat_map(|access| {
            let text = access.serialize();
            // Damage to the bytes under the base64 reaches the fields' lengths.
            let bytes = URL_SAFE_NO_PAD.decode(&text[PREFIX_V2.len()..]).unwrap();
            let damaged = hostile::mutated(bytes)
                .prop_map(|bytes| format!("{PREFIX_V2}{}", URL_SAFE_NO_PAD.encode(bytes)));
            (Just(access), prop_oneof![hostile::text_or_mutated(text), damaged])
        }) => grant_is_checked;
    }
}
