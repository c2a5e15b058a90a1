//! The signalmark workload: a seeded, deterministic stream of the events a B2B company's
//! website, product and marketing tools send, over several orgs.
//!
//! What it models, and why each part is there:
//! - orgs of skewed sizes (org `i` gets a share proportional to `1/(i+1)`), because a shared
//!   deployment's largest tenant is what sizes it;
//! - visitors with one to three devices, each with its own `anonymousId`: page views and
//!   tracks stay anonymous (pending) until an `identify` on that device links them to the
//!   visitor's user id and email; about a third of visitors never identify;
//! - an event mix: Segment `page`, `track`, `identify` and `group` calls, generic form
//!   fills (no `messageId`: deduplicated by content) and Marketo email activity;
//! - retries: about 3% of events are sent again byte for byte, some right away and some
//!   later (the edge's exact dedup must catch both);
//! - late and out-of-order events: event times move forward with the stream, but 5% carry a
//!   time hours in the past;
//! - product-org updates (company plan, MRR, seats) for the `group`s the product names;
//! - mapping rules per org, and one rule edit with reprocessing half-way through.
//!
//! The payload shapes are few and fixed, so that the DuckDB baseline
//! (`bench/signalmark/baseline.py`) can restate trailspark's rules for them in SQL: dedup by
//! `messageId`, else by content; identifiers `email`/`traits.email`, `userId`, `anonymousId`;
//! group keys from `event`/`type`, `context.page.path`, `properties.page_url`,
//! `properties.form_id`/`form_name`, titles, asset and webinar names.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What to generate.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Events in all (signals and product-org updates, retries included).
    pub events: u64,
    pub orgs: usize,
    /// Event time of the first event, Unix ms.
    pub start_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            events: 10_000_000,
            orgs: 8,
            // 2026-10-01T00:00:00Z
            start_ms: 1_790_812_800_000,
        }
    }
}

/// The workload's size and seed, as `signalgen` and `signalmark` both take them.
#[derive(clap::Args, Clone, Debug)]
pub struct Scale {
    /// Events in the workload (signals and product-org updates, retries included).
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Organizations (Zipf-sized).
    #[arg(long, default_value_t = 8)]
    pub orgs: usize,
    /// The generator's seed: the same seed and scale give the same workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Scale {
    pub fn config(&self) -> Config {
        Config {
            seed: self.seed,
            events: self.events,
            orgs: self.orgs,
            ..Default::default()
        }
    }
}

/// Where an event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A signal for the Signal Staging endpoints.
    Signal,
    /// A product-org update for the product-org endpoint.
    ProductOrg,
}

/// One generated event: the org's index (0-based), where it goes, and its JSON text.
#[derive(Clone, Debug)]
pub struct Event {
    pub org: usize,
    pub kind: Kind,
    pub body: String,
}

struct Visitor {
    n: u64,
    devices: u8,
    /// Devices on which the visitor has identified (bit per device).
    identified: u8,
    /// Whether this visitor ever identifies.
    will_identify: bool,
    /// Product org (company) of the visitor.
    company: u64,
}

struct OrgState {
    visitors: Vec<Visitor>,
    /// Recent signal bodies, for retries.
    recent: VecDeque<String>,
    companies: u64,
}

/// The deterministic event stream of a [`Config`].
pub struct Generator {
    cfg: Config,
    rng: StdRng,
    /// Cumulative org weights (Zipf, s = 1).
    cumulative: Vec<f64>,
    orgs: Vec<OrgState>,
    i: u64,
    next_visitor: u64,
    next_message: u64,
    /// A retry held back to be sent a little later.
    delayed: VecDeque<(u64, usize, String)>,
}

const PAGES: &[(&str, &str)] = &[
    ("/", "Home"),
    ("/pricing", "Pricing"),
    ("/product/features", "Features"),
    ("/blog/intent-signals-101", "Intent signals 101"),
    ("/customers", "Customers"),
    ("/demo", "Book a demo"),
    ("/docs/getting-started", "Getting started"),
];

const TRACKS: &[&str] = &[
    "Feature Used",
    "Project Created",
    "Pricing Viewed",
    "Whitepaper Downloaded",
    "Webinar Registered",
    "Invite Sent",
];

const FORMS: &[(&str, &str, &str)] = &[
    (
        "demo",
        "Request a demo",
        "https://www.example.com/demo-request?utm_source=ads",
    ),
    ("trial", "Start a trial", "https://www.example.com/trial/"),
    ("newsletter", "Newsletter", "https://www.example.com/blog/"),
    (
        "contact",
        "Contact sales",
        "https://www.example.com/contact-us#form",
    ),
];

const TITLES: &[&str] = &[
    "VP Marketing",
    "Growth Lead",
    "Engineer",
    "CTO",
    "RevOps Manager",
];

impl Generator {
    pub fn new(cfg: Config) -> Generator {
        let weights: Vec<f64> = (0..cfg.orgs).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        let orgs = (0..cfg.orgs)
            .map(|_| OrgState {
                visitors: Vec::new(),
                recent: VecDeque::new(),
                companies: 0,
            })
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            cumulative,
            orgs,
            i: 0,
            next_visitor: 0,
            next_message: 0,
            delayed: VecDeque::new(),
        }
    }

    fn pick_org(&mut self) -> usize {
        let x: f64 = self.rng.random();
        self.cumulative
            .iter()
            .position(|c| x < *c)
            .unwrap_or(self.cfg.orgs - 1)
    }

    /// Event time of the current event: forward with the stream (about 4 events a second
    /// of simulated time), 5% of events late by 1 to 72 hours.
    fn event_time(&mut self) -> String {
        let mut t = self.cfg.start_ms + (self.i as i64) * 250;
        if self.rng.random_bool(0.05) {
            t -= self.rng.random_range(3_600_000..72 * 3_600_000);
        }
        chrono::DateTime::from_timestamp_millis(t)
            .expect("times are in range")
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    }

    fn message_id(&mut self) -> String {
        self.next_message += 1;
        format!("m-{}-{:x}", self.next_message, self.cfg.seed)
    }

    fn body(&mut self, org: usize) -> (Kind, Value) {
        let o = org + 1;
        let ts = self.event_time();
        // A new visitor for 25% of events (or when the org has none yet).
        let new = self.orgs[org].visitors.is_empty() || self.rng.random_bool(0.25);
        if new {
            let n = self.next_visitor;
            self.next_visitor += 1;
            let devices = self.rng.random_range(1..=3);
            let will_identify = self.rng.random_bool(0.65);
            let st = &mut self.orgs[org];
            if st.companies == 0 || self.rng.random_bool(0.1) {
                st.companies += 1;
            }
            let company = self.rng.random_range(0..st.companies);
            st.visitors.push(Visitor {
                n,
                devices,
                identified: 0,
                will_identify,
                company,
            });
        }
        let idx = if new {
            self.orgs[org].visitors.len() - 1
        } else {
            // Recent visitors are more active: pick among the last 5,000 most of the time.
            let len = self.orgs[org].visitors.len();
            if self.rng.random_bool(0.8) {
                len - 1 - self.rng.random_range(0..len.min(5_000))
            } else {
                self.rng.random_range(0..len)
            }
        };
        let device = self
            .rng
            .random_range(0..self.orgs[org].visitors[idx].devices);
        let v = &self.orgs[org].visitors[idx];
        let (vn, company, identified, will) = (v.n, v.company, v.identified, v.will_identify);
        let known = identified != 0;
        let dev_known = identified & (1 << device) != 0;
        let email = format!("v{vn}@org{o}.example");
        let user = format!("u{vn}");
        let anon = format!("a{vn}-{device}");
        let mid = self.message_id();
        let roll: f64 = self.rng.random();

        // Identify: an anonymous device of a visitor who identifies, now and then.
        if will && !dev_known && roll < 0.12 {
            self.orgs[org].visitors[idx].identified |= 1 << device;
            let title = TITLES[self.rng.random_range(0..TITLES.len())];
            return (
                Kind::Signal,
                json!({"type": "identify", "userId": user, "anonymousId": anon, "messageId": mid,
                       "timestamp": ts, "traits": {"email": email, "title": title}}),
            );
        }
        if !known || roll < 0.45 {
            // Browsing: a page view, or a track, on this device (anonymous unless identified).
            let mut v = if self.rng.random_bool(0.7) {
                let (path, title) = PAGES[self.rng.random_range(0..PAGES.len())];
                json!({"type": "page", "name": title, "anonymousId": anon, "messageId": mid,
                       "timestamp": ts, "context": {"page": {"path": path, "title": title}}})
            } else {
                json!({"type": "track", "event": "Pricing Viewed", "anonymousId": anon, "messageId": mid,
                       "timestamp": ts, "properties": {"plan": "pro"}})
            };
            if dev_known {
                v["userId"] = json!(user);
            }
            return (Kind::Signal, v);
        }
        let co = format!("po_{o}_{company}");
        match roll {
            r if r < 0.70 => {
                let ev = TRACKS[self.rng.random_range(0..TRACKS.len())];
                let mut props = json!({"plan": "pro"});
                if ev == "Whitepaper Downloaded" {
                    props["asset_name"] = json!("State of B2B intent 2026");
                } else if ev == "Webinar Registered" {
                    props["webinar_name"] = json!("Scoring without guesswork");
                }
                (
                    Kind::Signal,
                    json!({"type": "track", "event": ev, "userId": user, "messageId": mid,
                           "timestamp": ts, "properties": props, "context": {"groupId": co}}),
                )
            }
            r if r < 0.82 => {
                let (id, name, url) = FORMS[self.rng.random_range(0..FORMS.len())];
                let title = TITLES[self.rng.random_range(0..TITLES.len())];
                (
                    Kind::Signal,
                    json!({"event": "form_submit", "email": email, "timestamp": ts,
                           "properties": {"form_id": id, "form_name": name, "page_url": url,
                                          "job_title": title}}),
                )
            }
            r if r < 0.92 => {
                let ev = if self.rng.random_bool(0.7) {
                    "Email Opened"
                } else {
                    "Email Clicked"
                };
                let q = self.rng.random_range(1..=4);
                (
                    Kind::Signal,
                    json!({"mktLeadId": format!("{}", 100_000 + vn), "email": email, "event": ev,
                           "campaign": format!("Q{q} Nurture"), "timestamp": ts}),
                )
            }
            r if r < 0.97 => (
                Kind::Signal,
                json!({"type": "group", "userId": user, "groupId": co, "messageId": mid,
                       "timestamp": ts, "traits": {"name": format!("Company {company}"), "plan": "pro"}}),
            ),
            _ => {
                let seats = self.rng.random_range(1..500);
                let mrr = seats * 2_900;
                let trial = ["active", "expired", "converted"][self.rng.random_range(0..3)];
                (
                    Kind::ProductOrg,
                    json!({"groupId": co, "traits": {"name": format!("Company {company}"),
                           "plan": if seats > 50 { "enterprise" } else { "team" },
                           "seats": seats, "mrr": mrr, "trial_status": trial},
                           "timestamp": ts}),
                )
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.i >= self.cfg.events {
            return None;
        }
        let due = self.delayed.front().is_some_and(|(at, _, _)| *at <= self.i);
        let ev = if due {
            let (_, org, body) = self.delayed.pop_front().unwrap();
            Event {
                org,
                kind: Kind::Signal,
                body,
            }
        } else {
            let org = self.pick_org();
            let recent = &self.orgs[org].recent;
            if !recent.is_empty() && self.rng.random_bool(0.03) {
                // A retry of a recent signal: now, or after up to 10,000 more events.
                let body = recent[self.rng.random_range(0..recent.len())].clone();
                if self.rng.random_bool(0.5) {
                    let at = self.i + self.rng.random_range(1..10_000);
                    let pos = self.delayed.partition_point(|(a, _, _)| *a <= at);
                    self.delayed.insert(pos, (at, org, body));
                    // This step emits nothing itself: the retry takes a slot later.
                    return self.next();
                }
                Event {
                    org,
                    kind: Kind::Signal,
                    body,
                }
            } else {
                let (kind, v) = self.body(org);
                let body = v.to_string();
                if kind == Kind::Signal {
                    let recent = &mut self.orgs[org].recent;
                    recent.push_back(body.clone());
                    if recent.len() > 256 {
                        recent.pop_front();
                    }
                }
                Event { org, kind, body }
            }
        };
        self.i += 1;
        Some(ev)
    }
}

/// The mapping rules of every org (the API's JSON, without `reprocess`), and the edit made
/// half-way: rule 2 ("Pricing interest") widens from `/pricing` to `/pricing` or `/demo`.
pub fn rules() -> Vec<Value> {
    vec![
        json!({"name": "Demo request", "signal_type": "Form Fill", "priority": 1, "high_intent": true,
               "combinator": "all",
               "conditions": [{"field": "event", "op": "equals", "value": "form_submit"},
                              {"field": "properties.form_id", "op": "in", "value": ["demo", "trial"]}],
               "mappings": [{"field": "email", "path": "email"}, {"field": "title", "path": "properties.job_title"}]}),
        json!({"name": "Pricing interest", "signal_type": "Page View", "priority": 2,
               "combinator": "all",
               "conditions": [{"field": "event_type", "op": "equals", "value": "page"},
                              {"field": "context.page.path", "op": "equals", "value": "/pricing"}],
               "mappings": [{"field": "email", "path": "context.traits.email"}]}),
        json!({"name": "Product usage", "signal_type": "Product Activity", "priority": 3,
               "combinator": "all",
               "conditions": [{"field": "event_type", "op": "equals", "value": "track"},
                              {"field": "event_name", "op": "in", "value": ["Feature Used", "Project Created"]}],
               "mappings": [{"field": "email", "path": "context.traits.email"}]}),
        json!({"name": "Email engagement", "signal_type": "Email Click", "priority": 4,
               "combinator": "all",
               "conditions": [{"field": "source", "op": "equals", "value": "marketo"},
                              {"field": "event", "op": "equals", "value": "Email Clicked"}],
               "mappings": [{"field": "email", "path": "email"}]}),
    ]
}

/// The index (in [`rules`]) of the rule edited half-way, and its new definition.
pub fn rule_edit() -> (usize, Value) {
    let mut r = rules()[1].clone();
    r["conditions"][1] =
        json!({"field": "context.page.path", "op": "in", "value": ["/pricing", "/demo"]});
    (1, r)
}

/// The product-org key's template for the generated product-org updates.
pub fn product_org_template() -> Value {
    json!({"product_org_id": "groupId", "name": "traits.name", "plan_name": "traits.plan",
           "user_count": "traits.seats", "mrr": "traits.mrr", "trial_status": "traits.trial_status"})
}

/// What [`write_ndjson`] wrote.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub seed: u64,
    pub events: u64,
    pub orgs: usize,
    pub parts: usize,
    /// Signals (retries included) and product-org updates per org.
    pub signals: Vec<u64>,
    pub product_org_updates: Vec<u64>,
    pub bytes: u64,
}

/// The file of org `org` (0-based) and part `part`: signals, or product-org updates.
pub fn part_file(dir: &Path, kind: Kind, org: usize, part: usize) -> std::path::PathBuf {
    let stem = match kind {
        Kind::Signal => "signals",
        Kind::ProductOrg => "product-orgs",
    };
    dir.join(format!("{stem}-org{}-part{part:02}.ndjson", org + 1))
}

/// Writes the workload as NDJSON, split into `parts` consecutive parts per org (the
/// incremental batches), plus `manifest.json` and `rules.json`.
pub fn write_ndjson(cfg: &Config, parts: usize, dir: &Path) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(dir)?;
    let per_part = cfg.events.div_ceil(parts as u64).max(1);
    let mut m = Manifest {
        seed: cfg.seed,
        events: cfg.events,
        orgs: cfg.orgs,
        parts,
        signals: vec![0; cfg.orgs],
        product_org_updates: vec![0; cfg.orgs],
        bytes: 0,
    };
    let open = |kind, org, part| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
        Ok(std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(part_file(dir, kind, org, part))?,
        ))
    };
    let mut writers: Vec<(
        std::io::BufWriter<std::fs::File>,
        std::io::BufWriter<std::fs::File>,
    )> = Vec::new();
    let mut part = usize::MAX;
    for (i, ev) in Generator::new(cfg.clone()).enumerate() {
        let p = (i as u64 / per_part) as usize;
        if p != part {
            for (a, b) in &mut writers {
                a.flush()?;
                b.flush()?;
            }
            writers = (0..cfg.orgs)
                .map(|o| Ok((open(Kind::Signal, o, p)?, open(Kind::ProductOrg, o, p)?)))
                .collect::<anyhow::Result<_>>()?;
            part = p;
        }
        let w = match ev.kind {
            Kind::Signal => {
                m.signals[ev.org] += 1;
                &mut writers[ev.org].0
            }
            Kind::ProductOrg => {
                m.product_org_updates[ev.org] += 1;
                &mut writers[ev.org].1
            }
        };
        w.write_all(ev.body.as_bytes())?;
        w.write_all(b"\n")?;
        m.bytes += ev.body.len() as u64 + 1;
    }
    for (a, b) in &mut writers {
        a.flush()?;
        b.flush()?;
    }
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
    let (edited, def) = rule_edit();
    std::fs::write(
        dir.join("rules.json"),
        serde_json::to_vec_pretty(
            &json!({"rules": rules(), "edit": {"index": edited, "rule": def}}),
        )?,
    )?;
    Ok(m)
}

#[cfg(test)]
mod tests;
