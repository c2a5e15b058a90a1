//! Archive and SQL benchmark.
//!
//! 1. Writes N generated signals of several orgs (skewed sizes, spread over 30 days) through
//!    the real archiver (offer → buffers → Parquet → object store, one roll per simulated
//!    day) and reports rows/s and bytes per signal; baseline: the same rows as gzipped JSON
//!    lines (the layout the hosted product documents), written in the same run.
//! 2. Runs the same queries through trailspark's org-scoped SQL engine and in DuckDB (PyPI)
//!    over the same Parquet files, and reports the medians and the ratio: `SELECT 1` (what
//!    any query pays before it reads a row), a count by event group, a lead timeline, an
//!    anonymous_id lookup (what rehydration on identify does).
//!
//! `archive-bench --rows 10000000` (default); `--keep DIR` keeps the archive, and a later
//! `--keep DIR --reuse` runs only the queries over it: two variants of the query path then
//! take turns on the same files, which on a shared machine is the only comparison that
//! holds (one run of each, minutes apart, differed by more than the change). `--explain`
//! prints each query's `EXPLAIN ANALYZE` (operator times, the Parquet scan's pruning).

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use trailspark_core::tenancy::OrgId;
use trailspark_core::{Identifiers, LogEntry, SignalRecord};
use trailspark_queries::{Limits, SqlEngine};
use trailspark_sinks::archive::{
    ArchiveConfig, ArchiveRow, Archiver, Location, Processing, Stamper,
};

#[derive(Parser)]
struct Opts {
    /// Signals to archive.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Runs of each query (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the archive here instead of a temporary directory.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// `--keep`'s directory already holds this archive (an earlier run with the same
    /// `--rows`): skip the writes and run only the queries, so that variants of the query
    /// path can be compared in turns on the same files.
    #[arg(long, requires = "keep")]
    reuse: bool,
    /// Python interpreter with duckdb installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Also print each query's `EXPLAIN ANALYZE` through trailspark's engine: where its time
    /// goes, operator by operator, with the Parquet scan's pruning counts.
    #[arg(long)]
    explain: bool,
}

const DAYS: u64 = 30;
const DAY_MS: i64 = 86_400_000;
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01
/// Org sizes: org 1 holds half the signals, org 2 a quarter, orgs 3-8 the rest.
const ORG_SHARES: [(u64, u64); 8] = [
    (1, 500),
    (2, 250),
    (3, 50),
    (4, 50),
    (5, 50),
    (6, 40),
    (7, 30),
    (8, 30),
];
const EVENTS: [&str; 12] = [
    "page_view",
    "pricing_viewed",
    "form_submission",
    "demo_requested",
    "email_opened",
    "email_clicked",
    "trial_started",
    "feature_used",
    "invite_sent",
    "plan_upgraded",
    "webinar_registered",
    "doc_read",
];

/// A deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn org_of(r: u64) -> u64 {
    let mut acc = 0;
    for (org, share) in ORG_SHARES {
        acc += share;
        if r < acc {
            return org;
        }
    }
    8
}

/// Signal `id` (its log position): 20% anonymous page views, the rest identified events.
fn signal(id: u64, day: u64, rng: &mut Rng) -> SignalRecord {
    let org = org_of(rng.below(1000));
    let person = rng.below(200_000);
    let received_at = START_MS + day as i64 * DAY_MS + rng.below(DAY_MS as u64) as i64;
    let anon = rng.below(5) == 0;
    let anonymous_id = format!("anon-{}", rng.below(1_000_000));
    let (event, ids) = if anon {
        (
            "page_view",
            Identifiers {
                anonymous_id: Some(anonymous_id.clone()),
                ..Default::default()
            },
        )
    } else {
        (
            EVENTS[rng.below(EVENTS.len() as u64) as usize],
            Identifiers {
                email: Some(format!("person{person}@company{}.com", person % 5000)),
                anonymous_id: (rng.below(3) == 0).then(|| anonymous_id.clone()),
                ..Default::default()
            },
        )
    };
    let payload = json!({
        "event": event,
        "email": ids.email,
        "anonymousId": ids.anonymous_id,
        "properties": {"page_url": format!("https://site.example/p/{}", rng.below(500)),
                       "campaign": format!("c{}", rng.below(40)), "value": rng.below(1000)},
        "n": id,
    })
    .to_string();
    SignalRecord {
        org_id: OrgId(org),
        api_key_id: org * 10,
        received_at,
        event_at: received_at - rng.below(60_000) as i64,
        source: if anon { "segment" } else { "generic" }.into(),
        event_type: if anon { "page" } else { "track" }.into(),
        event_name: Some(event.into()),
        ids,
        message_id: None,
        content_hash: format!("{:016x}{:016x}", rng.next(), rng.next()),
        anonymous: anon,
        payload,
    }
}

/// Stamps rows as the server would: processed, attributed to the lead of their email.
struct LeadStamps;

impl Stamper for LeadStamps {
    fn ready(&self, _: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    fn stamp(&self, _org: u64, rows: &mut [ArchiveRow]) {
        for r in rows {
            let lead = r.record.ids.email.as_ref().map(|e| format!("L-{e}"));
            r.processing = Processing {
                status: Some(
                    if lead.is_some() {
                        "completed"
                    } else {
                        "pending"
                    }
                    .into(),
                ),
                rule_id: lead.as_ref().map(|_| 1),
                rule_name: lead.as_ref().map(|_| "Form fill".into()),
                lead_id: lead,
                error: None,
            };
        }
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        n += if p.is_dir() {
            dir_bytes(&p)
        } else {
            e.metadata().map(|m| m.len()).unwrap_or(0)
        };
    }
    n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, sys, time
root, runs = sys.argv[1], int(sys.argv[2])
queries = json.loads(sys.argv[3])
con = duckdb.connect()
con.execute("SET threads TO 2")
out = {}
for name, q in queries.items():
    q = q.replace("TBL_SIGNALS", f"read_parquet('{root}/signals/org_id=1/*/*.parquet', hive_partitioning=true)")
    q = q.replace("TBL_ANON", f"read_parquet('{root}/anonymous/org_id=1/*/*.parquet', hive_partitioning=true)")
    # Results are fetched as Arrow tables, as trailspark's are Arrow batches.
    con.execute(q).to_arrow_table()
    times, rows = [], None
    for _ in range(runs):
        t = time.perf_counter()
        rows = con.execute(q).to_arrow_table()
        times.append(time.perf_counter() - t)
    times.sort()
    out[name] = {"ms": times[len(times) // 2] * 1000, "rows": rows.num_rows}
print(json.dumps(out))
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let tmp = tempfile::tempdir()?;
    let root = o.keep.clone().unwrap_or_else(|| tmp.path().join("archive"));
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;

    // 1. Archive write, and the JSON-lines baseline over the same rows.
    let archiver = Archiver::open(
        Location::parse(root.to_str().unwrap())?,
        ArchiveConfig {
            max_rows: 1_000_000,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(3600),
            ..Default::default()
        },
        Arc::new(LeadStamps),
    )
    .await?;
    let per_day = o.rows.div_ceil(DAYS);
    let mut rng = Rng(42);
    let (mut gen_time, mut archive_time, mut jsonl_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let jsonl_path = tmp.path().join("baseline.jsonl.gz");
    let mut jsonl = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(&jsonl_path)?),
        flate2::Compression::default(),
    );
    let mut id = 0u64;
    // A lead and an anonymous id of org 1 from the middle of the data, to look up.
    let (mut lead, mut anon) = (None::<String>, None::<String>);
    for day in 0..DAYS {
        let mut done = 0;
        while done < per_day && id < o.rows {
            let n = (per_day - done).min(100_000).min(o.rows - id);
            let t = Instant::now();
            let batch: Vec<(u64, LogEntry)> = (0..n)
                .map(|i| {
                    let pos = id + i + 1;
                    (pos, LogEntry::Signal(signal(pos, day, &mut rng)))
                })
                .collect();
            gen_time += t.elapsed();
            for (pos, e) in &batch {
                let LogEntry::Signal(s) = e else { continue };
                if *pos < o.rows / 2 || s.org_id != OrgId(1) {
                    continue;
                }
                if s.anonymous && anon.is_none() {
                    anon = s.ids.anonymous_id.clone();
                }
                if !s.anonymous && lead.is_none() {
                    lead = s.ids.email.as_ref().map(|e| format!("L-{e}"));
                }
            }
            if o.reuse {
                id += n;
                done += n;
                continue;
            }
            let t = Instant::now();
            archiver.offer(&batch);
            archiver.flush(false).await?;
            archive_time += t.elapsed();
            let t = Instant::now();
            for (pos, e) in &batch {
                if let LogEntry::Signal(s) = e {
                    let mut v = serde_json::to_value(s)?;
                    v["id"] = json!(pos);
                    v["payload"] = Value::String(s.payload.clone());
                    serde_json::to_writer(&mut jsonl, &v)?;
                    jsonl.write_all(b"\n")?;
                }
            }
            jsonl_time += t.elapsed();
            id += n;
            done += n;
        }
        if o.reuse {
            continue;
        }
        // A day has passed: every partition of it rolls (what max_age does in real time).
        let t = Instant::now();
        archiver.flush(true).await?;
        archive_time += t.elapsed();
    }
    let t = Instant::now();
    jsonl.finish()?.flush()?;
    jsonl_time += t.elapsed();
    if !o.reuse {
        let parquet_bytes = dir_bytes(&root);
        let jsonl_bytes = std::fs::metadata(&jsonl_path)?.len();
        let files = archiver.files().len();
        let rows = o.rows as f64;
        println!(
            "archive write: {} rows in {} files, {:.0} rows/s, {:.1} bytes/signal (generation {:.1}s, not counted)",
            o.rows,
            files,
            rows / archive_time.as_secs_f64(),
            parquet_bytes as f64 / rows,
            gen_time.as_secs_f64()
        );
        println!(
            "baseline jsonl.gz: {:.0} rows/s, {:.1} bytes/signal; ratio (rows/s) {:.2}x, size {:.2}x",
            rows / jsonl_time.as_secs_f64(),
            jsonl_bytes as f64 / rows,
            jsonl_time.as_secs_f64() / archive_time.as_secs_f64(),
            parquet_bytes as f64 / jsonl_bytes as f64
        );
    }

    // 2. SQL over the archive, trailspark vs DuckDB on the same files.
    let org1 = (lead.unwrap_or_default(), anon.unwrap_or_default());
    let queries = [
        // What any query pays before it reads a row: admission, session, planning, and the
        // answer's collection (DuckDB: the same statement on its open connection).
        ("fixed cost (SELECT 1)", "SELECT 1"),
        (
            "count by event group",
            "SELECT event_name, count(*) AS n FROM TBL_SIGNALS GROUP BY event_name ORDER BY n DESC",
        ),
        (
            "lead timeline",
            "SELECT id, event_name, received_at, payload FROM TBL_SIGNALS WHERE lead_id = 'VAL_LEAD' ORDER BY id DESC LIMIT 100",
        ),
        (
            "anonymous_id lookup",
            "SELECT id, event_name, received_at, payload FROM TBL_ANON WHERE anonymous_id = 'VAL_ANON' ORDER BY id",
        ),
    ];
    let sub = |q: &str, signals: &str, anon: &str| {
        q.replace("TBL_SIGNALS", signals)
            .replace("TBL_ANON", anon)
            .replace("VAL_LEAD", &org1.0)
            .replace("VAL_ANON", &org1.1)
    };
    let engine = SqlEngine::new(
        Some(archiver.clone()),
        None,
        Limits {
            timeout: Duration::from_secs(600),
            max_rows: 10_000_000,
            ..Default::default()
        },
    )?;
    let mut ours = Vec::new();
    for (name, q) in &queries {
        let q = sub(q, "signals", "anonymous_signals");
        let first = engine.query(1, &q).await?;
        let mut times = Vec::new();
        for _ in 0..o.runs {
            let t = Instant::now();
            let out = engine.query(1, &q).await?;
            times.push(t.elapsed());
            assert_eq!(out.rows, first.rows);
        }
        ours.push((name.to_string(), median(times), first.rows));
        if o.explain {
            let out = engine.query(1, &format!("EXPLAIN ANALYZE {q}")).await?;
            let text = trailspark_queries::output::to_table(&out)?;
            println!("{name}:\n{text}");
        }
    }
    let duck_queries: serde_json::Map<String, Value> = queries
        .iter()
        .map(|(n, q)| {
            (
                n.to_string(),
                Value::String(sub(q, "TBL_SIGNALS", "TBL_ANON")),
            )
        })
        .collect();
    let out = Command::new(&o.python)
        .args([
            "-c",
            DUCKDB_SCRIPT,
            root.to_str().unwrap(),
            &o.runs.to_string(),
            &Value::Object(duck_queries).to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: Value = serde_json::from_slice(&out.stdout)?;
    println!("\n| query (org 1 of 8, {} signals archived) | trailspark ms | DuckDB ms | rows | trailspark / DuckDB |", o.rows);
    println!("|---|---:|---:|---:|---:|");
    for (name, t, n) in ours {
        let d = &duck[&name];
        let dms = d["ms"].as_f64().unwrap();
        anyhow::ensure!(
            d["rows"].as_u64() == Some(n as u64),
            "{name}: DuckDB found {} rows, trailspark {n}",
            d["rows"]
        );
        let ms = t.as_secs_f64() * 1000.0;
        println!("| {name} | {ms:.1} | {dms:.1} | {n} | {:.2} |", ms / dms);
    }
    Ok(())
}
