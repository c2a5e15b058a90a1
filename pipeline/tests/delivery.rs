//! Delivery's guarantees: a kill -9 in the middle of delivering resends at most the batch
//! in flight and every CRM record ends with its lead's latest evaluation; one destination
//! down holds up neither the other nor ingestion, and catches up by itself; a re-evaluation
//! with a new result is sent, an unchanged one is not.

mod common;

use std::time::{Duration, Instant};

use common::crm::{hubspot::Hubspot, salesforce, salesforce::Salesforce, Store};
use common::destinations::*;
use common::scoring::{call, lead, ok};
use reqwest::Method;
use serde_json::{json, Value};

const REFRESH: &str = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJvT8mLQ-refresh";
const HS_TOKEN: &str = "pat-na1-77777777-2222-3333-4444-555555555555";

fn salesforce_store(emails: &[String]) -> Store {
    let mut store = Store::salesforce();
    for o in ["Lead", "Contact"] {
        let schema = store.schema.get_mut(o).unwrap();
        schema.insert("TS_Score__c".into(), "string".into());
        schema.insert("TS_Date__c".into(), "datetime".into());
        schema.insert("TS_Reasoning__c".into(), "textarea".into());
    }
    for (i, e) in emails.iter().enumerate() {
        store.put(
            "Contact",
            &format!("003K{i:05}"),
            1,
            json!({"Email": e, "LastName": "K"}),
        );
    }
    store
}

fn sf_destination(s: &common::Server, sf: &Salesforce, active: bool) -> u64 {
    let (st, v) = call(
        s,
        Method::POST,
        "/api/integrations",
        Some(json!({"kind": "salesforce",
        "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": REFRESH}, "api_base_url": sf.login_url})),
    );
    assert_eq!(st, 201, "{v}");
    create(s, json!({"integration_id": v["id"], "send_evaluations": active,
        "field_mapping": {"score": "TS_Score__c", "reasoning": "TS_Reasoning__c", "evaluated_at": "TS_Date__c"}}))["id"]
        .as_u64()
        .unwrap()
}

/// Contact records the Salesforce server took in collection writes.
fn contact_writes(sf: &Salesforce) -> usize {
    sf.store
        .lock()
        .unwrap()
        .writes
        .iter()
        .filter(|w| w.path.starts_with("PATCH"))
        .map(|w| w.records)
        .sum()
}

#[test]
fn a_kill_9_mid_delivery_resends_at_most_the_batch_in_flight() {
    let emails: Vec<String> = (0..600).map(|i| format!("k{i}@kappa.io")).collect();
    let sf = Salesforce::start(REFRESH, salesforce_store(&emails));
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    prepare(&s);
    let id = sf_destination(&s, &sf, false);
    leads(&s, &emails);
    evaluate_all(&s);
    // A slow CRM: a batch takes over a second, so the kill lands in the middle.
    sf.store.lock().unwrap().latency = Duration::from_millis(300);
    ok(
        &s,
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"send_evaluations": true})),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while contact_writes(&sf) == 0 {
        assert!(Instant::now() < deadline, "no write arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    let written_before = contact_writes(&sf);
    assert!(
        written_before < 600,
        "the kill came after everything was written"
    );
    s.restart_with(&ENV);
    let v = settle(&s, id, Duration::from_secs(90), |v| v["delivered"] == 600);
    assert_eq!(v["failed"], 0, "{v}");
    // Each evaluation's values are in its record; at most one batch (200) went twice.
    let total = contact_writes(&sf);
    assert!(
        total <= 600 + 200,
        "{total} records written for 600 evaluations"
    );
    let store = sf.store.lock().unwrap();
    for e in &emails {
        let ev = latest(&s, e);
        let r = store.find("Contact", "Email", e).unwrap();
        assert_eq!(r.fields.get("TS_Score__c"), Some(&ev["score"]), "{e}");
        assert_eq!(
            r.fields.get("TS_Reasoning__c"),
            Some(&ev["reasoning"]),
            "{e}"
        );
    }
}

#[test]
fn one_destination_down_holds_up_neither_the_other_nor_ingestion() {
    let emails: Vec<String> = (0..20).map(|i| format!("d{i}@delta.io")).collect();
    let sf = Salesforce::start(REFRESH, salesforce_store(&emails));
    let mut hs_store = Store::hubspot();
    for (k, t) in [
        ("ts_score", "string"),
        ("ts_reasoning", "string"),
        ("ts_date", "date"),
    ] {
        hs_store
            .schema
            .get_mut("contacts")
            .unwrap()
            .insert(k.into(), t.into());
    }
    for (i, e) in emails.iter().enumerate() {
        hs_store.put("contacts", &format!("{}", 500 + i), 1, json!({"email": e}));
    }
    let hs = Hubspot::start(HS_TOKEN, hs_store);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    prepare(&s);
    leads(&s, &emails);
    let sf_id = sf_destination(&s, &sf, true);
    let (_, v) = call(
        &s,
        Method::POST,
        "/api/integrations",
        Some(json!({"kind": "hubspot",
        "credentials": {"private_app_token": HS_TOKEN}, "api_base_url": hs.url})),
    );
    let hs_id = create(&s, json!({"integration_id": v["id"], "send_evaluations": true,
        "field_mapping": {"score": "ts_score", "reasoning": "ts_reasoning", "evaluated_at": "ts_date"}}))["id"]
        .as_u64()
        .unwrap();

    // Salesforce goes down for a while.
    sf.store.lock().unwrap().down_until = Some(Instant::now() + Duration::from_secs(8));
    evaluate_all(&s);
    settle(&s, hs_id, Duration::from_secs(20), |v| v["delivered"] == 20);
    let down = status(&s, sf_id);
    assert_eq!(down["delivered"], 0, "{down}");
    assert!(
        ["retrying", "delivering"].contains(&down["state"].as_str().unwrap()),
        "{down}"
    );
    // Ingestion answers at once meanwhile.
    let t = Instant::now();
    let r = s.post_signal(
        s.first_key.as_ref().unwrap(),
        &json!({"event": "Pricing Viewed", "email": "late@delta.io"}).to_string(),
    );
    assert_eq!(r.status(), 202);
    assert!(t.elapsed() < Duration::from_secs(2));
    // A date property gets the evaluation's UTC midnight.
    {
        let store = hs.store.lock().unwrap();
        let ev = latest(&s, &emails[0]);
        let ms = evaluated_ms(&ev);
        let got = store.find("contacts", "email", &emails[0]).unwrap().fields["ts_date"].clone();
        assert_eq!(got, json!((ms - ms.rem_euclid(86_400_000)).to_string()));
    }
    let v = settle(&s, sf_id, Duration::from_secs(60), |v| v["delivered"] == 20);
    assert_eq!(v["failed"], 0, "{v}");
    assert!(v["last_error"].is_null() || v["state"] == "idle", "{v}");

    // The same result again is not sent; a new one is, to both.
    let l = lead(&s, &emails[3]);
    let lid = l.id(0);
    let (sf_writes, hs_writes) = (contact_writes(&sf), hs.store.lock().unwrap().writes.len());
    let again = ok(
        &s,
        Method::POST,
        &format!("/api/leads/{lid}/evaluate"),
        None,
    );
    let v = settle(&s, sf_id, Duration::from_secs(20), |v| v["unchanged"] == 1);
    assert_eq!(v["delivered"], 20, "{v}");
    settle(&s, hs_id, Duration::from_secs(20), |v| v["unchanged"] == 1);
    assert_eq!(
        (contact_writes(&sf), hs.store.lock().unwrap().writes.len()),
        (sf_writes, hs_writes),
        "{again}"
    );
    l.event("Demo Requested");
    let p = l.event("Feature Used");
    l.get(p);
    // (The high-intent signal evaluates the lead at once; the manual evaluation after it is
    // the latest.)
    let new = ok(
        &s,
        Method::POST,
        &format!("/api/leads/{lid}/evaluate"),
        None,
    );
    assert_ne!(new["reasoning"], again["reasoning"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sf_has: Value = sf
            .store
            .lock()
            .unwrap()
            .find("Contact", "Email", &emails[3])
            .unwrap()
            .fields["TS_Reasoning__c"]
            .clone();
        let hs_has: Value = hs
            .store
            .lock()
            .unwrap()
            .find("contacts", "email", &emails[3])
            .unwrap()
            .fields["ts_reasoning"]
            .clone();
        if sf_has == new["reasoning"] && hs_has == new["reasoning"] {
            break;
        }
        assert!(Instant::now() < deadline, "{sf_has} / {hs_has} / {new}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in [sf_id, hs_id] {
        let v = settle(&s, id, Duration::from_secs(20), |v| {
            v["delivered"].as_u64() >= Some(21)
        });
        assert_eq!(v["failed"], 0, "{v}");
    }
}
