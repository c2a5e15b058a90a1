//! Admission against the plan's raw-signal limit: one decision, made in one place, for every
//! way a signal can arrive (webhooks, the Segment API, NATS, backfill through the server,
//! rehydration of archived signals).
//!
//! Raw signals are counted per (org, month `YYYYMM`). The count is exact at the edge: a
//! signal's slot is reserved before its append and released if the append fails or the log
//! recognises a retry, so concurrent requests can never overshoot the limit.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::tenancy::{OrgId, Plan};

/// Most seconds a refusal asks a client to wait: the limit lifts at the start of the next
/// month, or as soon as an administrator raises it or enables overages, so a client should
/// look again within the hour rather than hold its events for weeks.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// Why a signal was not admitted: the org's raw-signal limit for the month is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitReached {
    pub limit: u64,
    /// The month, `YYYYMM`.
    pub month: u32,
    /// Seconds until the client should try again (the `Retry-After` of every refusal).
    pub retry_after_secs: u64,
}

impl LimitReached {
    /// The refusal for `month`, decided at `now_ms`.
    pub fn new(limit: u64, month: u32, now_ms: i64) -> LimitReached {
        LimitReached {
            limit,
            month,
            retry_after_secs: retry_after(month, now_ms),
        }
    }

    /// The month as `YYYY-MM`.
    pub fn period(&self) -> String {
        format!("{}-{:02}", self.month / 100, self.month % 100)
    }
}

/// Seconds from `now_ms` to the start of the month after `month` (`YYYYMM`), at least 1 and
/// at most [`MAX_RETRY_AFTER_SECS`].
fn retry_after(month: u32, now_ms: i64) -> u64 {
    let (y, m) = ((month / 100) as i32, month % 100);
    let (ny, nm) = if m >= 12 { (y + 1, 1) } else { (y, m + 1) };
    let next = chrono::NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis());
    let secs = next.map_or(MAX_RETRY_AFTER_SECS as i64, |n| (n - now_ms) / 1000);
    secs.clamp(1, MAX_RETRY_AFTER_SECS as i64) as u64
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Raw signals counted per (org, month).
#[derive(Default)]
pub struct Quota {
    counts: Mutex<HashMap<(OrgId, u32), u64>>,
}

impl Quota {
    /// A quota starting from counts (what the log's replay counted).
    pub fn from_counts(counts: HashMap<(OrgId, u32), u64>) -> Quota {
        Quota {
            counts: Mutex::new(counts),
        }
    }

    pub fn used(&self, org: OrgId, month: u32) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(&(org, month))
            .copied()
            .unwrap_or(0)
    }

    /// Reserves `n` slots at once, or none when the plan forbids it.
    pub fn reserve(&self, org: OrgId, month: u32, plan: &Plan, n: u64) -> Result<(), LimitReached> {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry((org, month)).or_default();
        if plan.raw_signal_limit != 0 && !plan.overage && *c + n > plan.raw_signal_limit {
            return Err(LimitReached::new(plan.raw_signal_limit, month, now_ms()));
        }
        *c += n;
        Ok(())
    }

    /// Gives back `n` reserved slots (a failed append, a recognised retry).
    pub fn release(&self, org: OrgId, month: u32, n: u64) {
        if let Some(c) = self.counts.lock().unwrap().get_mut(&(org, month)) {
            *c = c.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_exact_and_refusals_say_when_to_come_back() {
        let q = Quota::default();
        let plan = Plan {
            raw_signal_limit: 3,
            ..Default::default()
        };
        let org = OrgId(1);
        q.reserve(org, 202611, &plan, 2).unwrap();
        assert!(q.reserve(org, 202611, &plan, 2).is_err(), "all or nothing");
        q.reserve(org, 202611, &plan, 1).unwrap();
        let refused = q.reserve(org, 202611, &plan, 1).unwrap_err();
        assert_eq!((refused.limit, refused.period().as_str()), (3, "2026-11"));
        assert!((1..=MAX_RETRY_AFTER_SECS).contains(&refused.retry_after_secs));
        q.release(org, 202611, 1);
        q.reserve(org, 202611, &plan, 1).unwrap();
        assert_eq!(q.used(org, 202611), 3);
        // Another month, and overages, are not limited.
        q.reserve(org, 202612, &plan, 3).unwrap();
        let overage = Plan {
            overage: true,
            ..plan
        };
        q.reserve(org, 202611, &overage, 10).unwrap();
        // Close to the month's end the wait is the time left.
        let dec31 = chrono::NaiveDate::from_ymd_opt(2026, 12, 31)
            .unwrap()
            .and_hms_opt(23, 59, 30)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(retry_after(202612, dec31), 30);
    }
}
