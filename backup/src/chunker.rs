//! Content-defined chunking: FastCDC (the 2020 algorithm, normalization
//! level 1) with the gear table keyed by the repository, over a buffer that
//! each reading thread keeps for all the files it reads.
//!
//! `fastcdc`'s own streaming reader allocates and zero-fills a buffer of the
//! maximum chunk size for every file and shifts it after every chunk; on a
//! tree of small files that cost more than everything else a backup does
//! (see docs/BACKUP.md). Here the buffer (twice the maximum chunk size) is
//! allocated once per thread, and refilled only when less than a maximum
//! chunk is left in it, so each byte is moved at most about once. The cut
//! points are exactly those of `fastcdc::v2020::FastCDC` over the whole
//! file: a cut never looks further than the maximum chunk size ahead.

use std::io::{ErrorKind, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, Normalization, MASKS};

use crate::repo::ChunkerSizes;

pub struct Chunker {
    min: usize,
    average: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    buffer: Vec<u8>,
}

impl Chunker {
    /// `sizes` must be valid ([`ChunkerSizes::check`]); `seed` keys the
    /// gear table, so that chunk boundaries differ between repositories.
    pub fn new(sizes: ChunkerSizes, seed: u64) -> Chunker {
        let bits = logarithm2(sizes.average);
        let normalization = Normalization::Level1.bits();
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            min: sizes.min as usize,
            average: sizes.average as usize,
            max: sizes.max as usize,
            mask_s: MASKS[(bits + normalization) as usize],
            mask_l: MASKS[(bits - normalization) as usize],
            gear,
            gear_ls,
            buffer: vec![0; 2 * sizes.max as usize],
        }
    }

    /// Hands every chunk of what `reader` yields to `each`, in order. An
    /// empty input has no chunks.
    pub fn chunk<E: From<std::io::Error>>(
        &mut self,
        reader: &mut impl Read,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (mut start, mut end, mut at_end) = (0, 0, false);
        loop {
            if !at_end && end - start < self.max {
                self.buffer.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < self.buffer.len() {
                    match reader.read(&mut self.buffer[end..]) {
                        Ok(0) => {
                            at_end = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let (_, length) = cut_gear(
                &self.buffer[start..end],
                self.min,
                self.average,
                self.max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &self.gear,
                &self.gear_ls,
            );
            each(&self.buffer[start..start + length])?;
            start += length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIZES: ChunkerSizes = ChunkerSizes {
        min: 256,
        average: 1024,
        max: 4096,
    };

    /// Yields its bytes a few at a time, as a pipe or a slow disk might.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_derive_key("chunker test")
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    proptest! {
        #[test]
        fn cuts_where_fastcdc_cuts_over_the_whole_input(
            len in 0usize..40_000,
            seed in 0u64..4,
            step in 1usize..9000,
        ) {
            let data = noise(len, seed);
            let mut chunks = Vec::new();
            Chunker::new(SIZES, seed)
                .chunk(&mut Trickle(&data, step), |c| {
                    chunks.push(c.to_vec());
                    Ok::<_, std::io::Error>(())
                })
                .unwrap();
            let expected: Vec<Vec<u8>> = fastcdc::v2020::FastCDC::with_level_and_seed(
                &data, SIZES.min, SIZES.average, SIZES.max, Normalization::Level1, seed,
            )
            .map(|c| data[c.offset..c.offset + c.length].to_vec())
            .collect();
            prop_assert_eq!(chunks.concat(), data);
            prop_assert_eq!(chunks, expected);
        }
    }

    #[test]
    fn seeds_move_the_boundaries() {
        let data = noise(200_000, 1);
        let cuts = |seed| {
            let mut lengths = Vec::new();
            Chunker::new(SIZES, seed)
                .chunk(&mut data.as_slice(), |c| {
                    lengths.push(c.len());
                    Ok::<_, std::io::Error>(())
                })
                .unwrap();
            lengths
        };
        assert_ne!(cuts(1), cuts(2));
        assert!(cuts(1).iter().all(|&l| l <= SIZES.max as usize));
    }
}
