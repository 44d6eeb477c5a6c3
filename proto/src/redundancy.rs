//! The redundancy scheme `(k, repair, success, total)` with its share size, and the
//! size arithmetic of striping: a segment's ciphertext is cut into stripes of
//! `k × share_size` bytes; piece `i` is share `i` of every stripe.

use crate::pb::RedundancyScheme;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Redundancy {
    /// k: pieces needed to rebuild a segment.
    pub required: u16,
    /// Repair once healthy pieces drop to this many.
    pub repair: u16,
    /// An upload commits once this many pieces are stored.
    pub success: u16,
    /// n: pieces created per segment.
    pub total: u16,
    /// Bytes of one share; a multiple of 64.
    pub share_size: u32,
}

impl Redundancy {
    pub fn new(
        required: u16,
        repair: u16,
        success: u16,
        total: u16,
        share_size: u32,
    ) -> Result<Self> {
        let scheme = Redundancy {
            required,
            repair,
            success,
            total,
            share_size,
        };
        scheme.validate()?;
        Ok(scheme)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidRedundancy(format!("{m} (got {self})")));
        if self.required == 0 {
            return bad("k must be at least 1");
        }
        if !(self.required <= self.repair
            && self.repair <= self.success
            && self.success <= self.total)
        {
            return bad("need k <= repair <= success <= total");
        }
        if self.total <= self.required {
            return bad("total must exceed k");
        }
        if self.share_size == 0 || !self.share_size.is_multiple_of(64) {
            return bad("share size must be a positive multiple of 64");
        }
        if self.share_size > MAX_SHARE_SIZE {
            return bad("share size must be at most 1 MiB");
        }
        Ok(())
    }

    /// Plaintext-independent bytes per stripe: `k × share_size`.
    pub fn stripe_size(&self) -> u64 {
        self.required as u64 * self.share_size as u64
    }

    pub fn stripe_count(&self, encrypted_size: u64) -> u64 {
        encrypted_size.div_ceil(self.stripe_size())
    }

    /// Size of every piece of a segment of `encrypted_size` bytes (the last stripe is zero-padded).
    pub fn piece_size(&self, encrypted_size: u64) -> u64 {
        self.stripe_count(encrypted_size) * self.share_size as u64
    }

    pub fn to_pb(self) -> RedundancyScheme {
        RedundancyScheme {
            required: self.required.into(),
            repair: self.repair.into(),
            success: self.success.into(),
            total: self.total.into(),
            share_size: self.share_size,
        }
    }

    pub fn from_pb(pb: &RedundancyScheme) -> Result<Self> {
        let narrow = |v: u32| {
            u16::try_from(v)
                .map_err(|_| Error::InvalidRedundancy(format!("{v} pieces is too many")))
        };
        Self::new(
            narrow(pb.required)?,
            narrow(pb.repair)?,
            narrow(pb.success)?,
            narrow(pb.total)?,
            pb.share_size,
        )
    }
}

impl std::fmt::Display for Redundancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{} share {} B",
            self.required, self.repair, self.success, self.total, self.share_size
        )
    }
}

impl std::str::FromStr for Redundancy {
    type Err = Error;
    /// Parses `k/repair/success/total` or `k/repair/success/total/share_size`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<u32> = s
            .split('/')
            .map(|p| p.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                Error::InvalidRedundancy(format!("{s:?} is not k/repair/success/total[/share]"))
            })?;
        let share_size = match parts.len() {
            4 => DEFAULT_SHARE_SIZE,
            5 => parts[4],
            _ => {
                return Err(Error::InvalidRedundancy(format!(
                    "{s:?} is not k/repair/success/total[/share]"
                )))
            }
        };
        Self::from_pb(&RedundancyScheme {
            required: parts[0],
            repair: parts[1],
            success: parts[2],
            total: parts[3],
            share_size,
        })
    }
}

/// Default share size: large enough that erasure coding runs at full speed,
/// small enough that a range read fetches little more than it needs.
pub const DEFAULT_SHARE_SIZE: u32 = 4096;

/// Largest share size: bounds the buffers a batch of stripes needs.
pub const MAX_SHARE_SIZE: u32 = 1 << 20;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hostile;

    #[test]
    fn sizes() {
        let r: Redundancy = "4/6/8/10".parse().unwrap();
        assert_eq!(r.stripe_size(), 4 * 4096);
        assert_eq!(r.piece_size(1), 4096);
        assert_eq!(r.piece_size(4 * 4096), 4096);
        assert_eq!(r.piece_size(4 * 4096 + 1), 8192);
    }

    #[test]
    fn invalid_schemes_are_refused() {
        for s in [
            "0/1/2/3",
            "4/3/8/10",
            "4/6/8/4",
            "4/4/4/4",
            "4/6/8/10/100",
            "a/b",
            "1/2/3",
        ] {
            assert!(s.parse::<Redundancy>().is_err(), "{s}");
        }
    }

    /// Schemes from configuration (text) and from the satellite (protobuf):
    /// what parses is valid, prints back as itself, and sizes any segment
    /// the satellite accepts (at most `i64::MAX` bytes) without overflow.
    fn schemes_are_checked((text, pb, size): (String, [u32; 5], u64)) -> Result<(), TestCaseError> {
        if let Ok(scheme) = text.parse::<Redundancy>() {
            prop_assert!(scheme.validate().is_ok());
            let again: Redundancy = format!(
                "{}/{}/{}/{}/{}",
                scheme.required, scheme.repair, scheme.success, scheme.total, scheme.share_size
            )
            .parse()
            .unwrap();
            prop_assert_eq!(again, scheme);
        }
        let [required, repair, success, total, share_size] = pb;
        let pb = RedundancyScheme {
            required,
            repair,
            success,
            total,
            share_size,
        };
        if let Ok(scheme) = Redundancy::from_pb(&pb) {
            prop_assert_eq!(scheme.to_pb(), pb);
            prop_assert!(scheme.piece_size(size) >= size / u64::from(scheme.required));
        }
        Ok(())
    }

    crate::hostile_tests! {
        hostile_schemes_are_refused_or_valid: (
            hostile::text_or_mutated("4/6/8/10/4096".into()),
            prop_oneof![
                any::<[u32; 5]>(),
                (1u32..8, 0u32..4, 0u32..4, 0u32..4, 0u32..20)
                    .prop_map(|(k, a, b, c, s)| [k, k + a, k + a + b, k + a + b + c, s * 64]),
            ],
            0..=i64::MAX as u64,
        ) => schemes_are_checked;
    }
}
