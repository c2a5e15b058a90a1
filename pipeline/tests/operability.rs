//! What an operator sees: request ids on every answer and log line, one access-log line per
//! request (refusals with their code, never a key), and logs as JSON or as plain text
//! without terminal escape codes when written to a file.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// Starts a server whose stderr (its log) goes to `log`, at level info, with `env`.
fn start_logged(dir: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
    let file = std::fs::File::create(log).unwrap();
    Server::start_configured(dir, None, env, move |cmd| {
        cmd.env("TRAILSPARK_LOG", "info").stderr(Stdio::from(file));
    })
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn json_logs_carry_request_ids_and_an_access_line_per_request_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let s = start_logged(
        &dir.path().join("data"),
        &log,
        &[("TRAILSPARK_LOG_FORMAT", "json")],
    );
    let key = s.first_key.clone().unwrap();
    let bad_key = "sk_this_key_does_not_exist_0123456789";
    let r = client()
        .post(s.url(&format!("/api/signal-staging/webhook/{bad_key}")))
        .header("x-request-id", "req-refused-1")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "req-refused-1", "echoed");
    let r = s.post_signal(&key, r#"{"email":"ops@example.com","event":"x"}"#);
    assert_eq!(r.status(), 202);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "generated when the client sends none");
    // An id that could forge log text is replaced.
    let r = client()
        .get(s.url("/healthz"))
        .header("x-request-id", "evil id\tforged")
        .send()
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "evil id\tforged");
    let r = s.admin(reqwest::Method::GET, "/api/admin/whoami", "ts_wrong", None);
    assert_eq!(r.status(), 401);

    // Lines are written as requests end; wait for the last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let text = log_text(&log);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let done = lines
            .iter()
            .any(|l| l["route"] == "/api/admin/whoami" && l["status"] == 401);
        if done || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = log_text(&log);
    assert!(!text.contains('\u{1b}'), "no escape codes in a log file");
    assert!(!text.contains(bad_key), "a refused key is never logged");
    assert!(!text.contains(&key), "a key is never logged");
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "trailspark::access")
        .collect();
    let refused = access
        .iter()
        .find(|l| l["span"]["request_id"] == "req-refused-1")
        .expect("the 401 has its access line");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["code"], "invalid_api_key");
    assert_eq!(refused["level"], "INFO");
    assert_eq!(refused["route"], "/api/signal-staging/webhook/{key}");
    assert_eq!(refused["span"]["method"], "POST");
    assert!(refused["latency_ms"].as_f64().is_some());
    let accepted = access
        .iter()
        .find(|l| l["span"]["request_id"] == generated.as_str())
        .expect("the 202 has its access line");
    assert_eq!(accepted["status"], 202);
    assert_eq!(accepted["span"]["org"], 1, "the org the key belongs to");
    assert!(accepted["bytes"].as_u64().unwrap() > 0);
    let token_refusal = access
        .iter()
        .find(|l| l["route"] == "/api/admin/whoami")
        .unwrap();
    assert_eq!(token_refusal["code"], "unauthorized");
    assert!(
        !text.contains("ts_wrong"),
        "a presented token is never logged"
    );
}

#[test]
fn text_logs_to_a_file_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let s = start_logged(&dir.path().join("data"), &log, &[]);
    let r = client()
        .get(s.url("/healthz"))
        .header("x-request-id", "plain-1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_text(&log).contains("plain-1") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = log_text(&log);
    assert!(text.contains("request_id=plain-1"), "{text}");
    assert!(
        text.contains("route=\"/healthz\"") || text.contains("route=/healthz"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes when stderr is a file"
    );
}
