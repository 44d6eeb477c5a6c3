//! Opaque ids the satellite hands to clients and must trust when they come back:
//! the stream id (one object upload or one committed object version) and the
//! segment id (one segment upload). Each is a protobuf body signed by the
//! satellite's identity under a domain tag, so a client can neither forge one
//! nor pass a segment id off as a stream id.

use archipel_proto::{Identity, PeerKey};
use prost::Message;

use crate::{Error, Result};

const STREAM_TAG: &[u8] = b"archipel v1 stream id\0";
const SEGMENT_TAG: &[u8] = b"archipel v1 segment id\0";

#[derive(Clone, PartialEq, prost::Message)]
struct Signed {
    #[prost(bytes = "vec", tag = "1")]
    body: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    signature: Vec<u8>,
}

/// What a stream id vouches for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamToken {
    #[prost(bytes = "vec", tag = "1")]
    pub project_id: Vec<u8>,
    #[prost(string, tag = "2")]
    pub bucket: String,
    #[prost(bytes = "vec", tag = "3")]
    pub object_key: Vec<u8>,
    /// The 16-byte stream id of the object row.
    #[prost(bytes = "vec", tag = "4")]
    pub stream: Vec<u8>,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    #[prost(int64, tag = "6")]
    pub expires_at: i64,
    #[prost(uint32, tag = "7")]
    pub cipher: u32,
    #[prost(uint32, tag = "8")]
    pub block_size: u32,
}

/// What a segment id vouches for: which node got the order limit for each piece.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SegmentToken {
    #[prost(bytes = "vec", tag = "1")]
    pub project_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub stream: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub position: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub root_piece_id: Vec<u8>,
    /// `k/repair/success/total/share_size`.
    #[prost(string, tag = "5")]
    pub redundancy: String,
    /// Piece numbers, parallel to `node_ids`.
    #[prost(uint32, repeated, tag = "6")]
    pub piece_nums: Vec<u32>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub node_ids: Vec<Vec<u8>>,
    /// The largest piece the order limits allow.
    #[prost(int64, tag = "8")]
    pub max_piece_size: i64,
    #[prost(int64, tag = "9")]
    pub created_at: i64,
    /// The object the segment is of, so that committing it checks the
    /// caller's right to write there.
    #[prost(string, tag = "10")]
    pub bucket: String,
    #[prost(bytes = "vec", tag = "11")]
    pub object_key: Vec<u8>,
}

fn seal(identity: &Identity, tag: &[u8], body: Vec<u8>) -> Vec<u8> {
    let signature = identity.sign(&[tag, &body].concat());
    Signed { body, signature }.encode_to_vec()
}

fn open(key: &PeerKey, tag: &[u8], token: &[u8], what: &str) -> Result<Vec<u8>> {
    let invalid = || Error::InvalidArgument(format!("the {what} is not one this satellite issued"));
    let signed = Signed::decode(token).map_err(|_| invalid())?;
    key.verify(&[tag, &signed.body].concat(), &signed.signature)
        .map_err(|_| invalid())?;
    Ok(signed.body)
}

pub fn seal_stream(identity: &Identity, token: &StreamToken) -> Vec<u8> {
    seal(identity, STREAM_TAG, token.encode_to_vec())
}

pub fn open_stream(key: &PeerKey, stream_id: &[u8]) -> Result<StreamToken> {
    let body = open(key, STREAM_TAG, stream_id, "stream id")?;
    StreamToken::decode(body.as_slice())
        .map_err(|e| Error::InvalidArgument(format!("the stream id does not decode: {e}")))
}

pub fn seal_segment(identity: &Identity, token: &SegmentToken) -> Vec<u8> {
    seal(identity, SEGMENT_TAG, token.encode_to_vec())
}

pub fn open_segment(key: &PeerKey, segment_id: &[u8]) -> Result<SegmentToken> {
    let body = open(key, SEGMENT_TAG, segment_id, "segment id")?;
    SegmentToken::decode(body.as_slice())
        .map_err(|e| Error::InvalidArgument(format!("the segment id does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use archipel_proto::hostile;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tokens_verify_only_unchanged_and_only_as_their_kind() {
        let satellite = Identity::generate();
        let key = PeerKey::from_public_key(&satellite.public_key()).unwrap();
        let stream = StreamToken {
            project_id: vec![1; 16],
            bucket: "b".into(),
            object_key: b"k".to_vec(),
            stream: vec![2; 16],
            ..Default::default()
        };
        let sealed = seal_stream(&satellite, &stream);
        assert_eq!(open_stream(&key, &sealed).unwrap(), stream);
        assert!(open_segment(&key, &sealed).is_err());

        let mut forged = Signed::decode(sealed.as_slice()).unwrap();
        let mut changed = stream.clone();
        changed.project_id = vec![3; 16];
        forged.body = changed.encode_to_vec();
        assert!(open_stream(&key, &forged.encode_to_vec()).is_err());

        let other = Identity::generate();
        assert!(open_stream(&key, &seal_stream(&other, &stream)).is_err());
        assert!(open_stream(&key, b"garbage").is_err());
    }

    /// A fixed satellite, so that strategies (which seal) and properties
    /// (which open), plain functions both, agree on its key.
    static SATELLITE: LazyLock<Identity> =
        LazyLock::new(|| Identity::from_file_text(&hex::encode([6; 32])).unwrap());

    fn stream_tokens() -> impl Strategy<Value = StreamToken> {
        (
            hostile::bytes(20),
            hostile::text(),
            hostile::bytes(40),
            hostile::bytes(20),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(
                    project_id,
                    bucket,
                    object_key,
                    stream,
                    created_at,
                    expires_at,
                    cipher,
                    block_size,
                )| {
                    StreamToken {
                        project_id,
                        bucket,
                        object_key,
                        stream,
                        created_at,
                        expires_at,
                        cipher,
                        block_size,
                    }
                },
            )
    }

    fn segment_tokens() -> impl Strategy<Value = SegmentToken> {
        (
            hostile::bytes(20),
            hostile::bytes(20),
            any::<u32>(),
            hostile::bytes(40),
            hostile::text(),
            prop::collection::vec((any::<u32>(), hostile::bytes(40)), 0..5),
            any::<i64>(),
            any::<i64>(),
            hostile::text(),
            hostile::bytes(20),
        )
            .prop_map(
                |(
                    project_id,
                    stream,
                    position,
                    root_piece_id,
                    redundancy,
                    pieces,
                    max_piece_size,
                    created_at,
                    bucket,
                    object_key,
                )| {
                    let (piece_nums, node_ids) = pieces.into_iter().unzip();
                    SegmentToken {
                        project_id,
                        stream,
                        position,
                        root_piece_id,
                        redundancy,
                        piece_nums,
                        node_ids,
                        max_piece_size,
                        created_at,
                        bucket,
                        object_key,
                    }
                },
            )
    }

    /// A token as a client sends it back: the sealed one, damaged or replaced.
    fn sealed_then_damaged<T: Clone + std::fmt::Debug + 'static>(
        token: impl Strategy<Value = T>,
        seal: fn(&Identity, &T) -> Vec<u8>,
    ) -> impl Strategy<Value = (T, Vec<u8>)> {
        token.prop_flat_map(move |token| {
            let sealed = seal(&SATELLITE, &token);
            (Just(token), hostile::bytes_or_mutated(sealed))
        })
    }

    // Protobuf has more than one encoding of a message (unknown fields, a
    // field repeated), so damaged bytes may still carry the sealed token;
    // they must never open to another token, nor as the other kind.

    fn stream_id_is_checked((sealed, bytes): (StreamToken, Vec<u8>)) -> Result<(), TestCaseError> {
        let key = PeerKey::from_public_key(&SATELLITE.public_key()).unwrap();
        if let Ok(opened) = open_stream(&key, &bytes) {
            prop_assert_eq!(opened, sealed);
        }
        prop_assert!(open_segment(&key, &bytes).is_err());
        Ok(())
    }

    fn segment_id_is_checked(
        (sealed, bytes): (SegmentToken, Vec<u8>),
    ) -> Result<(), TestCaseError> {
        let key = PeerKey::from_public_key(&SATELLITE.public_key()).unwrap();
        if let Ok(opened) = open_segment(&key, &bytes) {
            prop_assert_eq!(opened, sealed);
        }
        prop_assert!(open_stream(&key, &bytes).is_err());
        Ok(())
    }

    archipel_proto::hostile_tests! {
        hostile_stream_ids_open_only_as_the_sealed_token:
            sealed_then_damaged(stream_tokens(), seal_stream) => stream_id_is_checked;
        hostile_segment_ids_open_only_as_the_sealed_token:
            sealed_then_damaged(segment_tokens(), seal_segment) => segment_id_is_checked;
    }
}
