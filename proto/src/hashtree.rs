//! Piece hash trees: a binary Merkle tree of BLAKE3 hashes over fixed-size chunks
//! of a piece. The root (bound to the piece size) is what the node signs and the
//! satellite stores. A byte range is verified from its chunks' leaf hashes plus
//! the few sibling hashes on the way to the root, so neither a download nor an
//! audit needs the whole piece.
//!
//! Leaves are BLAKE3 keyed with a leaf key, parents `H(0x01 ‖ left ‖ right)`; a
//! node without a sibling at the end of a level is carried up unchanged. The root
//! is `H(0x02 ‖ piece_size ‖ top)`. Leaves use a key rather than a prefix byte for
//! domain separation so that chunks stay aligned to BLAKE3's 1 KiB chunks, which
//! keeps its SIMD parallelism (a prefix byte halves the hashing speed).

use crate::{Error, Result};

pub type Hash = [u8; 32];

/// Chunk size nodes use for new pieces.
pub const DEFAULT_CHUNK_SIZE: u32 = 16 * 1024;

fn leaf_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| blake3::derive_key("archipel v1 piece hash tree leaf", b""))
}

pub fn leaf_hash(chunk: &[u8]) -> Hash {
    *blake3::keyed_hash(leaf_key(), chunk).as_bytes()
}

fn parent_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

fn bind_root(top: &Hash, piece_size: u64) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[2]);
    h.update(&piece_size.to_le_bytes());
    h.update(top);
    *h.finalize().as_bytes()
}

fn next_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => parent_hash(l, r),
            [only] => *only,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
}

/// Number of leaves of a piece: at least one, even for an empty piece.
pub fn leaf_count(piece_size: u64, chunk_size: u32) -> u64 {
    piece_size.div_ceil(chunk_size as u64).max(1)
}

/// Root of a tree given all its leaves.
pub fn root_from_leaves(leaves: &[Hash], piece_size: u64) -> Hash {
    let mut level = if leaves.is_empty() {
        vec![leaf_hash(&[])]
    } else {
        leaves.to_vec()
    };
    while level.len() > 1 {
        level = next_level(&level);
    }
    bind_root(&level[0], piece_size)
}

/// Hashes a piece as it streams by.
pub struct TreeBuilder {
    chunk_size: usize,
    pending: blake3::Hasher,
    pending_len: usize,
    leaves: Vec<Hash>,
    size: u64,
}

impl TreeBuilder {
    pub fn new(chunk_size: u32) -> Self {
        let pending = blake3::Hasher::new_keyed(leaf_key());
        TreeBuilder {
            chunk_size: chunk_size as usize,
            pending,
            pending_len: 0,
            leaves: Vec::new(),
            size: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = (self.chunk_size - self.pending_len).min(data.len());
            self.pending.update(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len == self.chunk_size {
                self.leaves.push(*self.pending.finalize().as_bytes());
                self.pending.reset();
                self.pending_len = 0;
            }
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the root and the leaves.
    pub fn finish(mut self) -> (Hash, Vec<Hash>) {
        if self.pending_len > 0 || self.leaves.is_empty() {
            self.leaves.push(*self.pending.finalize().as_bytes());
        }
        (root_from_leaves(&self.leaves, self.size), self.leaves)
    }
}

/// Sibling hashes proving leaves `lo..hi` of `leaves` against the root.
pub fn range_proof(leaves: &[Hash], lo: usize, hi: usize) -> Vec<Hash> {
    let mut proof = Vec::new();
    let mut level = leaves.to_vec();
    let (mut lo, mut hi) = (lo, hi);
    while level.len() > 1 {
        if lo % 2 == 1 {
            proof.push(level[lo - 1]);
        }
        if hi % 2 == 1 && hi < level.len() {
            proof.push(level[hi]);
        }
        level = next_level(&level);
        lo /= 2;
        hi = hi.div_ceil(2);
    }
    proof
}

/// Checks that `leaves` are leaves `first..first + leaves.len()` of the tree of a
/// piece of `piece_size` bytes with root `root`, using `proof` from [`range_proof`].
pub fn verify_range(
    root: &Hash,
    piece_size: u64,
    chunk_size: u32,
    first: u64,
    leaves: &[Hash],
    proof: &[Hash],
) -> Result<()> {
    // The chunk size and the first leaf come from the peer whose answer is
    // checked: refuse what the arithmetic below cannot take.
    if chunk_size == 0 {
        return Err(Error::HashTree("the chunk size is zero".into()));
    }
    let mut len = leaf_count(piece_size, chunk_size);
    let mut lo = first;
    let count = leaves.len() as u64;
    let mut hi = match first.checked_add(count) {
        Some(hi) if count > 0 && hi <= len => hi,
        _ => {
            return Err(Error::HashTree(format!(
                "{count} leaves from leaf {first} are not within 0..{len}"
            )))
        }
    };
    let mut level = leaves.to_vec();
    let mut siblings = proof.iter();
    let mut next = || {
        siblings
            .next()
            .copied()
            .ok_or_else(|| Error::HashTree("proof too short".into()))
    };
    while len > 1 {
        if lo % 2 == 1 {
            level.insert(0, next()?);
            lo -= 1;
        }
        if hi % 2 == 1 && hi < len {
            level.push(next()?);
            hi += 1;
        }
        level = next_level(&level);
        lo /= 2;
        hi = hi.div_ceil(2);
        len = len.div_ceil(2);
    }
    if siblings.next().is_some() {
        return Err(Error::HashTree("proof too long".into()));
    }
    if bind_root(&level[0], piece_size) != *root {
        return Err(Error::HashTree(
            "data does not match the piece's root".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostile;
    use proptest::prelude::*;

    fn tree(data: &[u8], chunk: u32, split: usize) -> (Hash, Vec<Hash>) {
        let mut b = TreeBuilder::new(chunk);
        let (a, c) = data.split_at(split.min(data.len()));
        b.update(a);
        b.update(c);
        b.finish()
    }

    proptest! {
        #[test]
        fn every_range_verifies_and_tampering_fails(
            size in 0usize..2000, chunk in 1u32..300, split in 0usize..2000, a in 0u64..100, b in 0u64..100
        ) {
            let data: Vec<u8> = (0..size).map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[0]).collect();
            let (root, leaves) = tree(&data, chunk, split);
            let count = leaf_count(size as u64, chunk);
            prop_assert_eq!(leaves.len() as u64, count);
            let lo = a % count;
            let hi = lo + 1 + b % (count - lo);
            let proof = range_proof(&leaves, lo as usize, hi as usize);
            let range = &leaves[lo as usize..hi as usize];
            prop_assert!(verify_range(&root, size as u64, chunk, lo, range, &proof).is_ok());

            let mut bad = range.to_vec();
            bad[0][0] ^= 1;
            prop_assert!(verify_range(&root, size as u64, chunk, lo, &bad, &proof).is_err());
            prop_assert!(verify_range(&root, size as u64 + 1, chunk, lo, range, &proof).is_err());
            if count > 1 {
                let shifted = if lo > 0 { lo - 1 } else { lo + 1 };
                if shifted + range.len() as u64 <= count {
                    prop_assert!(verify_range(&root, size as u64, chunk, shifted, range, &proof).is_err());
                }
            }
        }
    }

    /// A range of a piece's leaves with its proof, as a node sends it.
    #[derive(Clone, Debug)]
    struct ProvenRange {
        root: Hash,
        size: u64,
        chunk: u32,
        /// All the piece's leaves: what a verified range must be part of.
        all: Vec<Hash>,
        first: u64,
        leaves: Vec<Hash>,
        proof: Vec<Hash>,
    }

    fn proven_range() -> impl Strategy<Value = ProvenRange> {
        (
            0usize..3000,
            1u32..300,
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(size, chunk, a, b)| {
                let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
                let (root, all) = tree(&data, chunk, size / 2);
                let lo = a.index(all.len());
                let hi = lo + 1 + b.index(all.len() - lo);
                ProvenRange {
                    root,
                    size: size as u64,
                    chunk,
                    first: lo as u64,
                    leaves: all[lo..hi].to_vec(),
                    proof: range_proof(&all, lo, hi),
                    all,
                }
            })
    }

    /// Hashes from bytes, a trailing partial hash dropped.
    fn hashes(bytes: &[u8]) -> Vec<Hash> {
        bytes
            .chunks_exact(32)
            .map(|h| h.try_into().unwrap())
            .collect()
    }

    fn arbitrary_range_is_checked(
        (root, size, chunk, first, leaves, proof): (Hash, u64, u32, u64, Vec<Hash>, Vec<Hash>),
    ) -> Result<(), TestCaseError> {
        let _ = verify_range(&root, size, chunk, first, &leaves, &proof);
        Ok(())
    }

    /// A range with damaged leaves, proof or position verifies only if its
    /// leaves are still the piece's own at the position it claims.
    fn damaged_range_verifies_only_as_the_true_leaves(
        (range, leaves, proof, shift): (ProvenRange, Vec<u8>, Vec<u8>, i64),
    ) -> Result<(), TestCaseError> {
        let (leaves, proof) = (hashes(&leaves), hashes(&proof));
        let first = range.first.saturating_add_signed(shift);
        if verify_range(&range.root, range.size, range.chunk, first, &leaves, &proof).is_ok() {
            let start = usize::try_from(first).unwrap();
            prop_assert_eq!(&range.all[start..start + leaves.len()], &leaves[..]);
        }
        Ok(())
    }

    crate::hostile_tests! {
        verify_range_survives_arbitrary_input: (
            any::<Hash>(),
            prop_oneof![0u64..100_000, any::<u64>()],
            prop_oneof![Just(0u32), 1u32..100, any::<u32>()],
            prop_oneof![0u64..8, u64::MAX - 8..=u64::MAX, any::<u64>()],
            prop::collection::vec(any::<Hash>(), 0..8),
            prop::collection::vec(any::<Hash>(), 0..80),
        ) => arbitrary_range_is_checked;
        damaged_ranges_verify_only_as_the_true_leaves: proven_range().prop_flat_map(|range| {
            let leaves = range.leaves.concat();
            let proof = range.proof.concat();
            (
                Just(range),
                prop_oneof![Just(leaves.clone()), hostile::mutated(leaves)],
                prop_oneof![Just(proof.clone()), hostile::mutated(proof)],
                prop_oneof![Just(0i64), -2i64..=2],
            )
        }) => damaged_range_verifies_only_as_the_true_leaves;
    }

    #[test]
    fn streaming_matches_one_shot() {
        let data = vec![9u8; 100_000];
        assert_eq!(tree(&data, 16384, 0), tree(&data, 16384, 12345));
    }
}
