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

/// Why the engine stages first copies itself (`trailspark_core::dedup::FirstSeen`) although
/// the log never appends a retry it knows: two writers of one JetStream log (a server and an
/// offline `backfill --nats`) each know only what they read when they opened it, and
/// JetStream's own duplicate window is short, so a duplicate reaches the log. The engine
/// still stages it once, and counts it as a raw signal twice.
#[test]
fn a_duplicate_two_writers_append_is_staged_once() {
    use trailspark::engine::{Engine, EngineConfig};
    use trailspark::log::jetstream::{JetStreamLog, StreamSettings};
    use trailspark::log::nats::connect;
    use trailspark_core::normalize::{normalize, Context};
    use trailspark_core::{LogEntry, OrgId};
    use trailspark_operators::usage::Meter;
    use trailspark_operators::Signal;

    let nats = Nats::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = StreamSettings {
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    };
    let received_at = 1_767_225_600_000;
    let ctx = Context {
        org_id: OrgId(1),
        api_key_id: 1,
        received_at,
        ..Default::default()
    };
    let payload = serde_json::json!({"email": "a@b.io", "event": "signup", "messageId": "m-1"});
    let record = normalize(&ctx, &payload, payload.to_string());
    let positions = rt.block_on(async {
        let a = JetStreamLog::connect(
            connect(&nats.url(), &Default::default()).await.unwrap(),
            &settings,
        )
        .await
        .unwrap();
        let b = JetStreamLog::connect(
            connect(&nats.url(), &Default::default()).await.unwrap(),
            &settings,
        )
        .await
        .unwrap();
        let first = a
            .append(vec![LogEntry::Signal(record.clone())])
            .await
            .unwrap();
        // Past JetStream's window, the second writer, which never read the first copy,
        // appends it again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = b
            .append(vec![LogEntry::Signal(record.clone())])
            .await
            .unwrap();
        (first[0], second[0])
    });
    assert!(!positions.0.duplicate && !positions.1.duplicate);
    assert_ne!(
        positions.0.position, positions.1.position,
        "on the log twice"
    );

    let engine = Engine::start(EngineConfig::default());
    let entries = vec![
        (positions.0.position, LogEntry::Signal(record.clone())),
        (positions.1.position, LogEntry::Signal(record)),
    ];
    engine.feed(entries);
    assert!(rt.block_on(
        engine
            .read
            .wait_for(positions.1.position, Duration::from_secs(30))
    ));
    let m = engine.read.read();
    let usage = m.org(1).usage_of(Signal::month_of(received_at));
    assert_eq!(usage.get(&Meter::RawSignals), Some(&2));
    assert_eq!(usage.get(&Meter::StagedSignals), Some(&1), "staged once");
    assert_eq!(m.org(1).stats.total, 1);
}
