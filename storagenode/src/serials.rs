//! Memory of used order serial numbers, so that no order limit is honoured
//! twice. A serial is remembered until its order expires; after that the
//! expiry check refuses the order limit anyway.
//!
//! The memory is not persisted: a restarted node could honour an order limit
//! once more within its (short) expiration window, as Storj's nodes also do.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use archipel_proto::NodeId;

use crate::error::{Error, Result};

type Serial = (NodeId, Vec<u8>);

#[derive(Default)]
struct Inner {
    used: HashSet<Serial>,
    by_expiration: BTreeSet<(i64, NodeId, Vec<u8>)>,
}

/// The serials used so far, per satellite.
#[derive(Default)]
pub struct UsedSerials {
    inner: Mutex<Inner>,
}

impl UsedSerials {
    /// Records `serial` of `satellite`, valid until `expiration`, or refuses it
    /// if it was used already. Forgets serials whose orders expired by `now`.
    pub fn record(
        &self,
        satellite: NodeId,
        serial: &[u8],
        expiration: i64,
        now: i64,
    ) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(first) = inner.by_expiration.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, sat, serial)) = inner.by_expiration.pop_first() {
                inner.used.remove(&(sat, serial));
            }
        }
        if !inner.used.insert((satellite, serial.to_vec())) {
            return Err(Error::ReplayedSerial(hex::encode(serial)));
        }
        inner
            .by_expiration
            .insert((expiration, satellite, serial.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_refused_twice_until_they_expire() {
        let serials = UsedSerials::default();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        serials.record(a, &[7; 16], 100, 10).unwrap();
        assert!(matches!(
            serials.record(a, &[7; 16], 100, 50),
            Err(Error::ReplayedSerial(_))
        ));
        // Serials are per satellite.
        serials.record(b, &[7; 16], 100, 50).unwrap();
        // Once the order expired, the serial is forgotten.
        serials.record(a, &[8; 16], 300, 100).unwrap();
        serials.record(a, &[7; 16], 400, 101).unwrap();
        serials.record(b, &[7; 16], 400, 101).unwrap();
        assert!(serials.record(a, &[8; 16], 300, 101).is_err());
    }
}
