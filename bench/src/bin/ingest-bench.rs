//! Load test of the webhook endpoint, against a baseline in the same run.
//!
//! Runs, one after the other on this machine, with the same load generator:
//! 1. `baseline`: a plain warp server (a separate process) that answers every POST with the
//!    202 body and does nothing else: the cost of HTTP alone;
//! 2. `trailspark E1`: `trailspark serve` on its embedded defaults (journal, group-committed
//!    fsync), single-event webhooks;
//! 3. `trailspark E3 x100`: batches of 100 signals;
//! 4. `trailspark /v1/b x100`: the same 100 events as Segment track calls in one `/v1/b`
//!    batch, `text/plain` with `writeKey` inside, as analytics.js and the snippet send;
//! 5. `trailspark E1 (JetStream)`: with `--nats` against a nats-server of its own, when one is
//!    installed;
//! 6. `e1-obs-off`, `e1-obs-metrics`, `e1-obs-log`, `e1-obs-on` (only when named in
//!    `--only`): E1 on a server without metrics and access log (`TRAILSPARK_METRICS=false`,
//!    `TRAILSPARK_LOG=warn`), with metrics only (scraped every second), with the JSON access
//!    log only (written to a file), and with both: what observability costs. Each runs
//!    `--repeat` times, in turn, on fresh servers.
//!
//! Each request carries a unique payload, so dedup never short-cuts the work. Prints a
//! markdown table with requests/s, signals/s, latency percentiles, and the ratio to baseline.
//!
//! `cargo build --release -p trailspark -p trailspark-bench && target/release/ingest-bench`

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use trailspark_bench::harness::{
    free_port, nats_server_bin, start_nats, start_server_logged, start_trailspark, trailspark_bin,
    wait_port,
};

#[derive(Parser)]
struct Args {
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The trailspark binary (default: next to this one).
    #[arg(long)]
    trailspark: Option<std::path::PathBuf>,
    /// Run only these scenarios (comma-separated: baseline, e1, e3, v1b, nats, e1-obs-off,
    /// e1-obs-metrics, e1-obs-log, e1-obs-on); default all but the e1-obs ones.
    /// The ratio column is against the first one run.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The server's log format in the e1-obs scenarios: json or text.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// Runs of each e1-obs scenario, taken in turn.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Internal: serve the baseline on this address.
    #[arg(long, hide = true)]
    serve_baseline: Option<SocketAddr>,
}

/// The observability scenarios: (name, metrics on, access log on), run in this order.
const OBSERVABILITY: [(&str, bool, bool); 4] = [
    ("e1-obs-off", false, false),
    ("e1-obs-metrics", true, false),
    ("e1-obs-log", false, true),
    ("e1-obs-on", true, true),
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve_baseline {
        return serve_baseline(addr);
    }
    let exe = std::env::current_exe()?;
    let ts = trailspark_bin(args.trailspark.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let run = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    if run("baseline") {
        let port = free_port();
        let mut baseline = Command::new(&exe)
            .args(["--serve-baseline", &format!("127.0.0.1:{port}")])
            .spawn()?;
        wait_port(port)?;
        let base_url = format!("http://127.0.0.1:{port}/api/signal-staging/webhook/sk_x");
        rows.push((
            "baseline: plain warp answering 202",
            rt.block_on(load(&base_url, 1, Shape::Generic, &args))?,
        ));
        baseline.kill()?;
        baseline.wait()?;
    }

    let dir = tempfile::tempdir()?;
    let (mut child, base, key) = start_trailspark(&ts, dir.path(), None, &[])?;
    if run("e1") {
        let e1 = format!("{base}/api/signal-staging/webhook/{key}");
        rows.push((
            "trailspark E1 single event (journal)",
            rt.block_on(load(&e1, 1, Shape::Generic, &args))?,
        ));
    }
    if run("e3") {
        let e3 = format!("{base}/api/signal-staging/webhook/{key}/batch");
        rows.push((
            "trailspark E3 batch of 100 (journal)",
            rt.block_on(load(&e3, 100, Shape::Generic, &args))?,
        ));
    }
    if run("v1b") {
        let v1b = format!("{base}/v1/b");
        rows.push((
            "trailspark /v1/b batch of 100, text/plain (journal)",
            rt.block_on(load(&v1b, 100, Shape::Segment(key.clone()), &args))?,
        ));
    }
    child.kill()?;
    child.wait()?;

    if run("nats") && nats_server_bin().is_some() {
        let store = tempfile::tempdir()?;
        let (mut ns, nats_url) = start_nats(store.path())?;
        let dir = tempfile::tempdir()?;
        let (mut child, base, key) = start_trailspark(&ts, dir.path(), Some(&nats_url), &[])?;
        let e1 = format!("{base}/api/signal-staging/webhook/{key}");
        rows.push((
            "trailspark E1 single event (JetStream)",
            rt.block_on(load(&e1, 1, Shape::Generic, &args))?,
        ));
        child.kill()?;
        child.wait()?;
        ns.kill()?;
        ns.wait()?;
    }

    let named = |name: &str| args.only.iter().any(|o| o == name);
    for _ in 0..args.repeat {
        for (name, metrics, log) in OBSERVABILITY {
            if !named(name) {
                continue;
            }
            let dir = tempfile::tempdir()?;
            let log_file = dir.path().join("server.log");
            let env: &[(&str, &str)] = &[
                ("TRAILSPARK_METRICS", if metrics { "true" } else { "false" }),
                ("TRAILSPARK_LOG", if log { "info" } else { "warn" }),
                ("TRAILSPARK_LOG_FORMAT", args.log_format.as_str()),
            ];
            let s = start_server_logged(&ts, dir.path(), None, env, &[], Some(&log_file))?;
            let key = s.key.clone().context("no first-start key")?;
            let e1 = format!("{}/api/signal-staging/webhook/{key}", s.base);
            let scraping = metrics.then(|| scrape_every_second(format!("{}/metrics", s.base)));
            let text = args.log_format == "text";
            let label = match (metrics, log) {
                (false, false) => "trailspark E1, metrics and access log off",
                (true, false) => "trailspark E1, metrics on (scraped every 1 s), access log off",
                (false, true) if text => "trailspark E1, metrics off, text access log on",
                (false, true) => "trailspark E1, metrics off, JSON access log on",
                (true, true) if text => {
                    "trailspark E1, metrics (scraped every 1 s) and text access log on"
                }
                (true, true) => "trailspark E1, metrics (scraped every 1 s) and JSON access log on",
            };
            rows.push((label, rt.block_on(load(&e1, 1, Shape::Generic, &args))?));
            let scrapes = match scraping {
                Some((stop, t)) => {
                    stop.store(true, Ordering::Relaxed);
                    t.join()
                        .map_err(|_| anyhow::anyhow!("scraper panicked"))??
                }
                None => 0,
            };
            let lines = std::fs::read_to_string(&log_file)?.lines().count();
            eprintln!("{label}: {scrapes} scrapes, {lines} log lines");
            drop(s);
        }
    }

    let base_rps = rows.first().map_or(1.0, |r| r.1.rps);
    println!(
        "| scenario | requests/s | signals/s | p50 ms | p99 ms | non-2xx | vs baseline (req/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
            r.rps,
            r.rps * r.per_request as f64,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.rps / base_rps
        );
    }
    println!(
        "\n{} s per scenario, {} connections, machine: {} cores",
        args.seconds,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

/// Scrapes `url` every second on a thread of its own until told to stop; answers how many
/// scrapes succeeded.
fn scrape_every_second(
    url: String,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<anyhow::Result<u64>>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) {
            let r = client.get(&url).send()?;
            anyhow::ensure!(r.status().is_success(), "scrape answered {}", r.status());
            r.bytes()?;
            n += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(n)
    });
    (stop, t)
}

struct LoadResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    per_request: usize,
}

/// What a request carries: generic webhook events, or Segment track calls in a `/v1/b` batch
/// with the write key inside (the snippet's and analytics.js's shape).
#[derive(Clone)]
enum Shape {
    Generic,
    Segment(String),
}

fn body(n: u64, per_request: usize, shape: &Shape) -> String {
    let one = |i: u64| {
        format!(
            r#"{{"email":"user{i}@example.com","event":"form_submission","properties":{{"form_name":"Request Demo","page_url":"https://yoursite.com/demo","n":{i}}}}}"#
        )
    };
    if let Shape::Segment(key) = shape {
        let items: Vec<String> = (0..per_request as u64)
            .map(|k| {
                let i = n * per_request as u64 + k;
                format!(
                    r#"{{"type":"track","event":"form_submission","messageId":"m-{i}","anonymousId":"a-{i}","context":{{"traits":{{"email":"user{i}@example.com"}}}},"properties":{{"form_name":"Request Demo","page_url":"https://yoursite.com/demo","n":{i}}}}}"#
                )
            })
            .collect();
        return format!(
            r#"{{"writeKey":"{key}","batch":[{}],"sentAt":"2026-12-07T00:00:00Z"}}"#,
            items.join(",")
        );
    }
    if per_request == 1 {
        one(n)
    } else {
        let items: Vec<String> = (0..per_request as u64)
            .map(|k| one(n * per_request as u64 + k))
            .collect();
        format!("[{}]", items.join(","))
    }
}

/// Closed-loop load: `concurrency` tasks, each sending its next request when the last one
/// answered, for the configured time (after a one-second warm-up).
async fn load(
    url: &str,
    per_request: usize,
    shape: Shape,
    args: &Args,
) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let counter = Arc::new(AtomicU64::new(rand_seed()));
    let errors = Arc::new(AtomicU64::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, counter, errors, shape) = (
            client.clone(),
            url.to_string(),
            counter.clone(),
            errors.clone(),
            shape.clone(),
        );
        let ctype = match shape {
            Shape::Generic => "application/json",
            Shape::Segment(_) => "text/plain",
        };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let r = client
                    .post(&url)
                    .header("content-type", ctype)
                    .body(body(n, per_request, &shape))
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if now >= warm_until {
                    if ok {
                        lat.push(now.elapsed().as_micros() as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Ok(LoadResult {
        rps: all.len() as f64 / args.seconds as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
        per_request,
    })
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_000
        * 1000
}

/// The baseline: the same JSON 202 answer, with no parsing, auth or durability.
fn serve_baseline(addr: SocketAddr) -> anyhow::Result<()> {
    use warp::Filter;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let route = warp::post().and(warp::body::bytes()).map(|_b: warp::hyper::body::Bytes| {
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({"id": 1, "message": "Signal received and queued for processing", "source": "generic", "cold_storage": false})),
                warp::http::StatusCode::ACCEPTED,
            )
        });
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        warp::serve(route).incoming(listener).run().await;
    });
    Ok(())
}
