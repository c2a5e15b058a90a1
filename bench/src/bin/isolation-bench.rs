//! Tenant isolation under hostile SQL: org B's single-event ingestion latency
//! while org A runs the worst queries it can, against org B alone in the same run.
//!
//! 1. `baseline`: org B posts E1 signals at a steady rate, nothing else runs;
//! 2. `under attack`: the same, while org A's clients loop over the queries that took the
//!    server down or starved it before (a 1,000-term expression, `repeat`/`lpad` of a
//!    gigabyte, a doubling recursive CTE, CROSS JOINs over `generate_series`), each as fast as
//!    the server answers.
//!
//! Prints a markdown table: signals posted, latency p50/p99/max, and the attack's answers by
//! code (every one must be a 4xx; the run fails otherwise).
//!
//! `cargo build --release -p trailspark -p trailspark-bench && target/release/isolation-bench`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use trailspark_bench::harness::{start_server, trailspark_bin};

#[derive(Parser)]
struct Args {
    /// Seconds per scenario.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Org B's signals per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Org A's concurrent SQL clients.
    #[arg(long, default_value_t = 8)]
    attackers: usize,
    /// The trailspark binary (default: next to this one).
    #[arg(long)]
    trailspark: Option<std::path::PathBuf>,
}

const ADMIN: &str = "ts_bench_admin_token_0123456789";

fn attacks() -> Vec<String> {
    vec![
        format!("SELECT {}", vec!["1"; 1000].join("+")),
        "SELECT length(repeat('x', 1000000000))".into(),
        "SELECT length(lpad('x', 1000000000))".into(),
        "SELECT length(repeat('x', 2100000000))".into(),
        "WITH RECURSIVE t(n, s) AS (SELECT 1, repeat('x', 1000) UNION ALL \
         SELECT n + 1, s || s FROM t WHERE n < 40) SELECT max(length(s)) FROM t"
            .into(),
        "SELECT count(*) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b"
            .into(),
    ]
}

struct Run {
    posted: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    answers: BTreeMap<String, usize>,
}

fn run(base: &str, key: &str, attacker: Option<&str>, args: &Args) -> anyhow::Result<Run> {
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let threads: Vec<_> = attacker
        .map(|token| {
            (0..args.attackers)
                .map(|i| {
                    let (base, token) = (base.to_string(), token.to_string());
                    std::thread::spawn(move || -> anyhow::Result<BTreeMap<String, usize>> {
                        let c = reqwest::blocking::Client::builder()
                            .timeout(Duration::from_secs(120))
                            .build()?;
                        let queries = attacks();
                        let mut answers = BTreeMap::new();
                        let mut n = i;
                        while Instant::now() < stop {
                            let r = c
                                .post(format!("{base}/api/sql"))
                                .bearer_auth(&token)
                                .json(&json!({"sql": queries[n % queries.len()]}))
                                .send()?;
                            n += 1;
                            let status = r.status().as_u16();
                            let body: Value = r.json().unwrap_or(Value::Null);
                            let code = body["error"].as_str().unwrap_or("").to_string();
                            anyhow::ensure!((400..500).contains(&status), "{status} {body}");
                            *answers.entry(format!("{status} {code}")).or_default() += 1;
                            if status == 429 {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        Ok(answers)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let c = reqwest::blocking::Client::new();
    let url = format!("{base}/api/signal-staging/webhook/{key}");
    let gap = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut lat = Vec::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    while Instant::now() < stop {
        let t = Instant::now();
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"email":"b{n}@b.io","event":"iso","attacked":{}}}"#,
                attacker.is_some()
            ))
            .send()?;
        anyhow::ensure!(r.status() == 202, "E1 answered {}", r.status());
        lat.push(t.elapsed());
        n += 1;
        next += gap;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let mut answers = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().expect("attacker thread")? {
            *answers.entry(k).or_default() += v;
        }
    }
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Ok(Run {
        posted: lat.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: *lat.last().unwrap(),
        answers,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ts = trailspark_bin(args.trailspark.as_deref())?;
    let dir = tempfile::tempdir()?;
    let env = [
        ("TRAILSPARK_ADMIN_TOKEN", ADMIN),
        ("TRAILSPARK_SQL_TIMEOUT_SECS", "5"),
    ];
    let s = start_server(&ts, dir.path(), None, &env, &[])?;
    let key = s.key.clone().expect("first-start key");
    let c = reqwest::blocking::Client::new();
    let org: Value = c
        .post(format!("{}/api/admin/orgs", s.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "attacker"}))
        .send()?
        .json()?;
    let attacker = org["owner_token"]
        .as_str()
        .expect("owner token")
        .to_string();

    let alone = run(&s.base, &key, None, &args)?;
    let attacked = run(&s.base, &key, Some(&attacker), &args)?;
    println!(
        "| org B's E1 at {}/s, {} s each | signals | p50 | p99 | max |",
        args.rate, args.seconds
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("alone (baseline)", &alone),
        ("while org A attacks", &attacked),
    ] {
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            r.posted,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3
        );
    }
    println!(
        "\np99 ratio (attacked / alone): {:.2}",
        attacked.p99.as_secs_f64() / alone.p99.as_secs_f64()
    );
    println!("\norg A's answers ({} clients):", args.attackers);
    for (k, v) in &attacked.answers {
        println!("- {k}: {v}");
    }
    Ok(())
}
