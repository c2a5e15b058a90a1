//! Lead evaluation end to end through HTTP, with the deterministic scorer: batch, high-intent
//! and manual triggers, every skip reason, cooldowns and the settings that set them, the
//! confidence gate, the views of evaluations and accounts, and a restart that replays
//! evaluations without scoring again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A server whose batches run only when asked (the interval is an hour; one runs at start).
fn start(dir: &std::path::Path) -> Server {
    Server::start_with(dir, None, &[("TRAILSPARK_EVALUATION_INTERVAL", "3600")])
}

fn call(s: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = s.admin(method, path, ADMIN_TOKEN, body);
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn ok(s: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let (st, v) = call(s, method, path, body);
    assert!((200..300).contains(&st), "{path}: {st} {v}");
    v
}

/// The mapping rules the tests' signals use: a high-intent demo request (Form Fill), a
/// pricing page view (Page View) and product usage (Product Activity).
fn mapping_rules(s: &Server) {
    for (name, t, event, high) in [
        ("Demo request", "Form Fill", "Demo Requested", true),
        ("Pricing page", "Page View", "Pricing Viewed", false),
        ("Feature used", "Product Activity", "Feature Used", false),
    ] {
        ok(
            s,
            Method::POST,
            "/api/mapping-rules",
            Some(json!({"name": name, "signal_type": t, "high_intent": high,
                        "description": format!("{name} (test rule)"),
                        "conditions": [{"field": "event", "op": "equals", "value": event}],
                        "mappings": [{"field": "email", "path": "email"}]})),
        );
    }
}

fn model(s: &Server) -> Value {
    ok(
        s,
        Method::POST,
        "/api/icp-models",
        Some(json!({
            "name": "Mid-market SaaS", "method": "manual",
            "account_profile": "Mid-market B2B SaaS companies in North America with 200-1000 employees.",
            "contact_personas": "VPs of Marketing.",
            "positive_signals": "Demo requests.",
            "criteria": {"industries": ["saas"], "employee_ranges": [{"min": 200, "max": 1000}],
                         "regions": ["north america"], "seniorities": ["vp", "head"],
                         "titles": ["marketing"],
                         "positive_signals": [{"name": "demo", "weight": 9}]}})),
    )
}

struct Lead<'a> {
    s: &'a Server,
    key: String,
    email: String,
}

/// Makes every signal distinct (identical payloads are retries, deduplicated).
static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Lead<'_> {
    fn send(&self, mut body: Value) -> u64 {
        body["n"] = json!(NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let r = self.s.post_signal(&self.key, &body.to_string());
        assert_eq!(r.status(), 202);
        r.json::<Value>().unwrap()["log_position"].as_u64().unwrap()
    }
    fn identify(&self, traits: Value) -> u64 {
        self.send(json!({"type": "identify", "email": self.email, "traits": traits}))
    }
    fn event(&self, event: &str) -> u64 {
        self.send(json!({"event": event, "email": self.email}))
    }
    fn get(&self, pos: u64) -> Value {
        let path = format!(
            "/api/leads?email={}&wait_for={pos}",
            self.email.replace('@', "%40")
        );
        ok(self.s, Method::GET, &path, None)
    }
    fn id(&self, pos: u64) -> String {
        self.get(pos)["id"].as_str().unwrap().to_string()
    }
}

fn lead<'a>(s: &'a Server, email: &str) -> Lead<'a> {
    Lead {
        s,
        key: s.first_key.clone().unwrap(),
        email: email.into(),
    }
}

fn fitting() -> Value {
    json!({"industry": "B2B SaaS", "employees": 450, "region": "North America", "title": "VP Marketing"})
}

fn run_batch(s: &Server) -> u64 {
    ok(s, Method::POST, "/api/admin/evaluation/run", None)["evaluated"]
        .as_u64()
        .unwrap()
}

fn hours(e: &Value) -> i64 {
    let t = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (t("cooldown_until") - t("evaluated_at")) / 3_600_000
}

/// Polls the lead until `pred` holds (for what happens without a request: high intent).
fn wait_lead(l: &Lead, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = l.get(0);
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
fn every_skip_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    mapping_rules(&s);
    let evaluate = |l: &Lead, pos: u64| {
        let id = l.id(pos);
        call(&s, Method::POST, &format!("/api/leads/{id}/evaluate"), None)
    };
    let refused = |l: &Lead, pos: u64, reason: &str| {
        let (st, v) = evaluate(l, pos);
        assert_eq!(
            (st, v["error"].as_str(), v["reason"].as_str()),
            (409, Some("not_evaluated"), Some(reason)),
            "{v}"
        );
        v
    };

    let one = lead(&s, "one@acme.com");
    let p = one.event("Pricing Viewed");
    assert_eq!(one.get(p)["last_skip_reason"], "insufficient_signals");
    refused(&one, p, "insufficient_signals");

    let views = lead(&s, "views@acme.com");
    views.event("Pricing Viewed");
    views.event("Pricing Viewed");
    let p = views.event("Pricing Viewed");
    assert_eq!(
        views.get(p)["last_skip_reason"],
        "insufficient_signal_types"
    );
    refused(&views, p, "insufficient_signal_types");

    let ready = |email: &str, traits: Value| {
        let l = lead(&s, email);
        l.identify(traits);
        l.event("Pricing Viewed");
        l.event("Feature Used");
        let p = l.event("Feature Used");
        (l, p)
    };
    let (a, p) = ready("a@acme.com", fitting());
    refused(&a, p, "no_active_model");
    run_batch(&s);
    assert_eq!(a.get(0)["last_skip_reason"], "no_active_model");

    model(&s);
    let rule = ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "No students", "conditions": [
            {"field": "lead.title", "op": "not_contains", "value": "student", "allow_if_empty": true}]})),
    );
    let (st, bad) = call(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(
            json!({"name": "x", "conditions": [{"field": "title", "op": "equals", "value": "x"}]}),
        ),
    );
    assert_eq!(st, 400, "{bad}");
    let (student, p) = ready("kid@acme.com", json!({"title": "Student"}));
    let v = refused(&student, p, "excluded_by_rule");
    assert_eq!(
        (v["rule_id"].clone(), v["rule_name"].as_str()),
        (rule["id"].clone(), Some("No students"))
    );
    assert_eq!(student.get(0)["last_skip_reason"], "excluded_by_rule");
    // A rule on the product org: only leads of a paying workspace.
    let paying = ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "Paying workspaces", "conditions": [
            {"field": "product_org.plan_id", "op": "equals", "value": "pro", "allow_if_empty": true}]})),
    );
    let (free, p) = ready("free@acme.com", json!({}));
    free.send(
        json!({"event": "Pricing Viewed", "email": "free@acme.com", "productOrgId": "ws_free"}),
    );
    let pkey = s.create_key(json!({"name": "po", "endpoint_type": "product_org",
                                   "template": {"product_org_id": "groupId", "plan_id": "traits.plan"}}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client()
        .post(s.url(&format!("/api/product-orgs/webhook/{pkey}")))
        .body(
            json!({"type": "group", "groupId": "ws_free", "traits": {"plan": "free"}}).to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    let v = refused(&free, pos.max(p), "excluded_by_rule");
    assert_eq!(v["rule_id"], paying["id"]);

    // The quota: one evaluation a month.
    ok(
        &s,
        Method::PATCH,
        "/api/admin/plan",
        Some(json!({"evaluation_limit": 1})),
    );
    let (st, first) = evaluate(&a, 0);
    assert_eq!(st, 200, "{first}");
    let (b, p) = ready("b@acme.com", fitting());
    refused(&b, p, "evaluation_limit_reached");
    run_batch(&s);
    assert_eq!(b.get(0)["last_skip_reason"], "evaluation_limit_reached");
    let usage = ok(&s, Method::GET, "/api/admin/plan", None);
    assert_eq!(usage["evaluation_limit"], 1);
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

#[test]
fn settings_rules_and_models_follow_the_role_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let token = |role: &str| {
        ok(
            &s,
            Method::POST,
            "/api/admin/tokens",
            Some(json!({"role": role, "name": role})),
        )["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (viewer, editor) = (token("viewer"), token("editor"));
    let as_ = |t: &str, m: Method, path: &str, body: Option<Value>| {
        s.admin(m, path, t, body).status().as_u16()
    };
    assert_eq!(
        as_(&viewer, Method::GET, "/api/settings/lead-scoring", None),
        200
    );
    assert_eq!(
        as_(
            &editor,
            Method::PUT,
            "/api/settings/lead-scoring",
            Some(json!({"min_signals": 2}))
        ),
        403
    );
    assert_eq!(
        as_(
            &viewer,
            Method::POST,
            "/api/evaluation-rules",
            Some(
                json!({"name": "x", "conditions": [{"field": "lead.title", "op": "is_not_empty"}]})
            )
        ),
        403
    );
    assert_eq!(
        as_(
            &editor,
            Method::POST,
            "/api/evaluation-rules",
            Some(
                json!({"name": "x", "conditions": [{"field": "lead.title", "op": "is_not_empty"}]})
            )
        ),
        201
    );
    let body =
        json!({"name": "m", "account_profile": "SaaS companies with 50-500 employees in Europe."});
    assert_eq!(
        as_(&viewer, Method::POST, "/api/icp-models", Some(body.clone())),
        403
    );
    assert_eq!(
        as_(&editor, Method::POST, "/api/icp-models", Some(body.clone())),
        201
    );
    // Read from the text: the criteria it names.
    let models = ok(&s, Method::GET, "/api/icp-models", None);
    let m = &models["models"][0];
    assert_eq!(
        m["criteria"]["employee_ranges"],
        json!([{"min": 50, "max": 500}])
    );
    assert_eq!(m["criteria"]["regions"], json!(["europe"]));
    assert!(m["derived_criteria"]
        .as_array()
        .unwrap()
        .contains(&json!("industries")));
    // A second model becomes the active one; the first can be made active again.
    let second = ok(&s, Method::POST, "/api/icp-models", Some(body));
    assert_eq!(second["version"], 2);
    let first = ok(
        &s,
        Method::POST,
        &format!("/api/icp-models/{}/activate", m["id"]),
        None,
    );
    assert_eq!(first["status"], "active");
    let again = ok(
        &s,
        Method::GET,
        &format!("/api/icp-models/{}", second["id"]),
        None,
    );
    assert_eq!(again["status"], "inactive");
    // The Models meter bounds creation.
    ok(
        &s,
        Method::PATCH,
        "/api/admin/plan",
        Some(json!({"icp_model_limit": 2})),
    );
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "third", "account_profile": "x"})),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("limit_reached")),
        "{v}"
    );
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "m", "method": "sparksense", "account_profile": "x"})),
    );
    assert_eq!(st, 400);
}
