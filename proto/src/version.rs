//! Version ids: how a client names one version of an object. The satellite
//! numbers a key's versions from 1 in commit order and stores each as a row
//! of its own (its stream id); a version id is both, so a listing resumes
//! after a version by its number alone and a read finds the row by its
//! stream id. As text (S3's `versionId`) it is unpadded URL-safe base64.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::Error;

/// Bytes of a stream id.
const STREAM_ID_LEN: usize = 16;

/// One version of an object: its number among its key's versions and the
/// stream id of its row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VersionId {
    pub version: i64,
    pub stream_id: [u8; STREAM_ID_LEN],
}

impl VersionId {
    /// The version as the protocol carries it: the number (big-endian) and
    /// the stream id.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.version.to_be_bytes()[..], &self.stream_id].concat()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<VersionId, Error> {
        let invalid = || Error::InvalidVersionId("it is 24 bytes with a positive number".into());
        if bytes.len() != 8 + STREAM_ID_LEN {
            return Err(invalid());
        }
        let (number, stream) = bytes.split_at(8);
        let version = i64::from_be_bytes(number.try_into().map_err(|_| invalid())?);
        if version < 1 {
            return Err(invalid());
        }
        Ok(VersionId {
            version,
            stream_id: stream.try_into().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl FromStr for VersionId {
    type Err = Error;

    fn from_str(text: &str) -> Result<VersionId, Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Error::InvalidVersionId(format!("{text:?} is not base64")))?;
        VersionId::from_bytes(&bytes)
    }
}

impl serde::Serialize for VersionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn version_ids_round_trip(version in 1..i64::MAX, stream_id: [u8; 16]) {
            let id = VersionId { version, stream_id };
            prop_assert_eq!(VersionId::from_bytes(&id.to_bytes()).unwrap(), id.clone());
            let text = id.to_string();
            prop_assert_eq!(text.len(), 32);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(text.parse::<VersionId>().unwrap(), id);
        }
    }

    #[test]
    fn damaged_version_ids_are_refused() {
        assert!("null".parse::<VersionId>().is_err());
        assert!("".parse::<VersionId>().is_err());
        assert!(
            VersionId::from_bytes(&[0; 24]).is_err(),
            "version 0 is a pending upload's"
        );
        assert!(VersionId::from_bytes(&[1; 23]).is_err());
        let negative = [&(-3i64).to_be_bytes()[..], &[7; 16]].concat();
        assert!(VersionId::from_bytes(&negative).is_err());
    }
}
