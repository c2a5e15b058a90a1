//! What an operator sees: request ids on every answer and log line, one access-log line per
//! request (refusals with their code, never a key), logs as JSON or as plain text without
//! terminal escape codes when written to a file, `/metrics` as Prometheus reads it (checked
//! by `promtool`), and the example alert rules in `deploy/prometheus` (checked and unit-tested
//! by `promtool`).

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

/// Debian's `promtool` (package `prometheus`; `scripts/test` installs it).
fn promtool() -> String {
    let p = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let ok = std::process::Command::new(&p)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "promtool not found: apt-get install prometheus (scripts/test does), or set PROMTOOL"
    );
    p
}

/// Runs `promtool` with `args`, `stdin` on its standard input; returns its output.
fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn metrics_count_what_happened_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), None);
    let key = s.first_key.clone().unwrap();
    let token = s.owner_token.clone().unwrap();
    let mut last = 0;
    for i in 0..5 {
        let r = s.post_signal(
            &key,
            &format!(r#"{{"email":"m{i}@example.com","event":"visit"}}"#),
        );
        assert_eq!(r.status(), 202);
        last = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    }
    let r = s.post_signal("sk_not_a_key_0000000000000000", "{}");
    assert_eq!(r.status(), 401);
    // Invented paths share one label, whatever their words.
    for p in ["/some/invented/path", "/another/one", "/api/nothing-here"] {
        assert_eq!(client().get(s.url(p)).send().unwrap().status(), 404);
    }
    assert_eq!(
        s.get_at("/api/leads?email=m0@example.com", last).status(),
        200
    );
    sql_ok(&s, &token, "SELECT count(*) AS n FROM signals");
    let r = sql_as(&s, &token, "SELECT * FROM no_such_table", None);
    assert_eq!(r.status(), 400);

    let r = client().get(s.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = r.text().unwrap();

    let (ok, lint) = run_promtool(&["check", "metrics"], Some(&text), dir.path());
    assert!(
        ok,
        "promtool check metrics:\n{lint}\n--- scrape ---\n{text}"
    );

    let webhook = "route=\"/api/signal-staging/webhook/{key}\"";
    let n =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    assert_eq!(
        n(&format!(
            "trailspark_http_requests_total{{{webhook},status=\"202\"}}"
        )),
        5.0
    );
    assert_eq!(
        n(&format!(
            "trailspark_http_requests_total{{{webhook},status=\"401\"}}"
        )),
        1.0
    );
    assert_eq!(
        n("trailspark_http_requests_total{route=\"unmatched\",status=\"404\"}"),
        3.0
    );
    assert_eq!(
        n(&format!(
            "trailspark_http_request_duration_seconds_count{{{webhook}}}"
        )),
        6.0
    );
    assert!(
        !text.contains("invented"),
        "an unknown path never becomes a label"
    );
    assert!(
        !text.contains(&key) && !text.contains("sk_not_a_key"),
        "no key in a label"
    );
    assert!(!text.contains("example.com"), "no email in a label");
    assert!(n("trailspark_log_appended_entries_total") >= 5.0);
    assert!(n("trailspark_log_fsync_duration_seconds_count") >= 1.0);
    assert!(n("trailspark_log_head_position") >= last as f64);
    assert!(n("trailspark_read_models_applied_position") >= last as f64);
    assert_eq!(
        n("trailspark_dataflow_lag_entries"),
        0.0,
        "caught up after wait_for"
    );
    assert!(n("trailspark_epoch_entries_count") >= 1.0);
    assert!(n("trailspark_epoch_duration_seconds_count") >= 1.0);
    // Freshness by stage: every epoch of log entries completes in the dataflow before the
    // read models apply it, and both are counted once it is applied.
    let stage = |s: &str, part: &str| {
        n(&format!(
            "trailspark_freshness_seconds_{part}{{stage=\"{s}\"}}"
        ))
    };
    assert!(stage("taken", "count") >= 1.0);
    assert!(stage("fed", "count") >= 1.0);
    assert!(stage("complete", "count") >= 1.0);
    assert_eq!(stage("complete", "count"), stage("applied", "count"));
    assert!(stage("applied", "sum") >= stage("complete", "sum"));
    assert_eq!(n("trailspark_read_model_entries{model=\"leads\"}"), 5.0);
    assert_eq!(
        n("trailspark_read_model_entries{model=\"processed_signals\"}"),
        5.0
    );
    assert_eq!(n("trailspark_sql_queries_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(n("trailspark_sql_query_duration_seconds_count"), 2.0);
    assert!(
        text.lines().any(
            |l| l.starts_with("trailspark_sql_queries_total{outcome=") && !l.contains("\"ok\"")
        ),
        "the failed query counted by its code:\n{text}"
    );
    for family in [
        "trailspark_archive_files",
        "trailspark_archive_bytes",
        "trailspark_archive_buffered_rows",
        "trailspark_archive_lag_entries",
        "trailspark_hot_window_evictions_total",
        "trailspark_hot_window_rehydrations_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(sample(&text, family).is_some(), "{family} missing:\n{text}");
    }
    assert!(
        !text.contains("trailspark_nats_"),
        "no NATS series on a server without NATS (a 0 would read as an outage)"
    );
    assert!(n("process_resident_memory_bytes") > 1e6);
    assert!(n("process_open_fds") > 3.0);
    // The dataflow's arrangements report what they hold, per worker, about once a second: in
    // updates (from differential's events) and in bytes (from their batches). Every
    // arrangement that holds updates has its bytes measured: at least 8 per update (a batch
    // stores an update's time and difference once for a run of equal ones, but each update's
    // key or value, and an offset, are its own).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = client()
            .get(s.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let series = |family: &str| -> std::collections::BTreeMap<String, f64> {
            text.lines()
                .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
                .filter_map(|l| {
                    let (labels, v) = l.rsplit_once("} ")?;
                    Some((labels.to_string(), v.parse::<f64>().ok()?))
                })
                .collect()
        };
        let records = series("trailspark_arrangement_records");
        let bytes = series("trailspark_arrangement_bytes");
        let short: Vec<String> = records
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .filter(|(labels, n)| bytes.get(*labels).is_none_or(|b| *b < 8.0 * **n))
            .map(|(labels, n)| format!("{labels}: {n} updates, {:?} bytes", bytes.get(labels)))
            .collect();
        let held: f64 = records.values().sum();
        if held > 0.0 && short.is_empty() {
            assert!(
                records
                    .keys()
                    .any(|l| l.contains("arrangement=\"Propagate\"")),
                "the label propagation's arrangement is measured: {records:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "arrangement sizes missing or unmeasured: {short:?}\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        client().post(s.url("/metrics")).send().unwrap().status(),
        405
    );
}

#[test]
fn the_example_alert_rules_and_scrape_config_pass_promtool() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"][..],
        // Each alert fires on a series that should raise it and not on a healthy one.
        &["test", "rules", "alerts.test.yml"][..],
    ] {
        let (ok, out) = run_promtool(args, None, &deploy);
        assert!(ok, "promtool {}:\n{out}", args.join(" "));
    }
}

/// `--metrics-listen`: the scrape moves to its own address, and the main one no longer
/// answers it.
#[test]
fn metrics_can_be_served_on_an_address_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let s = Server::start_with(
        &dir.path().join("data"),
        None,
        &[("TRAILSPARK_METRICS_LISTEN", &at)],
    );
    let key = s.first_key.clone().unwrap();
    assert_eq!(
        s.post_signal(&key, r#"{"email":"m@example.com","event":"x"}"#)
            .status(),
        202
    );
    assert_eq!(
        client().get(s.url("/metrics")).send().unwrap().status(),
        404
    );
    let r = client().get(format!("http://{at}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(
        common::sample(
            &text,
            r#"trailspark_http_requests_total{route="/api/signal-staging/webhook/{key}",status="202"}"#
        ) == Some(1.0),
        "the main address's requests are counted:\n{text}"
    );
    assert_eq!(
        client()
            .get(format!("http://{at}/api/leads"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client()
            .head(format!("http://{at}/metrics"))
            .send()
            .unwrap()
            .status(),
        200
    );
}
