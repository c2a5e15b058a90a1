//! Benchmarks of the dataflow engine, in process, on a generated workload.
//!
//! - throughput of the whole graph (signals/s) at 1 and 2 workers, batch sizes 1, 1k, 100k;
//! - latency from a log append reaching the engine to the read models reflecting it;
//! - the incremental cost of an identify that rehydrates k signals, of a rule edit without
//!   reprocess, and of a rule edit with reprocess touching 1% of signals, against rebuilding
//!   everything from scratch (the baseline: the same graph fed the whole log in one batch, in
//!   the same run);
//! - resident memory per staged signal;
//! - another org's latency while one org's rule edit with reprocess re-evaluates its whole
//!   history, sliced (the engine's default) and in one step (segments without a size
//!   bound, as before slicing), against the same org's latency with nothing reprocessing.
//!
//! `cargo build --release -p trailspark-bench && target/release/dataflow-bench [--signals N]`

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use trailspark::engine::{Engine, EngineConfig};
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::rules::{
    Condition, FieldMapping, LeadField, Op, Operand, RuleDef, SignalType,
};
use trailspark_core::tenancy::ConfigEvent;
use trailspark_core::{LogEntry, OrgId};

#[derive(Parser)]
struct Args {
    /// Signals in the base workload.
    #[arg(long, default_value_t = 200_000)]
    signals: usize,
}

/// A deterministic workload: visitors browsing anonymously, a share of them identifying,
/// known users sending form fills, and SDK retries.
fn workload(n: usize, start_pos: u64) -> Vec<(u64, LogEntry)> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let visitors = (n / 10).max(10) as u64;
    let base_ms = 1_767_225_600_000i64;
    for i in 0..n {
        let r = rnd();
        let org = 1 + (r % 4 == 0) as u64;
        let v = rnd() % visitors;
        let payload: Value = match r % 10 {
            0..=5 => {
                json!({"type": "page", "anonymousId": format!("a{v}"), "name": format!("P{}", v % 40),
                "properties": {"url": format!("/p{}", v % 40), "bucket": r % 100}, "messageId": format!("m{i}")})
            }
            6 => {
                json!({"type": "identify", "anonymousId": format!("a{v}"), "traits": {"email": format!("u{}@x.io", v / 2)}, "messageId": format!("m{i}")})
            }
            7 | 8 => json!({"event": "form_submit", "email": format!("u{}@x.io", v / 2),
                "properties": {"form_name": format!("F{}", v % 5), "bucket": r % 100}}),
            _ => {
                json!({"type": "track", "event": "Signed Up", "userId": format!("user{v}"), "messageId": format!("m{}", i.saturating_sub(1))})
            }
        };
        let ctx = Context {
            org_id: OrgId(org),
            api_key_id: 1,
            received_at: base_ms + i as i64,
            ..Default::default()
        };
        out.push((
            start_pos + i as u64,
            LogEntry::Signal(normalize(&ctx, &payload, payload.to_string())),
        ));
    }
    out
}

fn rule_event(
    org: u64,
    rule_id: u64,
    bucket_lt: Option<&str>,
    reprocess: bool,
    update: bool,
) -> ConfigEvent {
    let mut conditions = vec![];
    if let Some(b) = bucket_lt {
        conditions.push(Condition {
            field: "properties.bucket".into(),
            op: Op::Lt,
            value: Some(Operand::One(b.into())),
        });
    }
    let def = RuleDef {
        name: format!("rule{rule_id}"),
        signal_type: SignalType::FormFill,
        description: None,
        high_intent: false,
        priority: rule_id as i32,
        combinator: Default::default(),
        conditions,
        mappings: vec![FieldMapping {
            field: LeadField::Email,
            path: "email".into(),
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

fn wait_applied(engine: &Engine, pos: u64) {
    while !engine.read.caught_up(None, pos) {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Feeds `entries` in batches of `batch` and returns the time until the last is applied.
fn feed_all(engine: &Engine, entries: &[(u64, LogEntry)], batch: usize) -> Duration {
    let t = Instant::now();
    for chunk in entries.chunks(batch.max(1)) {
        engine.feed(chunk.to_vec());
    }
    wait_applied(engine, entries.last().map_or(0, |(p, _)| *p));
    t.elapsed()
}

/// CPU time (user and system) this process has used, from `/proc/self/stat` (in clock
/// ticks of 10 ms: the paced runs last seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Prints what each arrangement holds per staged signal, all workers together, from the
/// engine's `trailspark_arrangement_{records,bytes}` gauges (published about once a second).
fn arrangement_table(staged: i64) {
    std::thread::sleep(Duration::from_millis(2500));
    let mut rows: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for family in trailspark::metrics::METRICS.registry.gather() {
        let bytes = match family.name() {
            "trailspark_arrangement_bytes" => true,
            "trailspark_arrangement_records" => false,
            _ => continue,
        };
        for m in family.get_metric() {
            let Some(name) = m
                .get_label()
                .iter()
                .find(|l| l.name() == "arrangement")
                .map(|l| l.value().to_string())
            else {
                continue;
            };
            let row = rows.entry(name).or_default();
            let v = m.get_gauge().get_value();
            if bytes {
                row.1 += v;
            } else {
                row.0 += v;
            }
        }
    }
    let per = staged.max(1) as f64;
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    println!(
        "\nArrangements after loading ({staged} staged signals): {:.0} bytes per signal in all\n",
        total / per
    );
    println!("| arrangement | updates per signal | bytes per signal |");
    println!("|---|---:|---:|");
    for (name, (records, bytes)) in rows.iter().filter(|r| r.1 .0 > 0.0 || r.1 .1 > 0.0) {
        println!("| {name} | {:.2} | {:.1} |", records / per, bytes / per);
    }
}

/// One row of the incremental table: the change's time against a rebuild's.
fn incremental_row(change: &str, inc: Duration, load: Duration) {
    println!(
        "| {change} | {:.2} | {:.0} | {:.4} |",
        inc.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        inc.as_secs_f64() / load.as_secs_f64()
    );
}

/// Latency under a steady rate: signals fed one at a time at `rate` per second from another
/// thread, each timed from its feeding to the models reflecting its position (polled every
/// 20 µs). Without HTTP, the journal or a poller in the way, this is the engine's share of
/// freshness.
fn paced(base: &[(u64, LogEntry)], idle_merge_effort: Option<isize>) {
    let engine = Engine::start(EngineConfig {
        idle_merge_effort,
        ..Default::default()
    });
    feed_all(&engine, base, 100_000);
    let mut next = base.last().unwrap().0 + 1;
    for rate in [1_000u64, 5_000, 10_000] {
        let count = 3 * rate as usize;
        let entries = workload(count, next);
        next += count as u64;
        let start = Instant::now();
        let fed_at: Vec<Duration> = (0..count)
            .map(|i| Duration::from_secs_f64(i as f64 / rate as f64))
            .collect();
        let feeder = {
            let engine = engine.clone();
            let fed_at = fed_at.clone();
            std::thread::spawn(move || {
                for (e, at) in entries.into_iter().zip(fed_at) {
                    if let Some(wait) = at.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    engine.feed(vec![e]);
                }
            })
        };
        let cpu0 = cpu_seconds();
        let first = next - count as u64;
        let mut seen = first;
        let mut lat = Vec::with_capacity(count);
        while seen < first + count as u64 {
            let applied = engine.read.applied();
            let now = start.elapsed();
            while seen <= applied && seen < first + count as u64 {
                lat.push(now.saturating_sub(fed_at[(seen - first) as usize]));
                seen += 1;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        feeder.join().unwrap();
        // The whole process, this measuring loop and the feeding thread included.
        let cores = (cpu_seconds() - cpu0) / start.elapsed().as_secs_f64();
        lat.sort();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        let effort = idle_merge_effort.map_or("off".to_string(), |e| e.to_string());
        println!(
            "| {effort} | {rate} | {count} | {:.2} | {:.2} | {:.2} | {cores:.2} |",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}

/// A page view of org 2 at `pos`.
fn org2_page(pos: u64) -> (u64, LogEntry) {
    let p = json!({"type": "page", "anonymousId": format!("f{pos}"), "properties": {"url": "/f"}});
    let ctx = Context {
        org_id: OrgId(2),
        api_key_id: 1,
        received_at: 1_767_225_600_000 + pos as i64,
        ..Default::default()
    };
    (pos, LogEntry::Signal(normalize(&ctx, &p, p.to_string())))
}

/// Org 2's single signals, each fed and waited for (with only org 2's own reprocessing
/// waited for) from `next` on, while `more` says so: their latencies, and the next position.
fn org2_latencies(
    engine: &Engine,
    mut next: u64,
    more: impl Fn(usize) -> bool,
) -> (Vec<Duration>, u64) {
    let mut lat = Vec::new();
    while more(lat.len()) {
        let t = Instant::now();
        engine.feed(vec![org2_page(next)]);
        while !engine.read.caught_up(Some(2), next) {
            std::thread::sleep(Duration::from_micros(20));
        }
        lat.push(t.elapsed());
        next += 1;
    }
    (lat, next)
}

/// Another org's latency while org 1 edits its catch-all rule with reprocess (every org-1
/// signal is evaluated again, and half of its form fills change outcome), in a fresh engine
/// loaded with `base`, with segments of `segment_signals`.
fn fairness_row(base: &[(u64, LogEntry)], what: &str, segment_signals: Option<u32>) {
    let engine = Engine::start(EngineConfig {
        segment_signals: segment_signals.unwrap_or(u32::MAX),
        ..Default::default()
    });
    feed_all(&engine, base, 100_000);
    let org1 = engine.read.read().org(1).stats.total;
    let next = base.last().unwrap().0 + 1;
    // Settle, then the same org's latency with nothing reprocessing.
    let (_, next) = org2_latencies(&engine, next, |n| n < 50);
    let (alone, edit) = org2_latencies(&engine, next, |n| n < 200);
    let slices = trailspark::metrics::METRICS.reprocess_slices.get();
    let t = Instant::now();
    engine.feed(vec![(
        edit,
        LogEntry::Config(rule_event(1, 1, Some("50"), true, true)),
    )]);
    let reprocessed = || engine.read.caught_up(Some(1), edit);
    let (during, _) = org2_latencies(&engine, edit + 1, |_| !reprocessed());
    while !reprocessed() {
        std::thread::sleep(Duration::from_micros(20));
    }
    let took = t.elapsed();
    let slices = trailspark::metrics::METRICS.reprocess_slices.get() - slices;
    let ms = |lat: &[Duration], p: f64| {
        let mut v = lat.to_vec();
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "| {what} | {org1} | {:.2} / {:.2} / {:.2} | {} | {:.2} / {:.2} / {:.2} | {:.0} | {slices} |",
        ms(&alone, 0.5),
        ms(&alone, 0.99),
        ms(&alone, 1.0),
        during.len(),
        ms(&during, 0.5),
        ms(&during, 0.99),
        ms(&during, 1.0),
        took.as_secs_f64() * 1e3,
    );
}

/// The fairness table: org 2's latency alone and during org 1's reprocess, sliced and not.
fn fairness(base: &[(u64, LogEntry)]) {
    println!("\nAnother org's latency (org 2, single signals each waited for) while org 1 edits a rule with reprocess (1 worker):\n");
    println!("| reprocess | org 1 signals | org 2 alone p50 / p99 / max ms | org 2 signals during | org 2 during p50 / p99 / max ms | reprocess ms | slices |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    fairness_row(base, "in one step (before)", None);
    fairness_row(
        base,
        "sliced",
        Some(trailspark_operators::rules::SEGMENT_SIGNALS),
    );
}

fn with_rules(mut entries: Vec<(u64, LogEntry)>) -> Vec<(u64, LogEntry)> {
    // Rule 1 maps form fills for every org, at position 1 (before the signals).
    let rules = vec![
        (1, LogEntry::Config(rule_event(1, 1, None, true, false))),
        (2, LogEntry::Config(rule_event(2, 2, None, true, false))),
    ];
    entries.splice(0..0, rules);
    entries
}

fn main() {
    let args = Args::parse();
    let n = args.signals;
    let base = with_rules(workload(n, 3));
    println!(
        "# dataflow-bench: {n} signals, {} cores\n",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );

    // Steady state with one worker, measured first, in a fresh process: the base workload
    // loaded in large batches.
    let rss0 = rss_bytes();
    let engine = Engine::start(EngineConfig::default());
    let load = feed_all(&engine, &base, 100_000);
    let rss1 = rss_bytes();
    let staged = {
        let m = engine.read.read();
        m.orgs().map(|o| m.org(o).stats.total).sum::<i64>()
    };
    let mut next = base.last().unwrap().0 + 1;
    arrangement_table(staged);

    // Latency: single signals, each waited for.
    let mut lat = Vec::new();
    for e in workload(1_000, next) {
        let t = Instant::now();
        let pos = e.0;
        engine.feed(vec![e]);
        wait_applied(&engine, pos);
        lat.push(t.elapsed());
        next = pos + 1;
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!("\nLatency from a log append reaching the engine to the read models reflecting it (1 worker, {staged} staged signals loaded):");
    println!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );

    // Identify rehydrating k cold signals.
    println!("\n| incremental change | incremental ms | rebuild from scratch ms | ratio |");
    println!("|---|---:|---:|---:|");
    for k in [10usize, 100, 1_000] {
        let anon = format!("bench-visitor-{k}");
        let mut batch = Vec::new();
        for i in 0..k {
            let p = json!({"type": "page", "anonymousId": anon, "properties": {"url": format!("/k{i}")}});
            let ctx = Context {
                org_id: OrgId(1),
                api_key_id: 1,
                received_at: 1_767_225_600_000,
                ..Default::default()
            };
            batch.push((next, LogEntry::Signal(normalize(&ctx, &p, p.to_string()))));
            next += 1;
        }
        engine.feed(batch);
        wait_applied(&engine, next - 1);
        let p = json!({"type": "identify", "anonymousId": anon, "traits": {"email": format!("k{k}@x.io")}});
        let ctx = Context {
            org_id: OrgId(1),
            api_key_id: 1,
            received_at: 1_767_225_600_000,
            ..Default::default()
        };
        let t = Instant::now();
        engine.feed(vec![(
            next,
            LogEntry::Signal(normalize(&ctx, &p, p.to_string())),
        )]);
        wait_applied(&engine, next);
        let inc = t.elapsed();
        next += 1;
        incremental_row(&format!("identify rehydrating {k} signals"), inc, load);
    }
    // A rule edit with reprocess whose conditions touch 1% of the signals (bucket < 1).
    engine.feed(vec![(
        next,
        LogEntry::Config(rule_event(1, 9, Some("0"), false, false)),
    )]);
    wait_applied(&engine, next);
    next += 1;
    // An edit without reprocess applies from its position on: no past signal changes, and
    // the edit should cost the same at any history length.
    let t = Instant::now();
    engine.feed(vec![(
        next,
        LogEntry::Config(rule_event(1, 9, Some("2"), false, true)),
    )]);
    wait_applied(&engine, next);
    let inc = t.elapsed();
    next += 1;
    incremental_row("rule edit without reprocess", inc, load);
    let t = Instant::now();
    engine.feed(vec![(
        next,
        LogEntry::Config(rule_event(1, 9, Some("1"), true, true)),
    )]);
    wait_applied(&engine, next);
    let inc = t.elapsed();
    incremental_row("rule edit with reprocess touching 1%", inc, load);

    println!(
        "\nResident memory: {:.0} bytes per staged signal ({} staged; RSS {} MiB before, {} MiB after loading)",
        (rss1.saturating_sub(rss0)) as f64 / staged.max(1) as f64,
        staged,
        rss0 >> 20,
        rss1 >> 20
    );

    drop(engine);
    println!("\nLatency at a steady rate (single signals fed from another thread, 3 s each, 1 worker, in a fresh engine loaded with the base workload):\n");
    println!("| idle merge effort | events/s | signals | p50 ms | p99 ms | max ms | CPU (cores) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for effort in [Some(1_000), Some(100), None] {
        paced(&base, effort);
    }
    fairness(&base);

    println!("\n| workers | batch | signals | seconds | signals/s |");
    println!("|---:|---:|---:|---:|---:|");
    for workers in [1, 2] {
        for batch in [1usize, 1_000, 100_000] {
            // Batch size 1 is one epoch per signal: measure it on a prefix.
            let count = if batch == 1 { (n / 20).min(10_000) } else { n };
            let entries = &base[..count + 2];
            let engine = Engine::start(EngineConfig {
                workers,
                ..Default::default()
            });
            let d = feed_all(&engine, entries, batch);
            println!(
                "| {workers} | {batch} | {count} | {:.2} | {:.0} |",
                d.as_secs_f64(),
                count as f64 / d.as_secs_f64()
            );
        }
    }
}
