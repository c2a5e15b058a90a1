//! Schemathesis (PyPI) against a running server, over the whole `/openapi.json`: its
//! examples, coverage and fuzzing phases, bounded by examples per operation. No answer may
//! be a 5xx or differ from the document (status, content type, body schema, headers, `Allow`
//! on a 405, 401 without credentials), and afterwards the server must be alive with every
//! signal accepted before the run still in its log.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use serde_json::Value;

/// The checks that hold of every answer, whatever the request.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,unsupported_method,\
allow_header_conformance,ignored_auth,missing_required_header";

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let installed = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "schemathesis not found: python3 -m pip install schemathesis (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), None);
    let key = s.first_key.clone().unwrap();

    // What must survive the run: signals with known nonces, and the lead they make.
    let mut last = 0;
    for nonce in 0..20 {
        let r = s.post_signal(
            &key,
            &format!(r#"{{"email":"seed@example.com","event":"seeded","nonce":{nonce}}}"#),
        );
        assert_eq!(r.status(), 202);
        last = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    }
    event_rule(&s, "seeded", true);

    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261207".into());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    let run = || {
        Command::new("schemathesis")
            .arg("--config-file")
            .arg(here.join("schemathesis.toml"))
            .args(["run", &s.url("/openapi.json")])
            .args(["--checks", CHECKS])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "10", "--seed", &seed, "--workers", "2"])
            .args(["--continue-on-failure", "--no-color"])
            // Its cache and crash files go to the test's directory, not the source tree.
            .current_dir(dir.path())
            .env("PYTHONPATH", &here)
            .env("SCHEMATHESIS_HOOKS", "trailspark_hooks")
            .env("TRAILSPARK_TOKEN", ADMIN_TOKEN)
            .env("TRAILSPARK_KEY", &key)
            .env("TRAILSPARK_BASIC", &basic)
            .output()
            .expect("running schemathesis")
    };
    let mut out = run();
    let mut report = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() && only_generator_flakes(&report) {
        // Hypothesis gave up on drawing a case (seen once, in the coverage phase, with
        // schemathesis 4.32.5): no request was judged, so the run says nothing of the server.
        // Once more, with the same seed; a server failure fails both runs.
        eprintln!("schemathesis's generator failed on its own; running it again:\n{report}");
        out = run();
        report = String::from_utf8_lossy(&out.stdout).to_string();
    }
    let summary: String = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("schemathesis (seed {seed}):\n{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["Examples", "Coverage", "Fuzzing"] {
        assert!(
            summary
                .lines()
                .any(|l| l.contains(phase) && l.contains('✅')),
            "the {phase} phase ran and passed:\n{summary}"
        );
    }
    let generated: u64 = summary
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" generated,")
                .map(|(n, _)| n.to_string())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no test case count in:\n{summary}"));
    assert!(generated > 1000, "only {generated} test cases");

    // Alive, and nothing accepted before the run is gone.
    assert_eq!(
        client().get(s.url("/healthz")).send().unwrap().status(),
        200
    );
    let r = s.get_at("/api/leads?email=seed@example.com", last);
    assert_eq!(r.status(), 200, "the seeded lead is still there");
    let dump = s.dump();
    let kept = signals(&dump)
        .iter()
        .filter(|sig| sig["payload"]["event"] == "seeded")
        .count();
    assert_eq!(kept, 20, "every seeded signal is still in the log");
}

/// Whether a failed run's only errors are Hypothesis giving up while drawing cases (a
/// `FlakyFailure` inside schemathesis' generator), with no failed check: no answer of the
/// server was found wrong, and no request failed to reach it.
fn only_generator_flakes(report: &str) -> bool {
    let errors: Vec<&str> = report
        .lines()
        .skip_while(|l| l.trim() != "Errors:")
        .skip(1)
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    !errors.is_empty()
        && errors.iter().all(|l| l.starts_with("🚫 Runtime Error"))
        && report.contains("hypothesis.errors.FlakyFailure")
        && !report.contains("FAILURES")
        && !report.contains("Failures:")
        && !report.contains('❌')
}

#[test]
fn a_generator_flake_is_told_apart_from_a_failed_check() {
    // Shaped as schemathesis 4.32.5 printed them.
    let flake = "Errors:\n  🚫 Runtime Error: 1\n\nWarnings:\n  ⚠️ Missing test data\n\n\
        hypothesis.errors.FlakyFailure: Inconsistent results\n";
    assert!(only_generator_flakes(flake));
    let failed = format!("{flake}\n=== FAILURES ===\n❌ Server error\n");
    assert!(!only_generator_flakes(&failed));
    let unreachable = "Errors:\n  🚫 Runtime Error: 1\n  🚫 Network Error: 3\n\n\
        hypothesis.errors.FlakyFailure\n";
    assert!(!only_generator_flakes(unreachable));
    assert!(!only_generator_flakes(
        "Errors:\n  🚫 Runtime Error: 1\n\nSchemaError\n"
    ));
}
