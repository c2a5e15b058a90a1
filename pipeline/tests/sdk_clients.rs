//! Unmodified Segment and RudderStack Python SDKs, pointed at trailspark, deliver identify,
//! track, page and group calls that arrive as canonical records.

mod common;

use std::process::Command;

use common::*;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn send_with(kind: &str, s: &Server, key: &str, run: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_send.py");
    let out = Command::new(python())
        .args([script, kind, &s.base, key, run])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{kind} SDK failed (install it with `pip install segment-analytics-python rudder-sdk-python`; scripts/test does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_arrivals(s: &Server, run: &str, source: &str) {
    let dump = s.dump();
    let mine: Vec<_> = signals(&dump)
        .into_iter()
        .filter(|sig| sig["ids"]["user_id"] == format!("user-{run}"))
        .cloned()
        .collect();
    let types: Vec<&str> = mine
        .iter()
        .map(|s| s["event_type"].as_str().unwrap())
        .collect();
    for t in ["identify", "track", "page", "group"] {
        assert!(types.contains(&t), "{t} arrived ({types:?})");
    }
    for sig in &mine {
        assert_eq!(
            sig["source"], source,
            "each SDK's traffic is labelled by its vendor"
        );
        assert!(sig["message_id"].is_string(), "the SDK's messageId is kept");
        assert!(
            sig["payload"]["context"]["library"]["name"].is_string(),
            "batch context merged into each message"
        );
    }
    let identify = mine.iter().find(|s| s["event_type"] == "identify").unwrap();
    assert_eq!(
        identify["ids"]["email"],
        format!("person-{run}@example.com")
    );
    assert_eq!(identify["ids"]["anonymous_id"], format!("anon-{run}"));
    let track = mine.iter().find(|s| s["event_type"] == "track").unwrap();
    assert_eq!(track["event_name"], "Signed Up");
    let group = mine.iter().find(|s| s["event_type"] == "group").unwrap();
    assert_eq!(group["ids"]["product_org_id"], format!("ws-{run}"));
}

#[test]
fn segment_and_rudderstack_sdks_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    send_with("segment", &s, &key, "seg1");
    check_arrivals(&s, "seg1", "segment");
    send_with("rudderstack", &s, &key, "rud1");
    check_arrivals(&s, "rud1", "rudderstack");
    // A wrong write key is refused, and the SDK reports it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sdk_send.py");
    let out = Command::new(python())
        .args([script, "segment", &s.base, "sk_wrong", "bad"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a bad write key must surface as an SDK error"
    );
}
