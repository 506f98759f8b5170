//! Version stamps of control records (tenants, policies, providers) written in several
//! regions, and the one order every region applies them in.
//!
//! Each region writes its control records to its own cluster; MirrorMaker 2 copies them to
//! the others as `<region>.<topic>`. A processor reads the local topic and the copies and
//! keeps, per key, the record with the greatest [`VersionOrder`]: the same set of records
//! gives the same state in every region, whatever order they arrive in.

use serde::{Deserialize, Serialize};

/// `ControlVersion` in `tenant.avsc`, `provider.avsc` and `policy_document.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlVersion {
    /// Region the record was written in.
    pub region: String,
    /// The key's home region when it was written.
    pub home: String,
    /// Home epoch: increases when the key's home moves.
    pub epoch: i64,
    /// Hybrid logical clock: `ms << 16 | counter`.
    pub hlc: i64,
}

/// Bits of [`ControlVersion::hlc`] below the milliseconds.
const LOGICAL_BITS: u32 = 16;

impl ControlVersion {
    /// The stamp of a write in `region` at `now_ms`, after the newest version of the key the
    /// writer has seen (`previous`): the clock never goes back, even when this machine's
    /// does, or when another region's clock ran ahead.
    pub fn next(
        region: &str,
        home: &str,
        epoch: i64,
        now_ms: i64,
        previous: Option<&Self>,
    ) -> Self {
        let physical = now_ms.max(0) << LOGICAL_BITS;
        let hlc = previous.map_or(physical, |p| physical.max(p.hlc + 1));
        ControlVersion {
            region: region.to_owned(),
            home: home.to_owned(),
            epoch,
            hlc,
        }
    }

    /// Milliseconds of the clock.
    pub fn millis(&self) -> i64 {
        self.hlc >> LOGICAL_BITS
    }
}

/// The order of versions of one key: `(epoch, hlc, written at home, region, fallback)`.
///
/// - A greater epoch wins whatever the clocks say: moving a key's home fences every write
///   of the old epoch.
/// - Within an epoch the later write (by hybrid logical clock) wins: a write away from home
///   during an outage stands unless home wrote later.
/// - On equal clocks the home region's write wins, then the greater region name, so the
///   order is total and every region picks the same record.
/// - Unstamped records (one-cluster deployments) come before every stamped one and are
///   ordered by `fallback` (a tenant's revision, a record's time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionOrder {
    epoch: i64,
    hlc: i64,
    at_home: bool,
    region: String,
    fallback: i64,
}

impl VersionOrder {
    /// The order of a record with `version` (if stamped) and `fallback`.
    pub fn of(version: Option<&ControlVersion>, fallback: i64) -> Self {
        match version {
            Some(v) => VersionOrder {
                epoch: v.epoch,
                hlc: v.hlc,
                at_home: v.region == v.home,
                region: v.region.clone(),
                fallback,
            },
            None => VersionOrder {
                epoch: -1,
                hlc: i64::MIN,
                at_home: false,
                region: String::new(),
                fallback,
            },
        }
    }

    /// Bytes whose lexicographic order is this order (for stores that compare raw bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let flip = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes();
        let mut out = Vec::with_capacity(32 + self.region.len());
        out.extend_from_slice(&flip(self.epoch));
        out.extend_from_slice(&flip(self.hlc));
        out.push(u8::from(self.at_home));
        out.extend_from_slice(self.region.as_bytes());
        // Region names never hold a NUL, so a shorter name sorts first, as in `Ord`.
        out.push(0);
        out.extend_from_slice(&flip(self.fallback));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(region: &str, home: &str, epoch: i64, hlc: i64) -> ControlVersion {
        ControlVersion {
            region: region.into(),
            home: home.into(),
            epoch,
            hlc,
        }
    }

    #[test]
    fn order_is_epoch_then_clock_then_home_then_region() {
        let ordered = [
            VersionOrder::of(None, 1),
            VersionOrder::of(None, 2),
            VersionOrder::of(Some(&v("us", "eu", 0, 5)), 0),
            VersionOrder::of(Some(&v("eu", "eu", 0, 5)), 0),
            VersionOrder::of(Some(&v("us", "eu", 0, 6)), 0),
            VersionOrder::of(Some(&v("eu", "eu", 1, 1)), 0),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
            assert!(pair[0].to_bytes() < pair[1].to_bytes(), "{pair:?}");
        }
        // Away from home on equal clocks: the greater region name, in both encodings.
        let (a, b) = (
            VersionOrder::of(Some(&v("ap", "eu", 0, 5)), 0),
            VersionOrder::of(Some(&v("apx", "eu", 0, 5)), 0),
        );
        assert!(a < b && a.to_bytes() < b.to_bytes());
    }

    #[test]
    fn the_clock_never_goes_back() {
        let seen = v("us", "eu", 0, 1_000 << LOGICAL_BITS);
        // This machine's clock is behind the version it saw: one tick after it.
        let next = ControlVersion::next("eu", "eu", 0, 900, Some(&seen));
        assert_eq!(next.hlc, (1_000 << LOGICAL_BITS) + 1);
        assert_eq!(next.millis(), 1_000);
        // Ahead of it: the wall clock.
        let next = ControlVersion::next("eu", "eu", 0, 2_000, Some(&seen));
        assert_eq!(next.hlc, 2_000 << LOGICAL_BITS);
    }
}
