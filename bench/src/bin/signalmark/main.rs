//! `signalmark`: trailspark end to end on a reproducible workload, side by side with DuckDB
//! computing the same outputs from the same NDJSON, in the same run. Prints one table.
//!
//! ```sh
//! scripts/signalmark                      # installs nats-server and DuckDB if missing, builds,
//!                                         # runs at the default scale: 10,000,000 events
//! scripts/signalmark --events 1000000     # or, once built: $CARGO_TARGET_DIR/release/signalmark
//! ```
//!
//! Scenarios, in order (each on a fresh data directory, all on this machine's cores):
//! 1. the workload (`trailspark_bench::workload`) written as NDJSON, in `--parts` parts;
//! 2. DuckDB (`bench/signalmark/baseline.py`, PyPI `duckdb`): the outputs in one batch, and
//!    recomputed after each part;
//! 3. ingest throughput: HTTP one signal per request, HTTP batches of 100, NATS JetStream
//!    publishes through the NATS source; freshness (202 → visible in the explorer) at half
//!    the measured one-per-request maximum;
//! 4. incremental: a running server gets the parts one after another through the bulk
//!    endpoint (`trailspark backfill --server`) and product-org updates through their
//!    webhook, with the rule edit at the middle part; each part is timed until the read
//!    models reflect it;
//! 5. batch: `trailspark backfill --data-dir` of everything, then the server started and
//!    timed until it serves all of it (restart-to-serving, the dataflow's replay rate);
//!    resident memory; the rule edit with reprocessing; SQL latencies; identifies that
//!    rehydrate the largest pending anonymous visitors.
//!
//! After 4 and 5, trailspark's outputs (per org: unique and pending signals, mapped signals,
//! the lead set, signal-group counts, usage meters) are compared with DuckDB's; any
//! difference is printed and makes the run fail.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use trailspark_bench::harness::{
    nats_server_bin, start_nats, start_server, trailspark_bin, Server,
};
use trailspark_bench::load::{
    freshness, http_load, nats_load, poll_positions, quantile, HttpLoad, Mode, OrgAccess,
};
use trailspark_bench::scrape;
use trailspark_bench::workload::{
    part_file, product_org_template, rule_edit, rules, write_ndjson, Config, Event, Generator,
    Kind, Scale,
};

mod ingest;
mod measures;
mod outputs;
mod phases;
mod server;

use self::ingest::*;
use self::measures::*;
use self::outputs::*;
use self::phases::*;
use self::server::*;

#[derive(Parser)]
#[command(name = "signalmark", about = "trailspark end to end against DuckDB")]
struct Args {
    #[command(flatten)]
    scale: Scale,
    /// Incremental parts.
    #[arg(long, default_value_t = 10)]
    parts: usize,
    /// Seconds per ingest-throughput scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Signals published in the NATS ingest scenario (the rate is taken until all are
    /// processed, so this bounds its duration, not --seconds).
    #[arg(long, default_value_t = 50_000)]
    nats_events: usize,
    /// Working directory (kept); default: a temporary one (removed).
    #[arg(long)]
    work: Option<PathBuf>,
    /// The Python with `duckdb` installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The trailspark binary (default: next to this one).
    #[arg(long)]
    trailspark: Option<PathBuf>,
    /// Run even when the machine's available memory looks too small for the scale.
    #[arg(long)]
    force: bool,
    /// Run only the ingest scenario (throughput and freshness; no workload, DuckDB or
    /// comparison): for working on ingest and freshness in minutes instead of a full run.
    #[arg(long)]
    ingest_only: bool,
}

/// Resident bytes per workload event the batch server needs at its peak, from bench/RESULTS.md
/// (20.6 GB at 10 million events on 2026-12-01, for a few seconds during the batch replay,
/// 15.9 GB once caught up; the servers run one after another, DuckDB before them), with a
/// margin of 7%: the guard below uses it to refuse a scale this machine cannot hold, instead
/// of driving it into swap or the OOM killer.
const BYTES_PER_EVENT: u64 = 2200;

fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

const ADMIN: &str = "signalmark-admin-token-3f9c2a7e51d04b86";

/// One row of the result table.
struct Row {
    measure: String,
    ours: String,
    theirs: String,
    ratio: String,
}

fn row(measure: impl Into<String>, ours: impl Into<String>) -> Row {
    Row {
        measure: measure.into(),
        ours: ours.into(),
        theirs: "–".into(),
        ratio: "–".into(),
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let started = Instant::now();
    let ts = trailspark_bin(a.trailspark.as_deref())?;
    if let (false, Some(avail)) = (a.force, mem_available()) {
        let need = a.scale.events * BYTES_PER_EVENT;
        if need > avail {
            bail!(
                "{} events need about {:.0} GiB of memory for trailspark's dataflow at its current \
                 footprint (bench/RESULTS.md); {:.0} GiB are available. Pass a smaller --events \
                 (e.g. {}), or --force.",
                a.scale.events,
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64,
                avail / BYTES_PER_EVENT / 100_000 * 100_000
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let work = a.work.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let data = work.join("workload");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = a.scale.config();
    let mut rows = Vec::new();
    if a.ingest_only {
        eprintln!("signalmark: ingest throughput");
        rows.extend(rt.block_on(ingest(&ts, &work, &a))?);
        print_rows(&rows);
        return Ok(());
    }

    // 1. The workload.
    eprintln!("signalmark: generating {} events", a.scale.events);
    let t = Instant::now();
    let manifest = write_ndjson(&cfg, a.parts, &data)?;
    rows.push(row(
        "workload written as NDJSON",
        format!(
            "{} events, {:.0} MB, {:.1} s",
            manifest.events,
            manifest.bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        ),
    ));

    // 2. DuckDB.
    eprintln!("signalmark: DuckDB baseline");
    let duck_out = work.join("duckdb.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("signalmark/baseline.py");
    let st = Command::new(&a.python)
        .arg(&script)
        .args(["--dir", data.to_str().unwrap(), "--parts"])
        .arg(a.parts.to_string())
        .args(["--out", duck_out.to_str().unwrap()])
        .status()
        .with_context(|| format!("running {} {}", a.python, script.display()))?;
    if !st.success() {
        bail!("the DuckDB baseline failed ({st})");
    }
    let duck: Value = serde_json::from_slice(&std::fs::read(&duck_out)?)?;

    // 3. Ingest throughput and freshness.
    eprintln!("signalmark: ingest throughput");
    let ingest = rt.block_on(ingest(&ts, &work, &a))?;
    rows.extend(ingest);

    // 4. Incremental.
    eprintln!("signalmark: incremental, {} parts", a.parts);
    let inc = rt.block_on(incremental(&ts, &work, &data, &a))?;
    let duck_inc: f64 = duck["incremental_s"]
        .as_array()
        .context("incremental_s")?
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    let inc_total: f64 = inc.part_s.iter().sum();
    let mut mismatches = compare("incremental", &inc.outputs, &duck["orgs"]);
    rows.push(Row {
        measure: format!(
            "incremental: {} parts, each until the outputs reflect it (total s)",
            a.parts
        ),
        ours: format!("{inc_total:.1}"),
        theirs: format!("{duck_inc:.1} (recompute after each part)"),
        ratio: format!("{:.2}", inc_total / duck_inc),
    });
    let last_ours = inc.part_s.last().copied().unwrap_or(0.0);
    let last_duck = duck["incremental_s"]
        .as_array()
        .and_then(|v| v.last())
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    rows.push(Row {
        measure: "incremental: the last part alone (s)".into(),
        ours: format!("{last_ours:.2}"),
        theirs: format!("{last_duck:.2}"),
        ratio: format!("{:.2}", last_ours / last_duck),
    });

    // 5. Batch.
    eprintln!("signalmark: batch");
    let b = rt.block_on(batch(&ts, &work, &data, &a, &duck))?;
    mismatches.extend(compare("batch", &b.outputs, &duck["orgs"]));
    let duck_batch = duck["batch_s"].as_f64().unwrap_or(f64::NAN);
    rows.push(Row {
        measure: "batch: NDJSON → all outputs (backfill + serve, s)".into(),
        ours: format!(
            "{:.1} ({:.1} + {:.1})",
            b.backfill_s + b.serve_s,
            b.backfill_s,
            b.serve_s
        ),
        theirs: format!("{duck_batch:.1}"),
        ratio: format!("{:.2}", (b.backfill_s + b.serve_s) / duck_batch),
    });
    rows.extend(b.rows);

    let unique: u64 = duck["orgs"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v["unique"].as_u64()).sum())
        .unwrap_or(0);
    let leads: usize = duck["orgs"]
        .as_object()
        .map(|o| {
            o.values()
                .filter_map(|v| v["leads"].as_array().map(Vec::len))
                .sum()
        })
        .unwrap_or(0);
    rows.push(row(
        "outputs equal to DuckDB's (unique, pending, mapped, leads, groups, usage; every org)",
        if mismatches.is_empty() {
            format!("yes: {unique} unique signals, {leads} leads")
        } else {
            format!("NO: {} differences", mismatches.len())
        },
    ));

    println!(
        "\nsignalmark: {} events, {} orgs, seed {}, {} parts; {} cores; DuckDB {}; {:.0} s in all\n",
        a.scale.events,
        a.scale.orgs,
        a.scale.seed,
        a.parts,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        duck["duckdb"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    print_rows(&rows);
    if !mismatches.is_empty() {
        for m in mismatches.iter().take(20) {
            eprintln!("difference: {m}");
        }
        bail!("trailspark's outputs differ from DuckDB's");
    }
    Ok(())
}

fn print_rows(rows: &[Row]) {
    println!("| measure | trailspark | DuckDB | trailspark / DuckDB |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.ours, r.theirs, r.ratio
        );
    }
}

// ---------------------------------------------------------------- HTTP helpers

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- scenarios 4 and 5
