//! Websites as senders: unmodified analytics.js and the first-party snippet in headless
//! Chromium, CORS by each key's allowed origins, and Segment's Webhooks destination
//! (SHA-1 signatures, batch arrays, PUT and PATCH).
//!
//! The browser runs through `tests/browser/run.mjs` (Node and puppeteer-core, installed by
//! `scripts/test` with `npm ci`), against Debian's Chromium. Neither is optional: a missing
//! one fails the test with how to install it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where screenshots go: kept after the run, under the target directory.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts")
}

/// Runs one scenario of `run.mjs` and returns what it printed.
fn drive(scenario: &str, s: &Server, key: &str, run: &str, extra: Value) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/puppeteer-core").exists(),
        "the browser driver is not installed: run `npm ci --prefix pipeline/tests/browser` \
         (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: `apt-get install chromium` (scripts/test does)"
    );
    let mut cfg = json!({"scenario": scenario, "server": s.base, "key": key, "run": run,
                         "artifacts": artifacts().join(run)});
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let out = Command::new(std::env::var("NODE").unwrap_or_else(|_| "node".into()))
        .arg(dir.join("run.mjs"))
        .arg(cfg.to_string())
        .env("CHROMIUM", &chromium)
        .output()
        .expect("running node (install Node.js; scripts/test does)");
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("run.mjs prints JSON");
    let shot = v["screenshot"].as_str().expect("a screenshot is taken");
    let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "screenshot {shot} saved ({size} bytes)");
    eprintln!("{scenario}: screenshot at {shot}");
    v
}

/// Polls `GET path` as the administrator until `done` holds of a 200 answer.
fn poll(s: &Server, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = s.admin(Method::GET, path, ADMIN_TOKEN, None);
        if r.status() == 200 {
            last = r.json().unwrap();
            if done(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: never held; last answer {last}");
}

fn lead_by_email(s: &Server, email: &str, signals: u64) -> Value {
    let path = format!("/api/leads?email={}", email.replace('@', "%40"));
    poll(
        s,
        &path,
        &format!("lead {email} with {signals} signals"),
        |l| l["signals"].as_u64() >= Some(signals),
    )
}

fn has_identifier(lead: &Value, kind: &str, value: &str) -> bool {
    lead["identifiers"]
        .as_array()
        .unwrap()
        .contains(&json!({"kind": kind, "value": value}))
}

fn event_types(lead: &Value) -> Vec<String> {
    let mut t: Vec<String> = lead["recent_signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["event_type"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[test]
fn analytics_js_unmodified_delivers_page_identify_track_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let out = drive("analytics", &s, &key, "ajs1", json!({}));
    let requests = out["requests"].as_array().unwrap();
    let path_of = |r: &Value| r["url"].as_str().unwrap().replace(&s.base, "");
    let settings = requests
        .iter()
        .find(|r| path_of(r).starts_with("/v1/projects/"))
        .expect("analytics.js fetched its settings from the server");
    assert_eq!(settings["status"], 200, "{settings}");
    // One call per short path, and the batching mode's batch.
    for p in ["/v1/p", "/v1/i", "/v1/t", "/v1/g", "/v1/b"] {
        let post = requests
            .iter()
            .find(|r| path_of(r) == p && r["method"] == "POST")
            .unwrap_or_else(|| panic!("analytics.js posted to {p}: {requests:?}"));
        assert_eq!(post["status"], 200, "{p}: {post}");
        assert!(post["body"].as_str().unwrap().contains("\"writeKey\""));
    }
    // Its preflights (it sends Authorization) were answered.
    assert!(requests
        .iter()
        .filter(|r| r["method"] == "OPTIONS")
        .all(|r| r["status"] == 204));

    let anon = out["result"]["anonymousId"].as_str().unwrap();
    let lead = lead_by_email(&s, "visitor-ajs1@example.com", 6);
    assert!(
        has_identifier(&lead, "anonymous_id", anon),
        "the anonymous page view's id joined the lead: {lead}"
    );
    assert!(has_identifier(&lead, "user_id", "user-ajs1"), "{lead}");
    assert_eq!(
        event_types(&lead),
        ["group", "identify", "page", "track", "track", "track"],
        "the page view sent before the identify belongs to the lead"
    );
    assert_eq!(lead["traits"]["title"], "CTO");
    let org = poll(
        &s,
        "/api/product-orgs/ws-ajs1",
        "the group call's product org",
        |o| o["name"] == "Acme ajs1",
    );
    assert_eq!(org["product_org_id"], "ws-ajs1");
}

#[test]
fn first_party_snippet_tracks_route_changes_form_fills_and_leaves_by_beacon() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let out = drive("snippet", &s, &key, "snip1", json!({}));
    let arrivals = out["arrivals"].as_array().unwrap();
    let script = &arrivals[0];
    assert_eq!(script["path"], "/js/trailspark.js", "{arrivals:?}");
    assert_eq!(script["status"], 200);
    let batches: Vec<(&Value, Value)> = arrivals
        .iter()
        .filter(|a| a["path"] == "/v1/b")
        .map(|a| {
            (
                a,
                serde_json::from_str(a["body"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert!(
        batches.iter().all(|(a, _)| a["status"] == 200),
        "{arrivals:?}"
    );
    let messages: Vec<&Value> = batches
        .iter()
        .flat_map(|(_, b)| b["batch"].as_array().unwrap())
        .collect();
    let pages: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "page")
        .map(|m| m["properties"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(pages, ["/shop", "/shop/pricing"], "a view per route");

    // The form's submission left with the page: by beacon, as the browser marks it.
    let (last, last_body) = batches.last().unwrap();
    assert_eq!(
        last["mode"], "no-cors",
        "the last batch came by sendBeacon: {last}"
    );
    let left: Vec<&str> = last_body["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["identify", "track"]);
    assert!(batches[..batches.len() - 1]
        .iter()
        .all(|(a, _)| a["mode"] == "cors"));

    let anon = out["result"]["anonymousId"].as_str().unwrap();
    assert_eq!(
        out["result"]["cookie"], anon,
        "the anonymous id lives in a first-party cookie"
    );
    let lead = lead_by_email(&s, "buyer-snip1@example.com", 4);
    assert!(has_identifier(&lead, "anonymous_id", anon), "{lead}");
    assert_eq!(
        event_types(&lead),
        ["identify", "page", "page", "track"],
        "the anonymous views were rehydrated to the lead the form identified"
    );
    let dump = s.dump();
    let form = signals(&dump)
        .into_iter()
        .find(|sig| sig["event_name"] == "Form Submitted")
        .expect("the form fill is stored");
    let props = &form["payload"]["properties"];
    assert_eq!(props["form_id"], "demo-form");
    assert_eq!(props["form_name"], "demo");
    assert_eq!(form["ids"]["anonymous_id"], anon);
    assert!(
        !form["payload"].to_string().contains("Globex"),
        "only the email field is read from a form"
    );
}

#[test]
fn the_snippet_sends_nothing_without_consent_and_remembers_a_withdrawal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let out = drive("consent", &s, &key, "consent1", json!({}));
    assert_eq!(out["result"]["sentBeforeConsent"], 0, "{out}");
    let sent: Vec<(String, String)> = out["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["path"] == "/v1/b")
        .flat_map(|a| {
            let b: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap();
            b["batch"].as_array().unwrap().clone()
        })
        .map(|m| {
            let name = m["event"].as_str().unwrap_or("").to_string();
            (m["type"].as_str().unwrap().to_string(), name)
        })
        .collect();
    assert_eq!(
        sent,
        [("track".to_string(), "After Consent".to_string())],
        "only what was tracked between consent and its withdrawal left the browser"
    );
    let dump = s.dump();
    let names: Vec<&str> = signals(&dump)
        .into_iter()
        .filter_map(|sig| sig["event_name"].as_str())
        .collect();
    assert_eq!(names, ["After Consent"]);
}

#[test]
fn cors_follows_each_keys_allowed_origins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let page_port = free_port();
    let page_origin = format!("http://localhost:{page_port}");
    let allowed = s.create_key(json!({"name": "site", "allowed_origins": [page_origin]}));
    let denied = s.create_key(json!({"name": "other site",
                                     "allowed_origins": ["https://elsewhere.example"]}));
    assert_eq!(allowed["allowed_origins"], json!([page_origin]));
    assert_eq!(denied["browser_origins"], "listed");
    let (allowed_key, denied_key) = (
        allowed["key"].as_str().unwrap(),
        denied["key"].as_str().unwrap(),
    );
    let out = drive(
        "cors",
        &s,
        allowed_key,
        "cors1",
        json!({"pagePort": page_port, "deniedKey": denied_key}),
    );
    let r = &out["result"];
    for ct in ["json", "plain"] {
        assert_eq!(r["allowed"][ct]["status"], 202, "{r}");
        assert_eq!(r["denied"][ct]["ok"], false, "{r}");
    }
    let dump = s.dump();
    let stored: Vec<&str> = signals(&dump)
        .into_iter()
        .filter(|sig| sig["payload"]["run"] == "cors1")
        .map(|sig| sig["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stored,
        ["Allowed", "Allowed"],
        "nothing from a refused origin is stored"
    );

    // The same refusals, as the server answers them.
    let preflight = |key: &str, origin: &str| {
        client()
            .request(
                Method::OPTIONS,
                s.url(&format!("/api/signal-staging/webhook/{key}")),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .unwrap()
    };
    let r = preflight(denied_key, &page_origin);
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "origin_not_allowed");
    let r = preflight(allowed_key, &page_origin);
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        page_origin.as_str()
    );
    assert_eq!(r.headers()["access-control-max-age"], "7200");
    assert_eq!(
        r.headers()["access-control-allow-methods"],
        "POST, PUT, PATCH, OPTIONS"
    );
    // A key without a list takes any origin; a product-org key none.
    let first = s.first_key.clone().unwrap();
    assert_eq!(preflight(&first, "https://any.example").status(), 204);
    let org_key = s.create_key(json!({"name": "orgs", "endpoint_type": "product_org",
                                      "template": {"product_org_id": "id"}}));
    let org_key_s = org_key["key"].as_str().unwrap();
    let r = client()
        .request(
            Method::OPTIONS,
            s.url(&format!("/api/product-orgs/webhook/{org_key_s}")),
        )
        .header("origin", "https://any.example")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // The list can change: the denied key now takes the page's origin.
    let r = s.admin(
        Method::PATCH,
        &format!("/api/admin/keys/{}", denied["id"]),
        ADMIN_TOKEN,
        Some(json!({"allowed_origins": ["http://*.example", page_origin]})),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(preflight(denied_key, &page_origin).status(), 204);
    assert_eq!(preflight(denied_key, "http://shop.example").status(), 204);
    let r = s.admin(
        Method::PATCH,
        &format!("/api/admin/keys/{}", denied["id"]),
        ADMIN_TOKEN,
        Some(json!({"allowed_origins": ["example.com/path"]})),
    );
    assert_eq!(r.status(), 400, "an origin with a path is refused");

    // The org API has no CORS unless the server lists origins.
    let api_preflight = |s: &Server| {
        client()
            .request(Method::OPTIONS, s.url("/api/leads"))
            .header("origin", "https://console.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .unwrap()
    };
    assert!(api_preflight(&s)
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    drop(s);
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = Server::start_with(
        dir2.path(),
        None,
        &[("TRAILSPARK_CORS_ORIGIN", "https://console.example")],
    );
    let r = api_preflight(&s2);
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let r = client()
        .get(s2.url("/api/admin/whoami"))
        .bearer_auth(ADMIN_TOKEN)
        .header("origin", "https://console.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://console.example"
    );
}

#[test]
fn segment_webhooks_signatures_batches_and_methods_land() {
    use trailspark_sources::auth::{sign, sign_sha1};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let created = s.create_key(json!({"name": "segment webhooks", "secret": true}));
    let key = created["key"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let e1 = s.url(&format!("/api/signal-staging/webhook/{key}"));
    let send = |method: Method, url: &str, body: &str, sig: Option<String>| {
        let mut rb = client()
            .request(method, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(sig) = sig {
            rb = rb.header("x-signature", sig);
        }
        rb.send().unwrap()
    };
    let one = r#"{"type":"track","event":"Hooked","messageId":"wh-1","userId":"u1"}"#;
    // Segment's own signature: bare hex HMAC-SHA1 of the body.
    let r = send(
        Method::POST,
        &e1,
        one,
        Some(sign_sha1(secret, one.as_bytes())),
    );
    assert_eq!(r.status(), 202);
    let two = r#"{"type":"track","event":"Hooked","messageId":"wh-2","userId":"u1"}"#;
    let sig = format!("sha1={}", sign_sha1(secret, two.as_bytes()));
    assert_eq!(send(Method::POST, &e1, two, Some(sig)).status(), 202);
    let r = send(
        Method::POST,
        &e1,
        two,
        Some(sign_sha1("wrong", two.as_bytes())),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["code"], "invalid_secret");
    assert_eq!(send(Method::POST, &e1, two, None).status(), 401);

    // Batch mode posts an array to the one URL: per-item results, as E3 answers.
    let batch = json!([
        {"type": "track", "event": "Hooked", "messageId": "wh-3", "userId": "u1"},
        {"type": "identify", "messageId": "wh-4", "userId": "u1", "traits": {"email": "u1@example.com"}},
        "not an object"
    ])
    .to_string();
    let r = send(
        Method::POST,
        &e1,
        &batch,
        Some(sign_sha1(secret, batch.as_bytes())),
    );
    assert_eq!(r.status(), 202);
    let body: Value = r.json().unwrap();
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"], 1);
    assert_eq!(body["results"][2]["error"], "not_an_object");
    // E2 labels the batch with the URL's source.
    let e2 = s.url(&format!("/api/signal-staging/webhook/segment-hooks/{key}"));
    let batch2 = json!([{"type": "track", "event": "Labelled", "messageId": "wh-5"}]).to_string();
    let r = send(
        Method::POST,
        &e2,
        &batch2,
        Some(sign(secret, batch2.as_bytes())),
    );
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().unwrap()["results"][0]["source"],
        "segment-hooks"
    );
    // PUT and PATCH are taken like POST on E1–E3.
    let put = r#"{"type":"track","event":"Put","messageId":"wh-6"}"#;
    let r = send(
        Method::PUT,
        &e1,
        put,
        Some(sign_sha1(secret, put.as_bytes())),
    );
    assert_eq!(r.status(), 202);
    let patch = r#"[{"type":"track","event":"Patched","messageId":"wh-7"}]"#;
    let e3 = s.url(&format!("/api/signal-staging/webhook/{key}/batch"));
    let r = send(
        Method::PATCH,
        &e3,
        patch,
        Some(sign_sha1(secret, patch.as_bytes())),
    );
    assert_eq!(r.status(), 202);
    let r = send(Method::DELETE, &e1, put, None);
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, PUT, PATCH");

    let dump = s.dump();
    let mut ids: Vec<&str> = signals(&dump)
        .into_iter()
        .filter_map(|sig| sig["message_id"].as_str())
        .filter(|m| m.starts_with("wh-"))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["wh-1", "wh-2", "wh-3", "wh-4", "wh-5", "wh-6", "wh-7"]
    );
}
