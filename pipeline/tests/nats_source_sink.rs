//! NATS as a source and a change-event sink, against a real nats-server started here:
//! producers publishing with async-nats and with the independent nats-py client, core-NATS
//! request/reply, dead letters, change events; and the fault scenarios (kill -9 of trailspark,
//! a nats-server restart, a consumer far behind) under a load of 100,000 signals from a
//! separate producer process (`trailspark-load`), when built with optimizations (20,000 in a
//! debug build; scripts/test runs this file in release too).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::jetstream::*;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

fn of_type<'a>(evs: &'a [Value], t: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == t).collect()
}

fn stats(s: &Server) -> Value {
    s.admin(Method::GET, "/api/explorer/stats", ADMIN_TOKEN, None)
        .json()
        .unwrap()
}

fn sql(s: &Server, q: &str) -> Vec<Vec<Value>> {
    let r = s.admin(
        Method::POST,
        "/api/sql",
        ADMIN_TOKEN,
        Some(json!({ "sql": q })),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    serde_json::from_value(v["rows"].clone()).unwrap()
}

/// Polls `f` until it returns true or `secs` pass.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the explorer's total reaches `n` and the source has acked everything.
fn wait_total(s: &Server, n: i64, secs: u64) {
    wait_until(secs, &format!("{n} signals"), || {
        stats(s)["total"].as_i64() == Some(n)
    });
}

/// Waits until the events stream stops growing (the publisher has drained).
fn settled_events(s: &Server, url: &str) -> Vec<Value> {
    wait_until(120, "the event backlog to drain", || {
        let h: Value = client()
            .get(s.url("/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        h["nats"]["events_backlog"] == 0
    });
    let mut last = usize::MAX;
    loop {
        let evs = change_events(url);
        if evs.len() == last {
            return evs;
        }
        last = evs.len();
        std::thread::sleep(Duration::from_millis(1500));
    }
}

#[test]
fn nats_source_dead_letters_requests_and_change_events() {
    let nats = Nats::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), Some(&url));
    let key = s.first_key.clone().unwrap();
    event_rule(&s, "demo_request", false);
    let r = s.admin(
        Method::PUT,
        "/api/admin/plan",
        ADMIN_TOKEN,
        Some(json!({"raw_signal_limit": 18, "mapped_signal_limit": 0, "overage": true})),
    );
    assert_eq!(r.status(), 200);

    let runtime = rt();
    // A subscriber to change events, listening from the start.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let sub_client = runtime.block_on(async_nats::connect(&url)).unwrap();
    let mut sub = runtime
        .block_on(sub_client.subscribe("trailspark.events.>"))
        .unwrap();
    {
        let seen = seen.clone();
        runtime.spawn(async move {
            while let Some(m) = sub.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                seen.lock()
                    .unwrap()
                    .insert(v["id"].as_str().unwrap().to_string());
            }
        });
    }

    let (replies, bad_reply) = runtime.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let js = jetstream::new(client.clone());
        // Publishes `body` to `trailspark.signals.<org>.<source>` and waits for JetStream's ack.
        let publish = |org_source: &str, key: Option<&str>, body: &str| {
            let js = js.clone();
            let subject = format!("trailspark.signals.{org_source}");
            let body = body.to_string();
            let mut headers = async_nats::HeaderMap::new();
            if let Some(k) = key {
                headers.insert("Trailspark-Api-Key", k);
            }
            async move {
                js.publish_with_headers(subject, headers, body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            }
        };
        let k = Some(key.as_str());
        for i in 0..10 {
            let event = if i % 2 == 0 {
                "demo_request"
            } else {
                "page_view"
            };
            let body = json!({"messageId": format!("rs-{i}"), "event": event,
                              "email": format!("a{}@x.io", i % 5)});
            publish("1.web", k, &body.to_string()).await;
        }
        // The same signal again (a producer's retry): absorbed.
        let again = json!({"messageId": "rs-0", "event": "demo_request", "email": "a0@x.io"});
        publish("1.web", k, &again.to_string()).await;
        // An anonymous visitor, then its identify: an identity merge.
        let anon = json!({"messageId": "anon-1", "event": "page_view", "anonymousId": "v-1"});
        publish("1.web", k, &anon.to_string()).await;
        let ident = json!({"messageId": "anon-2", "type": "identify", "event": "identify",
                           "anonymousId": "v-1", "email": "a0@x.io"});
        publish("1.segment", k, &ident.to_string()).await;
        // Dead letters: unknown key, another org's subject, bad JSON, no key.
        publish("1.web", Some("sk_nope"), r#"{"event":"x"}"#).await;
        publish("2.web", k, r#"{"event":"y"}"#).await;
        publish("1.web", k, "{not json").await;
        publish("1.web", None, r#"{"event":"z"}"#).await;
        // Core NATS request/reply.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trailspark-Api-Key", key.as_str());
        let ok = client
            .request_with_headers(
                "trailspark.ingest.1.web",
                headers,
                json!({"messageId": "req-1", "event": "demo_request", "email": "r@x.io"})
                    .to_string()
                    .into(),
            )
            .await
            .unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trailspark-Api-Key", "sk_nope");
        let bad = client
            .request_with_headers("trailspark.ingest.1.web", headers, "{}".into())
            .await
            .unwrap();
        let status = |m: &async_nats::Message| {
            m.headers
                .as_ref()
                .unwrap()
                .get("Trailspark-Status")
                .unwrap()
                .to_string()
        };
        (
            (
                status(&ok),
                serde_json::from_slice::<Value>(&ok.payload).unwrap(),
            ),
            (
                status(&bad),
                serde_json::from_slice::<Value>(&bad.payload).unwrap(),
            ),
        )
    });
    assert_eq!(replies.0, "202");
    assert_eq!(replies.1["status"], 202);
    assert_eq!(
        replies.1["message"],
        "Signal received and queued for processing"
    );
    assert!(replies.1["id"].as_u64().unwrap() > 0);
    assert_eq!(bad_reply.0, "401");
    assert_eq!(bad_reply.1["code"], "invalid_api_key");

    // The independent client: nats-py publishes 5 and sends one request.
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/nats_client.py"
        ))
        .args([url.as_str(), key.as_str(), "1", "5", "py"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "nats_client.py failed");
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py["acks"].as_array().unwrap().len(), 5);
    assert_eq!(py["reply_status"], "202");
    assert_eq!(py["reply"]["source"], "python");

    // 10 + anon + identify + 5 python + 2 requests; the retry is absorbed.
    let unique = 10 + 2 + 5 + 2;
    wait_total(&s, unique, 60);
    let st = stats(&s);
    // demo_request: 5 of the 10, the 5 from python, both requests.
    assert_eq!(st["processed"], 12, "{st}");

    // Dead letters carry the reason and the original payload, never the key.
    let dead = runtime.block_on(read_stream(
        &url,
        "TRAILSPARK_DEADLETTER",
        "trailspark.deadletter.>",
    ));
    let mut codes: Vec<&str> = dead
        .iter()
        .map(|m| m.headers["Trailspark-Error"].as_str())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "bad_request",
            "invalid_api_key",
            "invalid_json",
            "wrong_org"
        ]
    );
    for m in &dead {
        assert!(!m.headers.contains_key("Trailspark-Api-Key"));
        assert!(m.headers.contains_key("Trailspark-Original-Subject"));
        let p = String::from_utf8_lossy(&m.payload);
        assert!(!p.contains(&key));
    }
    assert!(dead
        .iter()
        .any(|m| m.subject == "trailspark.deadletter.2.web" && m.payload == br#"{"event":"y"}"#));
    // Nothing of the dead letters reached org 1's data.
    let rows = sql(
        &s,
        "SELECT count(*) FROM signals WHERE event_type IN ('x', 'y', 'z')",
    );
    assert_eq!(rows[0][0], 0);

    // Change events.
    let evs = settled_events(&s, &url);
    // A consumer of the whole stream, without a subject filter, reads events only: the
    // publisher's checkpoint is in a stream of its own.
    let everything = runtime.block_on(read_stream(&url, "TRAILSPARK_EVENTS", ""));
    assert!(!everything.is_empty());
    assert!(
        everything
            .iter()
            .all(|m| m.subject.starts_with("trailspark.events.")),
        "the events stream holds events only"
    );
    let checkpoint = runtime.block_on(read_stream(&url, "TRAILSPARK_EVENTS_CHECKPOINT", ""));
    assert!(checkpoint.len() <= 1, "one checkpoint message is kept");
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "an event was stored twice");
    let mapped: BTreeSet<u64> = of_type(&evs, "signal.mapped")
        .iter()
        .map(|e| e["data"]["signal_id"].as_u64().unwrap())
        .collect();
    assert_eq!(mapped.len(), 12);
    let processed_ids: BTreeSet<u64> = sql(&s, "SELECT id FROM signals WHERE status = 'completed'")
        .iter()
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    assert_eq!(mapped, processed_ids);
    let created: BTreeSet<String> = of_type(&evs, "lead.created")
        .iter()
        .map(|e| e["data"]["lead_id"].as_str().unwrap().to_string())
        .collect();
    let leads: BTreeSet<String> = sql(&s, "SELECT lead_id FROM leads")
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    if created != leads {
        eprintln!("leads: {:?}", sql(&s, "SELECT * FROM leads"));
        eprintln!("identities: {:?}", sql(&s, "SELECT * FROM identities"));
        for e in &evs {
            eprintln!("{e}");
        }
    }
    assert_eq!(created, leads);
    assert!(!of_type(&evs, "lead.updated").is_empty());
    let merged = of_type(&evs, "identity.merged");
    assert!(
        merged
            .iter()
            .any(|e| e["data"]["identifier"]["value"] == "v-1"),
        "{merged:?}"
    );
    let thresholds: Vec<u64> = of_type(&evs, "usage.threshold")
        .iter()
        .filter(|e| e["data"]["meter"] == "raw_signals")
        .map(|e| e["data"]["threshold_pct"].as_u64().unwrap())
        .collect();
    assert_eq!(thresholds, [80, 100]);
    // The subscriber got every stored event.
    let seen = seen.lock().unwrap().clone();
    for id in &distinct {
        assert!(seen.contains(*id), "the subscriber missed {id}");
    }
    let h: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["nats"]["connected"], true, "{h}");
    assert_eq!(h["nats"]["source_consumer"]["pending"], 0, "{h}");
    assert_eq!(h["nats"]["source_dead_lettered"], 4, "{h}");
    // The same figures as Prometheus reads them.
    let value = scrape(&s);
    assert_eq!(value("trailspark_nats_connected"), 1.0);
    // The log is JetStream here: appends and their acknowledgement times are counted too.
    assert!(value("trailspark_log_appended_entries_total") > 0.0);
    assert!(value("trailspark_log_fsync_duration_seconds_count") > 0.0);
    assert_eq!(value("trailspark_nats_source_dead_letters_total"), 4.0);
    assert_eq!(value("trailspark_nats_consumer_pending_messages"), 0.0);
    assert_eq!(
        value("trailspark_nats_source_accepted_total"),
        h["nats"]["source_accepted"].as_f64().unwrap()
    );
}

#[test]
fn nats_credentials_user_password_and_token() {
    for (args, flags) in [
        (
            vec!["--user", "ts", "--pass", "s3cret"],
            vec!["--nats-user", "ts", "--nats-password", "s3cret"],
        ),
        (vec!["--auth", "tok3n"], vec!["--nats-token", "tok3n"]),
    ] {
        let nats = Nats::start_with(&args);
        let url = nats.url();
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = Vec::new();
        for pair in flags.chunks(2) {
            let name = format!(
                "TRAILSPARK_{}",
                pair[0]
                    .trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            env.push((name, pair[1].to_string()));
        }
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let s = Server::start_with(dir.path(), Some(&url), &env_refs);
        let r = s.post_signal(s.first_key.as_ref().unwrap(), r#"{"event":"auth-ok"}"#);
        assert_eq!(r.status(), 202);
        let h: Value = client()
            .get(s.url("/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(h["nats"]["connected"], true, "{h}");
        drop(s);
        drop(nats);
    }
}

#[test]
fn nats_credentials_nkey() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    // Only the users' authorization in the file: port and store come from the flags.
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let nats = Nats::start_with(&["-c", conf.to_str().unwrap()]);
    let url = nats.url();
    // Without the nkey, NATS refuses the connection.
    let refused = rt().block_on(async {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(url.as_str())
            .await
    });
    assert!(refused.is_err());
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), Some(&url), &[("TRAILSPARK_NATS_NKEY", &seed)]);
    let r = s.post_signal(s.first_key.as_ref().unwrap(), r#"{"event":"nkey-ok"}"#);
    assert_eq!(r.status(), 202);
    wait_total(&s, 1, 30);
    drop(s);
    drop(nats);
}

// ----- Fault scenarios -----------------------------------------------------------------

fn load_size() -> u64 {
    if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    }
}

fn producer(url: &str, key: &str, count: u64, prefix: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_trailspark-load"))
        .args(["--nats", url, "--key", key, "--count", &count.to_string()])
        .args(["--prefix", prefix, "--emails", "1000", "--dup-every", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(p: std::process::Child) -> Value {
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "the producer failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// After a scenario: the totals are exact, and every change event is there exactly once.
fn check_exact(s: &Server, url: &str, n: u64, started: Instant, name: &str) {
    wait_total(s, n as i64, 900);
    let caught_up = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let st = stats(s);
    assert_eq!(st["total"], n, "{name}: {st}");
    let mapped_expected = n.div_ceil(3); // every third signal is a demo_request
    assert_eq!(st["processed"], mapped_expected, "{name}: {st}");
    let count = sql(s, "SELECT count(*), count(DISTINCT id) FROM signals");
    assert_eq!(count[0], [json!(n), json!(n)], "{name}: SQL");
    let evs = settled_events(s, url);
    let mapped: BTreeSet<u64> = of_type(&evs, "signal.mapped")
        .iter()
        .map(|e| e["data"]["signal_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        mapped.len() as u64,
        mapped_expected,
        "{name}: signal.mapped events"
    );
    let created: BTreeSet<&str> = of_type(&evs, "lead.created")
        .iter()
        .map(|e| e["data"]["lead_id"].as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 1000, "{name}: lead.created events");
    let ids: BTreeSet<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    eprintln!(
        "{name}: {n} unique signals ({} with retries) exact after {:.1} s; {} events ({} distinct ids), {} signal.mapped, {} lead.created",
        n + n.div_ceil(10),
        caught_up.as_secs_f64(),
        evs.len(),
        ids.len(),
        mapped.len(),
        created.len()
    );
}

fn scenario_server(nats: &Nats) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), Some(&nats.url()));
    let key = s.first_key.clone().unwrap();
    event_rule(&s, "demo_request", false);
    (dir, s, key)
}

#[test]
fn fault_kill9_of_trailspark_mid_load() {
    let nats = Nats::start();
    let (_dir, mut s, key) = scenario_server(&nats);
    let n = load_size();
    let t = Instant::now();
    let p = producer(&nats.url(), &key, n, "k9");
    wait_until(600, "a third of the load", || {
        stats(&s)["total"].as_u64().unwrap_or(0) >= n / 3
    });
    let at = stats(&s)["total"].as_u64().unwrap();
    s.kill9();
    std::thread::sleep(Duration::from_millis(500));
    s.restart();
    eprintln!("kill -9 of trailspark at {at} signals");
    let out = finish(p);
    eprintln!("producer: {out}");
    check_exact(&s, &nats.url(), n, t, "kill -9 of trailspark");
}

#[test]
fn fault_nats_server_restart_mid_load() {
    let mut nats = Nats::start();
    let (_dir, s, key) = scenario_server(&nats);
    let n = load_size();
    let t = Instant::now();
    let p = producer(&nats.url(), &key, n, "nr");
    wait_until(600, "a third of the load", || {
        stats(&s)["total"].as_u64().unwrap_or(0) >= n / 3
    });
    let at = stats(&s)["total"].as_u64().unwrap();
    nats.restart_graceful();
    eprintln!("nats-server restarted at {at} signals");
    // While NATS is back but trailspark may still be reconnecting, webhooks answer 202 or 503.
    let r = s.post_signal(&key, r#"{"event":"during-restart","messageId":"w-1"}"#);
    assert!(r.status() == 202 || r.status() == 503, "{}", r.status());
    if r.status() == 503 {
        assert!(r.headers().contains_key("retry-after"));
    }
    let out = finish(p);
    eprintln!("producer: {out}");
    // The webhook signal (if it was accepted) is one more; send it until it is.
    wait_until(60, "the webhook to accept again", || {
        s.post_signal(&key, r#"{"event":"during-restart","messageId":"w-1"}"#)
            .status()
            == 202
    });
    check_exact(&s, &nats.url(), n + 1, t, "nats-server restart");
}

#[test]
fn fault_consumer_far_behind_catches_up() {
    let nats = Nats::start();
    let (_dir, mut s, key) = scenario_server(&nats);
    let n = load_size();
    // trailspark is down while the whole load is published: its consumer is n behind.
    s.kill9();
    let t = Instant::now();
    let out = finish(producer(&nats.url(), &key, n, "fb"));
    eprintln!("producer (trailspark down): {out}");
    let published = t.elapsed();
    let t = Instant::now();
    s.restart();
    let h: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let lag = h["nats"]["source_consumer"]["pending"]
        .as_u64()
        .unwrap_or(0)
        + h["nats"]["source_consumer"]["ack_pending"]
            .as_u64()
            .unwrap_or(0);
    eprintln!(
        "published {n} in {:.1} s with trailspark down; consumer lag at restart: {lag}",
        published.as_secs_f64()
    );
    check_exact(&s, &nats.url(), n, t, "consumer far behind");
}

#[test]
fn webhook_answers_503_while_nats_is_down_and_202_after() {
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), Some(&nats.url()));
    let key = s.first_key.clone().unwrap();
    assert_eq!(s.post_signal(&key, r#"{"event":"before"}"#).status(), 202);
    nats.stop();
    // The client notices the closed connection; from then on nothing is answered 202.
    wait_until(30, "the server to notice NATS is gone", || {
        let h = client().get(s.url("/healthz")).send().unwrap();
        let st = h.status();
        eprintln!("{st} {}", h.text().unwrap());
        st == 503
    });
    let h: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["nats"]["connected"], false);
    let r = s.post_signal(&key, r#"{"event":"during","messageId":"during-1"}"#);
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "log_unavailable", "{body}");
    nats.restart();
    wait_until(60, "the webhook to accept again", || {
        s.post_signal(&key, r#"{"event":"during","messageId":"during-1"}"#)
            .status()
            == 202
    });
    wait_total(&s, 2, 30);
    let h: Value = client()
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["nats"]["connected"], true);
}

/// An events stream an earlier version made, with the publisher's checkpoint inside it, is
/// taken over at start: the checkpoint moves to its own stream and its subject leaves the
/// events stream, so that stream holds events only from then on.
#[test]
fn an_older_events_stream_gives_up_its_checkpoint() {
    let nats = Nats::start();
    let url = nats.url();
    let runtime = rt();
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "TRAILSPARK_EVENTS".into(),
            subjects: vec![
                "trailspark.events.>".into(),
                "trailspark.events_checkpoint".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("trailspark.events_checkpoint", "42".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start(dir.path(), Some(&url));
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let js = jetstream::new(client);
        let mut events = js.get_stream("TRAILSPARK_EVENTS").await.unwrap();
        let subjects = events.info().await.unwrap().config.subjects.clone();
        assert_eq!(subjects, ["trailspark.events.>"]);
        let checkpoint = js
            .get_stream("TRAILSPARK_EVENTS_CHECKPOINT")
            .await
            .unwrap()
            .get_last_raw_message_by_subject("trailspark.checkpoints.events")
            .await
            .unwrap();
        let n: u64 = std::str::from_utf8(&checkpoint.payload)
            .unwrap()
            .parse()
            .unwrap();
        assert!(n >= 42, "carried over: {n}");
    });
}
