//! Rate limit and quota arithmetic, as pure functions of state and time.

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// GCRA state: the theoretical arrival time of the next conforming request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Gcra {
    /// Milliseconds since the epoch.
    pub tat_ms: f64,
}

impl Gcra {
    /// Whether a request at `now_ms` conforms to `rate` per second with `burst`; returns the
    /// next state, or how long to wait.
    pub fn check(self, now_ms: i64, rate_per_second: f64, burst: i32) -> Result<Gcra, i64> {
        if rate_per_second <= 0.0 {
            return Err(i64::MAX);
        }
        let interval = 1000.0 / rate_per_second;
        let tolerance = interval * f64::from(burst.max(1) - 1);
        let now = now_ms as f64;
        let tat = self.tat_ms.max(now);
        if tat - now > tolerance {
            return Err((tat - now - tolerance).ceil() as i64);
        }
        Ok(Gcra {
            tat_ms: tat + interval,
        })
    }
}

/// Requests used in one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Days since the epoch.
    pub day: i64,
    /// Requests accepted that day.
    pub used: i64,
}

impl Quota {
    /// Counts one more request at `now_ms` against `limit`; returns the next state, or the
    /// milliseconds until the quota resets at UTC midnight.
    pub fn check(self, now_ms: i64, limit: Option<i64>) -> Result<Quota, i64> {
        let day = now_ms.div_euclid(DAY_MS);
        let used = if self.day == day { self.used } else { 0 };
        match limit {
            Some(limit) if used >= limit => Err((day + 1) * DAY_MS - now_ms),
            _ => Ok(Quota {
                day,
                used: used + 1,
            }),
        }
    }
}
