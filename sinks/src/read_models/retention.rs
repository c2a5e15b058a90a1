//! Retention's side of the models: retired signals leave live state, and archived
//! signals can be brought back into it for a while.

use trailspark_operators::status::Processed;
use trailspark_operators::Org;

use super::models::{bump, Models, Retention, Tab};

impl Models {
    /// Moves an org's retention cutoff forward and retires what it now covers from the live
    /// models (the processed records, the explorer's tabs and statistics). Lead records,
    /// their profiles, usage and the lead timeline's index stay (leads, and the
    /// signals' contributions, are preserved). Returns how many signals were retired.
    pub fn retire(&mut self, org: Org, r: Retention) -> usize {
        let o = self.orgs.entry(org).or_default();
        let cur = &mut o.retention;
        cur.cutoff_ms = cur.cutoff_ms.max(r.cutoff_ms);
        cur.below_pos = cur.below_pos.max(r.below_pos);
        let r = Retention {
            now_ms: r.now_ms,
            ..*cur
        };
        o.rehydrated.retain(|_, until| *until > r.now_ms);
        let mut gone = Vec::new();
        for tab in [Tab::Processed, Tab::Failed] {
            for &(_, id) in o.tabs.range((tab, 0)..(tab, r.below_pos)) {
                if o.rehydrated.contains_key(&id) {
                    continue;
                }
                if let Some(p) = self.processed.get(&(org, id)) {
                    if r.retires(id, &p) {
                        gone.push((id, tab, p.status));
                    }
                }
            }
        }
        for (id, tab, status) in &gone {
            self.processed.remove(&(org, *id));
            o.tabs.remove(&(*tab, *id));
            bump(&mut o.stats, *status, -1);
        }
        gone.len()
    }

    /// Brings archived signals back into live state until `until` (Unix ms); signals already
    /// live are left alone. Returns how many came back.
    pub fn rehydrate(&mut self, org: Org, signals: Vec<(u64, Processed)>, until: i64) -> usize {
        let mut n = 0;
        let o = self.orgs.entry(org).or_default();
        for (id, p) in signals {
            let key = (org, id);
            // A signal the hot window holds cold comes back with its identify, through the
            // dataflow; it is counted as pending meanwhile.
            if self.processed.contains_key(&key) || self.cold.busy(&key) {
                continue;
            }
            bump(&mut o.stats, p.status, 1);
            o.tabs.insert((Tab::of(p.status), id));
            self.processed.insert(key, p);
            o.rehydrated.insert(id, until);
            n += 1;
        }
        n
    }
}
