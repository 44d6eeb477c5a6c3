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
    let mut len = leaf_count(piece_size, chunk_size);
    let mut lo = first;
    let mut hi = first + leaves.len() as u64;
    if leaves.is_empty() || hi > len {
        return Err(Error::HashTree(format!(
            "leaves {lo}..{hi} are not within 0..{len}"
        )));
    }
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

    #[test]
    fn streaming_matches_one_shot() {
        let data = vec![9u8; 100_000];
        assert_eq!(tree(&data, 16384, 0), tree(&data, 16384, 12345));
    }
}
