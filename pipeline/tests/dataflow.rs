//! The dataflow end to end through HTTP: signals in, read models out, with `wait_for` so no
//! test sleeps.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn start() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    (dir, s, key)
}

/// Posts a signal, asserts 202, returns its log position.
fn send(s: &Server, key: &str, body: Value) -> u64 {
    let r = s.post_signal(key, &body.to_string());
    assert_eq!(r.status(), 202, "{body}");
    r.json::<Value>().unwrap()["log_position"].as_u64().unwrap()
}

fn get(s: &Server, path: &str, wait_for: u64) -> Value {
    let r = s.get_at(path, wait_for);
    assert_eq!(r.status(), 200, "{path}");
    r.json().unwrap()
}

fn stats(s: &Server, wait_for: u64) -> (i64, i64, i64, i64, i64) {
    let v = get(s, "/api/explorer/stats", wait_for);
    let n = |k: &str| v[k].as_i64().unwrap();
    (
        n("total"),
        n("pending"),
        n("processed"),
        n("failed"),
        n("skipped"),
    )
}

fn rule(s: &Server, body: Value) -> Value {
    let r = s.admin(
        Method::POST,
        "/api/mapping-rules",
        ADMIN_TOKEN,
        Some(body.clone()),
    );
    assert_eq!(r.status(), 201, "{body}");
    r.json().unwrap()
}

#[test]
fn anonymous_page_views_then_identify_make_one_lead_with_everything_processed() {
    let (_d, s, key) = start();
    rule(
        &s,
        json!({"name": "Viewed page", "signal_type": "Page View",
        "conditions": [{"field": "type", "op": "equals", "value": "page"}],
        "mappings": [{"field": "email", "path": "context.traits.email"}]}),
    );
    rule(
        &s,
        json!({"name": "Identified", "signal_type": "Form Fill",
        "conditions": [{"field": "type", "op": "equals", "value": "identify"}],
        "mappings": [{"field": "email", "path": "traits.email"}, {"field": "title", "path": "traits.title"}]}),
    );
    let mut last = 0;
    for page in ["/pricing", "/docs", "/demo"] {
        let r = s.post_signal(
            &key,
            &json!({"type": "page", "anonymousId": "A1", "properties": {"url": page}}).to_string(),
        );
        let body: Value = r.json().unwrap();
        assert_eq!(body["cold_storage"], true);
        last = body["log_position"].as_u64().unwrap();
    }
    assert_eq!(
        stats(&s, last),
        (3, 3, 0, 0, 0),
        "held cold until identified"
    );
    let r = s.admin(
        Method::GET,
        &format!("/api/leads?email=x%40y.com&wait_for={last}"),
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 404, "no lead before the identify");
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "A1", "traits": {"email": "X@Y.com", "title": "CTO"}}),
    );
    assert_eq!(
        stats(&s, pos),
        (4, 0, 4, 0, 0),
        "the three page views were rehydrated and mapped"
    );
    let lead = get(&s, "/api/leads?email=x%40y.com", pos);
    assert_eq!(lead["signals"], 4);
    assert_eq!(lead["traits"]["title"], "CTO");
    assert!(lead["identifiers"]
        .as_array()
        .unwrap()
        .contains(&json!({"kind": "anonymous_id", "value": "A1"})));
    assert_eq!(lead["recent_signals"].as_array().unwrap().len(), 4);
    let by_id = get(
        &s,
        &format!("/api/leads/{}", lead["id"].as_str().unwrap()),
        pos,
    );
    assert_eq!(by_id["id"], lead["id"]);
    // Later anonymous signals of A1 go straight to the lead.
    let pos = send(
        &s,
        &key,
        json!({"type": "page", "anonymousId": "A1", "properties": {"url": "/blog"}}),
    );
    assert_eq!(stats(&s, pos), (5, 0, 5, 0, 0));
    // Cross-device: a second device identified as the same person joins the lead.
    send(
        &s,
        &key,
        json!({"type": "page", "anonymousId": "A2", "properties": {"url": "/x"}}),
    );
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "A2", "traits": {"email": "x@y.com"}}),
    );
    let lead = get(&s, "/api/leads?email=x%40y.com", pos);
    assert_eq!(lead["signals"], 7);
    assert_eq!(get(&s, "/api/leads?anonymous_id=A2", pos)["id"], lead["id"]);
}

#[test]
fn rule_edit_with_reprocess_flips_exactly_the_affected_signals() {
    let (_d, s, key) = start();
    let r = rule(
        &s,
        json!({"name": "Pro form", "signal_type": "Form Fill",
        "conditions": [{"field": "event", "op": "equals", "value": "Form Filled"}, {"field": "properties.plan", "op": "equals", "value": "pro"}],
        "mappings": [{"field": "email", "path": "email"}]}),
    );
    let id = r["id"].as_u64().unwrap();
    let mut last = 0;
    for (i, plan) in ["pro", "pro", "pro", "free", "free"].iter().enumerate() {
        last = send(
            &s,
            &key,
            json!({"event": "Form Filled", "email": format!("p{i}@x.io"), "properties": {"plan": plan}}),
        );
    }
    assert_eq!(stats(&s, last), (5, 0, 3, 0, 2));
    // Edit without reprocess: earlier signals keep their result; new ones follow the edit.
    let edit = json!({"name": "Free form", "signal_type": "Form Fill",
        "conditions": [{"field": "event", "op": "equals", "value": "Form Filled"}, {"field": "properties.plan", "op": "equals", "value": "free"}],
        "mappings": [{"field": "email", "path": "email"}]});
    let r = s.admin(
        Method::PUT,
        &format!("/api/mapping-rules/{id}"),
        ADMIN_TOKEN,
        Some(edit.clone()),
    );
    assert_eq!(r.status(), 200);
    let pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    assert_eq!(
        stats(&s, pos),
        (5, 0, 3, 0, 2),
        "no reprocess: the past stays"
    );
    let pos = send(
        &s,
        &key,
        json!({"event": "Form Filled", "email": "new@x.io", "properties": {"plan": "free"}}),
    );
    assert_eq!(stats(&s, pos), (6, 0, 4, 0, 2));
    // With reprocess: the pro signals flip to skipped, the earlier free ones to completed.
    let mut edit = edit;
    edit["reprocess"] = json!(true);
    let r = s.admin(
        Method::PUT,
        &format!("/api/mapping-rules/{id}"),
        ADMIN_TOKEN,
        Some(edit),
    );
    let pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    assert_eq!(stats(&s, pos), (6, 0, 3, 0, 3));
    let lead = get(&s, "/api/leads?email=p0%40x.io", pos);
    assert_eq!(lead["recent_signals"][0]["status"], "skipped");
    let lead = get(&s, "/api/leads?email=p3%40x.io", pos);
    assert_eq!(lead["recent_signals"][0]["status"], "completed");
    assert_eq!(lead["recent_signals"][0]["signal_name"], "Free form");
    // Deleting keeps the past; later matching signals are skipped.
    let r = s.admin(
        Method::DELETE,
        &format!("/api/mapping-rules/{id}"),
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 200);
    let pos = send(
        &s,
        &key,
        json!({"event": "Form Filled", "email": "late@x.io", "properties": {"plan": "free"}}),
    );
    assert_eq!(stats(&s, pos), (7, 0, 3, 0, 4));
    // Failures carry the documented texts.
    rule(
        &s,
        json!({"name": "Needs email", "signal_type": "Form Fill",
        "conditions": [{"field": "event", "op": "equals", "value": "Signup"}],
        "mappings": [{"field": "email", "path": "traits.email"}, {"field": "crm_id", "path": "properties"}]}),
    );
    let a = send(&s, &key, json!({"event": "Signup", "properties": {"x": 1}}));
    let b = send(&s, &key, json!({"event": "Signup"}));
    assert_eq!(
        stats(&s, a.max(b)).3,
        2,
        "Invalid path and No identifying field are failures"
    );
    // Validation: no identifying mapping, or cdp_id alone.
    for bad in [
        json!({"name": "x", "signal_type": "Page View", "mappings": [{"field": "title", "path": "t"}]}),
        json!({"name": "x", "signal_type": "Page View", "mappings": [{"field": "cdp_id", "path": "anonymousId"}]}),
        json!({"name": "", "signal_type": "Page View", "mappings": [{"field": "email", "path": "email"}]}),
        json!({"name": "x", "signal_type": "Webinar", "mappings": [{"field": "email", "path": "email"}]}),
    ] {
        let r = s.admin(
            Method::POST,
            "/api/mapping-rules",
            ADMIN_TOKEN,
            Some(bad.clone()),
        );
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[test]
fn blocked_anonymous_id_does_not_merge_two_people() {
    let (_d, s, key) = start();
    send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "anonymous", "traits": {"email": "ann@x.io"}}),
    );
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "anonymous", "traits": {"email": "bob@x.io"}}),
    );
    let ann = get(&s, "/api/leads?email=ann%40x.io", pos);
    let bob = get(&s, "/api/leads?email=bob%40x.io", pos);
    assert_ne!(ann["id"], bob["id"]);
    assert_eq!(ann["signals"], 1);
    // A shared device (two user ids) is reported, not merged.
    send(&s, &key, json!({"userId": "u1", "deviceId": "kiosk-7"}));
    let pos = send(&s, &key, json!({"userId": "u2", "deviceId": "kiosk-7"}));
    assert_ne!(
        get(&s, "/api/leads?user_id=u1", pos)["id"],
        get(&s, "/api/leads?user_id=u2", pos)["id"]
    );
    let c = get(&s, "/api/identity/conflicts", pos);
    assert!(c["conflicts"].as_array().unwrap().contains(&json!({
        "identifier": {"kind": "device_id", "value": "kiosk-7"}, "refused_links_to": "user_id"
    })));
}

#[test]
fn operators_block_more_identifier_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        None,
        &[("TRAILSPARK_BLOCKED_IDENTIFIERS", "guest, shared-laptop")],
    );
    let key = s.first_key.clone().unwrap();
    send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "GUEST", "traits": {"email": "a@x.io"}}),
    );
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "guest", "traits": {"email": "b@x.io"}}),
    );
    assert_ne!(
        get(&s, "/api/leads?email=a%40x.io", pos)["id"],
        get(&s, "/api/leads?email=b%40x.io", pos)["id"]
    );
}

#[test]
fn dataflow_follows_the_jetstream_log() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), Some(&nats.url()));
    let key = s.first_key.clone().unwrap();
    send(&s, &key, json!({"type": "page", "anonymousId": "n1"}));
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "n1", "traits": {"email": "n@x.io"}}),
    );
    assert_eq!(stats(&s, pos).0, 2);
    assert_eq!(get(&s, "/api/leads?email=n%40x.io", pos)["signals"], 2);
    // A restart replays the stream into a fresh dataflow.
    s.restart();
    assert_eq!(get(&s, "/api/leads?email=n%40x.io", pos)["signals"], 2);
}

#[test]
fn raw_signal_limit_answers_429_at_the_limit_and_not_before() {
    let (_d, s, key) = start();
    let r = s.admin(
        Method::PUT,
        "/api/admin/plan",
        ADMIN_TOKEN,
        Some(json!({"raw_signal_limit": 5, "mapped_signal_limit": 0, "overage": false})),
    );
    assert_eq!(r.status(), 200);
    for i in 0..4 {
        send(&s, &key, json!({"event": "e", "n": i}));
    }
    // A batch of three with one slot left: one accepted, two refused with limit_reached.
    let url = s.url(&format!("/api/signal-staging/webhook/{key}/batch"));
    let r = client()
        .post(&url)
        .json(&json!([{"n": 10}, {"n": 11}, {"n": 12}]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let b: Value = r.json().unwrap();
    assert_eq!(
        (b["accepted"].as_u64(), b["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(b["results"][1]["error"], "limit_reached");
    let r = s.post_signal(&key, r#"{"n": 99}"#);
    assert_eq!(r.status(), 429);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "limit_reached");
    assert_eq!(body["limit"]["value"], 5);
    // At the limit even a retry of a stored signal is refused: the quota is checked before the
    // log recognises retries. Nothing is lost: the signal was stored the first time.
    assert_eq!(s.post_signal(&key, r#"{"event":"e","n":0}"#).status(), 429);
    let last = s.dump().last().unwrap()["position"].as_u64().unwrap();
    let usage = get(&s, "/api/usage", last);
    assert_eq!(usage["raw_signals"], 5);
    let raw = &usage["meters"][0];
    assert_eq!(
        (
            raw["used"].as_i64(),
            raw["percent"].as_u64(),
            raw["color"].as_str()
        ),
        (Some(5), Some(100), Some("red"))
    );
    // Overages let ingestion continue past the limit.
    s.admin(
        Method::PUT,
        "/api/admin/plan",
        ADMIN_TOKEN,
        Some(json!({"raw_signal_limit": 5, "mapped_signal_limit": 0, "overage": true})),
    );
    assert_eq!(s.post_signal(&key, r#"{"n": 100}"#).status(), 202);
    // Unlimited.
    s.admin(
        Method::PUT,
        "/api/admin/plan",
        ADMIN_TOKEN,
        Some(json!({"raw_signal_limit": 0, "mapped_signal_limit": 0, "overage": false})),
    );
    assert_eq!(s.post_signal(&key, r#"{"n": 101}"#).status(), 202);
}

#[test]
fn signal_groups_and_roles() {
    let (_d, s, key) = start();
    for i in 0..3 {
        send(
            &s,
            &key,
            json!({"event": "form_submit", "email": format!("u{i}@x.io"), "properties": {"form_name": "ContactForm", "page_url": "https://a.io/pricing-page/"}}),
        );
    }
    // An anonymous signal waits in cold storage, not staged: it is in no group
    // until an identify brings it in.
    send(&s, &key, json!({"type": "page", "anonymousId": "z9"}));
    let pos = send(
        &s,
        &key,
        json!({"type": "identify", "anonymousId": "z1", "traits": {"email": "z@x.io"}}),
    );
    let g = get(&s, "/api/signal-queue/groups", pos);
    let groups = g["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(
        groups[0]["title"],
        "form_submit - ContactForm (pricing_page) [action]"
    );
    assert_eq!(groups[0]["count"], 3);
    assert!(
        groups[0]["sample"]["email"].is_string(),
        "the sample has an email"
    );
    assert_eq!(groups[1]["title"], "identify [action]");
    // A rule for the group moves it to the mapped tab (with reprocess, for the backlog).
    let r = rule(
        &s,
        json!({"name": "Contact form", "signal_type": "Form Fill", "reprocess": true,
        "conditions": [{"field": "properties.form_name", "op": "equals", "value": "ContactForm"}],
        "mappings": [{"field": "email", "path": "email"}]}),
    );
    let pos = r["log_position"].as_u64().unwrap();
    let mapped = get(&s, "/api/signal-queue/groups?tab=mapped", pos);
    assert_eq!(mapped["groups"][0]["count"], 3);
    let unmapped = get(&s, "/api/signal-queue/groups", pos);
    assert_eq!(unmapped["groups"].as_array().unwrap().len(), 1);
    // Viewers may read usage and leads, not the explorer or rules.
    let t: Value = s
        .admin(
            Method::POST,
            "/api/admin/tokens",
            ADMIN_TOKEN,
            Some(json!({"role": "viewer"})),
        )
        .json()
        .unwrap();
    let viewer = t["token"].as_str().unwrap();
    assert_eq!(
        s.admin(Method::GET, "/api/explorer/stats", viewer, None)
            .status(),
        403
    );
    assert_eq!(
        s.admin(Method::GET, "/api/mapping-rules", viewer, None)
            .status(),
        403
    );
    assert_eq!(
        s.admin(Method::GET, "/api/usage", viewer, None).status(),
        200
    );
    assert_eq!(
        client().get(s.url("/api/usage")).send().unwrap().status(),
        401
    );
}

#[test]
fn state_is_rebuilt_identically_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    rule(
        &s,
        json!({"name": "Any", "signal_type": "Page View", "mappings": [{"field": "email", "path": "traits.email"}]}),
    );
    let mut last = 0;
    for i in 0..40 {
        let body = match i % 4 {
            0 => json!({"type": "page", "anonymousId": format!("a{}", i % 7)}),
            1 => {
                json!({"type": "identify", "anonymousId": format!("a{}", i % 7), "traits": {"email": format!("p{}@x.io", i % 5)}})
            }
            2 => {
                json!({"event": "form_submit", "email": format!("p{}@x.io", i % 5), "properties": {"form_name": "F"}})
            }
            _ => json!({"event": "dup"}),
        };
        // A recognised retry answers its original (earlier) position.
        last = last.max(send(&s, &key, body));
    }
    let before = (
        stats(&s, last),
        get(&s, "/api/usage", last)["staged_signals"].clone(),
        get(&s, "/api/signal-queue/groups", last)["groups"].clone(),
    );
    let lead_before = get(&s, "/api/leads?email=p1%40x.io", last);
    s.restart();
    let after = (
        stats(&s, last),
        get(&s, "/api/usage", last)["staged_signals"].clone(),
        get(&s, "/api/signal-queue/groups", last)["groups"].clone(),
    );
    assert_eq!(before, after);
    let mut lead_after = get(&s, "/api/leads?email=p1%40x.io", last);
    let mut lead_before = lead_before;
    lead_before["log_position"] = Value::Null;
    lead_after["log_position"] = Value::Null;
    assert_eq!(lead_before, lead_after);
}

/// A rule made without reprocessing leaves what came before it alone; an edit of it with
/// `reprocess: true` reaches every signal it now matches, those from before the rule too.
#[test]
fn an_edit_with_reprocess_reaches_history_from_before_the_rule() {
    let (_d, s, key) = start();
    let mut last = 0;
    for i in 0..3 {
        last = send(
            &s,
            &key,
            json!({"event": "Demo Requested", "email": format!("early{i}@x.io")}),
        );
    }
    assert_eq!(stats(&s, last), (3, 0, 0, 0, 3), "no rule yet: skipped");
    let body = json!({"name": "Demo", "signal_type": "Form Fill",
        "conditions": [{"field": "event", "op": "equals", "value": "Demo Requested"}],
        "mappings": [{"field": "email", "path": "email"}]});
    let r = rule(&s, body.clone());
    let id = r["id"].as_u64().unwrap();
    let pos = send(
        &s,
        &key,
        json!({"event": "Demo Requested", "email": "later@x.io"}),
    );
    assert_eq!(stats(&s, pos), (4, 0, 1, 0, 3), "created without reprocess");
    let mut edit = body;
    edit["name"] = json!("Demo request");
    edit["reprocess"] = json!(true);
    let r = s.admin(
        Method::PUT,
        &format!("/api/mapping-rules/{id}"),
        ADMIN_TOKEN,
        Some(edit),
    );
    assert_eq!(r.status(), 200);
    let pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    assert_eq!(stats(&s, pos), (4, 0, 4, 0, 0), "all history now matched");
    let lead = get(&s, "/api/leads?email=early0%40x.io", pos);
    assert_eq!(lead["recent_signals"][0]["signal_name"], "Demo request");
}
