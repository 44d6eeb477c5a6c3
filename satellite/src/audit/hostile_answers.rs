//! Audit answers as hostile nodes send them: [`verify_answer`] refuses them
//! or finds them correct, and never panics.

use std::sync::LazyLock;

use archipel_proto::hostile;
use archipel_proto::orders::sign_piece_hash;
use archipel_proto::pb::{PieceDownloadResponse, PieceHash};
use archipel_proto::Identity;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;

use super::*;

/// A fixed node, so that strategies (which sign) and properties (which
/// verify), plain functions both, agree on its key.
static NODE: LazyLock<Identity> =
    LazyLock::new(|| Identity::from_file_text(&hex::encode([8; 32])).unwrap());
const PIECE_ID: [u8; 32] = [3; 32];

/// A challenge and the honest answer to it.
#[derive(Clone, Debug)]
struct Honest {
    piece: Vec<u8>,
    root: Hash,
    offset: u64,
    length: u64,
    /// The whole answer in its first message, data included.
    answer: PieceDownloadResponse,
}

impl Honest {
    fn check(&self, header: &PieceDownloadResponse, data: &[u8]) -> Result<(), String> {
        let key = PeerKey::from_public_key(&NODE.public_key()).unwrap();
        let expected = Expected {
            key: &key,
            piece_id: PIECE_ID,
            root: self.root,
            size: self.piece.len() as u64,
            offset: self.offset,
            length: self.length,
        };
        verify_answer(&expected, header, data)
    }

    /// Whether an answer that verified delivers the challenged bytes.
    fn delivers_the_challenged_bytes(&self, header: &PieceDownloadResponse, data: &[u8]) -> bool {
        let start = (self.offset - header.aligned_offset as u64) as usize;
        let (offset, length) = (self.offset as usize, self.length as usize);
        data[start..start + length] == self.piece[offset..offset + length]
    }
}

/// A piece of up to four and a bit chunks, hashed in the chunks every root
/// is built with, and a challenge of some of its bytes (none of an empty
/// piece).
fn honest() -> impl Strategy<Value = Honest> {
    let most = 4 * DEFAULT_CHUNK_SIZE as usize + 1000;
    (0usize..most, any::<Index>(), any::<Index>()).prop_map(|(size, a, b)| {
        let chunk = DEFAULT_CHUNK_SIZE;
        let piece: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut tree = hashtree::TreeBuilder::new(chunk);
        tree.update(&piece);
        let (root, leaves) = tree.finish();
        let (offset, length) = match size {
            0 => (0, 0),
            _ => {
                let offset = a.index(size);
                (offset, 1 + b.index(size - offset))
            }
        };
        let chunk_len = chunk as usize;
        let first = offset / chunk_len;
        let end = (offset + length).div_ceil(chunk_len).max(first + 1);
        let hash = sign_piece_hash(
            &NODE,
            PieceHash {
                piece_id: PIECE_ID.to_vec(),
                root: root.to_vec(),
                piece_size: size as i64,
                timestamp: 1,
                node_signature: Vec::new(),
            },
        );
        let answer = PieceDownloadResponse {
            hash: Some(hash),
            chunk_size: chunk,
            aligned_offset: (first * chunk_len) as i64,
            leaf_hashes: leaves[first..end].iter().map(|h| h.to_vec()).collect(),
            proof: hashtree::range_proof(&leaves, first, end)
                .iter()
                .map(|h| h.to_vec())
                .collect(),
            data: piece[first * chunk_len..(end * chunk_len).min(size)]
                .to_vec()
                .into(),
        };
        Honest {
            piece,
            root,
            offset: offset as u64,
            length: length as u64,
            answer,
        }
    })
}

/// An answer with any of its parts replaced by arbitrary ones.
fn arbitrary_answers() -> impl Strategy<Value = (Honest, PieceDownloadResponse)> {
    honest().prop_flat_map(|honest| {
        let a = honest.answer.clone();
        let aligned = a.aligned_offset;
        let hashes = || prop::collection::vec(hostile::bytes(40), 0..8);
        let answer = (
            prop_oneof![
                Just(a.hash.clone()),
                Just(None),
                (
                    hostile::bytes(40),
                    hostile::bytes(40),
                    any::<i64>(),
                    hostile::bytes(70)
                )
                    .prop_map(|(piece_id, root, piece_size, node_signature)| Some(
                        PieceHash {
                            piece_id,
                            root,
                            piece_size,
                            timestamp: 1,
                            node_signature,
                        }
                    )),
            ],
            prop_oneof![Just(a.chunk_size), Just(0u32), 1u32..1200, any::<u32>()],
            prop_oneof![
                Just(a.aligned_offset),
                (-2i64..=2).prop_map(move |d| aligned.saturating_add(d)),
                any::<i64>()
            ],
            prop_oneof![Just(a.leaf_hashes.clone()), hashes()],
            prop_oneof![Just(a.proof.clone()), hashes()],
            prop_oneof![Just(a.data.to_vec()), hostile::bytes(5000)],
        )
            .prop_map(
                |(hash, chunk_size, aligned_offset, leaf_hashes, proof, data)| {
                    PieceDownloadResponse {
                        hash,
                        chunk_size,
                        aligned_offset,
                        leaf_hashes,
                        proof,
                        data: data.into(),
                    }
                },
            );
        (Just(honest), answer)
    })
}

/// An answer as a node sends it on the wire, the bytes damaged or replaced.
fn damaged_answers() -> impl Strategy<Value = (Honest, Vec<u8>)> {
    honest().prop_flat_map(|honest| {
        let bytes = honest.answer.encode_to_vec();
        (Just(honest), hostile::bytes_or_mutated(bytes))
    })
}

fn arbitrary_answer_is_checked(
    (honest, answer): (Honest, PieceDownloadResponse),
) -> Result<(), TestCaseError> {
    let verified = honest.check(&answer, &answer.data).is_ok();
    if verified {
        prop_assert!(honest.delivers_the_challenged_bytes(&answer, &answer.data));
    }
    if answer == honest.answer {
        prop_assert!(verified, "the honest answer was refused");
    }
    Ok(())
}

fn damaged_answer_is_checked((honest, bytes): (Honest, Vec<u8>)) -> Result<(), TestCaseError> {
    match PieceDownloadResponse::decode(bytes.as_slice()) {
        Ok(answer) => arbitrary_answer_is_checked((honest, answer)),
        Err(_) => Ok(()),
    }
}

archipel_proto::hostile_tests! {
    arbitrary_answers_are_refused_or_deliver_the_challenged_bytes:
        arbitrary_answers() => arbitrary_answer_is_checked;
    damaged_answers_are_refused_or_deliver_the_challenged_bytes:
        damaged_answers() => damaged_answer_is_checked;
}
