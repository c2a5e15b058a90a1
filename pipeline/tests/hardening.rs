//! What one tenant, or one careless client, must not be able to do to the server:
//! crash it, starve another org's ingestion, hold its connections, or get a request lost.

mod common;

use std::io::{Read, Write};

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// A second org with its Owner token.
fn second_org(s: &Server) -> String {
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/orgs",
        ADMIN_TOKEN,
        Some(json!({"name": "Attacker"})),
    );
    assert_eq!(r.status(), 201);
    r.json::<Value>().unwrap()["owner_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn post_sql(s: &Server, token: &str, sql: &str) -> (u16, Value) {
    let r = client()
        .post(s.url("/api/sql"))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn one_query_cannot_abort_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    assert_eq!(
        s.post_signal(&key, r#"{"email":"a@b.io","event":"x"}"#)
            .status(),
        202
    );
    let terms = |op: &str, n: usize| vec!["1"; n].join(op);
    for sql in [
        format!("SELECT {}", terms("+", 1000)),
        format!("SELECT 1 WHERE {}", terms(" = 1 AND ", 1000)),
        format!("SELECT {}", terms(" || ", 1000)),
        format!("SELECT 1 WHERE {}", terms(" = 1 OR ", 1000)),
    ] {
        let (status, body) = post_sql(&s, ADMIN_TOKEN, &sql);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "query_too_complex");
        assert!(
            body["message"].as_str().unwrap().contains("limit is"),
            "{body}"
        );
    }
    // Alive, with what it had.
    let (status, body) = post_sql(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals");
    assert_eq!((status, &body["rows"][0][0]), (200, &json!(1)), "{body}");
}

/// Org A runs the worst queries it can while org B ingests: B's latency stays low and every
/// query gets a 4xx naming its limit.
#[test]
fn hostile_sql_does_not_starve_another_orgs_ingestion() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), None, &[("TRAILSPARK_SQL_TIMEOUT_SECS", "3")]);
    let key = s.first_key.clone().unwrap();
    let attacker = second_org(&s);
    let queries = [
        "SELECT length(repeat('x', 1000000000))",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT length(repeat('x', 2100000000))",
        "WITH RECURSIVE t(n, s) AS (SELECT 1, repeat('x', 1000) UNION ALL \
         SELECT n + 1, s || s FROM t WHERE n < 40) SELECT max(length(s)) FROM t",
        "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b",
    ];
    let stop = Instant::now() + Duration::from_secs(10);
    let attackers: Vec<_> = (0..4)
        .map(|i| {
            let (base, token) = (s.base.clone(), attacker.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let mut n = i;
                while Instant::now() < stop {
                    let sql = queries[n % queries.len()];
                    n += 1;
                    let r = client()
                        .post(format!("{base}/api/sql"))
                        .bearer_auth(&token)
                        .json(&json!({ "sql": sql }))
                        .send()
                        .unwrap();
                    let status = r.status().as_u16();
                    let body: Value = r.json().unwrap();
                    if status == 429 {
                        assert_eq!(body["error"], "too_many_queries");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    statuses.push((status, body["error"].as_str().unwrap_or("").to_string()));
                }
                statuses
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut n = 0;
    while Instant::now() < stop {
        let t = Instant::now();
        let r = s.post_signal(&key, &format!(r#"{{"email":"b{n}@b.io","event":"x"}}"#));
        latencies.push(t.elapsed());
        assert_eq!(r.status(), 202);
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in attackers {
        for (status, code) in a.join().unwrap() {
            assert!((400..500).contains(&status), "{status} {code}");
            seen.insert(code);
        }
    }
    for code in ["resources_exhausted", "query_timeout", "too_many_queries"] {
        assert!(seen.contains(code), "{code} in {seen:?}");
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "org B: {} signals, p50 {:?}, p99 {:?} while org A attacked",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99
    );
    // Before the SQL threads, one CROSS JOIN held another org's post for 23 s. The bound is
    // loose for a debug build on a shared 2-core machine; bench/RESULTS.md has the release
    // figure against the 50 ms target.
    assert!(p99 < Duration::from_millis(1000), "p99 {p99:?}");
}

#[test]
fn idle_and_excess_connections_cannot_lock_ingestion_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_open_files(
        dir.path(),
        &[
            ("TRAILSPARK_HEADER_TIMEOUT_SECS", "2"),
            ("TRAILSPARK_BODY_IDLE_TIMEOUT_SECS", "2"),
        ],
        400,
    );
    let key = s.first_key.clone().unwrap();
    // 1,100 idle sockets, as in the report that exhausted the descriptors.
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match TcpStream::connect(addr(&s)) {
            Ok(c) => idle.push(c),
            Err(_) => refused += 1,
        }
    }
    // Those over the cap are answered 503 at once and closed.
    let mut over_cap = 0;
    for c in idle.iter_mut().rev().take(200) {
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = c.read(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503") {
                over_cap += 1;
            }
        }
    }
    assert!(
        over_cap > 0,
        "no connection was refused over the cap ({refused} failed to connect)"
    );
    // The held ones are closed after the header timeout; then ingestion answers as before.
    std::thread::sleep(Duration::from_secs(3));
    let r = s.post_signal(&key, r#"{"email":"after@b.io","event":"x"}"#);
    assert_eq!(r.status(), 202);
    let mut closed = 0;
    for c in idle.iter_mut().take(100) {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        if matches!(c.read(&mut buf), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 100, "idle connections were closed by the server");
    drop(idle);
    let h: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    // Many more signals than the log's descriptors could hold before; all accepted.
    for n in 0..50 {
        let r = s.post_signal(&key, &format!(r#"{{"email":"x{n}@b.io","event":"x"}}"#));
        assert_eq!(r.status(), 202);
    }
}

#[test]
fn a_stalled_body_times_out_and_a_half_closed_client_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        None,
        &[("TRAILSPARK_BODY_IDLE_TIMEOUT_SECS", "2")],
    );
    let key = s.first_key.clone().unwrap();
    let path = format!("/api/signal-staging/webhook/{key}");

    // A complete request, then the client closes its sending side.
    let body = r#"{"email":"half@b.io","event":"x"}"#;
    let mut c = TcpStream::connect(addr(&s)).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    // A body that stops halfway: 408 after the idle timeout, nothing stored.
    let mut c = TcpStream::connect(addr(&s)).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\":"
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
    let signals = signals(&s.dump()).len();
    assert_eq!(signals, 1, "only the complete request was stored");
}

fn token(s: &Server, by: &str, role: &str) -> (u64, String) {
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/tokens",
        by,
        Some(json!({"role": role, "name": role})),
    );
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    (
        v["id"].as_u64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn whoami(s: &Server, t: &str) -> Value {
    s.admin(reqwest::Method::GET, "/api/admin/whoami", t, None)
        .json()
        .unwrap()
}

#[test]
fn ownership_cannot_be_lost_and_can_be_recovered() {
    let dir = tempfile::tempdir().unwrap();
    // No TRAILSPARK_ADMIN_TOKEN: the administrator gets a token of its own.
    let mut s = Server::start_configured(dir.path(), None, &[], |c| {
        c.env_remove("TRAILSPARK_ADMIN_TOKEN");
    });
    let owner = s.owner_token.clone().unwrap();
    let server = s
        .server_token
        .clone()
        .expect("a separate administrator token is printed");
    assert_ne!(owner, server);
    assert_eq!(whoami(&s, &server)["server_admin"], true);
    assert_eq!(whoami(&s, &owner)["server_admin"], false);
    let owner_id = s
        .admin(reqwest::Method::GET, "/api/admin/tokens", &owner, None)
        .json::<Value>()
        .unwrap()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "owner")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let (admin_id, admin) = token(&s, &owner, "admin");

    // An Admin cannot revoke the Owner, nor reach the administrator's token.
    let del = |by: &str, id: u64| {
        s.admin(
            reqwest::Method::DELETE,
            &format!("/api/admin/tokens/{id}"),
            by,
            None,
        )
    };
    let r = del(&admin, owner_id);
    assert_eq!(r.status(), 403);
    let tokens: Value = s
        .admin(reqwest::Method::GET, "/api/admin/tokens", &admin, None)
        .json()
        .unwrap();
    let listed: Vec<u64> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    for id in 1..=listed.iter().max().copied().unwrap() + 2 {
        if !listed.contains(&id) {
            assert_eq!(del(&admin, id).status(), 404, "token {id} is not the org's");
        }
    }
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/orgs",
        &server,
        Some(json!({"name": "Still works"})),
    );
    assert_eq!(r.status(), 201, "the administrator can still create orgs");
    // Nor can an Admin take ownership, nor can anyone mint an Owner token.
    let r = s.admin(
        reqwest::Method::POST,
        &format!("/api/admin/tokens/{admin_id}/transfer-ownership"),
        &admin,
        None,
    );
    assert_eq!(r.status(), 403);
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/tokens",
        &owner,
        Some(json!({"role": "owner"})),
    );
    assert_eq!(r.status(), 400);

    // The last Owner cannot be revoked, even by itself.
    let r = del(&owner, owner_id);
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().unwrap()["error"], "conflict");

    // The Owner transfers ownership: the Admin becomes Owner and the old Owner an Admin.
    let r = s.admin(
        reqwest::Method::POST,
        &format!("/api/admin/tokens/{admin_id}/transfer-ownership"),
        &owner,
        None,
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (&v["owner"]["role"], &v["previous_owner"]["role"]),
        (&json!("owner"), &json!("admin"))
    );
    assert_eq!(whoami(&s, &admin)["role"], "owner");
    assert_eq!(whoami(&s, &owner)["role"], "admin");
    assert_eq!(del(&owner, admin_id).status(), 403, "now an Admin");

    // Recovery when every Owner token is lost: offline, on the stopped server's directory.
    s.kill9();
    let out = std::process::Command::new(bin())
        .args(["admin", "owner-token", "--org", "1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recovered = minted["token"].as_str().unwrap().to_string();
    let s = Server::start_configured(dir.path(), None, &[], |c| {
        c.env_remove("TRAILSPARK_ADMIN_TOKEN");
    });
    assert_eq!(whoami(&s, &recovered)["role"], "owner");
    assert_eq!(
        whoami(&s, &admin)["role"],
        "owner",
        "the transfer survived the restart"
    );
    assert_eq!(whoami(&s, &server)["server_admin"], true);
    // With two Owners, one may be revoked.
    let r = s.admin(
        reqwest::Method::DELETE,
        &format!("/api/admin/tokens/{admin_id}"),
        &recovered,
        None,
    );
    assert_eq!(r.status(), 200);
}

/// POSTs `body` with chunked transfer encoding (no declared length), ignoring a send cut off
/// by the server's answer; returns the answer's status.
fn chunked_post(s: &Server, path: &str, body: &[u8]) -> u16 {
    let mut c = TcpStream::connect(addr(s)).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut reader = c.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in body.chunks(64 << 10) {
            if write!(c, "{:x}\r\n", chunk.len()).is_err()
                || c.write_all(chunk).is_err()
                || c.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n");
    });
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = [0u8; 12];
    reader.read_exact(&mut head).unwrap();
    drop(reader);
    let _ = writer.join();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

fn stored(s: &Server) -> Vec<Value> {
    signals(&s.dump()).into_iter().cloned().collect()
}

#[test]
fn refused_bulk_requests_store_nothing_and_items_are_kept_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let url = s.url(&format!("/api/signal-staging/bulk/{key}"));
    let post = |ctype: &str, body: Vec<u8>| {
        let r = client()
            .post(&url)
            .header("content-type", ctype)
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (status, text)
    };
    // 4 MiB of `1\n`: two million items. One short refusal, nothing stored (it used to grow
    // the server by 2.1 GB and answer 231 MB).
    let (st, text) = post("application/x-ndjson", b"1\n".repeat(2 << 20));
    assert_eq!(st, 400, "{text:.300}");
    assert!(text.len() < 1000, "{} bytes of answer", text.len());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "too_many_items");
    // Over the size limit after thousands of good items, sent without a length: 413 as the
    // limit is passed, and none of those items is kept.
    let mut big = Vec::new();
    for i in 0..9_000 {
        big.extend_from_slice(
            format!(
                "{{\"email\":\"u{i}@x.io\",\"event\":\"e\",\"pad\":\"{}\"}}\n",
                "p".repeat(2900)
            )
            .as_bytes(),
        );
    }
    assert_eq!(
        chunked_post(&s, &format!("/api/signal-staging/bulk/{key}"), &big),
        413
    );
    // Broken structure halfway through an array: 400, nothing kept.
    let (st, _) = post(
        "application/json",
        br#"[{"email":"a@x.io"},{"email":"b@x.io"}, }"#.to_vec(),
    );
    assert_eq!(st, 400);
    // An empty body is a bad request, not an empty success.
    for (ctype, body) in [
        ("application/x-ndjson", &b""[..]),
        ("application/x-ndjson", b"  \n"),
        ("application/json", b"[]"),
        ("application/json", b""),
    ] {
        let (st, text) = post(ctype, body.to_vec());
        assert_eq!(st, 400, "{:?}: {text}", String::from_utf8_lossy(body));
    }
    assert_eq!(stored(&s).len(), 0, "no refused request stored anything");

    // An NDJSON item with a `batch` or `signals` field is one event, stored as sent.
    let nd = concat!(
        r#"{"email":"w@x.io","event":"import","batch":[{"email":"inner@x.io"}]}"#,
        "\n",
        r#"{"email":"v@x.io","event":"import","signals":[{"email":"inner2@x.io"}]}"#,
        "\n"
    );
    let (st, text) = post("application/x-ndjson", nd.as_bytes().to_vec());
    assert_eq!(st, 202, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["accepted"], 2);
    let kept = stored(&s);
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["payload"]["batch"][0]["email"], "inner@x.io");
    assert_eq!(kept[1]["payload"]["signals"][0]["email"], "inner2@x.io");
    // A whole body that is one wrapper is still unwrapped.
    let (st, text) = post(
        "application/json",
        br#"{"batch":[{"email":"a1@x.io"},{"email":"a2@x.io"}]}"#.to_vec(),
    );
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&text).unwrap()["accepted"].clone()
        ),
        (202, json!(2))
    );
}

#[test]
fn encodings_contexts_and_payload_roles() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let e1 = s.url(&format!("/api/signal-staging/webhook/{key}"));
    let body = r#"{"email":"enc@x.io","event":"x"}"#;
    // An encoding the server cannot decode is 415, as the README says, and stores nothing.
    for enc in ["br", "deflate", "zstd"] {
        let r = client()
            .post(&e1)
            .header("content-encoding", enc)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 415, "{enc}");
        assert_eq!(r.json::<Value>().unwrap()["error"], "unsupported_encoding");
    }
    assert_eq!(stored(&s).len(), 0);
    // gzip is decoded on the webhooks too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let r = client()
        .post(&e1)
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(stored(&s)[0]["payload"]["email"], "enc@x.io");

    // A /v1/batch whose context would be copied into each message, far too large.
    let ctx: serde_json::Map<String, Value> =
        (0..28_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let batch = json!({"batch": [{"type": "track", "userId": "u1", "event": "E"}], "context": ctx});
    let r = client()
        .post(s.url("/v1/batch"))
        .basic_auth(&key, Some(""))
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("context"));

    // Raw payloads need Editor, on the timeline as in signal detail.
    let (_, viewer) = token(&s, ADMIN_TOKEN, "viewer");
    let lead = s.get_at("/api/leads?email=enc@x.io", s.dump().len() as u64);
    let lead_id = lead.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.admin(
        reqwest::Method::GET,
        &format!("/api/leads/{lead_id}/timeline"),
        &viewer,
        None,
    );
    assert_eq!(r.status(), 403);
    let r = s.admin(
        reqwest::Method::GET,
        &format!("/api/leads/{lead_id}/timeline"),
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 200);
}

#[test]
fn configuration_bodies_refuse_unknown_fields_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let call = |m: reqwest::Method, path: &str, body: Value| {
        let r = s.admin(m, path, ADMIN_TOKEN, Some(body));
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    // The reported typo: a rule with "condtions" matched everything at priority 0.
    let (st, b) = call(
        reqwest::Method::POST,
        "/api/mapping-rules",
        json!({"name": "Demo", "signal_type": "Form Fill", "condtions": [{"field": "event_name", "op": "equals", "value": "demo"}],
               "mappings": [{"field": "email", "path": "email"}]}),
    );
    assert_eq!((st, b["field"].as_str()), (400, Some("condtions")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("condtions"));
    let rules: Value = s
        .admin(
            reqwest::Method::GET,
            "/api/mapping-rules",
            ADMIN_TOKEN,
            None,
        )
        .json()
        .unwrap();
    assert_eq!(
        rules["rules"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    for (method, path, body, field) in [
        (
            reqwest::Method::POST,
            "/api/mapping-rules",
            json!({"name": "R", "signal_type": "Form Fill", "mappings": [{"field": "email", "path": "email", "pth": "x"}]}),
            "pth",
        ),
        (
            reqwest::Method::POST,
            "/api/mapping-rules",
            json!({"name": "R", "signal_type": "Form Fill", "mappings": [{"field": "email", "path": "email"}],
                   "conditions": [{"field": "source", "op": "equals", "vaule": "web"}]}),
            "vaule",
        ),
        (
            reqwest::Method::PUT,
            "/api/admin/plan",
            json!({"raw_signal_limit": 10, "mapped_signal_limit": 0, "overage": false, "retention": 3}),
            "retention",
        ),
        (
            reqwest::Method::POST,
            "/api/admin/tokens",
            json!({"role": "viewer", "nmae": "x"}),
            "nmae",
        ),
        (
            reqwest::Method::POST,
            "/api/admin/keys",
            json!({"name": "k", "secrett": true}),
            "secrett",
        ),
        (
            reqwest::Method::POST,
            "/api/sql",
            json!({"sql": "SELECT 1", "limit": 5}),
            "limit",
        ),
    ] {
        let (st, b) = call(method, path, body);
        assert_eq!((st, b["field"].as_str()), (400, Some(field)), "{path}: {b}");
    }
}
