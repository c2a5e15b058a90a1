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
use trailspark_bench::workload::{
    part_file, product_org_template, rule_edit, rules, write_ndjson, Config, Event, Generator,
    Kind, Scale,
};

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
    println!("| measure | trailspark | DuckDB | trailspark / DuckDB |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.ours, r.theirs, r.ratio
        );
    }
    if !mismatches.is_empty() {
        for m in mismatches.iter().take(20) {
            eprintln!("difference: {m}");
        }
        bail!("trailspark's outputs differ from DuckDB's");
    }
    Ok(())
}

// ---------------------------------------------------------------- HTTP helpers

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: impl Into<String>,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url: String = url.into();
    let mut r = c.request(method.clone(), &url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.with_context(|| format!("{method} {url}"))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {url}: {status} {v}");
    }
    Ok(v)
}

/// Waits until the read models reflect everything on the log.
async fn caught_up(c: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    loop {
        let h: Value = c
            .get(format!("{base}/healthz"))
            .send()
            .await?
            .json()
            .await?;
        let head = h["log_head"].as_u64().unwrap_or(0);
        let r = c
            .get(format!("{base}/api/explorer/stats?wait_for={head}"))
            .bearer_auth(token)
            .send()
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
    }
}

/// Creates the workload's orgs on a fresh server: unlimited plans, a Signal Staging key, a
/// product-org key with the workload's template, and the workload's rules (reprocess).
async fn setup(c: &reqwest::Client, s: &Server, orgs: usize) -> anyhow::Result<Vec<OrgAccess>> {
    let base = &s.base;
    let mut out = Vec::new();
    for i in 0..orgs {
        let (org_id, token) = if i == 0 {
            (1, s.owner.clone().context("no first-start owner token")?)
        } else {
            let v = call(
                c,
                reqwest::Method::POST,
                &format!("{base}/api/admin/orgs"),
                ADMIN,
                Some(json!({"name": format!("Org {}", i + 1)})),
            )
            .await?;
            (
                v["id"].as_u64().context("org id")?,
                v["owner_token"]
                    .as_str()
                    .context("owner_token")?
                    .to_string(),
            )
        };
        let send = |method: reqwest::Method, path: &str, body: Value| {
            call(c, method, format!("{base}{path}"), &token, Some(body))
        };
        let post = |path: &str, body: Value| send(reqwest::Method::POST, path, body);
        send(
            reqwest::Method::PUT,
            "/api/admin/plan",
            json!({"raw_signal_limit": 0, "mapped_signal_limit": 0, "overage": false}),
        )
        .await?;
        let key = post(
            "/api/admin/keys",
            json!({"name": "signalmark", "endpoint_type": "signal_staging"}),
        )
        .await?["key"]
            .as_str()
            .context("key")?
            .to_string();
        let product_key = post(
            "/api/admin/keys",
            json!({"name": "products", "endpoint_type": "product_org",
                   "template": product_org_template()}),
        )
        .await?["key"]
            .as_str()
            .context("product key")?
            .to_string();
        let mut rule_ids = Vec::new();
        for mut r in rules() {
            r["reprocess"] = json!(true);
            let v = post("/api/mapping-rules", r).await?;
            rule_ids.push(v["id"].as_u64().context("rule id")?);
        }
        out.push(OrgAccess {
            org_id,
            token,
            key,
            product_key,
            rule_ids,
        });
    }
    Ok(out)
}

fn serve(ts: &Path, dir: &Path, nats: Option<&str>) -> anyhow::Result<Server> {
    start_server(
        ts,
        dir,
        nats,
        &[
            ("TRAILSPARK_ADMIN_TOKEN", ADMIN),
            ("TRAILSPARK_SQL_MAX_ROWS", "100000000"),
        ],
        &[],
    )
}

fn stop(mut s: Server) -> anyhow::Result<()> {
    s.child.kill()?;
    s.child.wait()?;
    Ok(())
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A generator seeded apart from the workload, for the throughput scenarios (their events
/// must be new to the server each time).
fn fresh_events(a: &Args, salt: u64) -> Generator {
    Generator::new(Config {
        seed: a.scale.seed ^ (salt << 32),
        events: u64::MAX / 2,
        orgs: a.scale.orgs,
        ..Default::default()
    })
}

// ---------------------------------------------------------------- scenario 3

async fn ingest(ts: &Path, work: &Path, a: &Args) -> anyhow::Result<Vec<Row>> {
    let c = reqwest::Client::new();
    let limit = Some(Duration::from_secs(a.seconds));
    let mut rows = Vec::new();
    let dir = work.join("ingest-http");
    let s = serve(ts, &dir, None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    std::fs::write(work.join("access.json"), serde_json::to_vec_pretty(&orgs)?)?;
    let mut load = HttpLoad {
        base: s.base.clone(),
        orgs: orgs.clone(),
        mode: Mode::Single,
        rate: None,
        concurrency: 32,
        limit,
        clock: None,
    };
    let single = http_load(&load, fresh_events(a, 1)).await?;
    rows.push(row(
        "ingest: HTTP, one signal per request (events/s, 32 connections)",
        format!("{:.0}", single.rate()),
    ));
    load.mode = Mode::Batch(100);
    let batched = http_load(&load, fresh_events(a, 2)).await?;
    rows.push(row(
        "ingest: HTTP, batches of 100 (events/s)",
        format!("{:.0}", batched.rate()),
    ));
    caught_up(&c, &s.base, &orgs[0].token).await?;

    // Freshness at half the one-per-request maximum.
    let rate = single.rate() / 2.0;
    load.mode = Mode::Single;
    load.rate = Some(rate);
    let t0 = Instant::now();
    load.clock = Some(t0);
    let until = t0 + Duration::from_secs(a.seconds + 3);
    let poller = tokio::spawn({
        let (base, token) = (s.base.clone(), orgs[0].token.clone());
        async move { poll_positions(&base, &token, t0, until).await }
    });
    let paced = http_load(&load, fresh_events(a, 3)).await?;
    let polls = poller.await??;
    let mut f = freshness(&paced.acks, &polls);
    f.sort();
    rows.push(row(
        format!(
            "freshness: 202 → visible in the explorer at {rate:.0} events/s, p50 / p99 / p999 (ms, {} signals)",
            f.len()
        ),
        format!(
            "{:.1} / {:.1} / {:.1}",
            ms(quantile(&f, 0.5)),
            ms(quantile(&f, 0.99)),
            ms(quantile(&f, 0.999))
        ),
    ));
    stop(s)?;

    // NATS.
    if nats_server_bin().is_none() {
        bail!("nats-server is not installed (apt-get install nats-server)");
    }
    let store = work.join("ingest-nats-store");
    let (mut ns, url) = start_nats(&store)?;
    let s = serve(ts, &work.join("ingest-nats"), Some(&url))?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    let t = Instant::now();
    let events = fresh_events(a, 4)
        .filter(|e| e.kind == Kind::Signal)
        .take(a.nats_events);
    let published = nats_load(&url, &orgs, events, 256, None).await?;
    loop {
        let h: Value = c
            .get(format!("{}/healthz", s.base))
            .send()
            .await?
            .json()
            .await?;
        let cons = &h["nats"]["source_consumer"];
        if cons["pending"].as_u64() == Some(0) && cons["ack_pending"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t.elapsed();
    rows.push(row(
        "ingest: NATS JetStream → source → log (events/s, publish to all acked)",
        format!(
            "{:.0} ({} events)",
            published.accepted as f64 / drained.as_secs_f64(),
            published.accepted
        ),
    ));
    stop(s)?;
    ns.kill()?;
    ns.wait()?;
    Ok(rows)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- scenarios 4 and 5

struct Incremental {
    part_s: Vec<f64>,
    outputs: Value,
}

fn product_org_events(data: &Path, orgs: usize, part: Option<usize>, parts: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let range = part.map_or(0..parts, |p| p..p + 1);
    for p in range {
        for org in 0..orgs {
            let Ok(f) = std::fs::File::open(part_file(data, Kind::ProductOrg, org, p)) else {
                continue;
            };
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                out.push(Event {
                    org,
                    kind: Kind::ProductOrg,
                    body: line,
                });
            }
        }
    }
    out
}

fn backfill(ts: &Path, key: &str, target: &[&str], files: &[PathBuf]) -> anyhow::Result<()> {
    let files: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    if files.is_empty() {
        return Ok(());
    }
    let out = Command::new(ts)
        .args(["backfill", "--key", key])
        .args(target)
        .args(&files)
        .env("TRAILSPARK_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!(
            "trailspark backfill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("rejected=0") {
        bail!("trailspark backfill refused events: {text}");
    }
    Ok(())
}

async fn edit_rule(c: &reqwest::Client, base: &str, orgs: &[OrgAccess]) -> anyhow::Result<()> {
    let (idx, mut def) = rule_edit();
    def["reprocess"] = json!(true);
    for o in orgs {
        call(
            c,
            reqwest::Method::PUT,
            &format!("{base}/api/mapping-rules/{}", o.rule_ids[idx]),
            &o.token,
            Some(def.clone()),
        )
        .await?;
    }
    Ok(())
}

async fn incremental(ts: &Path, work: &Path, data: &Path, a: &Args) -> anyhow::Result<Incremental> {
    let c = reqwest::Client::new();
    let s = serve(ts, &work.join("incremental"), None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    let mut part_s = Vec::new();
    for p in 0..a.parts {
        let t = Instant::now();
        for (i, o) in orgs.iter().enumerate() {
            backfill(
                ts,
                &o.key,
                &["--server", &s.base],
                &[part_file(data, Kind::Signal, i, p)],
            )?;
        }
        let updates = product_org_events(data, a.scale.orgs, Some(p), a.parts);
        post_product_orgs(&s.base, &orgs, updates).await?;
        if p == a.parts / 2 {
            edit_rule(&c, &s.base, &orgs).await?;
        }
        caught_up(&c, &s.base, &orgs[0].token).await?;
        part_s.push(t.elapsed().as_secs_f64());
        eprintln!("  part {p}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let outputs = collect(&c, &s.base, &orgs).await?;
    stop(s)?;
    Ok(Incremental { part_s, outputs })
}

async fn post_product_orgs(
    base: &str,
    orgs: &[OrgAccess],
    updates: Vec<Event>,
) -> anyhow::Result<()> {
    let load = HttpLoad {
        base: base.to_string(),
        orgs: orgs.to_vec(),
        mode: Mode::Single,
        rate: None,
        concurrency: 16,
        limit: None,
        clock: None,
    };
    let n = updates.len() as u64;
    let st = http_load(&load, updates.into_iter()).await?;
    if st.errors > 0 || st.accepted != n {
        bail!("product-org updates: {} of {n} accepted", st.accepted);
    }
    Ok(())
}

struct Batch {
    backfill_s: f64,
    serve_s: f64,
    outputs: Value,
    rows: Vec<Row>,
}

async fn batch(
    ts: &Path,
    work: &Path,
    data: &Path,
    a: &Args,
    duck: &Value,
) -> anyhow::Result<Batch> {
    let c = reqwest::Client::new();
    let dir = work.join("batch");
    let s = serve(ts, &dir, None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    stop(s)?;
    let t = Instant::now();
    for (i, o) in orgs.iter().enumerate() {
        let files: Vec<PathBuf> = (0..a.parts)
            .map(|p| part_file(data, Kind::Signal, i, p))
            .collect();
        backfill(ts, &o.key, &["--data-dir", dir.to_str().unwrap()], &files)?;
    }
    let backfill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = serve(ts, &dir, None)?;
    caught_up(&c, &s.base, &orgs[0].token).await?;
    let serve_s = t.elapsed().as_secs_f64();
    let rss = rss_bytes(s.child.id());
    let unique: u64 = duck["orgs"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v["unique"].as_u64()).sum())
        .unwrap_or(0);
    let mut rows = vec![
        row(
            format!("restart-to-serving: {unique} signals in the log (s)"),
            format!("{serve_s:.1}"),
        ),
        row(
            "dataflow throughput: log replay into the read models (signals/s)",
            format!("{:.0}", unique as f64 / serve_s),
        ),
        row(
            "resident memory per million signals (MiB)",
            format!(
                "{:.0} (RSS {:.0} MiB)",
                rss as f64 / (1 << 20) as f64 / (unique as f64 / 1e6),
                rss as f64 / (1 << 20) as f64
            ),
        ),
    ];

    let t = Instant::now();
    edit_rule(&c, &s.base, &orgs).await?;
    caught_up(&c, &s.base, &orgs[0].token).await?;
    rows.push(row(
        format!(
            "rule edit with reprocessing, one rule in each of {} orgs (ms)",
            a.scale.orgs
        ),
        format!("{:.0}", ms(t.elapsed())),
    ));
    post_product_orgs(
        &s.base,
        &orgs,
        product_org_events(data, a.scale.orgs, None, a.parts),
    )
    .await?;
    caught_up(&c, &s.base, &orgs[0].token).await?;
    let outputs = collect(&c, &s.base, &orgs).await?;

    rows.extend(sql_latencies(&c, &s.base, &orgs[0], duck).await?);
    rows.push(rehydrations(&c, &s.base, &orgs[0], duck).await?);
    stop(s)?;
    Ok(Batch {
        backfill_s,
        serve_s,
        outputs,
        rows,
    })
}

async fn sql(c: &reqwest::Client, base: &str, token: &str, q: &str) -> anyhow::Result<Vec<Value>> {
    let v = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/api/sql"),
        token,
        Some(json!({ "sql": q })),
    )
    .await?;
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

/// trailspark's outputs in the baseline's shape.
async fn collect(c: &reqwest::Client, base: &str, orgs: &[OrgAccess]) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for o in orgs {
        let t = &o.token;
        let stats = call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/explorer/stats"),
            t,
            None,
        )
        .await?;
        let mut usage = serde_json::Map::new();
        for r in sql(
            c,
            base,
            t,
            "SELECT meter, CAST(sum(count) AS BIGINT) FROM usage GROUP BY meter",
        )
        .await?
        {
            usage.insert(r[0].as_str().unwrap_or("?").to_string(), r[1].clone());
        }
        // In pages: at 10M events an org's lead list is larger than one SQL answer may be.
        const PAGE: usize = 50_000;
        let mut leads = Vec::new();
        loop {
            let page = sql(
                c,
                base,
                t,
                &format!(
                    "SELECT key_kind, key_value FROM leads ORDER BY key_kind, key_value \
                     LIMIT {PAGE} OFFSET {}",
                    leads.len()
                ),
            )
            .await?;
            let n = page.len();
            leads.extend(page);
            if n < PAGE {
                break;
            }
        }
        leads.sort_by_key(|v| v.to_string());
        let mut groups = sql(
            c,
            base,
            t,
            "SELECT source, event, path, form, descriptor, content_type, count FROM signal_groups",
        )
        .await?;
        groups.sort_by_key(|v| v.to_string());
        out.insert(
            o.org_id.to_string(),
            json!({
                "unique": stats["total"],
                "pending": stats["pending"],
                "mapped": usage.get("mapped_signals").cloned().unwrap_or(json!(0)),
                "usage": usage,
                "leads": leads,
                "groups": groups,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Differences between trailspark's outputs and DuckDB's.
fn compare(phase: &str, ours: &Value, theirs: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let empty = serde_json::Map::new();
    let t = theirs.as_object().unwrap_or(&empty);
    let o = ours.as_object().unwrap_or(&empty);
    for (org, want) in t {
        let Some(got) = o.get(org) else {
            diffs.push(format!("{phase}: org {org} missing"));
            continue;
        };
        for f in ["unique", "pending", "mapped"] {
            if got[f].as_u64() != want[f].as_u64() {
                diffs.push(format!(
                    "{phase}: org {org} {f}: trailspark {} DuckDB {}",
                    got[f], want[f]
                ));
            }
        }
        for m in ["raw_signals", "staged_signals", "mapped_signals", "leads"] {
            if got["usage"][m].as_u64().unwrap_or(0) != want["usage"][m].as_u64().unwrap_or(0) {
                diffs.push(format!(
                    "{phase}: org {org} usage {m}: trailspark {} DuckDB {}",
                    got["usage"][m], want["usage"][m]
                ));
            }
        }
        for f in ["leads", "groups"] {
            let set = |v: &Value| -> BTreeMap<String, usize> {
                let mut m = BTreeMap::new();
                for x in v.as_array().into_iter().flatten() {
                    *m.entry(x.to_string()).or_insert(0) += 1;
                }
                m
            };
            let (g, w) = (set(&got[f]), set(&want[f]));
            if g != w {
                let only_ours: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).take(3).collect();
                let only_theirs: Vec<_> =
                    w.keys().filter(|k| !g.contains_key(*k)).take(3).collect();
                diffs.push(format!(
                    "{phase}: org {org} {f}: {} vs {} rows; only trailspark {only_ours:?}; only DuckDB {only_theirs:?}",
                    g.len(),
                    w.len()
                ));
            }
        }
    }
    diffs
}

async fn timed_median(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
) -> anyhow::Result<(f64, usize)> {
    let mut rows = sql(c, base, token, q).await?.len();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rows = sql(c, base, token, q).await?.len();
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok((times[2], rows))
}

async fn sql_latencies(
    c: &reqwest::Client,
    base: &str,
    o: &OrgAccess,
    duck: &Value,
) -> anyhow::Result<Vec<Row>> {
    let lead = sql(
        c,
        base,
        &o.token,
        "SELECT lead_id FROM leads ORDER BY signals DESC, lead_id LIMIT 1",
    )
    .await?;
    let lead = lead
        .first()
        .and_then(|r| r[0].as_str())
        .context("no lead in org 1")?
        .to_string();
    let anon = duck["pending_anonymous_org1"][0][0]
        .as_str()
        .context("no pending anonymous visitor in org 1")?
        .to_string();
    let queries = [
        (
            "count by event group",
            "SELECT source, event_type, count(*) AS n FROM signals GROUP BY source, event_type"
                .to_string(),
        ),
        (
            "lead timeline (newest 100, with payloads)",
            format!(
                "SELECT id, event_type, event_at, payload FROM signals WHERE lead_id = '{lead}' \
                 ORDER BY event_at DESC LIMIT 100"
            ),
        ),
        (
            "anonymous_id lookup",
            format!("SELECT id, event_type, event_at FROM anonymous_signals WHERE anonymous_id = '{anon}'"),
        ),
    ];
    let mut rows = Vec::new();
    for (name, q) in queries {
        let (m, n) = timed_median(c, base, &o.token, &q).await?;
        rows.push(row(
            format!("SQL (org 1, POST /api/sql, median of 5): {name} (ms, {n} rows)"),
            format!("{m:.1}"),
        ));
    }
    Ok(rows)
}

/// Identifies for the largest pending anonymous visitors of org 1: each timed from the POST
/// to the read models reflecting it, and checked: the new lead holds the visitor's signals.
async fn rehydrations(
    c: &reqwest::Client,
    base: &str,
    o: &OrgAccess,
    duck: &Value,
) -> anyhow::Result<Row> {
    let visitors = duck["pending_anonymous_org1"]
        .as_array()
        .context("pending_anonymous_org1")?;
    let mut times = Vec::new();
    let mut signals = 0;
    for (i, v) in visitors.iter().take(20).enumerate() {
        let anon = v[0].as_str().context("anonymous id")?;
        let n = v[1].as_u64().context("count")?;
        let email = format!("rehydrated{i}@signalmark.example");
        let t = Instant::now();
        let ack = c
            .post(format!("{base}/api/signal-staging/webhook/{}", o.key))
            .json(
                &json!({"type": "identify", "userId": format!("rh-{i}"), "anonymousId": anon,
                          "messageId": format!("signalmark-rehydrate-{i}"),
                          "traits": {"email": email}}),
            )
            .send()
            .await?
            .json::<Value>()
            .await?;
        let pos = ack["log_position"].as_u64().context("log_position")?;
        call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/explorer/stats?wait_for={pos}"),
            &o.token,
            None,
        )
        .await?;
        times.push(ms(t.elapsed()));
        let lead = call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/leads?email={}", email.replace('@', "%40")),
            &o.token,
            None,
        )
        .await?;
        let got = lead_signal_count(&lead);
        if got != Some(n + 1) {
            bail!(
                "identify of {anon}: the lead has {got:?} signals, expected {} ({lead})",
                n + 1
            );
        }
        signals += n;
    }
    times.sort_by(f64::total_cmp);
    let k = times.len().max(1);
    Ok(row(
        format!(
            "identify rehydrating a pending visitor (ms, median of {}; {:.0} signals each on average, checked)",
            times.len(),
            signals as f64 / k as f64
        ),
        format!("{:.1}", times.get(times.len() / 2).copied().unwrap_or(0.0)),
    ))
}

/// The signal count of a `GET /api/leads?email=` answer (a lead, or a list of them).
fn lead_signal_count(v: &Value) -> Option<u64> {
    let lead = if v["leads"].is_array() {
        v["leads"].get(0)?.clone()
    } else {
        v.clone()
    };
    lead["signals"]
        .as_u64()
        .or_else(|| lead["signal_count"].as_u64())
        .or_else(|| lead["counts"]["signals"].as_u64())
}
