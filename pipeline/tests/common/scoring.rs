//! Helpers of the lead-evaluation tests: a server whose batches run when asked, the mapping
//! rules and ICP model they use, and leads that send distinct signals.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{Server, ADMIN_TOKEN};

/// A server whose batches run only when asked (the interval is an hour; one runs at start).
pub fn start(dir: &std::path::Path) -> Server {
    Server::start_with(dir, None, &[("TRAILSPARK_EVALUATION_INTERVAL", "3600")])
}

pub fn call(s: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = s.admin(method, path, ADMIN_TOKEN, body);
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn ok(s: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let (st, v) = call(s, method, path, body);
    assert!((200..300).contains(&st), "{path}: {st} {v}");
    v
}

/// The mapping rules the tests' signals use: a high-intent demo request (Form Fill), a
/// pricing page view (Page View) and product usage (Product Activity).
pub fn mapping_rules(s: &Server) {
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

pub fn model(s: &Server) -> Value {
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

pub struct Lead<'a> {
    pub s: &'a Server,
    pub key: String,
    pub email: String,
}

/// Makes every signal distinct (identical payloads are retries, deduplicated).
static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Lead<'_> {
    pub fn send(&self, mut body: Value) -> u64 {
        body["n"] = json!(NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let r = self.s.post_signal(&self.key, &body.to_string());
        assert_eq!(r.status(), 202);
        r.json::<Value>().unwrap()["log_position"].as_u64().unwrap()
    }
    pub fn identify(&self, traits: Value) -> u64 {
        self.send(json!({"type": "identify", "email": self.email, "traits": traits}))
    }
    pub fn event(&self, event: &str) -> u64 {
        self.send(json!({"event": event, "email": self.email}))
    }
    pub fn get(&self, pos: u64) -> Value {
        let path = format!(
            "/api/leads?email={}&wait_for={pos}",
            self.email.replace('@', "%40")
        );
        ok(self.s, Method::GET, &path, None)
    }
    pub fn id(&self, pos: u64) -> String {
        self.get(pos)["id"].as_str().unwrap().to_string()
    }
}

pub fn lead<'a>(s: &'a Server, email: &str) -> Lead<'a> {
    Lead {
        s,
        key: s.first_key.clone().unwrap(),
        email: email.into(),
    }
}

pub fn fitting() -> Value {
    json!({"industry": "B2B SaaS", "employees": 450, "region": "North America", "title": "VP Marketing"})
}

pub fn run_batch(s: &Server) -> u64 {
    ok(s, Method::POST, "/api/admin/evaluation/run", None)["evaluated"]
        .as_u64()
        .unwrap()
}

pub fn hours(e: &Value) -> i64 {
    let t = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (t("cooldown_until") - t("evaluated_at")) / 3_600_000
}

/// Polls the lead until `pred` holds (for what happens without a request: high intent).
pub fn wait_lead(l: &Lead, pred: impl Fn(&Value) -> bool) -> Value {
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
