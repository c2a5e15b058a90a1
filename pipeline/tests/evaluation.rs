//! Lead evaluation end to end through HTTP, with the deterministic scorer: batch, high-intent
//! and manual triggers, cooldowns and the settings that set them, the confidence gate, the
//! views of evaluations and accounts, and a restart that replays evaluations without scoring
//! again (the checks are in `evaluation_checks.rs`).

mod common;

use std::time::{Duration, Instant};

use common::scoring::*;
use common::*;
use reqwest::Method;
use serde_json::json;

#[test]
fn batch_high_intent_manual_cooldowns_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    mapping_rules(&s);
    let m = model(&s);
    assert_eq!(
        (m["version"].as_u64(), m["status"].as_str()),
        (Some(1), Some("active"))
    );

    // Warm: fits, little intent. Cold: fits nothing. Both wait for the batch.
    let warm = lead(&s, "ana@acme.com");
    warm.identify(fitting());
    warm.event("Pricing Viewed");
    warm.event("Pricing Viewed");
    let wp = warm.event("Feature Used");
    let cold = lead(&s, "ivo@school.edu");
    cold.identify(
        json!({"industry": "Education", "employees": 5, "region": "Europe", "title": "Intern"}),
    );
    cold.event("Pricing Viewed");
    cold.event("Feature Used");
    let cp = cold.event("Feature Used");
    assert!(warm.get(wp)["evaluation"].is_null(), "not before the batch");
    assert_eq!(run_batch(&s), 2);
    let w = warm.get(0)["evaluation"].clone();
    assert_eq!(w["score"], "warm", "{w}");
    assert_eq!(w["trigger"], "batch");
    assert_eq!(hours(&w), 72, "warm cooldown");
    assert_eq!(w["model_id"], m["id"]);
    assert_eq!(w["model_version"], 1);
    assert!(w["confidence"].as_u64().unwrap() >= 70, "{w}");
    let reasoning = w["reasoning"].as_str().unwrap();
    assert!(reasoning.starts_with("Warm: strong fit"), "{reasoning}");
    for c in w["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["points"].as_f64() != Some(0.0))
    {
        assert!(c["input"].is_string() && c["criterion"].is_string() && c["weight"].is_i64());
    }
    assert!(
        w["contributions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["criterion"] == "industry saas"),
        "{w}"
    );
    let c = cold.get(cp)["evaluation"].clone();
    assert_eq!(c["score"], "cold", "{c}");
    assert_eq!(hours(&c), 336, "cold cooldown");

    // Nothing new: the next batch evaluates no one.
    assert_eq!(run_batch(&s), 0);
    // A new signal in the cooldown: the lead waits, and says why.
    let p = warm.event("Pricing Viewed");
    assert_eq!(warm.get(p)["last_skip_reason"], "cooldown");
    assert_eq!(run_batch(&s), 0);

    // A high-intent signal bypasses the cooldown: evaluated at once, by no request.
    warm.event("Demo Requested");
    let v = wait_lead(&warm, |v| v["evaluation"]["trigger"] == "high_intent");
    let h = &v["evaluation"];
    assert_eq!(h["score"], "hot", "{h}");
    assert_eq!(hours(h), 168, "hot cooldown");
    assert!(
        h["reasoning"]
            .as_str()
            .unwrap()
            .contains("\"Demo request\""),
        "{h}"
    );

    // A settings change leaves the running cooldown alone; the next evaluation uses it.
    let (st, body) = call(
        &s,
        Method::PUT,
        "/api/settings/lead-scoring",
        Some(json!({"cooldown_hot_hours": 0})),
    );
    assert_eq!(
        (st, body["field"].as_str()),
        (400, Some("cooldown_hot_hours")),
        "{body}"
    );
    let (st, body) = call(
        &s,
        Method::PUT,
        "/api/settings/lead-scoring",
        Some(json!({"cooldown_hot": 5})),
    );
    assert_eq!(
        (st, body["field"].as_str()),
        (400, Some("cooldown_hot")),
        "{body}"
    );
    let set = ok(
        &s,
        Method::PUT,
        "/api/settings/lead-scoring",
        Some(json!({"cooldown_hot_hours": 24})),
    );
    assert_eq!(
        (
            set["cooldown_hot_hours"].as_u64(),
            set["min_signals"].as_u64()
        ),
        (Some(24), Some(3))
    );
    let pos = set["log_position"].as_u64().unwrap();
    let still = warm.get(pos)["evaluation"].clone();
    assert_eq!(still["id"], h["id"]);
    assert_eq!(
        still["cooldown_until"], h["cooldown_until"],
        "the cooldown it had"
    );

    // Manual: in cooldown, nothing new, evaluated anyway.
    let wid = warm.id(0);
    let man = ok(
        &s,
        Method::POST,
        &format!("/api/leads/{wid}/evaluate"),
        None,
    );
    assert_eq!(man["trigger"], "manual");
    assert_eq!(man["score"], "hot");
    assert_eq!(hours(&man), 24, "the new setting");

    // The views.
    let hist = ok(
        &s,
        Method::GET,
        &format!("/api/leads/{wid}/evaluations"),
        None,
    );
    let hist = hist["evaluations"].as_array().unwrap();
    assert_eq!(hist.len(), 3);
    assert_eq!(hist[0]["id"], man["id"], "newest first");
    let hot = ok(&s, Method::GET, "/api/evaluations?score=hot&limit=1", None);
    assert_eq!(hot["evaluations"].as_array().unwrap().len(), 1);
    assert_eq!(hot["evaluations"][0]["id"], man["id"]);
    let cursor = hot["next_cursor"].as_str().unwrap();
    let next = ok(
        &s,
        Method::GET,
        &format!("/api/evaluations?score=hot&limit=5&cursor={cursor}"),
        None,
    );
    assert_eq!(next["evaluations"].as_array().unwrap().len(), 1);
    assert_eq!(next["evaluations"][0]["id"], h["id"]);
    assert!(next["next_cursor"].is_null());
    let (st, _) = call(&s, Method::GET, "/api/evaluations?score=tepid", None);
    assert_eq!(st, 400);

    let ctx = ok(
        &s,
        Method::GET,
        &format!("/api/leads/{wid}/evaluation-context"),
        None,
    );
    assert_eq!(ctx["account"]["websiteDomain"], "acme.com");
    assert_eq!(ctx["account"]["industry"], "B2B SaaS");
    assert_eq!(ctx["icp"]["modelId"], m["id"]);
    assert!(ctx["signals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["description"] == "Demo request (test rule)"));
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    let acme = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["websiteDomain"] == "acme.com")
        .unwrap_or_else(|| panic!("{accounts}"))
        .clone();
    assert_eq!(acme["lead_ids"], json!([wid]));
    assert!(acme["propensity"].is_string(), "{acme}");
    assert_eq!(man["account_id"], acme["id"]);
}

#[test]
fn the_gate_turns_a_low_confidence_warm_cold() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    mapping_rules(&s);
    model(&s);
    // A fitting title and steady product use, but nothing known of the account.
    let l = lead(&s, "vp@nowhere.io");
    l.identify(json!({"title": "VP Marketing"}));
    for _ in 0..6 {
        l.event("Feature Used");
    }
    let p = l.event("Pricing Viewed");
    let id = l.id(p);
    let e = ok(&s, Method::POST, &format!("/api/leads/{id}/evaluate"), None);
    assert_eq!(
        (
            e["raw_score"].as_str(),
            e["score"].as_str(),
            e["confidence_gate_applied"].as_bool()
        ),
        (Some("warm"), Some("cold"), Some(true)),
        "{e}"
    );
    assert!(e["confidence"].as_u64().unwrap() < 70);
    assert!(
        e["reasoning"]
            .as_str()
            .unwrap()
            .contains("below the 70% minimum"),
        "{e}"
    );
    assert_eq!(hours(&e), 336, "the stored score sets the cooldown");
    // With a lower threshold the same lead stays warm.
    ok(
        &s,
        Method::PATCH,
        "/api/settings/lead-scoring",
        Some(json!({"min_confidence_avg": 50})),
    );
    let e = ok(&s, Method::POST, &format!("/api/leads/{id}/evaluate"), None);
    assert_eq!(
        (e["score"].as_str(), e["confidence_gate_applied"].as_bool()),
        (Some("warm"), Some(false))
    );
}

/// Rows and distinct ids of the evaluations' Parquet tree, read by DuckDB.
fn archived(dir: &std::path::Path) -> (u64, u64) {
    let tree = dir.join("archive/evaluations");
    if !tree.exists() {
        return (0, 0);
    }
    let q = format!(
        "import duckdb; print(duckdb.sql(\"SELECT count(*), count(DISTINCT id) FROM read_parquet('{}/**/*.parquet', hive_partitioning=true) WHERE org_id = 1\").fetchall()[0])",
        tree.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &q])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let nums: Vec<u64> = text
        .trim()
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

fn wait_archived(dir: &std::path::Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while archived(dir) != (n, n) {
        assert!(Instant::now() < deadline, "archived: {:?}", archived(dir));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_restart_replays_evaluations_and_scores_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
        ("TRAILSPARK_ARCHIVE_MAX_AGE_SECS", "1"),
    ];
    let mut s = Server::start_with(dir.path(), None, &env);
    mapping_rules(&s);
    model(&s);
    for i in 0..5 {
        let l = lead(&s, &format!("p{i}@acme.com"));
        l.identify(fitting());
        l.event("Pricing Viewed");
        l.event("Feature Used");
        l.event("Feature Used");
    }
    assert_eq!(run_batch(&s), 5);
    let before = ok(&s, Method::GET, "/api/evaluations?limit=50", None)["evaluations"].clone();
    assert_eq!(before.as_array().unwrap().len(), 5);
    let calls = ok(&s, Method::GET, "/api/admin/evaluation", None);
    assert_eq!(calls["scorer_calls"], 5);

    // Archived to Parquet like signals (a file a second here).
    wait_archived(dir.path(), 5);

    s.kill9();
    let s = Server::start_with(dir.path(), None, &env);
    // Ready once replayed; the start's batch then finds everyone up to date.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client().get(s.url("/readyz")).send().unwrap().status() != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(run_batch(&s), 0);
    let after = ok(&s, Method::GET, "/api/evaluations?limit=50", None)["evaluations"].clone();
    assert_eq!(after, before, "the same evaluations");
    assert_eq!(
        ok(&s, Method::GET, "/api/admin/evaluation", None)["scorer_calls"],
        0
    );
    // The replay offered them to the archive again: no row twice.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(archived(dir.path()), (5, 5));
    // SQL sees them too.
    let rows = ok(
        &s,
        Method::POST,
        "/api/sql",
        Some(json!({"sql": "SELECT score, count(*) AS n FROM evaluations GROUP BY score"})),
    );
    assert_eq!(rows["rows"][0][1], 5, "{rows}");
    let rows = ok(
        &s,
        Method::POST,
        "/api/sql",
        Some(json!({"sql": "SELECT count(*) FROM accounts WHERE domain = 'acme.com'"})),
    );
    assert_eq!(rows["rows"][0][0], 1, "{rows}");
}
