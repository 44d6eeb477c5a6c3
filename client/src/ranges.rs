//! Size and range arithmetic of a segment: how many AEAD blocks a plaintext
//! takes, how big it is once sealed, and which blocks, ciphertext bytes, stripes
//! and piece bytes a plaintext range needs.
//!
//! A segment of `p` plaintext bytes is sealed in `max(1, ⌈p / block⌉)` blocks,
//! each [`TAG_SIZE`] longer than its plaintext; the ciphertext is cut into
//! stripes of `k × share` bytes (the last one zero-padded) and piece `i` holds
//! share `i` of every stripe, so stripe `s` is bytes `s × share .. (s+1) × share`
//! of every piece.

use archipel_proto::Redundancy;

use crate::crypto::TAG_SIZE;

pub(crate) fn block_count(plain_size: u64, block_size: u64) -> u64 {
    plain_size.div_ceil(block_size).max(1)
}

/// Encrypted size of a segment of `plain_size` bytes.
pub(crate) fn encrypted_size(plain_size: u64, block_size: u64) -> u64 {
    plain_size + TAG_SIZE * block_count(plain_size, block_size)
}

/// The largest plaintext whose encrypted size is at most `limit`, if any.
pub(crate) fn max_plain_within(limit: u64, block_size: u64) -> Option<u64> {
    if limit < TAG_SIZE {
        return None;
    }
    let sealed_block = block_size + TAG_SIZE;
    let full = limit / sealed_block;
    let rest = limit % sealed_block;
    Some(full * block_size + rest.saturating_sub(TAG_SIZE))
}

/// The shape of one stored segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentLayout {
    pub(crate) plain_size: u64,
    pub(crate) block_size: u64,
}

/// What a plaintext range `start..end` of a segment needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RangePlan {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) first_block: u64,
    pub(crate) end_block: u64,
    pub(crate) cipher_start: u64,
    pub(crate) cipher_end: u64,
}

impl SegmentLayout {
    pub(crate) fn block_count(&self) -> u64 {
        block_count(self.plain_size, self.block_size)
    }

    pub(crate) fn encrypted_size(&self) -> u64 {
        encrypted_size(self.plain_size, self.block_size)
    }

    pub(crate) fn piece_size(&self, scheme: &Redundancy) -> u64 {
        scheme.piece_size(self.encrypted_size())
    }

    pub(crate) fn is_last_block(&self, index: u64) -> bool {
        index + 1 == self.block_count()
    }

    /// Sealed length of block `index`: only the last block may be short.
    pub(crate) fn sealed_block_len(&self, index: u64) -> u64 {
        let plain_start = index * self.block_size;
        let plain_len = if self.is_last_block(index) {
            self.plain_size - plain_start
        } else {
            self.block_size
        };
        plain_len + TAG_SIZE
    }

    /// The plan for plaintext bytes `start..end`, where `start < end <= plain_size`.
    pub(crate) fn plan(&self, start: u64, end: u64) -> RangePlan {
        debug_assert!(start < end && end <= self.plain_size);
        let sealed_block = self.block_size + TAG_SIZE;
        let first_block = start / self.block_size;
        let end_block = end.div_ceil(self.block_size);
        let cipher_start = first_block * sealed_block;
        let cipher_end = (end_block * sealed_block).min(self.encrypted_size());
        RangePlan {
            start,
            end,
            first_block,
            end_block,
            cipher_start,
            cipher_end,
        }
    }
}

impl RangePlan {
    /// Stripes `first..end` that hold the range's ciphertext.
    pub(crate) fn stripes(&self, scheme: &Redundancy) -> (u64, u64) {
        let stripe = scheme.stripe_size();
        (self.cipher_start / stripe, self.cipher_end.div_ceil(stripe))
    }

    /// Bytes `offset..end` every piece must supply for this range.
    pub(crate) fn piece_range(&self, scheme: &Redundancy) -> (u64, u64) {
        let share = scheme.share_size as u64;
        let (first, end) = self.stripes(scheme);
        (first * share, end * share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_of_small_segments() {
        assert_eq!(encrypted_size(0, 64), 16);
        assert_eq!(encrypted_size(1, 64), 17);
        assert_eq!(encrypted_size(64, 64), 80);
        assert_eq!(encrypted_size(65, 64), 97);
        assert_eq!(max_plain_within(15, 64), None);
        assert_eq!(max_plain_within(16, 64), Some(0));
        assert_eq!(max_plain_within(4096, 65536), Some(4080));
    }

    proptest! {
        #[test]
        fn max_plain_within_is_the_largest_that_fits(limit in 0u64..10_000, block in 1u64..300) {
            match max_plain_within(limit, block) {
                None => prop_assert!(limit < encrypted_size(0, block)),
                Some(p) => {
                    prop_assert!(encrypted_size(p, block) <= limit);
                    prop_assert!(encrypted_size(p + 1, block) > limit);
                }
            }
        }

        #[test]
        fn plans_cover_exactly_the_needed_stripes(
            k in 1u16..8, shares in 1u32..6, block in 1u64..500, plain in 1u64..20_000,
            a in any::<u64>(), b in any::<u64>()
        ) {
            let scheme = Redundancy::new(k, k, k, k + 2, shares * 64).unwrap();
            let layout = SegmentLayout { plain_size: plain, block_size: block };
            let start = a % plain;
            let end = start + 1 + b % (plain - start);
            let plan = layout.plan(start, end);
            let sealed = block + TAG_SIZE;
            let stripe = scheme.stripe_size();

            // The blocks hold the range, and no block too many.
            prop_assert!(plan.first_block * block <= start && start < (plan.first_block + 1) * block);
            prop_assert!(plan.end_block * block >= end && (plan.end_block - 1) * block < end);
            prop_assert!(plan.end_block <= layout.block_count());
            // The ciphertext range is exactly those blocks.
            let block_lens: u64 = (plan.first_block..plan.end_block).map(|i| layout.sealed_block_len(i)).sum();
            prop_assert_eq!(plan.cipher_start, plan.first_block * sealed);
            prop_assert_eq!(plan.cipher_end - plan.cipher_start, block_lens);
            prop_assert!(plan.cipher_end <= layout.encrypted_size());
            // The stripes cover it, and no stripe too many.
            let (first_stripe, end_stripe) = plan.stripes(&scheme);
            prop_assert!(first_stripe * stripe <= plan.cipher_start);
            prop_assert!((first_stripe + 1) * stripe > plan.cipher_start);
            prop_assert!(end_stripe * stripe >= plan.cipher_end);
            prop_assert!((end_stripe - 1) * stripe < plan.cipher_end);
            // And the pieces hold those stripes.
            let (offset, piece_end) = plan.piece_range(&scheme);
            prop_assert!(piece_end <= layout.piece_size(&scheme));
            prop_assert_eq!(offset % scheme.share_size as u64, 0);
            prop_assert_eq!((piece_end - offset) / scheme.share_size as u64, end_stripe - first_stripe);
        }
    }
}
