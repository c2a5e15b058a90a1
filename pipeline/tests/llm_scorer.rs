//! The LLM scorer against a local contract server of OpenAI's chat-completions API: answers
//! stored as evaluations, every failure (malformed or wrongly shaped answers, 429s, 500s,
//! timeouts, a wrong key) stored as nothing and retried with backoff, and a kill -9 in the
//! middle of a slow batch that loses no evaluation and stores none twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::llm::{Fault, LlmServer};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "sk-test-0123";
const MODEL: &str = "test-model";

fn start(dir: &std::path::Path, llm: &LlmServer) -> Server {
    Server::start_with(
        dir,
        None,
        &[
            ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
            ("TRAILSPARK_LLM_URL", &llm.url),
            ("TRAILSPARK_LLM_MODEL", MODEL),
            ("TRAILSPARK_LLM_API_KEY", KEY),
            ("TRAILSPARK_LLM_TIMEOUT_SECS", "2"),
        ],
    )
}

fn ok(s: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let r = s.admin(method, path, ADMIN_TOKEN, body);
    let st = r.status().as_u16();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert!((200..300).contains(&st), "{path}: {st} {v}");
    v
}

fn setup(s: &Server) {
    for (name, t, event) in [
        ("Pricing page", "Page View", "Pricing Viewed"),
        ("Feature used", "Product Activity", "Feature Used"),
    ] {
        ok(
            s,
            Method::POST,
            "/api/mapping-rules",
            Some(json!({
            "name": name, "signal_type": t,
            "conditions": [{"field": "event", "op": "equals", "value": event}],
            "mappings": [{"field": "email", "path": "email"}]})),
        );
    }
    ok(
        s,
        Method::POST,
        "/api/icp-models",
        Some(json!({
        "name": "ICP", "account_profile": "B2B SaaS companies with 200-1000 employees."})),
    );
}

/// Makes `email` an eligible lead; answers its id.
fn eligible(s: &Server, email: &str) -> String {
    let key = s.first_key.clone().unwrap();
    let mut pos = 0;
    for (i, event) in ["Pricing Viewed", "Feature Used", "Feature Used"]
        .iter()
        .enumerate()
    {
        let r = s.post_signal(
            &key,
            &json!({"event": event, "email": email, "n": i}).to_string(),
        );
        pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    }
    let v = ok(
        s,
        Method::GET,
        &format!(
            "/api/leads?email={}&wait_for={pos}",
            email.replace('@', "%40")
        ),
        None,
    );
    v["id"].as_str().unwrap().to_string()
}

fn lead(s: &Server, id: &str) -> Value {
    ok(s, Method::GET, &format!("/api/leads/{id}"), None)
}

fn evaluate(s: &Server, id: &str) -> (u16, Value) {
    let r = s.admin(
        Method::POST,
        &format!("/api/leads/{id}/evaluate"),
        ADMIN_TOKEN,
        None,
    );
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn wait_evaluated(s: &Server, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = lead(s, id);
        if !v["evaluation"].is_null() {
            return v["evaluation"].clone();
        }
        assert!(Instant::now() < deadline, "never evaluated: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn answers_are_stored_and_failures_never_are() {
    let llm = LlmServer::start(KEY, MODEL);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &llm);
    setup(&s);
    let a = eligible(&s, "ana@acme.com");

    for (fault, says) in [
        (Fault::Malformed, "invalid"),
        (Fault::WrongShape, "confidence 150"),
        (Fault::RateLimited(1), "429"),
        (Fault::ServerError, "500"),
        (Fault::Delay(Duration::from_secs(4)), "did not answer"),
    ] {
        llm.push(fault);
        let (st, v) = evaluate(&s, &a);
        assert_eq!(
            (st, v["error"].as_str()),
            (502, Some("evaluation_error")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
        let l = lead(&s, &a);
        assert!(l["evaluation"].is_null(), "a failure is never stored");
        assert_eq!(l["last_skip_reason"], "evaluation_error");
    }
    let (st, e) = evaluate(&s, &a);
    assert_eq!(st, 200, "{e}");
    assert_eq!(
        (e["score"].as_str(), e["scorer"].as_str()),
        (Some("warm"), Some("llm:test-model"))
    );
    assert_eq!(e["reasoning"], "Fits the ICP; steady product use.");
    assert_eq!(
        (e["confidence"].as_u64(), e["propensity"].as_str()),
        (Some(82), Some("medium"))
    );
    // What the model was given: the context (lead, ICP, signals) and the feature table.
    let body = llm.state.lock().unwrap().bodies.last().unwrap().clone();
    assert_eq!(body["model"], MODEL);
    let user: Value =
        serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(user["context"]["lead"]["email"], "ana@acme.com");
    assert_eq!(user["context"]["signals"].as_array().unwrap().len(), 3);
    assert!(user["context"]["icp"]["accountProfile"].is_string());
    assert!(user["features"].is_array());

    // A batch: a malformed answer, then a 429 asking for 2 s; retried with backoff.
    let b = eligible(&s, "bo@acme.com");
    llm.push(Fault::Malformed);
    llm.push(Fault::RateLimited(2));
    let started = Instant::now();
    let n = ok(&s, Method::POST, "/api/admin/evaluation/run", None)["evaluated"]
        .as_u64()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(lead(&s, &b)["last_skip_reason"], "evaluation_error");
    let e = wait_evaluated(&s, &b, Duration::from_secs(20));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the 429's retry-after was honoured"
    );
    assert_eq!(e["scorer"], "llm:test-model");

    // A wrong key is the API's 401, stored as nothing.
    llm.state.lock().unwrap().key = "sk-other".into();
    let c = eligible(&s, "cy@acme.com");
    let (st, v) = evaluate(&s, &c);
    assert_eq!(st, 502);
    assert!(v["message"].as_str().unwrap().contains("401"), "{v}");
}

/// The evaluations of a log dump, counted by lead.
fn evaluations_by_lead(s: &Server) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in s.dump().iter().filter(|e| e["kind"] == "evaluation") {
        *out.entry(e["evaluation"]["lead_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn kill_9_during_a_batch_loses_none_and_stores_none_twice() {
    let llm = LlmServer::start(KEY, MODEL);
    llm.state.lock().unwrap().latency = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &llm);
    setup(&s);
    let leads: Vec<String> = (0..40)
        .map(|i| eligible(&s, &format!("p{i}@acme.com")))
        .collect();
    let url = s.url("/api/admin/evaluation/run");
    std::thread::spawn(move || {
        let _ = client().post(url).bearer_auth(ADMIN_TOKEN).send();
    });
    // Some of the batch is on the log, not all of it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while llm.calls.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the batch did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    let before = evaluations_by_lead(&s);
    assert!(
        !before.is_empty() && before.len() < leads.len(),
        "{} of {} stored before the kill",
        before.len(),
        leads.len()
    );
    assert!(before.values().all(|n| *n == 1));

    let s = start(dir.path(), &llm);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client().get(s.url("/readyz")).send().unwrap().status() != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The start's batch, or this one, evaluates the rest.
    ok(&s, Method::POST, "/api/admin/evaluation/run", None);
    for id in &leads {
        wait_evaluated(&s, id, Duration::from_secs(30));
    }
    let after = evaluations_by_lead(&s);
    assert_eq!(after.len(), leads.len(), "none lost");
    assert!(
        after.values().all(|n| *n == 1),
        "none stored twice: {after:?}"
    );
    let mine: std::collections::BTreeSet<&String> = leads.iter().collect();
    assert!(after.keys().all(|k| mine.contains(k)));
}
