//! Destination throughput and latency: a fresh `trailspark serve` writes N evaluations to
//! each CRM's local contract server (the test tree's, which answers 429 above the
//! documented rate), and the figure is records/s as a fraction of the ceiling the
//! documented limit allows (HubSpot: 100 requests per 10 s of 100 records; Airtable: 5
//! requests a second per base of 10 records). Salesforce has only a daily allocation, so
//! its baseline is a plain client making the same calls (two SOQL lookups and one
//! 200-record `composite/sobjects` PATCH per batch) against the same server in the same run.
//!
//! Then latency: leads evaluated one at a time at a steady rate, each evaluation's time
//! against the time the CRM server stored its record (both wall clocks of this machine).
//!
//! `cargo run --release -p trailspark-bench --bin destination-bench -- --records 3000`

#[allow(dead_code, clippy::all)]
#[path = "../../../pipeline/tests/common/crm/mod.rs"]
mod crm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use crm::{airtable::Airtable, hubspot::Hubspot, salesforce, salesforce::Salesforce, Store};
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};
use trailspark_bench::harness::{start_server, trailspark_bin, Server};

#[derive(Parser)]
struct Args {
    /// Evaluations written to Salesforce and HubSpot (Airtable gets a tenth: its ceiling is
    /// 50 records a second).
    #[arg(long, default_value_t = 3000)]
    records: usize,
    /// Evaluations a second in the latency run.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Evaluations in the latency run.
    #[arg(long, default_value_t = 400)]
    latency_evaluations: usize,
    /// The trailspark binary (default: beside this one).
    #[arg(long)]
    bin: Option<PathBuf>,
}

const ADMIN: &str = "ts_bench_admin_token_0123456789";
const REFRESH: &str = "5Aep861-bench-refresh";

struct Ts {
    s: Server,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Ts {
    fn start(bin: &Path) -> anyhow::Result<Ts> {
        let dir = tempfile::tempdir()?;
        let s = start_server(
            bin,
            dir.path(),
            None,
            &[
                ("TRAILSPARK_ADMIN_TOKEN", ADMIN),
                ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
                ("TRAILSPARK_CRM_SYNC_INTERVAL", "3600"),
                ("TRAILSPARK_DESTINATION_RETRY_MS", "100"),
            ],
            &[],
        )?;
        Ok(Ts {
            s,
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            _dir: dir,
        })
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.s.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send()?;
        let st = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        if !st.is_success() {
            bail!("{path}: {st} {v}");
        }
        Ok(v)
    }

    /// Rules, a model, one-signal evaluations without cooldown, and `emails` as leads.
    fn prepare(&self, emails: &[String]) -> anyhow::Result<()> {
        self.call(Method::POST, "/api/mapping-rules", Some(json!({"name": "Pricing page", "signal_type": "Page View",
            "description": "bench", "conditions": [{"field": "event", "op": "equals", "value": "Pricing Viewed"}],
            "mappings": [{"field": "email", "path": "email"}]})))?;
        self.call(Method::POST, "/api/icp-models", Some(json!({"name": "Bench", "method": "manual",
            "account_profile": "B2B SaaS companies with 200-1000 employees.", "contact_personas": "VPs.",
            "positive_signals": "Pricing.", "criteria": {"industries": ["saas"]}})))?;
        self.call(
            Method::PATCH,
            "/api/settings/lead-scoring",
            Some(json!({"min_signals": 1, "min_signal_types": 1, "cooling_off_enabled": false})),
        )?;
        let key = self.s.key.clone().context("no key")?;
        let mut pos = 0;
        for chunk in emails.chunks(500) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|e| json!({"email": e, "event": "Pricing Viewed"}))
                .collect();
            let v: Value = self
                .http
                .post(format!(
                    "{}/api/signal-staging/webhook/{key}/batch",
                    self.s.base
                ))
                .json(&items)
                .send()?
                .json()?;
            for r in v["results"].as_array().into_iter().flatten() {
                pos = pos.max(r["log_position"].as_u64().unwrap_or(0));
            }
        }
        let last = emails.last().context("no leads")?.replace('@', "%40");
        self.call(
            Method::GET,
            &format!("/api/leads?email={last}&wait_for={pos}"),
            None,
        )?;
        Ok(())
    }

    /// Connects an integration and waits for its first sync to end (it shares the CRM's
    /// request rate with the destination); answers its id.
    fn destination(&self, body: Value) -> anyhow::Result<(u64, ())> {
        let i = self.call(Method::POST, "/api/integrations", Some(body))?;
        let id = i["id"].as_u64().context("no integration id")?;
        let t0 = Instant::now();
        loop {
            let v = self.call(Method::GET, &format!("/api/integrations/{id}"), None)?;
            match v["sync"]["last"]["state"].as_str() {
                Some("running") | None if t0.elapsed() < Duration::from_secs(300) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return Ok((id, ())),
            }
        }
    }

    fn status(&self, id: u64) -> anyhow::Result<Value> {
        self.call(Method::GET, &format!("/api/destinations/{id}/status"), None)
    }

    /// Waits until `n` records are delivered; answers the seconds since `t0`.
    fn delivered(&self, id: u64, n: u64, t0: Instant) -> anyhow::Result<f64> {
        loop {
            let v = self.status(id)?;
            if v["delivered"].as_u64() >= Some(n) {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if v["failed"].as_u64() > Some(0) || t0.elapsed() > Duration::from_secs(900) {
                bail!("delivery stalled: {v}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates a destination, evaluates everyone with sending off, turns it on, and times the
/// delivery: (seconds, records).
fn throughput(
    ts: &Ts,
    integration: u64,
    fields: Value,
    create: bool,
    n: usize,
) -> anyhow::Result<f64> {
    let d = ts.call(
        Method::POST,
        "/api/destinations",
        Some(json!({"integration_id": integration,
        "send_evaluations": false, "field_mapping": fields, "create_records": create})),
    )?;
    let id = d["id"].as_u64().context("no destination id")?;
    let e = ts.call(Method::POST, "/api/admin/evaluation/run", None)?;
    if e["evaluated"].as_u64() != Some(n as u64) {
        bail!("evaluated {e}, not {n}");
    }
    let t0 = Instant::now();
    ts.call(
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"send_evaluations": true})),
    )?;
    ts.delivered(id, n as u64, t0)
}

/// Evaluates `emails` one at a time at `rate` a second; answers each evaluation's time.
fn steady(ts: &Ts, emails: &[String], rate: f64) -> anyhow::Result<Vec<(String, i64)>> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut out = Vec::new();
    for (i, e) in emails.iter().enumerate() {
        let at = start + gap * i as u32;
        if let Some(w) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let lead = ts.call(
            Method::GET,
            &format!("/api/leads?email={}", e.replace('@', "%40")),
            None,
        )?;
        let id = lead["id"].as_str().context("no lead")?.to_string();
        let ev = ts.call(Method::POST, &format!("/api/leads/{id}/evaluate"), None)?;
        let t = chrono::DateTime::parse_from_rfc3339(ev["evaluated_at"].as_str().unwrap_or(""))?;
        out.push((e.clone(), t.timestamp_millis()));
    }
    Ok(out)
}

fn sf_store(emails: &[String]) -> Store {
    let mut store = Store::salesforce();
    for o in ["Lead", "Contact"] {
        let schema = store.schema.get_mut(o).unwrap();
        for (f, t) in [
            ("TS_Score__c", "string"),
            ("TS_Date__c", "datetime"),
            ("TS_Reasoning__c", "textarea"),
        ] {
            schema.insert(f.into(), t.into());
        }
    }
    for (i, e) in emails.iter().enumerate() {
        store.put(
            "Contact",
            &format!("003B{i:08}"),
            1,
            json!({"Email": e, "LastName": "B"}),
        );
    }
    store
}

fn hs_store(emails: &[String]) -> Store {
    let mut store = Store::hubspot();
    for f in ["ts_score", "ts_reasoning", "ts_date"] {
        store.schema.get_mut("contacts").unwrap().insert(
            f.into(),
            if f == "ts_date" { "datetime" } else { "string" }.into(),
        );
    }
    for (i, e) in emails.iter().enumerate() {
        store.put(
            "contacts",
            &(100_000 + i).to_string(),
            1,
            json!({"email": e}),
        );
    }
    store
}

const SF_FIELDS: &str =
    r#"{"score": "TS_Score__c", "reasoning": "TS_Reasoning__c", "evaluated_at": "TS_Date__c"}"#;
const HS_FIELDS: &str =
    r#"{"score": "ts_score", "reasoning": "ts_reasoning", "evaluated_at": "ts_date"}"#;

/// The plain Salesforce client: per 200 records, the two SOQL lookups and one PATCH.
fn plain_salesforce(sf: &Salesforce, emails: &[String]) -> anyhow::Result<f64> {
    let http = Client::new();
    let tok: Value = http
        .post(format!("{}/services/oauth2/token", sf.login_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", REFRESH),
            ("client_id", salesforce::CLIENT_ID),
        ])
        .send()?
        .json()?;
    let token = tok["access_token"]
        .as_str()
        .context("no token")?
        .to_string();
    let base = format!("{}/services/data/v62.0", sf.instance_url);
    let t0 = Instant::now();
    for chunk in emails.chunks(200) {
        let list = chunk
            .iter()
            .map(|e| format!("'{e}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ids = std::collections::HashMap::new();
        for q in [
            format!("SELECT Id, Email FROM Lead WHERE Email IN ({list})"),
            format!("SELECT Id, Email, AccountId FROM Contact WHERE Email IN ({list})"),
        ] {
            let v: Value = http
                .get(format!("{base}/query"))
                .query(&[("q", q)])
                .bearer_auth(&token)
                .send()?
                .json()?;
            for r in v["records"].as_array().into_iter().flatten() {
                ids.insert(
                    r["Email"].as_str().unwrap_or("").to_string(),
                    r["Id"].as_str().unwrap_or("").to_string(),
                );
            }
        }
        let records: Vec<Value> = chunk
            .iter()
            .map(|e| json!({"attributes": {"type": "Contact"}, "id": ids[e], "TS_Score__c": "warm",
                            "TS_Reasoning__c": "plain client", "TS_Date__c": "2026-12-06T00:00:00.000Z"}))
            .collect();
        let r = http
            .patch(format!("{base}/composite/sobjects"))
            .bearer_auth(&token)
            .json(&json!({"allOrNone": false, "records": records}))
            .send()?;
        if !r.status().is_success() {
            bail!("plain client: {}", r.status());
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = trailspark_bin(args.bin.as_deref())?;
    let n = args.records;
    println!("| destination | records | seconds | records/s | requests/s | documented ceiling | fraction |");
    println!("|---|---:|---:|---:|---:|---|---:|");

    // HubSpot: 100 inputs a request, 100 requests per 10 s: 1,000 records/s.
    let emails: Vec<String> = (0..n).map(|i| format!("h{i}@bench.io")).collect();
    let hs = Hubspot::start("pat-bench", hs_store(&emails));
    let ts = Ts::start(&bin)?;
    ts.prepare(&emails)?;
    let (i, _) = ts.destination(json!({"kind": "hubspot", "credentials": {"private_app_token": "pat-bench"}, "api_base_url": hs.url}))?;
    let secs = throughput(&ts, i, serde_json::from_str(HS_FIELDS)?, false, n)?;
    let reqs = hs.store.lock().unwrap().writes.len() as f64;
    let rps = n as f64 / secs;
    println!("| HubSpot (batch/update, 100 a request) | {n} | {secs:.1} | {rps:.0} | {:.2} | 100 requests per 10 s (1,000 records/s) | {:.2} |", reqs / secs, rps / 1000.0);
    if *hs.throttled.lock().unwrap() > 0 {
        println!(
            "(HubSpot answered {} requests 429)",
            hs.throttled.lock().unwrap()
        );
    }
    drop(ts);

    // Airtable: 10 records a request, 5 requests/s per base: 50 records/s.
    let m = (n / 10).max(50);
    let emails: Vec<String> = (0..m).map(|i| format!("a{i}@bench.io")).collect();
    let mut store = Store::airtable();
    for f in ["TS Score", "TS Reasoning", "TS Date"] {
        store
            .schema
            .get_mut("People")
            .unwrap()
            .insert(f.into(), "singleLineText".into());
    }
    for (i, e) in emails.iter().enumerate() {
        store.put("People", &format!("rec{i:08}"), 1, json!({"Email": e}));
    }
    let at = Airtable::start("patBENCH.0", "appBENCH", store, Duration::from_secs(30));
    let ts = Ts::start(&bin)?;
    ts.prepare(&emails)?;
    let (i, _) = ts.destination(json!({"kind": "airtable", "credentials": {"personal_access_token": "patBENCH.0", "base_id": "appBENCH",
        "tables": {"contacts": "People", "companies": "Companies"}}, "api_base_url": at.url}))?;
    let secs = throughput(
        &ts,
        i,
        json!({"score": "TS Score", "reasoning": "TS Reasoning", "evaluated_at": "TS Date"}),
        true,
        m,
    )?;
    let reqs = at.store.lock().unwrap().writes.len() as f64;
    let rps = m as f64 / secs;
    println!("| Airtable (PATCH performUpsert, 10 a request) | {m} | {secs:.1} | {rps:.1} | {:.2} | 5 requests/s per base (50 records/s) | {:.2} |", reqs / secs, rps / 50.0);
    if *at.limited.lock().unwrap() > 0 {
        println!(
            "(Airtable answered {} requests 429)",
            at.limited.lock().unwrap()
        );
    }
    drop(ts);

    // Salesforce: against a plain client making the same calls.
    let emails: Vec<String> = (0..n).map(|i| format!("s{i}@bench.io")).collect();
    let sf = Salesforce::start(REFRESH, sf_store(&emails));
    let plain = plain_salesforce(&sf, &emails)?;
    let ts = Ts::start(&bin)?;
    ts.prepare(&emails)?;
    let (i, _) = ts.destination(json!({"kind": "salesforce", "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": REFRESH}, "api_base_url": sf.login_url}))?;
    let secs = throughput(&ts, i, serde_json::from_str(SF_FIELDS)?, false, n)?;
    let rps = n as f64 / secs;
    println!("| Salesforce (composite/sobjects, 200 a request) | {n} | {secs:.2} | {rps:.0} | — | daily allocation only | {:.2} of a plain client ({:.0} records/s) |", rps / (n as f64 / plain), n as f64 / plain);
    drop(ts);

    // Latency at a steady rate, Salesforce and HubSpot.
    let k = args.latency_evaluations;
    println!();
    println!("| destination | evaluations | rate (/s) | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for kind in ["salesforce", "hubspot"] {
        let emails: Vec<String> = (0..k).map(|i| format!("l{i}@latency.io")).collect();
        let ts = Ts::start(&bin)?;
        ts.prepare(&emails)?;
        let (object, email_field, integration, fields, store) = if kind == "salesforce" {
            let sf = Salesforce::start(REFRESH, sf_store(&emails));
            let (i, _) = ts.destination(json!({"kind": "salesforce", "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": REFRESH}, "api_base_url": sf.login_url}))?;
            ("Contact", "Email", i, SF_FIELDS, sf.store)
        } else {
            let hs = Hubspot::start("pat-bench", hs_store(&emails));
            let (i, _) = ts.destination(json!({"kind": "hubspot", "credentials": {"private_app_token": "pat-bench"}, "api_base_url": hs.url}))?;
            ("contacts", "email", i, HS_FIELDS, hs.store)
        };
        let d = ts.call(
            Method::POST,
            "/api/destinations",
            Some(json!({"integration_id": integration,
            "send_evaluations": true, "field_mapping": serde_json::from_str::<Value>(fields)?})),
        )?;
        let id = d["id"].as_u64().context("no id")?;
        let evaluated = steady(&ts, &emails, args.rate)?;
        ts.delivered(id, k as u64, Instant::now())?;
        let store = store.lock().unwrap();
        let mut lat: Vec<i64> = evaluated
            .iter()
            .map(|(e, at)| {
                store
                    .find(object, email_field, e)
                    .map_or(i64::MAX, |r| r.modified - at)
            })
            .collect();
        let (p50, p99, max) = (
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99),
            percentile(&mut lat, 1.0),
        );
        println!("| {kind} | {k} | {} | {p50} | {p99} | {max} |", args.rate);
    }
    Ok(())
}
