//! signalmark end to end at a small scale: every scenario runs against real trailspark
//! servers (and a real nats-server), and the run fails unless trailspark's outputs equal
//! DuckDB's for every org, after the incremental load and after the batch load.

use std::process::Command;

#[test]
fn signalmark_small_scale_outputs_agree_with_duckdb() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_signalmark"))
        .args([
            "--events",
            "20000",
            "--orgs",
            "3",
            "--parts",
            "3",
            "--seconds",
            "2",
            "--nats-events",
            "5000",
            "--work",
        ])
        .arg(work.path())
        .output()
        .expect("signalmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "signalmark failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("| outputs equal to DuckDB's") && stdout.contains("| yes: "),
        "{stdout}"
    );
    for measure in [
        "ingest: HTTP, one signal per request",
        "ingest: HTTP, batches of 100",
        "ingest: NATS JetStream",
        "freshness: 202 → visible",
        "incremental: 3 parts",
        "batch: NDJSON → all outputs",
        "restart-to-serving",
        "resident memory per million signals",
        "rule edit with reprocessing",
        "SQL (org 1, POST /api/sql, median of 5): anonymous_id lookup",
        "identify rehydrating a pending visitor",
    ] {
        assert!(stdout.contains(measure), "no row for {measure}:\n{stdout}");
    }
    // The workload is on disk as NDJSON, with the DuckDB baseline's outputs beside it.
    let duck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("duckdb.json")).unwrap()).unwrap();
    assert_eq!(duck["orgs"].as_object().unwrap().len(), 3);
}
