//! Bloom filters of piece ids, as a satellite sends them to a node in a
//! retain request (garbage collection).
//!
//! A filter has `m` bits (a whole number of bytes), `k` hash functions and a
//! 32-byte seed. A piece id sets or tests bits `(h1 + i·h2) mod m` for `i` in
//! `0..k`, where `h1` and `h2` are the first two little-endian 64-bit words of
//! BLAKE3 keyed with the seed over the piece id (double hashing, Kirsch and
//! Mitzenmacher, with `h2` odd). A fresh random seed per filter means a piece
//! kept by a false positive in one round is tested against different bits in
//! the next, so garbage does not survive for ever.
//!
//! A filter never answers "absent" for an id that was added: that is the
//! property garbage collection rests on, and the tests check it.

use crate::error::{Error, Result};
use crate::orders::PieceId;

/// More hash functions than this gain nothing at any rate worth asking for.
pub const MAX_HASH_COUNT: u32 = 32;
/// The largest filter a node accepts: 8 Mi pieces at a 10 % false-positive
/// rate fit, and the message stays under the node's request limit.
pub const MAX_FILTER_BYTES: usize = 6 << 20;
/// The smallest filter built, so that an empty node still gets a filter that
/// keeps its false-positive rate honest.
const MIN_FILTER_BYTES: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BloomFilter {
    seed: [u8; 32],
    hash_count: u32,
    bits: Vec<u8>,
}

impl BloomFilter {
    /// An empty filter sized for `items` ids at `false_positive_rate` (between
    /// 0 and 1, exclusive), with a random seed. The size is capped at
    /// [`MAX_FILTER_BYTES`]; past that the rate gets worse, never the safety.
    pub fn with_capacity(items: usize, false_positive_rate: f64) -> Self {
        let rate = false_positive_rate.clamp(1e-9, 0.5);
        let items = items.max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let bits = (-items * rate.ln() / (ln2 * ln2)).ceil();
        let bytes = ((bits / 8.0).ceil() as usize).clamp(MIN_FILTER_BYTES, MAX_FILTER_BYTES);
        let hash_count = ((bytes as f64 * 8.0 / items) * ln2).round() as u32;
        BloomFilter {
            seed: rand::random(),
            hash_count: hash_count.clamp(1, MAX_HASH_COUNT),
            bits: vec![0; bytes],
        }
    }

    /// A filter from its wire form, checked: a seed of 32 bytes, 1 to
    /// [`MAX_HASH_COUNT`] hash functions, 1 to [`MAX_FILTER_BYTES`] bytes.
    pub fn from_parts(seed: &[u8], hash_count: u32, bits: Vec<u8>) -> Result<Self> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| Error::InvalidFilter(format!("a seed of {} bytes, not 32", seed.len())))?;
        if !(1..=MAX_HASH_COUNT).contains(&hash_count) {
            return Err(Error::InvalidFilter(format!(
                "{hash_count} hash functions, not 1 to {MAX_HASH_COUNT}"
            )));
        }
        if bits.is_empty() || bits.len() > MAX_FILTER_BYTES {
            return Err(Error::InvalidFilter(format!(
                "{} bytes of bits, not 1 to {MAX_FILTER_BYTES}",
                bits.len()
            )));
        }
        Ok(BloomFilter {
            seed,
            hash_count,
            bits,
        })
    }

    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub fn hash_count(&self) -> u32 {
        self.hash_count
    }

    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    pub fn into_bits(self) -> Vec<u8> {
        self.bits
    }

    pub fn add(&mut self, piece_id: &PieceId) {
        for bit in self.positions(piece_id) {
            self.bits[bit / 8] |= 1 << (bit % 8);
        }
    }

    /// False only for ids never added; true for every added id and for a
    /// fraction (the false-positive rate) of the others.
    pub fn contains(&self, piece_id: &PieceId) -> bool {
        self.positions(piece_id)
            .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    fn positions(&self, piece_id: &PieceId) -> impl Iterator<Item = usize> {
        let hash = blake3::keyed_hash(&self.seed, piece_id);
        let bytes = hash.as_bytes();
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let (h1, h2) = (word(0), word(8) | 1);
        let m = self.bits.len() as u64 * 8;
        (0..u64::from(self.hash_count))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_added_id_is_contained_and_others_mostly_not() {
        let ids: Vec<PieceId> = (0..10_000).map(|_| rand::random()).collect();
        let mut filter = BloomFilter::with_capacity(ids.len(), 0.05);
        for id in &ids {
            filter.add(id);
        }
        assert!(ids.iter().all(|id| filter.contains(id)));
        let strangers = 20_000;
        let false_positives = (0..strangers)
            .filter(|_| filter.contains(&rand::random()))
            .count();
        // 5 % asked; allow for chance.
        assert!(
            false_positives < strangers / 10,
            "{false_positives} false positives of {strangers}"
        );
    }

    #[test]
    fn the_wire_form_round_trips_and_is_checked() {
        let mut filter = BloomFilter::with_capacity(100, 0.1);
        let id = rand::random();
        filter.add(&id);
        let back =
            BloomFilter::from_parts(filter.seed(), filter.hash_count(), filter.bits().to_vec())
                .unwrap();
        assert!(back.contains(&id));
        assert_eq!(back, filter);
        assert!(BloomFilter::from_parts(&[0; 31], 3, vec![0; 8]).is_err());
        assert!(BloomFilter::from_parts(&[0; 32], 0, vec![0; 8]).is_err());
        assert!(BloomFilter::from_parts(&[0; 32], MAX_HASH_COUNT + 1, vec![0; 8]).is_err());
        assert!(BloomFilter::from_parts(&[0; 32], 3, Vec::new()).is_err());
        assert!(BloomFilter::from_parts(&[0; 32], 3, vec![0; MAX_FILTER_BYTES + 1]).is_err());
    }

    #[test]
    fn an_empty_filter_still_has_room() {
        let filter = BloomFilter::with_capacity(0, 0.1);
        assert!(filter.bits().len() >= MIN_FILTER_BYTES);
        assert!(!filter.contains(&[7; 32]));
    }

    proptest! {
        #[test]
        fn no_false_negatives(
            ids in proptest::collection::vec(any::<[u8; 32]>(), 0..300),
            rate in 0.001f64..0.5,
        ) {
            let mut filter = BloomFilter::with_capacity(ids.len(), rate);
            for id in &ids {
                filter.add(id);
            }
            for id in &ids {
                prop_assert!(filter.contains(id));
            }
        }

        #[test]
        fn any_checked_wire_form_is_safe_to_query(
            seed in any::<[u8; 32]>(),
            hash_count in 1u32..=MAX_HASH_COUNT,
            bits in proptest::collection::vec(any::<u8>(), 1..64),
            id in any::<[u8; 32]>(),
        ) {
            let filter = BloomFilter::from_parts(&seed, hash_count, bits).unwrap();
            let _ = filter.contains(&id);
        }
    }
}
