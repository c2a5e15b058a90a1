//! Behaviour as the product documents it, for what the other suites do not cover: partial
//! plan changes, reads that wait for a position the log has not reached, offline tools given
//! a missing data directory, and an anonymous signal whose visitor is already known.

mod common;

use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn plan(s: &Server, method: Method, body: Value) -> (u16, Value) {
    let r = s.admin(method, "/api/admin/plan", ADMIN_TOKEN, Some(body));
    (r.status().as_u16(), r.json().unwrap())
}

#[test]
fn plan_changes_keep_the_fields_they_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let full = json!({"raw_signal_limit": 1000, "mapped_signal_limit": 500, "overage": true,
                      "signal_retention_days": 90});
    assert_eq!(plan(&s, Method::PUT, full).0, 200);
    // PUT with one field (it used to need them all, and reset the retention).
    let (st, b) = plan(&s, Method::PUT, json!({"raw_signal_limit": 2000}));
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (
            &b["raw_signal_limit"],
            &b["mapped_signal_limit"],
            &b["overage"],
            &b["signal_retention_days"]
        ),
        (&json!(2000), &json!(500), &json!(true), &json!(90))
    );
    let (st, b) = plan(&s, Method::PATCH, json!({"overage": false}));
    assert_eq!(st, 200, "{b}");
    let got: Value = s
        .admin(Method::GET, "/api/admin/plan", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    assert_eq!(
        got,
        json!({"raw_signal_limit": 2000, "mapped_signal_limit": 500, "overage": false,
               "signal_retention_days": 90, "evaluation_limit": 0, "icp_model_limit": 0})
    );
    let (st, b) = plan(&s, Method::PATCH, json!({"overage": "yes"}));
    assert_eq!(st, 400, "{b}");
}

#[test]
fn waiting_for_a_position_past_the_log_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let r: Value = s
        .post_signal(&key, r#"{"email":"a@b.io","event":"x"}"#)
        .json()
        .unwrap();
    let head = r["log_position"].as_u64().unwrap();
    let t = std::time::Instant::now();
    let r = s.get_at("/api/explorer/stats", head + 1000);
    assert_eq!(r.status(), 400);
    assert!(
        t.elapsed().as_secs() < 5,
        "answered at once, not after the wait"
    );
    let b: Value = r.json().unwrap();
    assert_eq!(b["error"], "invalid_request");
    assert!(b["log_head"].as_u64().unwrap() >= head, "{b}");
    assert!(b["message"].as_str().unwrap().contains("head"), "{b}");
    assert_eq!(s.get_at("/api/explorer/stats", head).status(), 200);
}

#[test]
fn tools_other_than_serve_do_not_create_a_missing_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    for args in [
        vec!["sql", "SELECT 1", "--org", "1", "--data-dir"],
        vec!["orgs", "list", "--data-dir"],
        vec!["keys", "list", "--data-dir"],
        vec!["log", "dump", "--data-dir"],
        vec!["archive", "files", "--data-dir"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .arg(&typo)
            .env_remove("TRAILSPARK_DATA_DIR")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created the directory");
    }
}

/// An anonymous signal goes to cold storage only while its visitor is unknown: once an
/// identify has linked the anonymous id to a lead, its 202 says it went to the lead.
#[test]
fn cold_storage_is_only_for_visitors_not_yet_known() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let page = r#"{"type":"page","anonymousId":"visitor-1","properties":{"url":"/pricing"}}"#;
    let r: Value = s.post_signal(&key, page).json().unwrap();
    assert_eq!(r["cold_storage"], true);
    let r: Value = s
        .post_signal(
            &key,
            r#"{"type":"identify","anonymousId":"visitor-1","traits":{"email":"v@x.io"}}"#,
        )
        .json()
        .unwrap();
    let pos = r["log_position"].as_u64().unwrap();
    assert_eq!(
        s.get_at("/api/leads?anonymous_id=visitor-1", pos).status(),
        200
    );
    let again = r#"{"type":"page","anonymousId":"visitor-1","properties":{"url":"/docs"}}"#;
    let r: Value = s.post_signal(&key, again).json().unwrap();
    assert_eq!(r["cold_storage"], false, "the visitor is known: {r}");
    // In a batch too.
    let r: Value = client()
        .post(s.url(&format!("/api/signal-staging/webhook/{key}/batch")))
        .json(&json!([
            {"type": "page", "anonymousId": "visitor-1", "properties": {"url": "/a"}},
            {"type": "page", "anonymousId": "visitor-2", "properties": {"url": "/b"}}
        ]))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["results"][0]["cold_storage"], false);
    assert_eq!(r["results"][1]["cold_storage"], true);
}
