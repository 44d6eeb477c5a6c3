//! Access grants: everything needed to use a project — the satellite's address
//! and id, the API key, and the root encryption key — in one printable string.
//!
//! Serialized form, version 1: `"ap1"` followed by base64url (no padding) of
//! `satellite id (32) ‖ root key (32) ‖ u32 BE length ‖ address ‖ u32 BE length
//! ‖ API key`. A new layout gets a new prefix, so old grants keep parsing.

use archipel_proto::{NodeId, NodeUrl};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::crypto::{derive_root_key, Key};
use crate::metainfo::Metainfo;
use crate::Error;

const PREFIX_V1: &str = "ap1";

/// The right to use one project, with the key that encrypts its data.
#[derive(Clone)]
pub struct Access {
    pub satellite_address: String,
    pub satellite_id: NodeId,
    pub api_key: String,
    pub(crate) root_key: Key,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the API key or the root key.
        f.debug_struct("Access")
            .field("satellite_address", &self.satellite_address)
            .field("satellite_id", &self.satellite_id)
            .finish_non_exhaustive()
    }
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
            root_key,
        })
    }

    /// The satellite this grant is for, as a client dials it.
    pub fn satellite(&self) -> NodeUrl {
        NodeUrl {
            id: self.satellite_id,
            address: self.satellite_address.clone(),
        }
    }

    pub fn serialize(&self) -> String {
        let mut bytes = Vec::with_capacity(72 + self.satellite_address.len() + self.api_key.len());
        bytes.extend_from_slice(self.satellite_id.as_bytes());
        bytes.extend_from_slice(&self.root_key.0);
        for field in [&self.satellite_address, &self.api_key] {
            bytes.extend_from_slice(&(field.len() as u32).to_be_bytes());
            bytes.extend_from_slice(field.as_bytes());
        }
        format!("{PREFIX_V1}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(s: &str) -> Result<Access, Error> {
        let bad = |why: &str| Error::InvalidAccess(why.to_string());
        let body = s
            .trim()
            .strip_prefix(PREFIX_V1)
            .ok_or_else(|| bad("it does not start with \"ap1\""))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("it is not valid base64url"))?;
        let mut reader = Reader(&bytes);
        let satellite_id =
            NodeId::from_bytes(reader.take(32).ok_or_else(|| bad("it is cut short"))?)
                .map_err(|e| bad(&e.to_string()))?;
        let root: [u8; 32] = reader
            .take(32)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("it is cut short"))?;
        let satellite_address = reader
            .string()
            .ok_or_else(|| bad("the satellite address is damaged"))?;
        let api_key = reader
            .string()
            .ok_or_else(|| bad("the API key is damaged"))?;
        if !reader.0.is_empty() {
            return Err(bad("it has trailing bytes"));
        }
        if satellite_address.is_empty() {
            return Err(bad("it names no satellite"));
        }
        Ok(Access {
            satellite_address,
            satellite_id,
            api_key,
            root_key: Key(root),
        })
    }
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
            root_key: Key([9; 32]),
        }
    }

    #[test]
    fn serialize_parse_round_trip() {
        let access = sample();
        let text = access.serialize();
        assert!(text.starts_with("ap1"));
        assert!(text.chars().all(|c| c.is_ascii_graphic()));
        let back = Access::parse(&text).unwrap();
        assert_eq!(back.satellite_address, access.satellite_address);
        assert_eq!(back.satellite_id, access.satellite_id);
        assert_eq!(back.api_key, access.api_key);
        assert_eq!(back.root_key, access.root_key);
        // Surrounding whitespace (a file with a newline) is fine.
        assert!(Access::parse(&format!("  {text}\n")).is_ok());
        // Debug output keeps the secrets out.
        let debug = format!("{access:?}");
        assert!(!debug.contains("key-"));
    }

    #[test]
    fn garbage_is_rejected() {
        let text = sample().serialize();
        for bad in [
            String::new(),
            "ap1".to_string(),
            "ap2".to_string() + &text[3..],
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
                    root_key: Key(root_key),
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
        prop_assert_eq!(&again.root_key, &access.root_key);
        if intact {
            prop_assert_eq!(&access.satellite_address, &original.satellite_address);
            prop_assert_eq!(access.satellite_id, original.satellite_id);
            prop_assert_eq!(&access.api_key, &original.api_key);
            prop_assert_eq!(&access.root_key, &original.root_key);
        }
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_grants_are_refused_or_round_trip: access().prop_flat_map(|access| {
            let text = access.serialize();
            // Damage to the bytes under the base64 reaches the fields' lengths.
            let bytes = URL_SAFE_NO_PAD.decode(&text[PREFIX_V1.len()..]).unwrap();
            let damaged = hostile::mutated(bytes)
                .prop_map(|bytes| format!("{PREFIX_V1}{}", URL_SAFE_NO_PAD.encode(bytes)));
            (Just(access), prop_oneof![hostile::text_or_mutated(text), damaged])
        }) => grant_is_checked;
    }
}
