//! The HTTP surface of `trailspark serve` on its embedded defaults, through real requests.

mod common;

use common::*;
use serde_json::{json, Value};

fn start() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    (dir, s)
}

fn status_and_json(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(
        ctype.as_deref(),
        Some("application/json"),
        "every answer is JSON: {body}"
    );
    (status, body)
}

#[test]
fn first_start_prints_a_working_key_and_owner_token() {
    let (_d, s) = start();
    let key = s.first_key.clone().expect("first start prints a key");
    let token = s
        .owner_token
        .clone()
        .expect("first start prints an owner token");
    let (st, body) =
        status_and_json(s.post_signal(&key, r#"{"email":"test@example.com","event":"test"}"#));
    assert_eq!(st, 202);
    assert!(body["id"].is_u64());
    assert_eq!(body["message"], "Signal received and queued for processing");
    assert_eq!(body["source"], "generic");
    assert_eq!(body["cold_storage"], false);
    assert_eq!(body["log_position"], body["id"]);
    let r = s.admin(reqwest::Method::GET, "/api/admin/whoami", &token, None);
    assert_eq!(status_and_json(r).1["role"], "owner");
}

#[test]
fn key_states_answer_401_with_their_codes() {
    let (_d, s) = start();
    let (st, body) = status_and_json(s.post_signal("sk_nope", "{}"));
    assert_eq!(
        (st, body["error"].as_str().unwrap()),
        (401, "invalid_api_key")
    );

    let created = s.create_key(json!({"name": "k", "endpoint_type": "signal_staging"}));
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("sk_"));
    assert_eq!(
        s.post_signal(key, "{}").status(),
        202,
        "a key without expiry works"
    );
    let r = s.admin(
        reqwest::Method::DELETE,
        &format!("/api/admin/keys/{}", created["id"]),
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 200);
    let (st, body) = status_and_json(s.post_signal(key, "{}"));
    assert_eq!(
        (st, body["error"].as_str().unwrap()),
        (401, "api_key_inactive")
    );

    let expired = s.create_key(json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"}));
    let (st, body) = status_and_json(s.post_signal(expired["key"].as_str().unwrap(), "{}"));
    assert_eq!(
        (st, body["error"].as_str().unwrap()),
        (401, "api_key_expired")
    );
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let k = s.create_key(json!({"name": "soon", "expires_at": soon.to_rfc3339()}));
    let k = k["key"].as_str().unwrap();
    assert_eq!(s.post_signal(k, "{}").status(), 202);
    std::thread::sleep(std::time::Duration::from_millis(1600));
    assert_eq!(s.post_signal(k, "{}").status(), 401);
}

#[test]
fn secrets_and_hmac_signatures() {
    let (_d, s) = start();
    let created = s.create_key(json!({"name": "sec", "secret": true}));
    let key = created["key"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let url = s.url(&format!("/api/signal-staging/webhook/{key}"));
    let body = r#"{"email":"a@b.io","event":"x"}"#;
    let post = |h: Option<(&str, String)>| {
        let mut rb = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some((k, v)) = h {
            rb = rb.header(k, v);
        }
        status_and_json(rb.send().unwrap())
    };
    assert_eq!(post(None).1["error"], "missing_secret");
    assert_eq!(
        post(Some(("X-Api-Secret", "wrong".into()))).1["error"],
        "invalid_secret"
    );
    assert_eq!(post(Some(("X-Api-Secret", secret.into()))).0, 202);
    let sig = trailspark_sources::auth::sign(secret, body.as_bytes());
    assert_eq!(post(Some(("X-Signature", sig))).0, 202);
    let bad = trailspark_sources::auth::sign(secret, b"{}");
    assert_eq!(post(Some(("X-Signature", bad))).0, 401);
    // A key without a secret ignores the header.
    let plain = s.new_key();
    let r = client()
        .post(s.url(&format!("/api/signal-staging/webhook/{plain}")))
        .header("X-Api-Secret", "whatever")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    // The listing never shows the key or the secret.
    let list = s.admin(reqwest::Method::GET, "/api/admin/keys", ADMIN_TOKEN, None);
    let text = list.text().unwrap();
    assert!(!text.contains(key) && !text.contains(secret));
    assert!(text.contains("\"has_secret\":true"));
}

#[test]
fn bad_bodies_are_refused_and_never_stored() {
    let (_d, s) = start();
    let key = s.new_key();
    let before = signals(&s.dump()).len();
    let cases: Vec<(String, u16, &str)> = vec![
        ("{bad json".into(), 400, "invalid_json"),
        ("".into(), 400, "invalid_json"),
        ("\"text\"".into(), 400, "not_an_object"),
        (
            format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(40), "}".repeat(40)),
            400,
            "too_deep",
        ),
        (
            format!("{{\"pad\":\"{}\"}}", "x".repeat(33 * 1024)),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in &cases {
        let (st, b) = status_and_json(s.post_signal(&key, body));
        assert_eq!(
            (st, b["error"].as_str().unwrap()),
            (*status, *code),
            "body {:.40}",
            body
        );
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // An array on E1 is a batch (Segment's Webhooks destination posts its batches there):
    // each bad item is refused in the per-item results, as E3 refuses it.
    for (body, code) in [
        ("[1,2]".to_string(), "not_an_object"),
        (
            format!("[{}1{}]", "[".repeat(99), "]".repeat(99)),
            "too_deep",
        ),
        (
            format!("[{}1{}]", "{\"b\":".repeat(40), "}".repeat(40)),
            "too_deep",
        ),
    ] {
        let (st, b) = status_and_json(s.post_signal(&key, &body));
        assert_eq!((st, &b["accepted"]), (202, &json!(0)), "{b}");
        let results = b["results"].as_array().unwrap();
        assert!(results.iter().all(|r| r["error"] == code), "{b}");
    }
    // Chunked (no Content-Length) bodies over the limit are cut off too.
    let big = vec![b'x'; 40 * 1024];
    let stream = futures_like_body(big);
    let r = client()
        .post(s.url(&format!("/api/signal-staging/webhook/{key}")))
        .body(stream)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        signals(&s.dump()).len(),
        before,
        "nothing from a refused request is stored"
    );
    // The service is still fine afterwards.
    assert_eq!(s.post_signal(&key, "{}").status(), 202);
}

/// A body of unknown length (sent chunked).
fn futures_like_body(data: Vec<u8>) -> reqwest::blocking::Body {
    reqwest::blocking::Body::new(std::io::Cursor::new(data))
}

#[test]
fn methods_and_paths() {
    let (_d, s) = start();
    let key = s.new_key();
    let r = client()
        .get(s.url(&format!("/api/signal-staging/webhook/{key}")))
        .send()
        .unwrap();
    assert_eq!(
        status_and_json(r),
        (405, status_and_json_err("method_not_allowed"))
    );
    let r = client()
        .put(s.url(&format!("/api/product-orgs/webhook/{key}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    for p in [
        "/nope",
        "/api/signal-staging/elsewhere/x",
        "/v1/unknown",
        "/api/admin/unknown",
    ] {
        let r = client()
            .post(s.url(p))
            .bearer_auth(ADMIN_TOKEN)
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 404, "{p}");
    }
    assert_eq!(
        client().get(s.url("/healthz")).send().unwrap().status(),
        200
    );
}

fn status_and_json_err(code: &str) -> Value {
    let msg = "method not allowed; use POST, PUT, PATCH";
    json!({"error": code, "code": code, "message": msg})
}

#[test]
fn source_resolution_through_http() {
    let (_d, s) = start();
    let key = s.new_key();
    let post = |path: &str, header: Option<&str>, body: &str| -> Value {
        let mut rb = client().post(s.url(path)).body(body.to_string());
        if let Some(h) = header {
            rb = rb.header("X-Source", h);
        }
        let r = rb.send().unwrap();
        assert_eq!(r.status(), 202);
        r.json().unwrap()
    };
    let e1 = format!("/api/signal-staging/webhook/{key}");
    assert_eq!(post(&e1, None, r#"{"mktLeadId":1}"#)["source"], "marketo");
    assert_eq!(post(&e1, None, r#"{"portalId":1}"#)["source"], "hubspot");
    assert_eq!(
        post(&e1, None, r#"{"hs_object_id":1}"#)["source"],
        "hubspot"
    );
    assert_eq!(
        post(&e1, None, r#"{"sObject":"Lead"}"#)["source"],
        "salesforce"
    );
    assert_eq!(
        post(&e1, None, r#"{"type":"identify","userId":"u"}"#)["source"],
        "segment"
    );
    assert_eq!(post(&e1, None, r#"{"event":"x"}"#)["source"], "generic");
    assert_eq!(
        post(&e1, Some("marketing"), r#"{"mktLeadId":2}"#)["source"],
        "marketing"
    );
    assert_eq!(
        post(&e1, None, r#"{"source":"custom","mktLeadId":3}"#)["source"],
        "custom"
    );
    let e2 = format!("/api/signal-staging/webhook/website/{key}");
    assert_eq!(
        post(&e2, Some("marketing"), r#"{"source":"custom","n":1}"#)["source"],
        "website"
    );
    let r = client()
        .post(s.url(&format!("/api/signal-staging/webhook/a.b/{key}")))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // The canonical record carries what was extracted.
    let body = r#"{"traits":{"email":" Lead@Example.COM "},"anonymousId":"A1","timestamp":"2024-01-15T14:30:00Z","type":"identify","messageId":"m-1"}"#;
    let id = post(&e1, None, body)["id"].as_u64().unwrap();
    let dump = s.dump();
    let rec = dump.iter().find(|e| e["position"] == id).unwrap();
    let sig = &rec["signal"];
    assert_eq!(sig["ids"]["email"], "lead@example.com");
    assert_eq!(sig["ids"]["anonymous_id"], "A1");
    assert_eq!(sig["event_type"], "identify");
    assert_eq!(sig["event_at"], 1_705_329_000_000i64);
    assert_eq!(sig["message_id"], "m-1");
    assert_eq!(sig["anonymous"], false);
    assert_eq!(
        sig["payload"],
        serde_json::from_str::<Value>(body).unwrap(),
        "payload stored unchanged"
    );
    // Anonymous-only: cold storage.
    assert_eq!(
        post(&e1, None, r#"{"anonymousId":"A9","event":"page"}"#)["cold_storage"],
        true
    );
}

#[test]
fn batch_endpoint_answers_per_item() {
    let (_d, s) = start();
    let key = s.new_key();
    let url = s.url(&format!("/api/signal-staging/webhook/{key}/batch"));
    let body = json!([{"email": "a@x.io", "event": "e1"}, 7, {"anonymousId": "A1"}, {"email": "a@x.io", "event": "e1"}]);
    let (st, b) = status_and_json(client().post(&url).json(&body).send().unwrap());
    assert_eq!(st, 202);
    assert_eq!(
        (b["accepted"].as_u64(), b["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    let r = b["results"].as_array().unwrap();
    assert_eq!(r[1]["error"], "not_an_object");
    assert_eq!(r[2]["cold_storage"], true);
    assert_eq!(r[3]["duplicate"], true, "an identical item is a retry");
    assert_eq!(r[3]["id"], r[0]["id"]);
    for wrapper in ["batch", "signals"] {
        let (st, b) = status_and_json(
            client()
                .post(&url)
                .json(&json!({wrapper: [{"n": wrapper}]}))
                .send()
                .unwrap(),
        );
        assert_eq!((st, b["accepted"].as_u64()), (202, Some(1)));
    }
    let too_many: Vec<Value> = (0..501).map(|i| json!({"i": i})).collect();
    let (st, b) = status_and_json(client().post(&url).json(&too_many).send().unwrap());
    assert_eq!((st, b["error"].as_str().unwrap()), (400, "too_many_items"));
    let (st, _) = status_and_json(client().post(&url).body("[{}, {").send().unwrap());
    assert_eq!(st, 400);
    // An item over 32 KiB is refused on its own.
    let big = json!([{"pad": "x".repeat(33 * 1024)}, {"ok": 1}]);
    let (st, b) = status_and_json(client().post(&url).json(&big).send().unwrap());
    assert_eq!(
        (
            st,
            b["results"][0]["error"].as_str().unwrap(),
            b["accepted"].as_u64()
        ),
        (202, "payload_too_large", Some(1))
    );
}

#[test]
fn bulk_endpoint_streams_ndjson_and_arrays() {
    let (_d, s) = start();
    let key = s.new_key();
    let url = s.url(&format!("/api/signal-staging/bulk/{key}"));
    let mut nd = String::new();
    for i in 0..2500 {
        nd.push_str(&format!("{{\"email\":\"u{i}@x.io\",\"event\":\"imp\"}}\n"));
    }
    nd.push_str("{broken\n");
    let r = client()
        .post(&url)
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .unwrap();
    let (st, b) = status_and_json(r);
    assert_eq!(
        (st, b["accepted"].as_u64(), b["rejected"].as_u64()),
        (202, Some(2500), Some(1))
    );
    assert!(b["job_id"].as_str().unwrap().starts_with("bulk-"));
    assert_eq!(b["results"][2500]["line"], 2501);
    let arr: Vec<Value> = (0..10).map(|i| json!({"n": i, "event": "arr"})).collect();
    let (st, b) = status_and_json(client().post(&url).json(&arr).send().unwrap());
    assert_eq!((st, b["accepted"].as_u64()), (202, Some(10)));
    // Over the item cap: refused whole, with one summary (it used to keep the first
    // 10,000 items and answered a result for each item past them).
    let many: String = (0..10_005).map(|i| format!("{{\"m\":{i}}}\n")).collect();
    let r = client()
        .post(&url)
        .header("content-type", "application/x-ndjson")
        .body(many)
        .send()
        .unwrap();
    let (st, b) = status_and_json(r);
    assert_eq!((st, b["error"].as_str()), (400, Some("too_many_items")));
    assert!(
        b.get("results").is_none(),
        "one summary, not per-item results"
    );
    // Declared length over 25 MiB: refused before the body is read.
    let head = raw_request(
        &s,
        &format!("/api/signal-staging/bulk/{key}"),
        26 * 1024 * 1024,
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

/// Sends only the head of a POST declaring `length` bytes, and returns the answer's first line.
fn raw_request(s: &Server, path: &str, length: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n[").unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    line
}

#[test]
fn product_org_endpoint_and_endpoint_types() {
    let (_d, s) = start();
    let staging = s.new_key();
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/keys",
        ADMIN_TOKEN,
        Some(json!({"name": "po", "endpoint_type": "product_org"})),
    );
    assert_eq!(r.status(), 400, "a product_org key needs a template");
    let po = s.create_key(json!({"name": "po", "endpoint_type": "product_org", "template": {"product_org_id": "groupId", "name": "traits.name"}}));
    let po_key = po["key"].as_str().unwrap();
    let e5 = |k: &str, body: &str| {
        status_and_json(
            client()
                .post(s.url(&format!("/api/product-orgs/webhook/{k}")))
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    let (st, b) = e5(&staging, r#"{"groupId":"ws_1"}"#);
    assert_eq!(
        (st, b["error"].as_str().unwrap()),
        (403, "wrong_endpoint_type")
    );
    let (st, b) = status_and_json(s.post_signal(po_key, "{}"));
    assert_eq!(
        (st, b["error"].as_str().unwrap()),
        (403, "wrong_endpoint_type")
    );
    let (st, b) = e5(po_key, r#"{"traits":{"name":"Acme"}}"#);
    assert_eq!(st, 422);
    assert!(b["message"].as_str().unwrap().contains("groupId"));
    let (st, b) = e5(
        po_key,
        r#"{"type":"group","groupId":"ws_1","traits":{"name":"Acme","mrr":49900}}"#,
    );
    assert_eq!(st, 202, "{b}");
    let dump = s.dump();
    let upd = dump
        .iter()
        .find(|e| e["kind"] == "product_org_update")
        .unwrap();
    assert_eq!(upd["update"]["payload"]["groupId"], "ws_1");
}

#[test]
fn admin_roles_and_tenancy() {
    let (_d, s) = start();
    let mk_token = |role: &str| -> String {
        let r = s.admin(
            reqwest::Method::POST,
            "/api/admin/tokens",
            ADMIN_TOKEN,
            Some(json!({"role": role, "name": role})),
        );
        assert_eq!(r.status(), 201);
        r.json::<Value>().unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let viewer = mk_token("viewer");
    let editor = mk_token("editor");
    let admin = mk_token("admin");
    let create = |tok: &str| {
        s.admin(
            reqwest::Method::POST,
            "/api/admin/keys",
            tok,
            Some(json!({"name": "x"})),
        )
        .status()
    };
    assert_eq!(create(&viewer), 403);
    assert_eq!(
        create(&editor),
        201,
        "Editors manage API keys, as the role matrix says"
    );
    assert_eq!(create(&admin), 201);
    let listed = |tok: &str| {
        s.admin(reqwest::Method::GET, "/api/admin/keys", tok, None)
            .status()
            .as_u16()
    };
    assert_eq!((listed(&viewer), listed(&editor)), (403, 200));
    assert_eq!(
        client()
            .get(s.url("/api/admin/keys"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.admin(reqwest::Method::GET, "/api/admin/keys", "ts_wrong", None)
            .status(),
        401
    );
    // An admin cannot mint an owner, nor orgs.
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/tokens",
        &admin,
        Some(json!({"role": "owner"})),
    );
    assert_eq!(r.status(), 400);
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/orgs",
        &admin,
        Some(json!({"name": "x"})),
    );
    assert_eq!(r.status(), 403);
    // The server administrator creates an org; its owner manages only its own keys.
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/orgs",
        ADMIN_TOKEN,
        Some(json!({"name": "Acme"})),
    );
    assert_eq!(r.status(), 201);
    let org: Value = r.json().unwrap();
    let owner2 = org["owner_token"].as_str().unwrap();
    assert_eq!(org["id"], 2);
    let k2: Value = s
        .admin(
            reqwest::Method::POST,
            "/api/admin/keys",
            owner2,
            Some(json!({"name": "acme"})),
        )
        .json()
        .unwrap();
    assert_eq!(k2["org_id"], 2);
    let default_keys: Value = s
        .admin(reqwest::Method::GET, "/api/admin/keys", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    assert!(default_keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["org_id"] == 1));
    let r = s.admin(
        reqwest::Method::DELETE,
        &format!("/api/admin/keys/{}", k2["id"]),
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 404, "another org's key is not visible");
    // Revoked tokens stop working.
    let list: Value = s
        .admin(reqwest::Method::GET, "/api/admin/tokens", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    let vid = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .unwrap()["id"]
        .clone();
    let r = s.admin(
        reqwest::Method::DELETE,
        &format!("/api/admin/tokens/{vid}"),
        &admin,
        None,
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.admin(reqwest::Method::GET, "/api/admin/whoami", &viewer, None)
            .status(),
        401
    );
    // Bad admin bodies are 400 with a message.
    let r = client()
        .post(s.url("/api/admin/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{nope")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/keys",
        ADMIN_TOKEN,
        Some(json!({"name": "x", "expires_at": "tomorrow"})),
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn config_and_signals_survive_restart_and_cli_works_on_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // `trailspark <args> --data-dir DIR`: (succeeded, stdout, stderr).
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let mut s = Server::start(dir.path(), None);
    let key = s.new_key();
    let id_of = |r: reqwest::blocking::Response| r.json::<Value>().unwrap()["id"].as_u64().unwrap();
    let first = id_of(s.post_signal(&key, r#"{"event":"before"}"#));
    // The CLI refuses to write while the server holds the data directory.
    let (ok, _, err) = cli(&["keys", "create", "--name", "cli"]);
    assert!(!ok && err.contains("in use"), "{err}");
    s.restart();
    let second = id_of(s.post_signal(&key, r#"{"event":"after"}"#));
    assert!(second > first, "positions continue after a restart");
    s.kill9();
    let (ok, out, err) = cli(&["keys", "create", "--name", "cli"]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let cli_key = created["key"].as_str().unwrap().to_string();
    let (_, out, _) = cli(&["orgs", "create", "--name", "Beta"]);
    let org: Value = serde_json::from_str(&out).unwrap();
    assert!(org["owner_token"].as_str().unwrap().starts_with("ts_"));
    let (_, listing, _) = cli(&["keys", "list"]);
    assert!(listing.contains("\"name\":\"cli\"") && !listing.contains(&cli_key));
    let (ok, _, err) = cli(&["keys", "revoke", &created["id"].to_string()]);
    assert!(ok, "{err}");
    s.restart();
    assert_eq!(s.post_signal(&key, "{}").status(), 202);
    assert_eq!(
        s.post_signal(&cli_key, "{}").status(),
        401,
        "revoked by the CLI"
    );
    let owner = org["owner_token"].as_str().unwrap();
    let r = s.admin(reqwest::Method::GET, "/api/admin/whoami", owner, None);
    assert_eq!(r.json::<Value>().unwrap()["org_id"], 2);
}
