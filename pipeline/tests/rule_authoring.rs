//! Authoring mapping rules as the product's signal queue does: groups with stable ids and a
//! detail view, a rule pre-filled from a group that works as posted, and a preview of what a
//! rule would match before it is saved.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn call(s: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = s.admin(method, path, ADMIN_TOKEN, body);
    (r.status().as_u16(), r.json().unwrap())
}

fn send(s: &Server, key: &str, body: Value) -> u64 {
    let r: Value = s.post_signal(key, &body.to_string()).json().unwrap();
    r["log_position"].as_u64().unwrap()
}

#[test]
fn groups_detail_suggested_rules_and_previews() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let mut last = 0;
    for i in 0..3 {
        last = send(
            &s,
            &key,
            json!({"type": "track", "event": "Form Submitted", "userId": format!("u{i}"),
                   "properties": {"form_id": "demo", "company": "Acme"},
                   "traits": {"email": format!("p{i}@acme.io"), "title": "CTO"}}),
        );
    }
    for i in 0..2 {
        last = send(
            &s,
            &key,
            json!({"type": "page", "anonymousId": format!("v{i}"), "name": "Pricing",
                   "properties": {"url": "/pricing"}}),
        );
    }
    let (st, groups) = call(
        &s,
        Method::GET,
        &format!("/api/signal-queue/groups?wait_for={last}"),
        None,
    );
    assert_eq!(st, 200);
    let form = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["event_type"] == "Form Submitted")
        .unwrap_or_else(|| panic!("{groups}"))
        .clone();
    let id = form["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sg_"), "{id}");
    assert_eq!(form["count"], 3);

    // The detail: samples (email first, then earliest) and the paths they hold.
    let (st, detail) = call(
        &s,
        Method::GET,
        &format!("/api/signal-queue/groups/{id}"),
        None,
    );
    assert_eq!(st, 200, "{detail}");
    assert_eq!(detail["id"], id);
    assert_eq!(detail["samples"].as_array().unwrap().len(), 3);
    let paths: Vec<&str> = detail["field_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "properties.form_id",
        "traits.email",
        "traits.title",
        "event",
    ] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    let (st, _) = call(&s, Method::GET, "/api/signal-queue/groups/sg_nope", None);
    assert_eq!(st, 404);

    // A preview of the suggested rule, then the rule itself, posted as suggested.
    let (st, suggested) = call(
        &s,
        Method::GET,
        &format!("/api/signal-queue/groups/{id}/suggested-rule"),
        None,
    );
    assert_eq!(st, 200, "{suggested}");
    assert!(suggested["mappings"]
        .as_array()
        .unwrap()
        .contains(&json!({"field": "email", "path": "traits.email"})));
    let (st, preview) = call(
        &s,
        Method::POST,
        "/api/mapping-rules/preview",
        Some(suggested.clone()),
    );
    assert_eq!(st, 200, "{preview}");
    assert_eq!(
        (preview["matched"].as_u64(), preview["complete"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(preview["sample"].as_array().unwrap().len(), 3);
    assert!(preview["sample"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "completed"
            && x["current_status"] == "skipped"
            && x["wins"] == true));
    let (_, rules) = call(&s, Method::GET, "/api/mapping-rules", None);
    assert_eq!(rules["rules"], json!([]), "a preview saves nothing");

    let (st, rule) = call(&s, Method::POST, "/api/mapping-rules", Some(suggested));
    assert_eq!(st, 201, "{rule}");
    let pos = rule["log_position"].as_u64().unwrap();
    let (_, mapped) = call(
        &s,
        Method::GET,
        &format!("/api/signal-queue/groups?tab=mapped&wait_for={pos}"),
        None,
    );
    let now_mapped = mapped["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("{mapped}"));
    assert_eq!(
        now_mapped["unmapped"], 0,
        "the rule maps the group's signals"
    );
    let (_, lead) = call(
        &s,
        Method::GET,
        &format!("/api/leads?email=p0%40acme.io&wait_for={pos}"),
        None,
    );
    assert_eq!(lead["traits"]["title"], "CTO");

    // A preview of a rule for the anonymous page views: they would wait for an identify.
    let pages = json!({"name": "Pricing", "signal_type": "Page View",
        "conditions": [{"field": "event_type", "op": "equals", "value": "page"},
                       {"field": "properties.url", "op": "contains", "value": "pricing"}],
        "mappings": [{"field": "email", "path": "traits.email"}]});
    let (st, preview) = call(&s, Method::POST, "/api/mapping-rules/preview", Some(pages));
    assert_eq!(st, 200, "{preview}");
    assert_eq!(preview["matched"], 2);
    assert!(preview["sample"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"] == "pending"));
    // Bodies are checked as a rule's are.
    let (st, b) = call(
        &s,
        Method::POST,
        "/api/mapping-rules/preview",
        Some(json!({"name": "x", "signal_type": "Page View", "mappings": [], "condtions": []})),
    );
    assert_eq!((st, b["field"].as_str()), (400, Some("condtions")));
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/mapping-rules/preview",
        Some(json!({"name": "x", "signal_type": "Page View", "mappings": []})),
    );
    assert_eq!(st, 400, "no identifying mapping");
}
