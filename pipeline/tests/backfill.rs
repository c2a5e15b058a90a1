//! `trailspark backfill`: offline into a data directory and through a running server, with
//! the same final state as live ingestion, idempotent re-runs, and malformed lines reported.
//!
//! Size: 1,000,000 events when built with optimizations (`cargo test --release`, as
//! `scripts/test` runs this file), 20,000 in a debug build; `TRAILSPARK_BACKFILL_EVENTS`
//! overrides.

mod common;

use std::io::Write;
use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn events() -> usize {
    std::env::var("TRAILSPARK_BACKFILL_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            20_000
        } else {
            1_000_000
        })
}

/// Writes `n` generated events over three files (NDJSON, gzip NDJSON, JSON array), with a few
/// malformed lines in the first at known line numbers. Returns the files and those lines.
fn generate(dir: &std::path::Path, n: usize) -> (Vec<std::path::PathBuf>, Vec<u64>) {
    fn event(i: usize, n: usize) -> Value {
        let v = i % (n / 8).max(1);
        match i % 5 {
            0 | 1 => {
                json!({"type": "page", "anonymousId": format!("a{v}"), "properties": {"url": format!("/p{}", v % 30)},
                "timestamp": "2025-03-01T10:00:00Z", "messageId": format!("m{i}")})
            }
            2 => {
                json!({"type": "identify", "anonymousId": format!("a{v}"), "traits": {"email": format!("u{}@x.io", v / 3)},
                "timestamp": "2025-03-02T10:00:00Z", "messageId": format!("m{i}")})
            }
            3 => {
                json!({"event": "form_submit", "email": format!("u{}@x.io", v / 3), "properties": {"form_name": "Demo", "i": i},
                "timestamp": "2025-03-03T10:00:00Z"})
            }
            // A retry inside the export: exactly the previous event again.
            _ => event(i - 1, n),
        }
    }
    let event = |i: usize| event(i, n);
    let third = n / 3;
    let mut bad_lines = Vec::new();
    let p1 = dir.join("export.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p1).unwrap());
    let mut line = 0u64;
    for i in 0..third {
        if i % 5000 == 17 {
            line += 1;
            writeln!(f, "{{\"broken\": ").unwrap();
            bad_lines.push(line);
        }
        line += 1;
        writeln!(f, "{}", event(i)).unwrap();
    }
    drop(f);
    let p2 = dir.join("export2.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&p2).unwrap(),
        flate2::Compression::fast(),
    );
    for i in third..2 * third {
        writeln!(gz, "{}", event(i)).unwrap();
    }
    gz.finish().unwrap();
    let p3 = dir.join("export3.json");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p3).unwrap());
    write!(f, "[").unwrap();
    for i in 2 * third..n {
        if i > 2 * third {
            writeln!(f, ",").unwrap();
        }
        write!(f, "{}", event(i)).unwrap();
    }
    writeln!(f, "]").unwrap();
    drop(f);
    (vec![p1, p2, p3], bad_lines)
}

fn backfill(
    args: &[&str],
    files: &[std::path::PathBuf],
    rejects: &std::path::Path,
) -> (u64, u64, u64) {
    let out = Command::new(bin())
        .arg("backfill")
        .args(args)
        .arg("--rejects")
        .arg(rejects)
        .args(files)
        .env("TRAILSPARK_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().expect("a summary line");
    let n = |k: &str| {
        last.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    (n("accepted"), n("duplicates"), n("rejected"))
}

/// The state a server shows once its read models have caught up with the whole log.
fn state(s: &Server) -> Value {
    let head: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let head = head["log_head"].as_u64().unwrap();
    // A million signals take the dataflow a while: keep waiting (504 means not yet), bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    let mut stats: Value = loop {
        let path = format!("/api/explorer/stats?wait_for={head}");
        let r = s.admin(Method::GET, &path, ADMIN_TOKEN, None);
        if r.status() == 200 {
            break r.json().unwrap();
        }
        assert_eq!(r.status(), 504);
        assert!(
            std::time::Instant::now() < deadline,
            "the read models never caught up"
        );
    };
    stats["log_position"] = Value::Null;
    let usage: Value = s
        .admin(Method::GET, "/api/usage", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    let groups: Value = s
        .admin(Method::GET, "/api/signal-queue/groups", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    let lead: Value = s
        .admin(Method::GET, "/api/leads?email=u1%40x.io", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    let counts = |g: &Value| -> Vec<(String, u64)> {
        g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["title"].as_str().unwrap().to_string(),
                    g["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    json!({"stats": stats, "staged": usage["staged_signals"], "groups": counts(&groups), "lead_signals": lead["signals"],
           "lead_identifiers": lead["identifiers"]})
}

#[test]
fn backfill_matches_live_ingestion_and_is_idempotent() {
    let n = events();
    let tmp = tempfile::tempdir().unwrap();
    let (files, bad_lines) = generate(tmp.path(), n);

    // Through a running server (the live path: the bulk endpoint).
    let live_dir = tempfile::tempdir().unwrap();
    let live = Server::start(live_dir.path(), None);
    let key = live.first_key.clone().unwrap();
    let online = ["--key", &key, "--server", &live.base];
    let rejects = tmp.path().join("rejects.ndjson");
    let (accepted, duplicates, rejected) = backfill(&online, &files, &rejects);
    assert_eq!(rejected, bad_lines.len() as u64);
    assert_eq!(accepted + duplicates, n as u64);
    assert!(
        duplicates >= (n / 5) as u64 - 1,
        "the export's retries are recognised ({duplicates})"
    );
    let reported: Vec<u64> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        reported, bad_lines,
        "malformed lines are reported with their line numbers"
    );
    let live_state = state(&live);
    // A second run changes nothing.
    let head_before: Value = client()
        .get(live.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let again = backfill(&online, &files, &rejects);
    assert_eq!(again, (0, accepted + duplicates, rejected));
    let head_after: Value = client()
        .get(live.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        head_before["log_head"], head_after["log_head"],
        "nothing was appended"
    );
    assert_eq!(state(&live), live_state);

    // Offline into a data directory: first start it once to get an org and key, then stop it.
    let off_dir = tempfile::tempdir().unwrap();
    let mut off = Server::start(off_dir.path(), None);
    let off_key = off.first_key.clone().unwrap();
    off.kill9();
    let offline = [
        "--key",
        &off_key,
        "--data-dir",
        off_dir.path().to_str().unwrap(),
    ];
    let (a2, d2, r2) = backfill(&offline, &files, &rejects);
    assert_eq!((a2, d2, r2), (accepted, duplicates, rejected));
    let again = backfill(&offline, &files, &rejects);
    assert_eq!(again, (0, accepted + duplicates, rejected));
    off.restart();
    assert_eq!(
        state(&off),
        live_state,
        "the same final state as through the server"
    );
    assert!(live_state["stats"]["total"].as_u64().unwrap() == accepted);

    // Refusals: a wrong key, and a Parquet file before the archive exists.
    let out = Command::new(bin())
        .args(["backfill", "--key", "sk_nope", "--server", &live.base])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(bin())
        .args([
            "backfill",
            "--key",
            &key,
            "--server",
            &live.base,
            "x.parquet",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn backfill_appends_to_a_running_servers_nats_log() {
    // A NATS server that wants a user and password: the backfill takes the same credential
    // options as `serve`.
    let nats = Nats::start_with(&["--user", "ts", "--pass", "s3cret"]);
    let url = nats.url();
    let tmp = tempfile::tempdir().unwrap();
    let (files, bad_lines) = generate(tmp.path(), 3_000);
    let live_dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        live_dir.path(),
        Some(&url),
        &[
            ("TRAILSPARK_NATS_USER", "ts"),
            ("TRAILSPARK_NATS_PASSWORD", "s3cret"),
        ],
    );
    let key = s.first_key.clone().unwrap();
    // Straight onto JetStream while the server runs; the server follows the stream.
    let side = tempfile::tempdir().unwrap();
    let side_dir = side.path().to_str().unwrap();
    let anonymous_args = ["--key", &key, "--data-dir", side_dir, "--nats", &url];
    let anonymous = Command::new(bin())
        .arg("backfill")
        .args(anonymous_args)
        .args(&files)
        .env("TRAILSPARK_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "a backfill without credentials must be refused"
    );
    let args = [
        &anonymous_args[..],
        &["--nats-user", "ts", "--nats-password", "s3cret"],
    ]
    .concat();
    let rejects = tmp.path().join("rejects.ndjson");
    let (accepted, duplicates, rejected) = backfill(&args, &files, &rejects);
    assert_eq!(rejected, bad_lines.len() as u64);
    // The server learns of the appends by following the stream: wait until it has them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut prev = Value::Null;
    let first = loop {
        let st = state(&s);
        // Everything counted, and settled (two reads agree).
        if st["staged"] == accepted && st["stats"]["total"] == accepted && st == prev {
            break st;
        }
        prev = st.clone();
        assert!(
            std::time::Instant::now() < deadline,
            "the server never saw the import: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // Idempotent over NATS too: the backfill reads every signal's dedup key from the stream
    // first, so this does not rest on JetStream's 2-minute duplicate window.
    let (accepted2, duplicates2, _) = backfill(&args, &files, &rejects);
    assert_eq!((accepted2, duplicates2), (0, accepted + duplicates));
    assert_eq!(state(&s), first);
}
