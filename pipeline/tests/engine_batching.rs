//! The engine's read models against the dataflow's sequential reference
//! (`trailspark_operators::graph::reference`) on random logs, fed in random chunks with
//! random epoch caps: however the log is cut into epochs, the models end on the same state.
//! Outcomes that change several times inside one epoch (a visitor identifying, a rule edit
//! with reprocess) are what this guards: applying output changes in arrival order once lost
//! signals and leads from the live models.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use trailspark::engine::{rule_change, Engine, EngineConfig};
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::rules::{
    Condition, FieldMapping, LeadField, Op, Operand, RuleDef, SignalType,
};
use trailspark_core::tenancy::ConfigEvent;
use trailspark_core::{LogEntry, OrgId};
use trailspark_operators::graph::{reference, State};
use trailspark_operators::identity::{IdentityConfig, SignalKey};
use trailspark_operators::rules::{RuleBook, RuleVersion};
use trailspark_operators::Signal;
use trailspark_sinks::read_models::{bump, Models, Stats};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn rule(org: u64, rule_id: u64, bucket_lt: &str, update: bool, reprocess: bool) -> ConfigEvent {
    let def = RuleDef {
        name: format!("rule{rule_id}"),
        signal_type: SignalType::PageView,
        description: None,
        high_intent: false,
        priority: rule_id as i32,
        combinator: Default::default(),
        conditions: vec![Condition {
            field: "properties.bucket".into(),
            op: Op::Lt,
            value: Some(Operand::One(bucket_lt.into())),
        }],
        mappings: vec![FieldMapping {
            field: LeadField::Email,
            path: "properties.email".into(),
        }],
    };
    if update {
        ConfigEvent::RuleUpdated {
            org_id: OrgId(org),
            rule_id,
            at: 0,
            def,
            reprocess,
        }
    } else {
        ConfigEvent::RuleCreated {
            org_id: OrgId(org),
            rule_id,
            created_at: 0,
            def,
            reprocess,
        }
    }
}

/// A log of anonymous page views, identifies (sometimes across two devices), form fills,
/// retries, and rule creations and edits (with and without reprocess) along the way.
fn log(rng: &mut Rng, n: usize) -> Vec<(u64, LogEntry)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut push = |out: &mut Vec<(u64, LogEntry)>, e: LogEntry| {
        pos += 1;
        out.push((pos, e));
    };
    push(&mut out, LogEntry::Config(rule(1, 1, "50", false, false)));
    push(&mut out, LogEntry::Config(rule(2, 2, "30", false, true)));
    let visitors = (n as u64 / 8).max(4);
    for i in 0..n {
        match rng.below(200) {
            0 => push(&mut out, LogEntry::Config(rule(1, 1, "80", true, true))),
            1 => push(&mut out, LogEntry::Config(rule(1, 1, "20", true, false))),
            2 => push(&mut out, LogEntry::Config(rule(2, 2, "60", true, true))),
            _ => {}
        }
        let org = 1 + rng.below(2);
        let v = rng.below(visitors);
        let device = rng.below(2);
        let bucket = rng.below(100);
        let payload: Value = match rng.below(10) {
            0..=5 => json!({"type": "page", "anonymousId": format!("a{v}-{device}"),
                "properties": {"url": format!("/p{}", v % 7), "bucket": bucket},
                "messageId": format!("m{i}")}),
            6 | 7 => json!({"type": "identify", "anonymousId": format!("a{v}-{device}"),
                "userId": format!("u{v}"), "traits": {"email": format!("v{v}@x.example")},
                "messageId": format!("m{i}")}),
            8 => json!({"event": "form_submit", "properties": {"email": format!("v{v}@x.example"),
                "bucket": bucket}}),
            // A retry of an earlier message.
            _ => json!({"type": "page", "anonymousId": format!("a{v}-{device}"),
                "properties": {"url": "/retry", "bucket": bucket},
                "messageId": format!("m{}", i / 2)}),
        };
        let ctx = Context {
            org_id: OrgId(org),
            api_key_id: 1,
            received_at: 1_767_225_600_000 + i as i64 * 1000,
            ..Default::default()
        };
        push(
            &mut out,
            LogEntry::Signal(normalize(&ctx, &payload, payload.to_string())),
        );
    }
    out
}

/// The reference's state for a log: signals and rule versions as the engine derives them.
fn expected(entries: &[(u64, LogEntry)]) -> State {
    let mut book = RuleBook::default();
    let mut versions: Vec<(RuleVersion, isize)> = Vec::new();
    let mut signals = Vec::new();
    for (pos, e) in entries {
        match e {
            LogEntry::Signal(r) => signals.push(Signal::from_record(*pos, r)),
            LogEntry::Config(c) => {
                if let Some(change) = rule_change(c) {
                    versions.extend(book.apply(*pos, change));
                }
            }
            LogEntry::ProductOrgUpdate(_)
            | LogEntry::Evaluation(_)
            | LogEntry::Crm(_)
            | LogEntry::Delivery(_) => {}
        }
    }
    // Every reprocess reaches all history in the end, however the engine sliced it.
    versions.extend(book.settle());
    differential_dataflow::consolidation::consolidate(&mut versions);
    assert!(versions.iter().all(|(_, d)| *d == 1));
    let versions: Vec<RuleVersion> = versions.into_iter().map(|(v, _)| v).collect();
    reference(&signals, &versions, &IdentityConfig::default())
}

/// A map's entries in every org, as a set, to compare with the reference's.
fn set<K: Clone + Ord, V: Clone + Ord>(
    m: &Models,
    map: impl Fn(&trailspark_sinks::read_models::OrgModels) -> &HashMap<K, V>,
) -> BTreeSet<(K, V)> {
    m.orgs()
        .flat_map(|o| map(m.org(o)).iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Compares the models with the reference's state, where the signals in `out` are evicted
/// by the hot window: they have no processed record and count as pending and `cold`.
fn assert_models_equal(m: &Models, want: &State, out: &BTreeSet<SignalKey>, what: &str) {
    let hot: BTreeSet<_> = want
        .processed
        .iter()
        .filter(|(k, _)| !out.contains(k))
        .cloned()
        .collect();
    assert_eq!(
        m.all_processed().collect::<BTreeSet<_>>(),
        hot,
        "{what}: processed"
    );
    for org in [1, 2] {
        let mut stats = Stats::default();
        for ((o, k), p) in &want.processed {
            if *o == org {
                bump(&mut stats, p.status, 1);
                if out.contains(&(*o, *k)) {
                    stats.cold += 1;
                }
            }
        }
        assert_eq!(m.org(org).stats, stats, "{what}: stats of org {org}");
    }
    assert_eq!(set(m, |o| &o.leads), want.leads, "{what}: leads");
    assert_eq!(
        set(m, |o| &o.lead_of),
        want.membership,
        "{what}: membership"
    );
    let groups: BTreeSet<_> = m
        .orgs()
        .flat_map(|o| {
            m.org(o)
                .groups
                .iter()
                .map(move |(k, r)| ((o, k.clone()), r.clone()))
        })
        .collect();
    assert_eq!(groups, want.groups, "{what}: groups");
    let usage: BTreeSet<_> = m
        .orgs()
        .flat_map(|o| {
            m.org(o)
                .usage
                .iter()
                .map(move |((month, meter), n)| ((o, *month, *meter), *n as isize))
        })
        .collect();
    assert_eq!(usage, want.usage, "{what}: usage");
}

#[test]
fn read_models_equal_the_reference_however_the_log_is_cut_into_epochs() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let slices = trailspark::metrics::METRICS.reprocess_slices.get();
    for run in 0..8 {
        let entries = log(&mut rng, 600 + 100 * run);
        let want = expected(&entries);
        let epoch_entries = [1, 3, 17, 64, 100_000][rng.below(5) as usize];
        // Small segments cut each reprocess into many slices between the log's epochs.
        let segment_signals = [2, 7, 512][rng.below(3) as usize];
        let epochs_in_flight = rng.below(4) as usize;
        let engine = Engine::start(EngineConfig {
            epoch_entries,
            queue: 1 + rng.below(4) as usize,
            segment_signals,
            epochs_in_flight,
            ..Default::default()
        });
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(150) as usize).min(rest.len());
            engine.feed(rest[..n].to_vec());
            rest = &rest[n..];
        }
        let last = entries.last().unwrap().0;
        wait_applied(&engine, last);
        assert_models_equal(
            &engine.read.read(),
            &want,
            &BTreeSet::new(),
            &format!("run {run}, epochs of up to {epoch_entries}, segments of {segment_signals}, {epochs_in_flight} in flight"),
        );
    }
    // The logs' reprocessing edits went as slices (counted once per slice, in any test of
    // this process).
    let sent = trailspark::metrics::METRICS.reprocess_slices.get() - slices;
    assert!(sent >= 20, "{sent} slices");
}

/// Entries committed while an epoch is in the dataflow wait and go together as the next
/// epoch: fed one at a time, a little apart, they take far fewer epochs than with no bound
/// (where every wake of the feeder sends what it found), and the models end on the same
/// state.
#[test]
fn entries_committed_while_an_epoch_is_in_flight_go_together() {
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let entries = log(&mut rng, 400);
    let want = expected(&entries);
    let mut epochs = Vec::new();
    for in_flight in [1, 0] {
        let engine = Engine::start(EngineConfig {
            epochs_in_flight: in_flight,
            // Room for every epoch in the workers' channels, so that without a bound the
            // feeder never waits for them (a full channel would coalesce entries too).
            queue: entries.len(),
            ..Default::default()
        });
        for e in &entries {
            engine.feed(vec![e.clone()]);
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        wait_applied(&engine, entries.last().unwrap().0);
        assert_models_equal(
            &engine.read.read(),
            &want,
            &BTreeSet::new(),
            &format!("{in_flight} in flight"),
        );
        epochs.push(engine.epochs_complete());
    }
    assert!(
        epochs[0] * 2 <= epochs[1],
        "epochs with one in flight and with no bound: {epochs:?}"
    );
}

/// Waits until the models reflect `pos`, with every reprocess asked for by then done.
fn wait_applied(engine: &Engine, pos: u64) {
    let t = std::time::Instant::now();
    while !engine.read.caught_up(None, pos) {
        assert!(t.elapsed().as_secs() < 120, "the engine did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The hot window's moves, queued with `trailspark::services::hot`'s own functions (under the models'
/// lock, with the signals rebuilt from their records), at random moments while the log is fed:
/// pending signals leave the dataflow, and come back when an identifier they carry joins a
/// lead. Whatever was evicted when, the models end on the reference's state, except that the
/// signals still out have no processed record and are counted as `cold` pending signals.
#[test]
fn evicting_and_rehydrating_pending_signals_changes_only_their_own_records() {
    use trailspark::services::hot::{queue_eviction, queue_rehydration};
    use trailspark_operators::status::Status;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cfg = IdentityConfig::default();
    let (mut total_evicted, mut total_rehydrated) = (0usize, 0usize);
    for run in 0..6 {
        let entries = log(&mut rng, 500 + 100 * run);
        let want = expected(&entries);
        let records: HashMap<u64, Signal> = entries
            .iter()
            .filter_map(|(p, e)| match e {
                LogEntry::Signal(r) => Some((*p, Signal::from_record(*p, r))),
                _ => None,
            })
            .collect();
        let engine = Engine::start(EngineConfig {
            epoch_entries: [3, 17, 100_000][rng.below(3) as usize],
            segment_signals: [3, 512][rng.below(2) as usize],
            ..Default::default()
        });
        let (mut evicted, mut rehydrated) = (0usize, 0usize);
        let rehydrate = |engine: &Engine| -> usize {
            let mut m = engine.read.write();
            let signals = m
                .cold
                .take_wanted()
                .iter()
                .flat_map(|(_, t)| t.iter().map(|t| records[&t.key.1].clone()))
                .collect();
            queue_rehydration(engine, &mut m, signals)
        };
        let mut rest = &entries[..];
        while !rest.is_empty() {
            // Small chunks, so that every run has a dozen or so chances to evict.
            let n = (1 + rng.below(60) as usize).min(rest.len());
            let fed = rest[n - 1].0;
            engine.feed(rest[..n].to_vec());
            rest = &rest[n..];
            if rng.below(2) == 0 {
                // Mostly let the models catch up first, so that there is pending to evict;
                // otherwise evict from models that lag the log (an identify may be on its way).
                if rng.below(4) != 0 {
                    wait_applied(&engine, fed);
                }
                // Evict some of what the models show pending now (they may lag the log).
                let mut m = engine.read.write();
                let pending: Vec<_> = m
                    .all_processed()
                    .filter(|(k, p)| p.status == Status::Pending && !m.cold.busy(k))
                    .map(|(k, _)| k)
                    .collect();
                let leaving = pending
                    .into_iter()
                    .filter(|_| rng.below(3) == 0)
                    .map(|k| records[&k.1].clone())
                    .collect();
                evicted += queue_eviction(&engine, &mut m, leaving, &cfg);
            }
            if rng.below(2) == 0 {
                rehydrated += rehydrate(&engine);
            }
        }
        // Drain: once the log is applied, rehydrate what is wanted until nothing is and every
        // queued move has landed.
        wait_applied(&engine, entries.last().unwrap().0);
        let t = std::time::Instant::now();
        loop {
            rehydrated += rehydrate(&engine);
            let m = engine.read.read();
            if !m.cold.has_wanted() && m.cold.settled() {
                break;
            }
            drop(m);
            assert!(
                t.elapsed().as_secs() < 120,
                "the hot window's moves did not land"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        total_evicted += evicted;
        total_rehydrated += rehydrated;
        let m = engine.read.read();
        let out: BTreeSet<SignalKey> = want
            .processed
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| m.cold.is_out(k))
            .collect();
        let not_pending: Vec<_> = want
            .processed
            .iter()
            .filter(|(k, p)| out.contains(k) && p.status != Status::Pending)
            .collect();
        assert!(
            not_pending.is_empty(),
            "run {run}: only pending signals stay out: {not_pending:?}"
        );
        assert_models_equal(&m, &want, &out, &format!("run {run}"));
    }
    // The runs exercised both moves (timing decides how many, so the bound is loose).
    assert!(total_evicted > 100, "only {total_evicted} evicted");
    assert!(total_rehydrated > 0, "nothing rehydrated");
}
