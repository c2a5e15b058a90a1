//! What one tenant, or one careless client, must not be able to do to the server (issue 20):
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
