//! Lead evaluation's costs, each against a baseline measured in the same run:
//!
//! 1. **scorer**: evaluations per second of the deterministic scorer (score and reasoning)
//!    over synthetic leads, against serializing each lead's evaluation context as JSON (the
//!    least an LLM call costs before it leaves the process);
//! 2. **high intent**: from a high-intent signal's 202 to its evaluation being readable
//!    (p50/p99), against the same signal path without evaluation (202 → visible in the
//!    read models);
//! 3. **eligibility in the replay** (with `--data`, a signalmark batch directory): replay
//!    entries per second and resident memory with the eligibility stage and without it
//!    (`TRAILSPARK_EVALUATION=false`), alternating, and the difference per lead.
//!
//! `cargo build --release -p trailspark -p trailspark-bench && target/release/evaluation-bench
//! [--data /tmp/sm1M/batch]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use trailspark_bench::harness::{start_server, trailspark_bin};
use trailspark_core::rules::SignalType;
use trailspark_core::scoring::{Criteria, EmployeeRange, SignalCriterion};
use trailspark_operators::scorer::{
    reasoning, score, AccountInput, LeadInput, ProductOrgInput, SignalInput,
};

#[derive(Parser)]
struct Args {
    /// Synthetic leads the scorer scores per round.
    #[arg(long, default_value_t = 20_000)]
    leads: usize,
    /// Leads whose high-intent latency is measured.
    #[arg(long, default_value_t = 200)]
    latency_leads: usize,
    /// A data directory to replay with and without eligibility (signalmark's `batch`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The admin token the data directory's server used (signalmark's).
    #[arg(long, default_value = "signalmark-admin-token-3f9c2a7e51d04b86")]
    data_admin: String,
    /// The trailspark binary (default: next to this one).
    #[arg(long)]
    trailspark: Option<PathBuf>,
}

const DAY: i64 = 86_400_000;
const ADMIN: &str = "ts_bench_admin_token_0123456789";

fn criteria() -> Criteria {
    Criteria {
        industries: vec!["saas".into(), "software".into()],
        excluded_industries: vec!["education".into()],
        employee_ranges: vec![EmployeeRange {
            min: Some(200),
            max: Some(1000),
        }],
        regions: vec!["north america".into()],
        seniorities: vec!["vp".into(), "head".into(), "director".into()],
        titles: vec!["marketing".into(), "revenue".into()],
        excluded_titles: vec!["student".into()],
        positive_signals: vec![SignalCriterion {
            name: Some("demo".into()),
            signal_type: None,
            weight: 9,
        }],
        negative_signals: vec![SignalCriterion {
            name: Some("careers".into()),
            signal_type: None,
            weight: 5,
        }],
        ..Criteria::default()
    }
}

fn synthetic(n: usize, seed: u64) -> Vec<LeadInput> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = 1_800_000_000_000i64;
    let industries = ["B2B SaaS", "Software", "Education", "Retail", "Fintech"];
    let titles = [
        "VP Marketing",
        "Head of Revenue",
        "Engineer",
        "Student",
        "Director of Sales",
    ];
    let names = [
        "Demo request",
        "Pricing page",
        "Careers page",
        "Feature used",
        "Webinar",
    ];
    let types = [
        SignalType::FormFill,
        SignalType::PageView,
        SignalType::PageView,
        SignalType::ProductActivity,
        SignalType::EmailClick,
    ];
    (0..n)
        .map(|i| {
            let signals = (0..rng.random_range(3..30))
                .map(|_| {
                    let k = rng.random_range(0..names.len());
                    SignalInput {
                        name: names[k].into(),
                        signal_type: types[k],
                        high_intent: k == 0,
                        event_at: now - rng.random_range(0..90) * DAY,
                    }
                })
                .collect();
            LeadInput {
                email: Some(format!("p{i}@acme{}.com", i % 97)),
                title: rng
                    .random_bool(0.8)
                    .then(|| titles[i % titles.len()].into()),
                account: AccountInput {
                    industry: rng
                        .random_bool(0.7)
                        .then(|| industries[i % industries.len()].into()),
                    employee_count: rng.random_bool(0.7).then(|| rng.random_range(5..5000)),
                    region: rng.random_bool(0.7).then(|| "North America".into()),
                    ..AccountInput::default()
                },
                product_orgs: if rng.random_bool(0.3) {
                    vec![ProductOrgInput {
                        product_org_id: format!("ws_{i}"),
                        user_count: Some(rng.random_range(1..40)),
                        mrr: Some(rng.random_range(0..100_000)),
                        trial_status: Some("active".into()),
                        last_active_at: Some(now - rng.random_range(0..60) * DAY),
                        ..ProductOrgInput::default()
                    }]
                } else {
                    vec![]
                },
                signals,
                now,
                lookback_days: 90,
            }
        })
        .collect()
}

/// What an LLM call would be sent for the lead: its context as JSON.
fn context(l: &LeadInput) -> Value {
    json!({
        "lead": {"email": l.email, "title": l.title},
        "account": {"industry": l.account.industry, "employeeCount": l.account.employee_count,
                    "region": l.account.region},
        "signals": l.signals.iter().map(|s| json!({"name": s.name, "type": s.signal_type,
            "highIntent": s.high_intent, "occurredAt": s.event_at})).collect::<Vec<_>>(),
        "productOrgInfo": l.product_orgs.iter().map(|p| json!({"productOrgId": p.product_org_id,
            "userCount": p.user_count, "mrr": p.mrr})).collect::<Vec<_>>(),
    })
}

fn scorer(args: &Args) -> Vec<String> {
    let leads = synthetic(args.leads, 7);
    let c = criteria();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    let mut hot = 0;
    for _ in 0..3 {
        let t = Instant::now();
        for l in &leads {
            let s = score(l, &c);
            hot += usize::from(s.score == trailspark_core::scoring::Score::Hot);
            std::hint::black_box(reasoning(&s, s.score, 70));
        }
        ours.push(leads.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for l in &leads {
            std::hint::black_box(context(l).to_string());
        }
        base.push(leads.len() as f64 / t.elapsed().as_secs_f64());
    }
    ours.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    let (o, b) = (ours[1], base[1]);
    vec![format!(
        "| deterministic scorer, score + reasoning (evaluations/s, median of 3 rounds of {} leads; {:.0}% hot) | {o:.0} | {b:.0} (serialize the context JSON) | {:.2} |",
        leads.len(),
        100.0 * hot as f64 / (3 * leads.len()) as f64,
        o / b
    )]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(args: &Args, bin: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let s = start_server(
        bin,
        dir.path(),
        None,
        &[
            ("TRAILSPARK_ADMIN_TOKEN", ADMIN),
            ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
        ],
        &[],
    )?;
    let (base, key) = (s.base.clone(), s.key.clone().context("no key")?);
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let post = |path: &str, body: Value| -> anyhow::Result<Value> {
        Ok(c.post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()?
            .json()?)
    };
    for (name, t, event, high) in [
        ("Demo request", "Form Fill", "Demo Requested", true),
        ("Pricing page", "Page View", "Pricing Viewed", false),
        ("Feature used", "Product Activity", "Feature Used", false),
    ] {
        post(
            "/api/mapping-rules",
            json!({"name": name, "signal_type": t, "high_intent": high,
            "conditions": [{"field": "event", "op": "equals", "value": event}],
            "mappings": [{"field": "email", "path": "email"}]}),
        )?;
    }
    post(
        "/api/icp-models",
        json!({"name": "ICP", "account_profile":
        "B2B SaaS companies in North America with 200-1000 employees."}),
    )?;
    let n = args.latency_leads;
    let mut batch = Vec::new();
    for i in 0..n {
        for (k, e) in ["Pricing Viewed", "Feature Used", "Feature Used"]
            .iter()
            .enumerate()
        {
            batch.push(json!({"event": e, "email": format!("p{i}@acme.com"), "k": k}));
        }
    }
    for chunk in batch.chunks(300) {
        c.post(format!("{base}/api/signal-staging/webhook/{key}/batch"))
            .json(&chunk)
            .send()?
            .error_for_status()?;
    }
    let evaluated = post("/api/admin/evaluation/run", json!({}))?;
    anyhow::ensure!(
        evaluated["evaluated"] == json!(n),
        "first batch: {evaluated}"
    );
    let (mut visible, mut scored) = (Vec::new(), Vec::new());
    for i in 0..n {
        let email = format!("p{i}@acme.com");
        // Baseline: a plain mapped signal, 202 → applied.
        let t = Instant::now();
        let r: Value = c
            .post(format!("{base}/api/signal-staging/webhook/{key}"))
            .json(&json!({"event": "Pricing Viewed", "email": email, "k": 9}))
            .send()?
            .json()?;
        let pos = r["log_position"].as_u64().context("log_position")?;
        c.get(format!("{base}/api/explorer/stats?wait_for={pos}"))
            .bearer_auth(ADMIN)
            .send()?
            .error_for_status()?;
        visible.push(t.elapsed().as_secs_f64() * 1000.0);
        // A high-intent signal: 202 → its evaluation readable.
        let t = Instant::now();
        c.post(format!("{base}/api/signal-staging/webhook/{key}"))
            .json(&json!({"event": "Demo Requested", "email": email}))
            .send()?
            .error_for_status()?;
        let url = format!("{base}/api/leads?email={}", email.replace('@', "%40"));
        loop {
            let v: Value = c.get(&url).bearer_auth(ADMIN).send()?.json()?;
            if v["evaluation"]["trigger"] == "high_intent" {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "never evaluated: {v}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        scored.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (s50, s99) = (pct(&mut scored, 0.5), pct(&mut scored, 0.99));
    let (v50, v99) = (pct(&mut visible, 0.5), pct(&mut visible, 0.99));
    Ok(vec![format!(
        "| high-intent signal: 202 → its evaluation readable, p50 / p99 (ms, {n} leads) | {s50:.1} / {s99:.1} | {v50:.1} / {v99:.1} (a mapped signal: 202 → applied) | {:.2} / {:.2} |",
        s50 / v50,
        s99 / v99
    )])
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()?;
    anyhow::ensure!(st.success(), "copying {}", from.display());
    Ok(())
}

/// Replays `data` with eligibility on or off: (entries/s, RSS MiB after settling, leads).
fn replay(
    bin: &std::path::Path,
    args: &Args,
    data: &std::path::Path,
    on: bool,
) -> anyhow::Result<(f64, f64, u64)> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    copy_dir(data, &dir)?;
    let _ = std::fs::remove_file(dir.join("LOCK"));
    // An Owner token of every org of the copy, to count its leads (offline, before serving).
    let run = |args: &[&str]| -> anyhow::Result<Vec<Value>> {
        let out = std::process::Command::new(bin)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    };
    let mut tokens = Vec::new();
    for org in run(&["orgs", "list"])? {
        let id = org["id"].to_string();
        let t = run(&["admin", "owner-token", "--org", &id])?;
        tokens.push(t[0]["token"].as_str().context("token")?.to_string());
    }
    let t = Instant::now();
    let s = start_server(
        bin,
        &dir,
        None,
        &[
            ("TRAILSPARK_ADMIN_TOKEN", args.data_admin.as_str()),
            ("TRAILSPARK_EVALUATION", if on { "true" } else { "false" }),
            ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
            ("TRAILSPARK_HOT_WINDOW_DAYS", "0"),
        ],
        &[],
    )?;
    let c = reqwest::blocking::Client::new();
    let head = loop {
        if let Ok(r) = c.get(format!("{}/readyz", s.base)).send() {
            if r.status() == 200 {
                let h: Value = c.get(format!("{}/healthz", s.base)).send()?.json()?;
                break h["log_head"].as_u64().unwrap_or(0);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rate = head as f64 / t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(15));
    let rss = rss_mib(s.child.id());
    let mut leads = 0;
    for token in &tokens {
        let v: Value = c
            .post(format!("{}/api/sql", s.base))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT count(*) FROM leads"}))
            .send()?
            .json()?;
        leads += v["rows"][0][0].as_u64().context("a lead count")?;
    }
    Ok((rate, rss, leads))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = trailspark_bin(args.trailspark.as_deref())?;
    println!("| measure | lead evaluation | baseline | ratio |\n|---|---:|---:|---:|");
    for row in scorer(&args) {
        println!("{row}");
    }
    for row in latency(&args, &bin)? {
        println!("{row}");
    }
    if let Some(data) = &args.data {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            off.push(replay(&bin, &args, data, false)?);
            on.push(replay(&bin, &args, data, true)?);
        }
        let avg = |v: &[(f64, f64, u64)], f: fn(&(f64, f64, u64)) -> f64| {
            v.iter().map(f).sum::<f64>() / v.len() as f64
        };
        let (r_on, r_off) = (avg(&on, |x| x.0), avg(&off, |x| x.0));
        let (m_on, m_off) = (avg(&on, |x| x.1), avg(&off, |x| x.1));
        let leads = on[0].2.max(1);
        println!(
            "| replay of {} with eligibility (entries/s, mean of 2; rounds: {}) | {r_on:.0} | {r_off:.0} (without) | {:.2} |",
            data.display(),
            on.iter().zip(&off).map(|(a, b)| format!("{:.0}/{:.0}", a.0, b.0)).collect::<Vec<_>>().join(", "),
            r_on / r_off
        );
        println!(
            "| resident memory after the replay (MiB, mean of 2) and the eligibility state per lead ({leads} leads) | {m_on:.0} | {m_off:.0} (without) | {:.0} bytes/lead |",
            (m_on - m_off) * 1024.0 * 1024.0 / leads as f64
        );
    }
    Ok(())
}
