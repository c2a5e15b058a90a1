//! NATS source benchmark: signals published to JetStream by a producer, through trailspark's
//! source, log and dataflow, to the read models, against NATS alone on the same machine.
//!
//! 1. Baseline: JetStream by itself: `--count` messages published with acks (same window as
//!    the producer) to a stream and read back by a durable pull consumer with explicit acks:
//!    what any consumer of NATS pays before doing any work.
//! 2. Throughput: `trailspark-load` publishes `--count` signals as fast as acks allow; the
//!    clock stops when the explorer's statistics count all of them (source + log append +
//!    dataflow + read models).
//! 3. Latency at a fixed offered rate (`--rate`): every signal is mapped by a rule, so each
//!    makes a `signal.mapped` change event; latency is the event's arrival at a subscriber
//!    minus the signal's JetStream receipt time (`received_at`, ms resolution): NATS publish
//!    to read-model update to event out.
//!
//! Needs nats-server and the release binaries: `cargo build --release -p trailspark`, then
//! `cargo run --release -p trailspark-bench --bin nats-bench`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use trailspark_bench::harness::{start_nats, start_trailspark};

#[derive(Parser)]
struct Args {
    /// Signals for the throughput runs.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Offered rate (signals/s) for the latency run.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

const ADMIN: &str = "ts_bench_admin_token_0123456789";

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn total(base: &str) -> u64 {
    http()
        .get(format!("{base}/api/explorer/stats"))
        .bearer_auth(ADMIN)
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| v["total"].as_u64())
        .unwrap_or(0)
}

fn rule(base: &str, event: &str) -> anyhow::Result<()> {
    let r = http()
        .post(format!("{base}/api/mapping-rules"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": event, "signal_type": "Sales Event",
            "conditions": [{"field": "event_name", "op": "equals", "value": event}],
            "mappings": [{"field": "email", "path": "email"}]}))
        .send()?;
    if r.status() != 201 {
        bail!("creating a rule: {}", r.status());
    }
    Ok(())
}

/// NATS alone: publish `n` with acks (window 256), then consume them with acks.
async fn baseline(url: &str, n: u64) -> anyhow::Result<f64> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            ..Default::default()
        })
        .await?;
    let t = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        let body = json!({"messageId": format!("b-{i}"), "event": "page_view",
                          "email": format!("user{}@load.example", i % 1000)})
        .to_string();
        acks.push_back(js.publish("bench.1.web", body.into()).await?);
        if acks.len() >= 256 {
            acks.pop_front().unwrap().await?;
        }
    }
    for a in acks {
        a.await?;
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let mut got = 0;
    while got < n {
        let m = msgs.next().await.context("consumer ended")??;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        got += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let ts = exe.with_file_name("trailspark");
    let load = exe.with_file_name("trailspark-load");
    if !ts.exists() || !load.exists() {
        bail!("build the binaries first: cargo build --release -p trailspark");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = tempfile::tempdir()?;
    let (mut nats, url) = start_nats(store.path())?;

    let base_rate = rt.block_on(baseline(&url, args.count))?;
    println!(
        "baseline: JetStream publish+consume, {} msgs: {base_rate:.0} msgs/s",
        args.count
    );

    let dir = tempfile::tempdir()?;
    let (mut server, base, key) = start_trailspark(
        &ts,
        dir.path(),
        Some(&url),
        &[("TRAILSPARK_ADMIN_TOKEN", ADMIN)],
    )?;
    rule(&base, "demo_request")?;
    rule(&base, "page_view")?;
    let t = Instant::now();
    let out = Command::new(&load)
        .args([
            "--nats",
            &url,
            "--key",
            &key,
            "--count",
            &args.count.to_string(),
        ])
        .args(["--prefix", "tp", "--dup-every", "0"])
        .output()?;
    if !out.status.success() {
        bail!("trailspark-load failed");
    }
    let published = t.elapsed();
    while total(&base) < args.count {
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t.elapsed();
    let rate = args.count as f64 / elapsed.as_secs_f64();
    println!(
        "trailspark: {} signals NATS publish -> read models in {:.2} s: {rate:.0} signals/s \
         (producer done after {:.2} s); ratio to baseline {:.2}",
        args.count,
        elapsed.as_secs_f64(),
        published.as_secs_f64(),
        rate / base_rate
    );

    // Latency at a fixed rate, once the throughput run's change events are all out.
    let idle = || -> bool {
        http()
            .get(format!("{base}/healthz"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|h| {
                h["nats"]["events_backlog"] == 0 && h["nats"]["source_consumer"]["ack_pending"] == 0
            })
    };
    while !idle() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let n = (args.rate * args.seconds as f64) as u64;
    let client = rt.block_on(async_nats::connect(&url))?;
    let mut sub = rt.block_on(client.subscribe("trailspark.events.1.signal_mapped"))?;
    let mut producer = Command::new(&load)
        .args(["--nats", &url, "--key", &key, "--count", &n.to_string()])
        .args(["--prefix", "lat", "--dup-every", "0", "--start"])
        .arg(args.count.to_string())
        .args(["--rate", &args.rate.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let lat = rt.block_on(async {
        let mut lat = Vec::with_capacity(n as usize);
        let deadline = Instant::now() + Duration::from_secs(args.seconds + 120);
        while (lat.len() as u64) < n && Instant::now() < deadline {
            let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), sub.next()).await
            else {
                break;
            };
            let now = chrono::Utc::now().timestamp_micros();
            let v: Value = serde_json::from_slice(&m.payload)?;
            if let Some(r) = v["data"]["received_at"].as_i64() {
                lat.push((now - r * 1000) as f64 / 1000.0);
            }
        }
        anyhow::Ok(lat)
    })?;
    producer.wait()?;
    let mut lat = lat;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "latency at {:.0} signals/s offered ({} signals, {} events): p50 {:.1} ms, p99 {:.1} ms",
        args.rate,
        n,
        lat.len(),
        pct(0.50),
        pct(0.99)
    );
    server.kill()?;
    server.wait()?;
    nats.kill()?;
    nats.wait()?;
    Ok(())
}
