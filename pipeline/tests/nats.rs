//! The log on NATS JetStream, against a real nats-server started here.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn jetstream_log_accepts_dedups_and_replays_config() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), Some(&nats.url()));
    let key = s.first_key.clone().unwrap();
    let body = r#"{"email":"a@b.io","event":"signup","messageId":"m-42"}"#;
    let a: Value = s.post_signal(&key, body).json().unwrap();
    let b: Value = s.post_signal(&key, body).json().unwrap();
    assert_eq!(a["duplicate"], false);
    assert_eq!(
        b["duplicate"], true,
        "JetStream's duplicate window recognises the retry"
    );
    assert_eq!(a["id"], b["id"]);
    let health: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["log"], "jetstream");
    // Config lives in the stream: after a restart with an empty data dir the key still works.
    s.kill9();
    let other_dir = tempfile::tempdir().unwrap();
    let s2 = Server::start(other_dir.path(), Some(&nats.url()));
    assert!(
        s2.first_key.is_none(),
        "not a first start: the org came back from the stream"
    );
    assert_eq!(s2.post_signal(&key, r#"{"event":"after"}"#).status(), 202);
    let dump = s2.dump();
    let sigs = signals(&dump);
    assert_eq!(
        sigs.iter()
            .filter(|s| s["payload"]["messageId"] == "m-42")
            .count(),
        1
    );
    assert!(sigs.iter().any(|s| s["payload"]["event"] == "after"));
}

#[test]
fn jetstream_kill9_during_load_loses_and_duplicates_nothing() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), Some(&nats.url()));
    let (acked, retried) = kill9_under_load(&mut s, Duration::from_millis(1500));
    eprintln!("jetstream: {acked} signals acked before kill -9, {retried} re-sent after restart");
}
