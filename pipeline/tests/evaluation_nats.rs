//! Lead evaluation on a JetStream log: evaluations are log entries there too (a restart
//! replays them from the stream), and each one is a `lead_evaluated` change event.

mod common;

use common::jetstream::change_events;
use common::scoring::*;
use common::*;
use reqwest::Method;
use serde_json::Value;

#[test]
fn evaluations_replay_from_jetstream_and_are_change_events() {
    let nats = Nats::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let env = [("TRAILSPARK_EVALUATION_INTERVAL", "3600")];
    let mut s = Server::start_with(dir.path(), Some(&url), &env);
    mapping_rules(&s);
    model(&s);
    let l = lead(&s, "ana@acme.com");
    l.identify(fitting());
    l.event("Pricing Viewed");
    l.event("Feature Used");
    let p = l.event("Feature Used");
    let id = l.id(p);
    let e = ok(&s, Method::POST, &format!("/api/leads/{id}/evaluate"), None);

    // The change event, with the evaluation's id and fields.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let event = loop {
        let evs = change_events(&url);
        if let Some(ev) = evs.iter().find(|v| v["type"] == "lead.evaluated") {
            break ev.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lead.evaluated in {evs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(event["data"]["id"], e["id"]);
    assert_eq!(event["data"]["lead_id"], Value::from(id.clone()));
    assert_eq!(event["data"]["score"], e["score"]);

    // A restart replays the stream: the same evaluation, and no scorer call.
    s.kill9();
    let s = Server::start_with(dir.path(), Some(&url), &env);
    let again = ok(
        &s,
        Method::GET,
        &format!("/api/leads/{id}?wait_for={p}"),
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut again = again;
    while again["evaluation"].is_null() {
        assert!(std::time::Instant::now() < deadline, "{again}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        again = ok(&s, Method::GET, &format!("/api/leads/{id}"), None);
    }
    assert_eq!(again["evaluation"]["id"], e["id"]);
    assert_eq!(
        ok(&s, Method::GET, "/api/admin/evaluation", None)["scorer_calls"],
        0
    );
}
