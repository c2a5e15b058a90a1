//! Destinations end to end, against the local contract servers of Salesforce, HubSpot and
//! Airtable: each evaluation's score, reasoning, date and account propensity land in the
//! mapped fields (read back from the server), in batches within each API's limit, with
//! partial failures retried or recorded per kind, rate limits honoured, a token refreshed
//! mid-delivery, and record creation when asked.

mod common;

use std::time::Duration;

use common::crm::{
    airtable::Airtable, hubspot::Hubspot, salesforce, salesforce::Salesforce, Store,
};
use common::destinations::*;
use common::scoring::{call, lead, ok};
use reqwest::Method;
use serde_json::json;

const SF_FIELDS: [&str; 3] = [
    "TrailSpark_Score__c",
    "TrailSpark_Reasoning__c",
    "TrailSpark_Evaluation_Date__c",
];

#[test]
fn salesforce_gets_every_evaluation_in_batches_of_200_with_per_record_results() {
    let sf = Salesforce::start(SF_REFRESH, salesforce_store(230));
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    prepare(&s);
    let integration = connect(
        &s,
        json!({"kind": "salesforce", "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": SF_REFRESH},
               "api_base_url": sf.login_url}),
    );
    let mut emails: Vec<String> = (0..230).map(|i| format!("c{i}@acme.com")).collect();
    emails.extend([
        "both@acme.com".into(),
        "lee@initech.com".into(),
        "nobody@nowhere.io".into(),
    ]);
    leads(&s, &emails);

    // A field the CRM does not have is refused by name, and nothing is created.
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/destinations",
        Some(json!({
        "integration_id": integration.to_string(), "send_evaluations": true,
        "field_mapping": {"score": "TrailSpark_Score__c", "reasoning": "Reasoning_Typo__c",
                          "evaluated_at": "TrailSpark_Evaluation_Date__c"},
        "create_records": false})),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("unknown_crm_fields")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("Reasoning_Typo__c"),
        "{v}"
    );
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/destinations",
        Some(json!({
        "integration_id": integration, "field_mapping": {"score": "x"}, "surprise": 1})),
    );
    assert_eq!(st, 400, "{v}");

    // The pinned body: 201 with an id. Sending starts off, so that every evaluation is
    // queued at once when it is turned on (batches fill up).
    let d = create(
        &s,
        json!({
        "integration_id": integration.to_string(), "send_evaluations": false,
        "field_mapping": {"score": "TrailSpark_Score__c", "reasoning": "TrailSpark_Reasoning__c",
                          "evaluated_at": "TrailSpark_Evaluation_Date__c", "propensity": "TrailSpark_Propensity__c"},
        "create_records": false}),
    );
    let id = d["id"].as_u64().unwrap();
    // One destination per integration.
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/destinations",
        Some(json!({
        "integration_id": integration, "field_mapping": {"score": "TrailSpark_Score__c",
        "reasoning": "TrailSpark_Reasoning__c", "evaluated_at": "TrailSpark_Evaluation_Date__c"}})),
    );
    assert_eq!(st, 409);

    let n = evaluate_all(&s);
    assert_eq!(n, emails.len() as u64);
    assert_eq!(status(&s, id)["state"], "disabled");
    assert_eq!(status(&s, id)["queued"], 0);

    // Turned on, it sends each lead's latest evaluation. The first write meets a locked
    // row and an expired session: both are cured.
    let issued = sf.sf.lock().unwrap().issued;
    sf.store
        .lock()
        .unwrap()
        .faults
        .extend(["expire".to_string(), "lock".to_string()]);
    ok(
        &s,
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"send_evaluations": true})),
    );
    let v = settle(&s, id, Duration::from_secs(60), |v| v["delivered"] == 232);
    assert_eq!(v["failed"], 1, "{v}");
    assert_eq!(v["state"], "idle", "{v}");
    // The same counts as Prometheus reads them, with the evaluator's scorer calls.
    let value = common::scrape(&s);
    assert_eq!(value("trailspark_destination_delivered_total"), 232.0);
    assert_eq!(value("trailspark_destination_failed_records"), 1.0);
    assert_eq!(value("trailspark_destination_queued_evaluations"), 0.0);
    assert!(value("trailspark_evaluator_scorer_calls_total") >= 233.0);
    assert!(
        sf.sf.lock().unwrap().issued > issued,
        "the session was refreshed"
    );

    let store = sf.store.lock().unwrap();
    for e in emails.iter().take(232) {
        let ev = latest(&s, e);
        let object = if e.ends_with("initech.com") {
            "Lead"
        } else {
            "Contact"
        };
        assert_eq!(
            field(&store, object, "Email", e, SF_FIELDS[0]),
            ev["score"],
            "{e}"
        );
        assert_eq!(
            field(&store, object, "Email", e, SF_FIELDS[1]),
            ev["reasoning"],
            "{e}"
        );
        let written = field(&store, object, "Email", e, SF_FIELDS[2]);
        let at = chrono::DateTime::parse_from_rfc3339(written.as_str().unwrap()).unwrap();
        assert_eq!(at.timestamp_millis(), evaluated_ms(&ev), "{e}");
    }
    // Contact over Lead.
    let both_lead = store.objects["Lead"]
        .iter()
        .find(|r| r.id == "00QBOTH")
        .unwrap();
    assert!(both_lead.fields.get(SF_FIELDS[0]).is_none());
    // Propensity on the Account, in Salesforce's encoding.
    let acct = store.objects["Account"]
        .iter()
        .find(|r| r.id == "001A")
        .unwrap();
    let want = format!(
        "{}_propensity",
        latest(&s, "c0@acme.com")["propensity"].as_str().unwrap()
    );
    assert_eq!(acct.fields["TrailSpark_Propensity__c"], json!(want));
    // Batches: none over 200 records, and they were full.
    let writes: Vec<usize> = store
        .writes
        .iter()
        .filter(|w| w.path.starts_with("PATCH") && w.path.ends_with("/composite/sobjects"))
        .map(|w| w.records)
        .collect();
    assert!(writes.iter().all(|n| *n <= 200), "{writes:?}");
    assert!(writes.contains(&200), "{writes:?}");
    drop(store);

    // No record and creation off: failed with the reason, per record.
    let f = failed(&s, id);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["error"]["code"], "not_found", "{f:?}");
    let locked = ok(
        &s,
        Method::GET,
        &format!(
            "/api/destinations/{id}/deliveries?status=delivered&lead_id={}",
            lead(&s, "c0@acme.com").id(0)
        ),
        None,
    );
    assert!(
        locked["deliveries"][0]["attempts"].as_u64().unwrap() >= 1,
        "{locked}"
    );

    // Salesforce's REQUEST_LIMIT_EXCEEDED pauses the destination and says so; the new
    // evaluation waits, and a retry resumes.
    sf.store.lock().unwrap().faults.push_back("limit".into());
    let l = lead(&s, "c5@acme.com");
    let p = l.event("Demo Requested");
    l.get(p);
    let newer = ok(
        &s,
        Method::POST,
        &format!("/api/leads/{}/evaluate", l.id(0)),
        None,
    );
    let v = settle_state(&s, id, "paused");
    assert!(v["reason"].as_str().unwrap().contains("rate limit"), "{v}");
    assert!(v["queued"].as_u64() >= Some(1), "{v}");
    call(
        &s,
        Method::POST,
        &format!("/api/destinations/{id}/retry"),
        None,
    );
    settle(&s, id, Duration::from_secs(30), |v| v["state"] == "idle");
    assert_eq!(
        field(
            &sf.store.lock().unwrap(),
            "Contact",
            "Email",
            "c5@acme.com",
            SF_FIELDS[1]
        ),
        newer["reasoning"]
    );

    // Creation on, and a retry: the missing person becomes a Lead.
    ok(
        &s,
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"create_records": true})),
    );
    let (st, r) = call(
        &s,
        Method::POST,
        &format!("/api/destinations/{id}/retry"),
        None,
    );
    assert_eq!((st, r["queued"].as_u64()), (202, Some(1)), "{r}");
    settle(&s, id, Duration::from_secs(30), |v| {
        v["delivered"].as_u64() >= Some(234) && v["failed"] == 0
    });
    let store = sf.store.lock().unwrap();
    let created = store
        .find("Lead", "Email", "nobody@nowhere.io")
        .expect("created");
    assert_eq!(
        created.fields["LastName"],
        json!(format!("Lead{}", emails.len() - 1))
    );
    assert_eq!(
        created.fields[SF_FIELDS[0]],
        latest(&s, "nobody@nowhere.io")["score"]
    );
    drop(store);

    // Every answer about the integration and the destination is what the document says.
    let mut a = common::answers::Answers::default();
    for path in [
        "/api/integrations".to_string(),
        format!("/api/integrations/{integration}"),
        "/api/destinations".into(),
        format!("/api/destinations/{id}"),
        format!("/api/destinations/{id}/status"),
        format!("/api/destinations/{id}/deliveries?status=failed"),
        format!("/api/destinations/{id}/deliveries"),
    ] {
        a.ok(&s, Method::GET, &path, None);
    }
    a.ok(
        &s,
        Method::POST,
        &format!("/api/integrations/{integration}/test"),
        None,
    );
    a.ok(
        &s,
        Method::POST,
        &format!("/api/integrations/{integration}/sync"),
        None,
    );
    a.ok(
        &s,
        Method::POST,
        &format!("/api/destinations/{id}/retry"),
        None,
    );
    a.ok(
        &s,
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"send_evaluations": false})),
    );
    a.ok(&s, Method::DELETE, &format!("/api/destinations/{id}"), None);
    a.ok(
        &s,
        Method::DELETE,
        &format!("/api/integrations/{integration}"),
        None,
    );
    let typed = a.check(&s);
    assert_eq!(typed, a.len(), "every answer here has a typed schema");
}

const HS_TOKEN: &str = "pat-na1-99999999-2222-3333-4444-555555555555";

#[test]
fn hubspot_gets_batches_of_100_maps_207s_and_pauses_on_its_daily_limit() {
    let mut store = Store::hubspot();
    store
        .schema
        .get_mut("contacts")
        .unwrap()
        .insert("trailspark_score".into(), "string".into());
    let t0 = 1_700_000_000_000;
    store.put(
        "companies",
        "101",
        t0,
        json!({"name": "Acme", "domain": "acme.com"}),
    );
    for i in 0..150 {
        store.put(
            "contacts",
            &format!("{}", 1000 + i),
            t0,
            json!({"email": format!("p{i}@acme.com"), "associatedcompanyid": "101"}),
        );
    }
    let hs = Hubspot::start(HS_TOKEN, store);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    prepare(&s);
    let integration = connect(
        &s,
        json!({"kind": "hubspot", "credentials": {"private_app_token": HS_TOKEN}, "api_base_url": hs.url}),
    );
    let mut emails: Vec<String> = (0..150).map(|i| format!("p{i}@acme.com")).collect();
    emails.push("stranger@elsewhere.io".into());
    leads(&s, &emails);

    let body = json!({"integration_id": integration, "send_evaluations": true,
        "field_mapping": {"score": "trailspark_score", "reasoning": "trailspark_reasoning",
                          "evaluated_at": "trailspark_evaluation_date", "propensity": "trailspark_propensity"},
        "create_records": false});
    // The properties are missing until created on request (one exists: a 409, taken).
    let (st, v) = call(&s, Method::POST, "/api/destinations", Some(body.clone()));
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("unknown_crm_fields")),
        "{v}"
    );
    let mut with = body.clone();
    with["create_properties"] = json!(true);
    let d = create(&s, with);
    assert_eq!(d["created_fields"].as_array().unwrap().len(), 3, "{d}");
    assert_eq!(
        hs.store.lock().unwrap().schema["contacts"]["trailspark_evaluation_date"],
        "datetime"
    );
    let id = d["id"].as_u64().unwrap();

    // A ten-secondly 429 is waited out.
    hs.store
        .lock()
        .unwrap()
        .faults
        .push_back("ten_secondly".into());
    evaluate_all(&s);
    let v = settle(&s, id, Duration::from_secs(60), |v| v["delivered"] == 150);
    assert_eq!(v["failed"], 1, "{v}");
    {
        let store = hs.store.lock().unwrap();
        for e in &emails[..150] {
            let ev = latest(&s, e);
            assert_eq!(
                field(&store, "contacts", "email", e, "trailspark_score"),
                ev["score"],
                "{e}"
            );
            assert_eq!(
                field(&store, "contacts", "email", e, "trailspark_reasoning"),
                ev["reasoning"]
            );
            // A datetime property gets epoch milliseconds.
            assert_eq!(
                field(&store, "contacts", "email", e, "trailspark_evaluation_date"),
                json!(evaluated_ms(&ev).to_string())
            );
        }
        let acme = store.find("companies", "domain", "acme.com").unwrap();
        assert_eq!(
            acme.fields["trailspark_propensity"],
            json!(format!(
                "{}_propensity",
                latest(&s, "p0@acme.com")["propensity"].as_str().unwrap()
            ))
        );
        let sizes: Vec<usize> = store
            .writes
            .iter()
            .filter(|w| w.path.contains("contacts/batch"))
            .map(|w| w.records)
            .collect();
        assert!(
            sizes.iter().all(|n| *n <= 100) && sizes.contains(&100),
            "{sizes:?}"
        );
    }
    // The 207's error names the stranger's email: recorded with HubSpot's message.
    let f = failed(&s, id);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["error"]["code"], "not_found");
    assert!(
        f[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CONTACT"),
        "{f:?}"
    );
    // No request beyond the injected one was refused for going too fast.
    assert_eq!(*hs.throttled.lock().unwrap(), 0);

    // The daily limit pauses the destination and says so; a retry resumes it.
    hs.store.lock().unwrap().faults.push_back("daily".into());
    // `before` is read ahead of the events: "Demo Requested" is high-intent, so its own
    // evaluation may land before a read taken after them.
    let before = latest(&s, "p7@acme.com");
    let l = lead(&s, "p7@acme.com");
    l.event("Demo Requested");
    let p = l.event("Feature Used");
    let lid = l.id(p);
    let after = ok(
        &s,
        Method::POST,
        &format!("/api/leads/{lid}/evaluate"),
        None,
    );
    assert_ne!(before["reasoning"], after["reasoning"]);
    let v = common::destinations::settle_state(&s, id, "paused");
    assert!(v["reason"].as_str().unwrap().contains("daily"), "{v}");
    assert!(v["paused_until"].is_string(), "{v}");
    assert_eq!(v["queued"], 1, "{v}");
    call(
        &s,
        Method::POST,
        &format!("/api/destinations/{id}/retry"),
        Some(json!({})),
    );
    settle(&s, id, Duration::from_secs(30), |v| v["state"] == "idle");
    let store = hs.store.lock().unwrap();
    assert_eq!(
        field(
            &store,
            "contacts",
            "email",
            "p7@acme.com",
            "trailspark_reasoning"
        ),
        after["reasoning"]
    );
    drop(store);

    // Another org sees none of it, and cannot use this org's integration.
    isolated(&s, id, body);
    assert_eq!(status(&s, id)["send_evaluations"], true);
}

const AT_TOKEN: &str = "patAbC123.0123456789abcdef";
const AT_BASE: &str = "appTrail0001";

#[test]
fn airtable_upserts_ten_records_a_request_under_five_requests_a_second() {
    let mut store = Store::airtable();
    for f in [
        "TrailSpark Score",
        "TrailSpark Reasoning",
        "TrailSpark Evaluation Date",
    ] {
        store
            .schema
            .get_mut("People")
            .unwrap()
            .insert(f.into(), "singleLineText".into());
    }
    store
        .schema
        .get_mut("Companies")
        .unwrap()
        .insert("TrailSpark Propensity".into(), "singleSelect".into());
    let t0 = 1_700_000_000_000;
    store.put(
        "Companies",
        "recCO1",
        t0,
        json!({"Name": "Acme", "Website": "https://acme.com"}),
    );
    for i in 0..45 {
        store.put(
            "People",
            &format!("recP{i:03}"),
            t0,
            json!({"Email": format!("Person{i}@acme.com"), "Company": ["recCO1"]}),
        );
    }
    let at = Airtable::start(AT_TOKEN, AT_BASE, store, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    prepare(&s);
    let integration = connect(
        &s,
        json!({"kind": "airtable", "credentials": {"personal_access_token": AT_TOKEN, "base_id": AT_BASE,
               "tables": {"contacts": "People", "companies": "Companies"}}, "api_base_url": at.url}),
    );
    // A sync links the people's company, where propensity goes.
    ok(
        &s,
        Method::POST,
        &format!("/api/integrations/{integration}/sync"),
        None,
    );
    let mut emails: Vec<String> = (0..45).map(|i| format!("person{i}@acme.com")).collect();
    emails.push("new.person@acme.com".into());
    leads(&s, &emails);
    let wait = std::time::Instant::now() + Duration::from_secs(30);
    while ok(
        &s,
        Method::GET,
        &format!("/api/integrations/{integration}"),
        None,
    )["records"]["contact"]
        != 45
    {
        assert!(std::time::Instant::now() < wait);
        std::thread::sleep(Duration::from_millis(100));
    }
    let d = create(
        &s,
        json!({"integration_id": integration, "send_evaluations": true,
        "field_mapping": {"score": "TrailSpark Score", "reasoning": "TrailSpark Reasoning",
                          "evaluated_at": "TrailSpark Evaluation Date", "propensity": "TrailSpark Propensity"},
        "create_records": false}),
    );
    let id = d["id"].as_u64().unwrap();
    let writes0 = at.store.lock().unwrap().writes.len();
    evaluate_all(&s);
    let v = settle(&s, id, Duration::from_secs(60), |v| v["delivered"] == 45);
    assert_eq!(v["failed"], 1, "{v}");
    {
        let store = at.store.lock().unwrap();
        // Merged on the email as the table holds it: no duplicate people.
        assert_eq!(store.objects["People"].len(), 45);
        for e in &emails[..45] {
            let ev = latest(&s, e);
            assert_eq!(
                field(&store, "People", "Email", e, "TrailSpark Score"),
                ev["score"],
                "{e}"
            );
            assert_eq!(
                field(&store, "People", "Email", e, "TrailSpark Reasoning"),
                ev["reasoning"]
            );
        }
        let co = &store.objects["Companies"][0];
        assert_eq!(
            co.fields["TrailSpark Propensity"],
            latest(&s, "person0@acme.com")["propensity"]
        );
        let writes = &store.writes[writes0..];
        assert!(writes.iter().all(|w| w.records <= 10), "{writes:?}");
        // Never more than 5 requests in a second, counted by the server.
        assert_eq!(*at.limited.lock().unwrap(), 0);
        for w in writes.windows(6) {
            assert!(
                w[5].at - w[0].at >= Duration::from_millis(900),
                "{writes:?}"
            );
        }
    }
    // Creation on and a retry: an upsert creates the new person.
    ok(
        &s,
        Method::PATCH,
        &format!("/api/destinations/{id}"),
        Some(json!({"create_records": true})),
    );
    call(
        &s,
        Method::POST,
        &format!("/api/destinations/{id}/retry"),
        None,
    );
    settle(&s, id, Duration::from_secs(30), |v| {
        v["failed"] == 0 && v["delivered"] == 46
    });
    let store = at.store.lock().unwrap();
    assert_eq!(store.objects["People"].len(), 46);
    assert_eq!(
        field(
            &store,
            "People",
            "Email",
            "new.person@acme.com",
            "TrailSpark Score"
        ),
        latest(&s, "new.person@acme.com")["score"]
    );
    let r = ok(
        &s,
        Method::GET,
        &format!(
            "/api/destinations/{id}/deliveries?status=delivered&lead_id={}",
            lead(&s, "new.person@acme.com").id(0)
        ),
        None,
    );
    assert_eq!(r["deliveries"][0]["created"], true, "{r}");
}
