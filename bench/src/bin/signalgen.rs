//! `signalgen`: signalmark's workload (see `trailspark_bench::workload`), as NDJSON files or
//! as a live load against a running server.
//!
//! ```sh
//! signalgen --events 1000000 --out work/           # NDJSON: signals-org<N>-part<K>.ndjson, …
//! signalgen --events 100000 --http http://127.0.0.1:8080 --access access.json --batch 100
//! signalgen --events 100000 --nats nats://127.0.0.1:4222 --access access.json
//! ```
//!
//! `access.json` lists, per org of the workload, `{"org_id", "token", "key", "product_key",
//! "rule_ids"}` (signalmark writes one for the servers it sets up).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use trailspark_bench::load::{http_load, nats_load, HttpLoad, Mode, OrgAccess};
use trailspark_bench::workload::{write_ndjson, Generator, Scale};

#[derive(Parser)]
#[command(name = "signalgen", about = "Generate signalmark's workload")]
struct Args {
    #[command(flatten)]
    scale: Scale,
    /// Write NDJSON files here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --out: consecutive parts per org (incremental batches).
    #[arg(long, default_value_t = 10)]
    parts: usize,
    /// Send to this server's webhooks instead.
    #[arg(long)]
    http: Option<String>,
    /// Publish to this NATS server instead.
    #[arg(long)]
    nats: Option<String>,
    /// Keys and tokens per org (JSON list), for --http and --nats.
    #[arg(long)]
    access: Option<PathBuf>,
    /// With --http: signals per request (1: E1, more: E3 batches).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Events per second (0: as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Requests in flight (HTTP) or publishes awaiting their ack (NATS).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many seconds (0: when the workload ends).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = a.scale.config();
    if let Some(dir) = &a.out {
        let m = write_ndjson(&cfg, a.parts, dir)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let Some(path) = &a.access else {
        bail!("give --out DIR, or --http/--nats with --access FILE");
    };
    let orgs: Vec<OrgAccess> = serde_json::from_slice(&std::fs::read(path)?)?;
    if orgs.len() < a.scale.orgs {
        bail!(
            "{} lists {} orgs; the workload has {}",
            path.display(),
            orgs.len(),
            a.scale.orgs
        );
    }
    let limit = (a.seconds > 0).then(|| Duration::from_secs(a.seconds));
    let stats = if let Some(base) = a.http {
        let load = HttpLoad {
            base,
            orgs,
            mode: if a.batch > 1 {
                Mode::Batch(a.batch)
            } else {
                Mode::Single
            },
            rate: (a.rate > 0.0).then_some(a.rate),
            concurrency: a.concurrency,
            limit,
            clock: None,
        };
        http_load(&load, Generator::new(cfg)).await?
    } else if let Some(url) = a.nats {
        nats_load(&url, &orgs, Generator::new(cfg), a.concurrency, limit).await?
    } else {
        bail!("give --http URL or --nats URL");
    };
    println!(
        "{}",
        serde_json::json!({"sent": stats.sent, "accepted": stats.accepted, "errors": stats.errors,
                           "seconds": stats.elapsed.as_secs_f64(), "events_per_s": stats.rate()})
    );
    Ok(())
}
