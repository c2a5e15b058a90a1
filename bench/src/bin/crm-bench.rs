//! CRM sync throughput: a fresh `trailspark serve` connects to each CRM's local contract
//! server (the test tree's, which enforces the documented rate limits) and syncs N contacts;
//! the figure is records/s, and requests/s as a fraction of the CRM's documented ceiling.
//! Salesforce has no per-second limit, so its baseline is a plain client paging the same
//! SOQL query against the same server in the same run.
//!
//! `cargo run --release -p trailspark-bench --bin crm-bench -- --records 4000`

#[allow(dead_code, clippy::all)]
#[path = "../../../pipeline/tests/common/crm/mod.rs"]
mod crm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use crm::{airtable::Airtable, hubspot::Hubspot, salesforce, salesforce::Salesforce, Store};
use serde_json::{json, Value};
use trailspark_bench::harness::{start_server, trailspark_bin};

#[derive(Parser)]
struct Args {
    /// Contacts per CRM.
    #[arg(long, default_value_t = 4000)]
    records: usize,
    /// The trailspark binary (default: beside this one).
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// Connects `body` on a fresh server and waits for its first sync; answers (seconds, records).
fn sync_once(bin: &std::path::Path, body: Value) -> anyhow::Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let s = start_server(
        bin,
        dir.path(),
        None,
        &[("TRAILSPARK_CRM_SYNC_INTERVAL", "3600")],
        &[],
    )?;
    let owner = s.owner.clone().context("no owner token")?;
    let http = reqwest::blocking::Client::new();
    let t0 = Instant::now();
    let created: Value = http
        .post(format!("{}/api/integrations", s.base))
        .bearer_auth(&owner)
        .json(&body)
        .send()?
        .json()?;
    let id = created["id"].as_u64().context("no integration id")?;
    loop {
        let v: Value = http
            .get(format!("{}/api/integrations/{id}", s.base))
            .bearer_auth(&owner)
            .send()?
            .json()?;
        match v["sync"]["last"]["state"].as_str() {
            Some("done") => {
                let secs = t0.elapsed().as_secs_f64();
                let pos = v["sync"]["last"]["log_position"].as_u64().unwrap_or(0);
                let v: Value = http
                    .get(format!("{}/api/integrations/{id}?wait_for={pos}", s.base))
                    .bearer_auth(&owner)
                    .send()?
                    .json()?;
                let n = v["records"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                return Ok((secs, n));
            }
            Some("failed" | "rate_limited") => bail!("the sync ended: {v}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("no sync ended in 10 minutes");
        }
    }
}

/// Puts `n` records of `object`, modified a millisecond apart.
fn fill(
    store: &mut Store,
    object: &str,
    n: usize,
    id: impl Fn(usize) -> String,
    fields: impl Fn(usize) -> Value,
) {
    for i in 0..n {
        store.put(object, &id(i), 1_700_000_000_000 + i as i64, fields(i));
    }
}

fn requests(store: &crm::Shared, part: &str) -> usize {
    store
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|p| p.contains(part))
        .count()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = trailspark_bin(args.bin.as_deref())?;
    let n = args.records;
    let t0 = 1_700_000_000_000i64;
    println!("| CRM | records | seconds | records/s | requests/s | documented ceiling | fraction of the ceiling |");
    println!("|---|---:|---:|---:|---:|---|---:|");

    // HubSpot: CRM search, 4 requests/s per token, 100 records a page.
    let mut store = Store::hubspot();
    for i in 0..n {
        store.put(
            "contacts",
            &(100_000 + i).to_string(),
            t0 + i as i64,
            json!({"email": format!("p{i}@acme.com"), "jobtitle": "Engineer"}),
        );
    }
    let hs = Hubspot::start("pat-bench", store);
    let (secs, got) = sync_once(
        &bin,
        json!({"kind": "hubspot", "credentials": {"private_app_token": "pat-bench"}, "api_base_url": hs.url}),
    )?;
    let rps = requests(&hs.store, "/search") as f64 / secs;
    println!("| HubSpot | {got} | {secs:.1} | {:.0} | {rps:.2} | 4 search requests/s per token | {:.2} |", got as f64 / secs, rps / 4.0);

    // Airtable: 5 requests/s per base, 100 records a page.
    let mut store = Store::airtable();
    fill(
        &mut store,
        "People",
        n,
        |i| format!("rec{i:08}"),
        |i| json!({"Email": format!("p{i}@acme.com")}),
    );
    let at = Airtable::start("patBENCH.0", "appBENCH", store, Duration::from_secs(30));
    let (secs, got) = sync_once(
        &bin,
        json!({"kind": "airtable", "credentials": {"personal_access_token": "patBENCH.0", "base_id": "appBENCH", "tables": {"contacts": "People", "companies": "Companies"}}, "api_base_url": at.url}),
    )?;
    let rps = requests(&at.store, "/v0/appBENCH/") as f64 / secs;
    let limited = *at.limited.lock().unwrap();
    println!(
        "| Airtable | {got} | {secs:.1} | {:.0} | {rps:.2} | 5 requests/s per base | {:.2} |",
        got as f64 / secs,
        rps / 5.0
    );
    if limited > 0 {
        println!("(Airtable answered {limited} requests 429)");
    }

    // Salesforce: no per-second limit; 2,000 records a page. Baseline: a plain client.
    let mut store = Store::salesforce();
    fill(
        &mut store,
        "Contact",
        n,
        |i| format!("003B{i:08}"),
        |i| json!({"Email": format!("p{i}@acme.com"), "Title": "Engineer"}),
    );
    let sf = Salesforce::start("bench-refresh", store);
    let base_t = Instant::now();
    let http = reqwest::blocking::Client::new();
    let tok: Value = http
        .post(format!("{}/services/oauth2/token", sf.login_url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "bench-refresh"),
            ("client_id", salesforce::CLIENT_ID),
        ])
        .send()?
        .json()?;
    let (inst, access) = (
        tok["instance_url"].as_str().unwrap().to_string(),
        tok["access_token"].as_str().unwrap().to_string(),
    );
    let mut baseline = 0usize;
    for object in ["Account", "Contact", "Lead"] {
        let fields = if object == "Contact" {
            "Id, SystemModstamp, AccountId, Email, FirstName, LastName, Title"
        } else {
            "Id, SystemModstamp, Email"
        };
        let fields = if object == "Account" {
            "Id, SystemModstamp, Name"
        } else {
            fields
        };
        let q = format!("SELECT {fields} FROM {object} ORDER BY SystemModstamp ASC, Id ASC");
        let mut url = format!(
            "{inst}/services/data/v62.0/query?q={}",
            form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        loop {
            let v: Value = http.get(&url).bearer_auth(&access).send()?.json()?;
            baseline += v["records"].as_array().map_or(0, Vec::len);
            match v["nextRecordsUrl"].as_str() {
                Some(next) => url = format!("{inst}{next}"),
                None => break,
            }
        }
    }
    let base_secs = base_t.elapsed().as_secs_f64();
    let before = requests(&sf.store, "/query");
    let (secs, got) = sync_once(
        &bin,
        json!({"kind": "salesforce", "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": "bench-refresh"}, "api_base_url": sf.login_url}),
    )?;
    println!("| Salesforce | {got} | {secs:.2} | {:.0} | — | daily allocation only ({:.1} API calls per 10,000 records) | {:.2} of a plain client ({:.0} records/s) |",
        got as f64 / secs,
        (requests(&sf.store, "/query") - before) as f64 / (got.max(1) as f64) * 10_000.0,
        (got as f64 / secs) / (baseline as f64 / base_secs),
        baseline as f64 / base_secs);
    Ok(())
}
