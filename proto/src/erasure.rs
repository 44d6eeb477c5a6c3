//! Reed-Solomon coding of whole batches of stripes with `reed-solomon-simd`.
//!
//! The code works position by position, so encoding shard `i` = "share `i` of
//! every stripe in the batch" in one call gives exactly the bytes that piece `i`
//! holds for those stripes. A batch is gathered into shards once, encoded once,
//! and each shard is appended to its piece.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::redundancy::Redundancy;
use crate::{Error, Result};

fn rs_error(e: reed_solomon_simd::Error) -> Error {
    Error::Erasure(e.to_string())
}

/// Splits `batch` (whole stripes; the caller zero-pads the last one) into `k`
/// data shards: shard `i` is share `i` of every stripe, in stripe order.
pub fn gather_data_shards(scheme: &Redundancy, batch: &[u8]) -> Vec<Vec<u8>> {
    let share = scheme.share_size as usize;
    let k = scheme.required as usize;
    let stripes = batch.len() / (k * share);
    let mut shards: Vec<Vec<u8>> = (0..k)
        .map(|_| Vec::with_capacity(stripes * share))
        .collect();
    for stripe in batch.chunks_exact(k * share) {
        for (shard, part) in shards.iter_mut().zip(stripe.chunks_exact(share)) {
            shard.extend_from_slice(part);
        }
    }
    shards
}

/// Inverse of [`gather_data_shards`]: interleaves `k` data shards back into stripes.
pub fn scatter_data_shards(scheme: &Redundancy, shards: &[&[u8]], out: &mut Vec<u8>) {
    let share = scheme.share_size as usize;
    let stripes = shards.first().map_or(0, |s| s.len() / share);
    out.reserve(stripes * share * shards.len());
    for stripe in 0..stripes {
        for shard in shards {
            out.extend_from_slice(&shard[stripe * share..(stripe + 1) * share]);
        }
    }
}

/// Encodes batches of stripes into `n` shards.
pub struct BatchEncoder {
    scheme: Redundancy,
    encoder: Option<ReedSolomonEncoder>,
}

impl BatchEncoder {
    pub fn new(scheme: Redundancy) -> Self {
        BatchEncoder {
            scheme,
            encoder: None,
        }
    }

    /// `batch` must be a whole number of stripes. Returns all `n` shards, data first.
    pub fn encode(&mut self, batch: &[u8]) -> Result<Vec<Vec<u8>>> {
        let stripe = self.scheme.stripe_size() as usize;
        if batch.is_empty() || !batch.len().is_multiple_of(stripe) {
            return Err(Error::Erasure(format!(
                "batch of {} bytes is not a whole number of {stripe}-byte stripes",
                batch.len()
            )));
        }
        let data = gather_data_shards(&self.scheme, batch);
        let recovery = self.encode_recovery(&data)?;
        let mut shards = data;
        shards.extend(recovery);
        Ok(shards)
    }

    /// Computes the `n − k` recovery shards of `k` equally long data shards.
    pub fn encode_recovery(&mut self, data: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let k = self.scheme.required as usize;
        let m = self.scheme.total as usize - k;
        let shard_bytes = data.first().map_or(0, Vec::len);
        let encoder = match &mut self.encoder {
            Some(encoder) => {
                encoder.reset(k, m, shard_bytes).map_err(rs_error)?;
                encoder
            }
            slot => slot.insert(ReedSolomonEncoder::new(k, m, shard_bytes).map_err(rs_error)?),
        };
        for shard in data {
            encoder.add_original_shard(shard).map_err(rs_error)?;
        }
        let result = encoder.encode().map_err(rs_error)?;
        Ok(result.recovery_iter().map(<[u8]>::to_vec).collect())
    }
}

/// Rebuilds the `k` data shards of a batch from any `k` of its `n` shards.
///
/// `shards[i]` is shard `i` if present. Returns the data shards in order; when all
/// data shards are present no decoding happens at all.
pub fn decode_data_shards(scheme: &Redundancy, shards: &[Option<&[u8]>]) -> Result<Vec<Vec<u8>>> {
    let k = scheme.required as usize;
    let n = scheme.total as usize;
    if shards.len() != n {
        return Err(Error::Erasure(format!(
            "expected {n} shard slots, got {}",
            shards.len()
        )));
    }
    let present = shards.iter().filter(|s| s.is_some()).count();
    if present < k {
        return Err(Error::Erasure(format!("need {k} shards, have {present}")));
    }
    let shard_bytes = shards.iter().flatten().map(|s| s.len()).next().unwrap_or(0);
    if shards.iter().flatten().any(|s| s.len() != shard_bytes) {
        return Err(Error::Erasure("shards differ in length".into()));
    }
    if shards[..k].iter().all(Option::is_some) {
        return Ok(shards[..k].iter().flatten().map(|s| s.to_vec()).collect());
    }
    let mut decoder = ReedSolomonDecoder::new(k, n - k, shard_bytes).map_err(rs_error)?;
    for (i, shard) in shards.iter().enumerate() {
        if let Some(shard) = shard {
            if i < k {
                decoder.add_original_shard(i, shard).map_err(rs_error)?;
            } else {
                decoder.add_recovery_shard(i - k, shard).map_err(rs_error)?;
            }
        }
    }
    let result = decoder.decode().map_err(rs_error)?;
    let mut restored: Vec<Option<Vec<u8>>> = vec![None; k];
    for (i, shard) in result.restored_original_iter() {
        restored[i] = Some(shard.to_vec());
    }
    (0..k)
        .map(|i| match shards[i] {
            Some(s) => Ok(s.to_vec()),
            None => restored[i]
                .take()
                .ok_or_else(|| Error::Erasure(format!("decoder did not restore shard {i}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scheme() -> Redundancy {
        Redundancy::new(4, 6, 8, 10, 64).unwrap()
    }

    #[test]
    fn encode_then_decode_from_any_k() {
        let s = scheme();
        let batch: Vec<u8> = (0..s.stripe_size() as usize * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let shards = BatchEncoder::new(s).encode(&batch).unwrap();
        assert_eq!(shards.len(), 10);
        // Lose data shards 0 and 2 and some parity.
        let slots: Vec<Option<&[u8]>> = shards
            .iter()
            .enumerate()
            .map(|(i, sh)| {
                if [0, 2, 5, 9].contains(&i) {
                    None
                } else {
                    Some(sh.as_slice())
                }
            })
            .collect();
        let data = decode_data_shards(&s, &slots).unwrap();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        scatter_data_shards(&s, &refs, &mut out);
        assert_eq!(out, batch);
    }

    #[test]
    fn too_few_shards_is_an_error() {
        let s = scheme();
        let batch = vec![1u8; s.stripe_size() as usize];
        let shards = BatchEncoder::new(s).encode(&batch).unwrap();
        let slots: Vec<Option<&[u8]>> = shards
            .iter()
            .enumerate()
            .map(|(i, sh)| (i < 3).then_some(sh.as_slice()))
            .collect();
        assert!(decode_data_shards(&s, &slots).is_err());
    }

    proptest! {
        #[test]
        fn batch_encoding_equals_per_stripe_encoding(stripes in 1usize..5, seed in any::<u8>()) {
            let s = scheme();
            let batch: Vec<u8> = (0..s.stripe_size() as usize * stripes).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let mut enc = BatchEncoder::new(s);
            let whole = enc.encode(&batch).unwrap();
            for (j, stripe) in batch.chunks(s.stripe_size() as usize).enumerate() {
                let one = enc.encode(stripe).unwrap();
                for (i, shard) in one.iter().enumerate() {
                    prop_assert_eq!(&whole[i][j * 64..(j + 1) * 64], shard.as_slice());
                }
            }
        }
    }
}
