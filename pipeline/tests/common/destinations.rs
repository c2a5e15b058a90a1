//! Helpers of the destination tests: a server whose evaluations run when asked and whose
//! deliveries retry quickly, leads evaluated in bulk, and waiting for a destination to
//! settle.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::crm::Store;
use super::scoring::{call, lead, mapping_rules, model, ok, run_batch};
use super::Server;

/// The environment the destination tests run with: batches only when asked, no scheduled
/// CRM syncs, and a 100 ms first retry.
pub const ENV: [(&str, &str); 4] = [
    ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
    ("TRAILSPARK_CRM_SYNC_INTERVAL", "3600"),
    ("TRAILSPARK_DESTINATION_RETRY_MS", "100"),
    ("TRAILSPARK_LOG", "warn"),
];

pub fn start(dir: &std::path::Path) -> Server {
    Server::start_with(dir, None, &ENV)
}

/// Mapping rules, a model, and settings that evaluate a lead after one signal, with no
/// cooldown (so a lead can be evaluated again at once).
pub fn prepare(s: &Server) {
    mapping_rules(s);
    model(s);
    ok(
        s,
        Method::PATCH,
        "/api/settings/lead-scoring",
        Some(json!({"min_signals": 1, "min_signal_types": 1, "cooling_off_enabled": false})),
    );
}

/// Sends each email a named identify and a pricing view; answers the last log position.
pub fn leads(s: &Server, emails: &[String]) -> u64 {
    let mut pos = 0;
    for (i, e) in emails.iter().enumerate() {
        let l = lead(s, e);
        l.identify(
            json!({"first_name": "Pat", "last_name": format!("Lead{i}"), "title": "VP Marketing"}),
        );
        pos = l.event("Pricing Viewed");
    }
    lead(s, &emails[0]).get(pos);
    pos
}

/// Runs a batch evaluation; answers how many leads it evaluated.
pub fn evaluate_all(s: &Server) -> u64 {
    run_batch(s)
}

/// The lead's latest evaluation.
pub fn latest(s: &Server, email: &str) -> Value {
    lead(s, email).get(0)["evaluation"].clone()
}

/// Creates a destination: 201 and its view.
pub fn create(s: &Server, body: Value) -> Value {
    let (st, v) = call(s, Method::POST, "/api/destinations", Some(body));
    assert_eq!(st, 201, "{v}");
    v
}

pub fn status(s: &Server, id: u64) -> Value {
    ok(
        s,
        Method::GET,
        &format!("/api/destinations/{id}/status"),
        None,
    )
}

/// Waits until destination `id` has nothing queued or in flight and `done` holds of its
/// status; answers the status.
pub fn settle(s: &Server, id: u64, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = status(s, id);
        if v["queued"] == 0 && v["in_flight"] == 0 && done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "destination {id} did not settle: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The failed deliveries of destination `id`.
pub fn failed(s: &Server, id: u64) -> Vec<Value> {
    ok(
        s,
        Method::GET,
        &format!("/api/destinations/{id}/deliveries?status=failed"),
        None,
    )["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Evaluation time of an evaluation JSON, in ms.
pub fn evaluated_ms(e: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(e["evaluated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Waits until destination `id`'s state is `state`; answers the status.
pub fn settle_state(s: &Server, id: u64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(s, id);
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "destination {id} never {state}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects an integration; answers its id.
pub fn connect(s: &Server, body: Value) -> u64 {
    let (st, v) = call(s, Method::POST, "/api/integrations", Some(body));
    assert_eq!(st, 201, "{v}");
    v["id"].as_u64().unwrap()
}

/// A field of the record of `object` with `email`.
pub fn field(store: &Store, object: &str, email_field: &str, email: &str, name: &str) -> Value {
    store
        .find(object, email_field, email)
        .and_then(|r| r.fields.get(name).cloned())
        .unwrap_or(Value::Null)
}

pub const SF_REFRESH: &str = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJvT8mLQ-refresh";

/// A Salesforce org with the suggested destination fields, one Account, `contacts`
/// Contacts of it, a person who is both a Contact and a Lead, and a Lead.
pub fn salesforce_store(contacts: usize) -> Store {
    let mut store = Store::salesforce();
    for o in ["Lead", "Contact"] {
        let schema = store.schema.get_mut(o).unwrap();
        schema.insert("TrailSpark_Score__c".into(), "string".into());
        schema.insert("TrailSpark_Evaluation_Date__c".into(), "datetime".into());
        schema.insert("TrailSpark_Reasoning__c".into(), "textarea".into());
    }
    store
        .schema
        .get_mut("Account")
        .unwrap()
        .insert("TrailSpark_Propensity__c".into(), "string".into());
    let t0 = 1_700_000_000_000;
    store.put(
        "Account",
        "001A",
        t0,
        json!({"Name": "Acme", "Website": "https://acme.com"}),
    );
    for i in 0..contacts {
        store.put("Contact", &format!("003C{i:04}"), t0, json!({"AccountId": "001A", "Email": format!("c{i}@acme.com"), "LastName": format!("C{i}")}));
    }
    // One person who is both a Contact and a Lead: the Contact is written.
    store.put(
        "Contact",
        "003BOTH",
        t0,
        json!({"AccountId": "001A", "Email": "both@acme.com", "LastName": "Both"}),
    );
    store.put(
        "Lead",
        "00QBOTH",
        t0,
        json!({"Email": "both@acme.com", "LastName": "Both", "Company": "Acme"}),
    );
    store.put(
        "Lead",
        "00QL1",
        t0,
        json!({"Email": "lee@initech.com", "LastName": "Lee", "Company": "Initech"}),
    );
    store
}

/// Another org's Owner sees none of destination `id`, cannot change it, and cannot create a
/// destination with `create` (a body naming this org's integration).
pub fn isolated(s: &Server, id: u64, create: Value) {
    let r = s.admin(
        Method::POST,
        "/api/admin/orgs",
        super::ADMIN_TOKEN,
        Some(json!({"name": "Other"})),
    );
    let other = r.json::<serde_json::Value>().unwrap()["owner_token"]
        .as_str()
        .unwrap()
        .to_string();
    let as_other = |m: Method, path: &str, body: Option<serde_json::Value>| {
        let r = s.admin(m, path, &other, body);
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().unwrap_or_default(),
        )
    };
    let (st, v) = as_other(Method::GET, "/api/destinations", None);
    assert_eq!(
        (st, v["destinations"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    for path in ["", "/status", "/deliveries?status=failed"] {
        let (st, _) = as_other(Method::GET, &format!("/api/destinations/{id}{path}"), None);
        assert_eq!(st, 404, "{path}");
    }
    assert_eq!(
        as_other(Method::POST, &format!("/api/destinations/{id}/retry"), None).0,
        404
    );
    assert_eq!(
        as_other(
            Method::PATCH,
            &format!("/api/destinations/{id}"),
            Some(json!({"send_evaluations": false}))
        )
        .0,
        404
    );
    assert_eq!(
        as_other(Method::DELETE, &format!("/api/destinations/{id}"), None).0,
        404
    );
    let (st, v) = as_other(Method::POST, "/api/destinations", Some(create));
    assert_eq!(st, 400, "{v}");
}
