//! CRM integrations end to end, against local contract servers of Salesforce, HubSpot and
//! Airtable: connect, test and sync through HTTP; incremental pulls; a token expiring in a
//! sync; `invalid_grant`; rate limits that slow a sync without losing a record; contacts
//! matching leads and accounts matching by domain; and no secret in any answer or log line.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::crm::{
    airtable::Airtable, hubspot::Hubspot, salesforce, salesforce::Salesforce, Store,
};
use common::scoring::{call, lead, ok};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn start(dir: &Path, log: &Path) -> Server {
    let file = std::fs::File::create(log).unwrap();
    Server::start_configured(
        dir,
        None,
        &[
            ("TRAILSPARK_EVALUATION_INTERVAL", "3600"),
            ("TRAILSPARK_CRM_SYNC_INTERVAL", "3600"),
        ],
        move |cmd| {
            cmd.stderr(file).env("TRAILSPARK_LOG", "debug");
        },
    )
}

/// A server on a fresh data directory, its log file, and the directory (kept while it lives).
fn serve() -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let s = start(&dir.path().join("data"), &log);
    (dir, log, s)
}

/// A lead with one signal, read back.
fn known<'a>(s: &'a Server, email: &str) -> common::scoring::Lead<'a> {
    let l = lead(s, email);
    let pos = l.event("pageview");
    l.get(pos);
    l
}

/// `POST /api/integrations/{id}/test`'s answer.
fn check(s: &Server, id: u64) -> Value {
    ok(
        s,
        Method::POST,
        &format!("/api/integrations/{id}/test"),
        None,
    )
}

/// Connects an integration: 201, and its view.
fn connect(s: &Server, body: Value) -> Value {
    let (st, created) = call(s, Method::POST, "/api/integrations", Some(body));
    assert_eq!(st, 201, "{created}");
    created
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Waits for a sync of `id` that started after `since` (ms) to end; answers the integration.
fn wait_sync(s: &Server, id: u64, since: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = ok(s, Method::GET, &format!("/api/integrations/{id}"), None);
        let last = &v["sync"]["last"];
        if last["started_at"].as_i64().unwrap_or(0) >= since
            && last["state"] != "running"
            && !last.is_null()
        {
            // Read back once the read models hold what the sync took.
            let pos = last["log_position"].as_u64().unwrap_or(0);
            return ok(
                s,
                Method::GET,
                &format!("/api/integrations/{id}?wait_for={pos}"),
                None,
            );
        }
        assert!(Instant::now() < deadline, "no sync ended: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sync(s: &Server, id: u64) -> Value {
    let t = now_ms();
    ok(
        s,
        Method::POST,
        &format!("/api/integrations/{id}/sync"),
        None,
    );
    wait_sync(s, id, t)
}

/// No answer seen and no log line holds any of `secrets`.
fn assert_secret_free(answers: &[Value], log: &Path, secrets: &[&str]) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("CRM sync ended"), "the log has the syncs");
    for secret in secrets {
        assert!(!text.contains(secret), "the log holds a secret");
        for a in answers {
            assert!(
                !a.to_string().contains(secret),
                "an answer holds a secret: {a}"
            );
        }
    }
}

fn account<'a>(accounts: &'a Value, domain: &str) -> &'a Value {
    accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["websiteDomain"] == domain)
        .unwrap_or_else(|| panic!("no account {domain}: {accounts}"))
}

#[test]
fn hubspot_connects_syncs_incrementally_and_waits_out_rate_limits() {
    const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";
    let mut store = Store::hubspot();
    let t0 = 1_700_000_000_000;
    store.put("companies", "101", t0, json!({"name": "Acme", "domain": "acme.com", "industry": "COMPUTER_SOFTWARE", "numberofemployees": "450", "country": "United States", "annualrevenue": "52000000"}));
    store.put("companies", "102", t0 + 1, json!({"name": "Globex", "domain": "globex.com", "industry": "UTILITIES", "numberofemployees": "12000", "country": "Germany"}));
    for i in 0..250 {
        store.put("contacts", &format!("{}", 1000 + i), t0 + i, json!({"email": format!("person{i}@globex.com"), "firstname": "P", "lastname": format!("{i}"), "associatedcompanyid": "102"}));
    }
    store.put("contacts", "201", t0 + 5, json!({"email": "ana@acme.com", "firstname": "Ana", "lastname": "Diaz", "jobtitle": "VP Marketing", "associatedcompanyid": "101"}));
    let hs = Hubspot::start(TOKEN, store);

    let (_dir, log, s) = serve();
    let ana = known(&s, "ana@acme.com");

    let mut answers = Vec::new();
    let created = connect(
        &s,
        json!({
            "kind": "hubspot", "name": "HubSpot", "credentials": {"private_app_token": TOKEN}, "api_base_url": hs.url,
        }),
    );
    assert_eq!(created["status"], "connected");
    let id = created["id"].as_u64().unwrap();
    answers.push(created);
    // The first sync starts on its own.
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"], json!({"account": 2, "contact": 251}), "{v}");
    assert_eq!(v["status"], "connected");
    answers.push(v);

    let tested = check(&s, id);
    assert_eq!(tested["ok"], true, "{tested}");
    answers.push(tested);

    // The lead's account carries HubSpot's firmographics.
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    let acme = account(&accounts, "acme.com");
    assert_eq!(acme["industry"], "COMPUTER_SOFTWARE", "{acme}");
    assert_eq!(acme["employeeCount"], 450, "{acme}");

    // The lead knows its CRM contact.
    let profile = ana.get(0);
    assert_eq!(profile["crm_id"], "201", "{profile}");
    assert_eq!(profile["crm"]["object"], "contact", "{profile}");
    // The evaluation context carries the CRM's contact and account.
    let ana_id = ana.id(0);
    let ctx = ok(
        &s,
        Method::GET,
        &format!("/api/leads/{ana_id}/evaluation-context"),
        None,
    );
    assert_eq!(ctx["lead"]["crm"]["id"], "201", "{ctx}");
    assert_eq!(ctx["lead"]["crm"]["object"], "contact", "{ctx}");
    assert_eq!(ctx["lead"]["title"], "VP Marketing", "{ctx}");
    assert_eq!(ctx["account"]["crm"]["id"], "101", "{ctx}");
    // An evaluation rule on a CRM field: without the CRM's value Ana would pass (empty
    // values are allowed), with it she is excluded.
    common::scoring::mapping_rules(&s);
    common::scoring::model(&s);
    let rule = ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "No VPs", "conditions": [
        {"field": "crm.contact.jobtitle", "op": "not_contains", "value": "VP", "allow_if_empty": true}]})),
    );
    ana.event("Pricing Viewed");
    ana.event("Feature Used");
    let p = ana.event("Feature Used");
    ana.get(p);
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/leads/{ana_id}/evaluate"),
        None,
    );
    assert_eq!(
        (st, v["reason"].as_str()),
        (409, Some("excluded_by_rule")),
        "{v}"
    );
    assert_eq!(v["rule_id"], rule["id"]);

    // Incremental: only what changed comes back.
    let served = |o: &str| *hs.store.lock().unwrap().served.get(o).unwrap_or(&0);
    let (c0, a0) = (served("contacts"), served("companies"));
    hs.store.lock().unwrap().put("contacts", "1003", t0 + 10_000, json!({"email": "person3@globex.com", "firstname": "P", "lastname": "3", "jobtitle": "CTO", "associatedcompanyid": "102"}));
    let v = sync(&s, id);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(
        v["sync"]["last"]["records"],
        json!({"account": 0, "contact": 1}),
        "{v}"
    );
    assert_eq!((served("contacts") - c0, served("companies") - a0), (1, 0));

    // A ten-secondly 429 slows the sync down; nothing is lost.
    {
        let mut st = hs.store.lock().unwrap();
        st.put("companies", "101", t0 + 20_000, json!({"name": "Acme", "domain": "acme.com", "industry": "INFORMATION_TECHNOLOGY_AND_SERVICES", "numberofemployees": "500", "country": "United States"}));
        st.faults.push_back("ten_secondly".into());
    }
    let started = Instant::now();
    let v = sync(&s, id);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the window's wait was honoured"
    );
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["sync"]["last"]["records"]["account"], 1, "{v}");
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    assert_eq!(
        account(&accounts, "acme.com")["industry"],
        "INFORMATION_TECHNOLOGY_AND_SERVICES"
    );
    assert_eq!(
        *hs.throttled.lock().unwrap(),
        0,
        "the search pacing stayed under 4/s"
    );

    // A mapped field the CRM lacks is refused by name.
    let (st, refused) = call(
        &s,
        Method::PUT,
        &format!("/api/integrations/{id}/mapping"),
        Some(json!({"fields": {"market_segment": "company.segment_tier"}})),
    );
    assert_eq!(st, 400, "{refused}");
    assert_eq!(refused["error"], "unknown_crm_fields");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("segment_tier"),
        "{refused}"
    );

    // A revoked token disconnects, with the reason shown.
    let hs_url = hs.url.clone();
    let (st, v) = call(
        &s,
        Method::PATCH,
        &format!("/api/integrations/{id}"),
        Some(
            json!({"credentials": {"private_app_token": "pat-na1-revoked"}, "api_base_url": hs_url}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = ok(&s, Method::GET, &format!("/api/integrations/{id}"), None);
        if v["status"] == "disconnected" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["status"], "disconnected", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("refused the token"),
        "{v}"
    );
    answers.push(v);
    let list = ok(&s, Method::GET, "/api/integrations", None);
    answers.push(list);
    assert_secret_free(&answers, &log, &[TOKEN, "pat-na1-revoked"]);
}

#[test]
fn salesforce_refreshes_expired_sessions_pages_and_disconnects_on_invalid_grant() {
    const REFRESH: &str = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJvT8mLQ-refresh";
    const SECRET: &str = "F2A9E6C0-client-secret";
    let mut store = Store::salesforce();
    let t0 = 1_700_000_000_000;
    store.put("Account", "001A", t0, json!({"Name": "Acme", "Website": "https://www.acme.com", "Industry": "Technology", "NumberOfEmployees": 450, "BillingCountry": "USA"}));
    for i in 0..7 {
        // Equal modification times across a page boundary: the cursor's id breaks the tie.
        store.put("Contact", &format!("003C{i}"), t0 + (i / 3), json!({"AccountId": "001A", "Email": format!("c{i}@acme.com"), "LastName": format!("C{i}")}));
    }
    store.put("Lead", "00QL1", t0, json!({"Email": "bo@initech.com", "Company": "Initech", "Website": "initech.com", "Industry": "Banking", "NumberOfEmployees": 90, "Country": "UK"}));
    let sf = Salesforce::start(REFRESH, store);
    sf.sf.lock().unwrap().page_size = 2;
    assert_ne!(sf.login_url, sf.instance_url);

    let (_dir, log, s) = serve();
    known(&s, "bo@initech.com");

    // The first sync meets an expired session after its first page, and a 503.
    {
        let mut st = sf.store.lock().unwrap();
        st.faults.extend(["none".to_string()]);
        st.faults.clear();
    }
    let created = connect(
        &s,
        json!({
            "kind": "salesforce", "name": "Salesforce",
            "credentials": {"client_id": salesforce::CLIENT_ID, "client_secret": SECRET, "refresh_token": REFRESH},
            "api_base_url": sf.login_url, "login_url": sf.login_url,
        }),
    );
    let id = created["id"].as_u64().unwrap();
    let mut answers = vec![created];
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(
        v["records"],
        json!({"account": 1, "contact": 7, "lead": 1}),
        "{v}"
    );

    // Expiry mid-sync: refreshed once, and the sync completes.
    let issued = sf.sf.lock().unwrap().issued;
    sf.store.lock().unwrap().put(
        "Contact",
        "003C9",
        t0 + 50,
        json!({"AccountId": "001A", "Email": "c9@acme.com", "LastName": "C9"}),
    );
    sf.store
        .lock()
        .unwrap()
        .faults
        .extend(["expire".to_string(), "unavailable".to_string()]);
    let v = sync(&s, id);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(
        v["sync"]["last"]["records"],
        json!({"account": 0, "contact": 1, "lead": 0}),
        "{v}"
    );
    assert!(
        sf.sf.lock().unwrap().issued > issued,
        "the token was refreshed"
    );

    // The daily allocation used up: the sync stops, keeps its cursor, and the next resumes.
    sf.store.lock().unwrap().put(
        "Lead",
        "00QL2",
        t0 + 60,
        json!({"Email": "cy@hooli.com", "Company": "Hooli", "Website": "hooli.com"}),
    );
    sf.store
        .lock()
        .unwrap()
        .faults
        .extend(["limit".to_string()]);
    let v = sync(&s, id);
    assert_eq!(v["sync"]["last"]["state"], "rate_limited", "{v}");
    let v = sync(&s, id);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(
        v["records"],
        json!({"account": 1, "contact": 8, "lead": 2}),
        "{v}"
    );

    // An unconverted lead's account comes from the Lead's fallback fields.
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    let initech = account(&accounts, "initech.com");
    assert_eq!(initech["industry"], "Banking", "{initech}");
    assert_eq!(initech["region"], "UK", "{initech}");

    // describe: a mapped field the org lacks is named.
    let (st, refused) = call(
        &s,
        Method::PUT,
        &format!("/api/integrations/{id}/mapping"),
        Some(json!({"fields": {"market_segment": "Account.Segment__c"}})),
    );
    assert_eq!(st, 400, "{refused}");
    assert_eq!(refused["fields"][0]["field"], "Segment__c", "{refused}");

    // The refresh token revoked: invalid_grant disconnects, with the reason.
    sf.sf.lock().unwrap().refresh_token = "rotated-elsewhere".into();
    sf.sf.lock().unwrap().sessions.clear();
    let v = check(&s, id);
    assert_eq!(v["connected"], false, "{v}");
    let v = ok(&s, Method::GET, &format!("/api/integrations/{id}"), None);
    assert_eq!(v["status"], "disconnected");
    assert!(
        v["reason"].as_str().unwrap().contains("invalid_grant"),
        "{v}"
    );
    let (st, refused) = call(
        &s,
        Method::POST,
        &format!("/api/integrations/{id}/sync"),
        None,
    );
    assert_eq!(st, 409, "{refused}");
    answers.push(v);
    assert_secret_free(&answers, &log, &[REFRESH, SECRET]);
}

#[test]
fn airtable_lists_by_offset_and_holds_the_base_after_a_429() {
    const PAT: &str = "patAbCdEfGh12345.0123456789abcdef0123456789abcdef";
    const BASE: &str = "appTrailspark01";
    let mut store = Store::airtable();
    let t0 = 1_700_000_000_000;
    store.put("Companies", "recACME", t0, json!({"Name": "Acme", "Website": "acme.com", "Industry": "Software", "Segment": "Mid-Market", "Employees": 450, "Region": "North America"}));
    for i in 0..230 {
        store.put(
            "People",
            &format!("recP{i:04}"),
            t0 + i,
            json!({"Email": format!("p{i}@acme.com"), "Company": ["recACME"]}),
        );
    }
    let at = Airtable::start(PAT, BASE, store, Duration::from_secs(30));

    let (_dir, log, s) = serve();
    known(&s, "p7@acme.com");

    // A base the token cannot see: 403, named.
    let created = connect(
        &s,
        json!({
            "kind": "airtable", "name": "Airtable",
            "credentials": {"personal_access_token": PAT, "base_id": "appOther", "tables": {"contacts": "People", "companies": "Companies"}},
            "api_base_url": at.url,
        }),
    );
    let wrong = created["id"].as_u64().unwrap();
    let v = wait_sync(&s, wrong, 0);
    assert_eq!(v["sync"]["last"]["state"], "failed", "{v}");
    assert!(
        v["sync"]["last"]["error"]
            .as_str()
            .unwrap()
            .contains("INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND"),
        "{v}"
    );
    let mut answers = vec![created, v];

    // The first listing meets a 429: the base is held 30 s, then the sync completes.
    at.store.lock().unwrap().faults.push_back("burst".into());
    let created = connect(
        &s,
        json!({
            "kind": "airtable", "name": "Airtable",
            "credentials": {"personal_access_token": PAT, "base_id": BASE, "tables": {"contacts": "People", "companies": "Companies"}},
            "api_base_url": at.url,
        }),
    );
    assert!(
        created.to_string().contains(BASE),
        "the base id is a setting, shown"
    );
    let id = created["id"].as_u64().unwrap();
    let started = Instant::now();
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert!(
        started.elapsed() >= Duration::from_secs(29),
        "the penalty was waited out"
    );
    assert_eq!(v["records"], json!({"account": 1, "contact": 230}), "{v}");
    let limited = *at.limited.lock().unwrap();
    assert!(limited >= 1, "the fault was answered");
    let tested = check(&s, id);
    assert_eq!(tested["ok"], true, "{tested}");

    // A mapping naming a field the table lacks: the listing's 422 ends the sync, named.
    let mut body = json!({
        "kind": "airtable", "name": "Airtable (bad field)",
        "credentials": {"personal_access_token": PAT, "base_id": BASE, "tables": {"contacts": "People", "companies": "Companies"}},
        "api_base_url": at.url, "mapping": {"custom": {"contacts": ["Lead Score"]}},
    });
    let bad = connect(&s, body.take());
    let v = wait_sync(&s, bad["id"].as_u64().unwrap(), 0);
    assert_eq!(v["sync"]["last"]["state"], "failed", "{v}");
    assert!(
        v["sync"]["last"]["error"]
            .as_str()
            .unwrap()
            .contains("UNKNOWN_FIELD_NAME"),
        "{v}"
    );
    let tested = check(&s, bad["id"].as_u64().unwrap());
    assert_eq!(tested["fields"][0]["field"], "Lead Score", "{tested}");

    // Incremental by LAST_MODIFIED_TIME(): one changed record.
    let served = at
        .store
        .lock()
        .unwrap()
        .served
        .get("People")
        .copied()
        .unwrap_or(0);
    at.store.lock().unwrap().put(
        "People",
        "recP0007",
        t0 + 100_000,
        json!({"Email": "p7@acme.com", "Title": "Head of Growth", "Company": ["recACME"]}),
    );
    let v = sync(&s, id);
    assert_eq!(
        v["sync"]["last"]["records"],
        json!({"account": 0, "contact": 1}),
        "{v}"
    );
    assert_eq!(at.store.lock().unwrap().served["People"] - served, 1);
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    let acme = account(&accounts, "acme.com");
    assert_eq!(acme["marketSegment"], "Mid-Market", "{acme}");
    answers.push(v);
    assert_secret_free(&answers, &log, &[PAT]);
}

#[test]
fn a_restart_in_a_sync_resumes_from_its_cursor_and_a_deleted_integration_leaves() {
    const REFRESH: &str = "5Aep861TSESvWeug-restart-refresh-token";
    let mut store = Store::salesforce();
    let t0 = 1_700_000_000_000;
    store.put(
        "Account",
        "001A",
        t0,
        json!({"Name": "Acme", "Website": "acme.com", "Industry": "Technology"}),
    );
    for i in 0..40 {
        store.put(
            "Contact",
            &format!("003C{i:02}"),
            t0 + i,
            json!({"AccountId": "001A", "Email": format!("c{i}@acme.com"), "Title": "Engineer"}),
        );
    }
    store.latency = Duration::from_millis(150);
    let sf = Salesforce::start(REFRESH, store);
    sf.sf.lock().unwrap().page_size = 4;

    let (_dir, _log, mut s) = serve();
    known(&s, "c1@acme.com");
    let created = connect(
        &s,
        json!({
            "kind": "salesforce", "name": "Salesforce",
            "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": REFRESH},
            "api_base_url": sf.login_url,
        }),
    );
    let id = created["id"].as_u64().unwrap();
    // Killed once some contact pages are committed, before the last.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = ok(&s, Method::GET, &format!("/api/integrations/{id}"), None);
        if v["records"]["contact"].as_u64().unwrap_or(0) >= 12 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    let before = sf
        .store
        .lock()
        .unwrap()
        .served
        .get("Contact")
        .copied()
        .unwrap_or(0);
    assert!(before < 40, "the sync was cut short ({before} served)");
    s.restart();
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"]["contact"], 40, "{v}");
    let after = sf.store.lock().unwrap().served["Contact"] - before;
    assert!(
        after <= 40 - 12 + 4,
        "resumed from the cursor, not from the start ({after} served again)"
    );
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    assert_eq!(account(&accounts, "acme.com")["industry"], "Technology");

    // Deleted: gone from the API, and its records leave the accounts.
    let (st, _) = call(&s, Method::DELETE, &format!("/api/integrations/{id}"), None);
    assert_eq!(st, 200);
    let (st, _) = call(&s, Method::GET, &format!("/api/integrations/{id}"), None);
    assert_eq!(st, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let accounts = ok(&s, Method::GET, "/api/accounts", None);
        if account(&accounts, "acme.com")["industry"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{accounts}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn salesforce_and_hubspot_connect_through_oauth() {
    use common::crm::hubspot;
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut sf_store = Store::salesforce();
    sf_store.put(
        "Account",
        "001A",
        1_700_000_000_000,
        json!({"Name": "Acme", "Website": "acme.com"}),
    );
    let sf = Salesforce::start("not-yet-granted", sf_store);

    let mut hs_store = Store::hubspot();
    for i in 0..600 {
        hs_store.put(
            "contacts",
            &format!("{}", 5000 + i),
            1_700_000_000_000 + i,
            json!({"email": format!("h{i}@acme.com")}),
        );
    }
    let hs = Hubspot::start("pat-unused", hs_store);
    // Access tokens really expire after a second, inside the sync (the answer says 1800 s).
    hs.oauth.lock().unwrap().lifetime = Duration::from_millis(1000);

    let (_dir, log, s) = serve();
    let mut answers = Vec::new();

    // Salesforce: authorization code with PKCE.
    let started = ok(
        &s,
        Method::POST,
        "/api/integrations/oauth/salesforce",
        Some(json!({
            "client_id": salesforce::CLIENT_ID, "login_url": sf.login_url, "name": "Salesforce (OAuth)",
        })),
    );
    let url = started["authorize_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/services/oauth2/authorize?", sf.login_url)),
        "{started}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert_eq!(
        started["redirect_uri"],
        s.url("/api/oauth/callback/salesforce")
    );
    let consent = browser.get(url).send().unwrap();
    assert_eq!(consent.status(), 302);
    let back = consent.headers()["location"].to_str().unwrap().to_string();
    let r = browser.get(&back).send().unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().unwrap();
    assert_eq!(created["status"], "connected", "{created}");
    let id = created["id"].as_u64().unwrap();
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"]["account"], 1, "{v}");
    // The state is single-use.
    let again = browser.get(&back).send().unwrap();
    assert_eq!(again.status(), 400);
    let granted = sf.sf.lock().unwrap().refresh_token.clone();
    answers.extend([started, created, v]);

    // HubSpot: authorization code, then access tokens refreshed when they expire mid-sync.
    let started = ok(
        &s,
        Method::POST,
        "/api/integrations/oauth/hubspot",
        Some(json!({
            "client_id": hubspot::CLIENT_ID, "client_secret": hubspot::CLIENT_SECRET,
            "api_base_url": hs.url, "authorize_url": format!("{}/oauth/authorize", hs.url),
        })),
    );
    let url = started["authorize_url"].as_str().unwrap();
    let consent = browser.get(url).send().unwrap();
    assert_eq!(
        consent.status(),
        302,
        "the app asks for every scope it needs"
    );
    let back = consent.headers()["location"].to_str().unwrap().to_string();
    let r = browser.get(&back).send().unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().unwrap();
    let id = created["id"].as_u64().unwrap();
    let v = wait_sync(&s, id, 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"]["contact"], 600, "{v}");
    let o = hs.oauth.lock().unwrap();
    assert!(
        o.refreshes >= 2,
        "expired access tokens were refreshed ({} refreshes)",
        o.refreshes
    );
    let refresh: Vec<String> = o.refresh.iter().cloned().collect();
    drop(o);
    answers.extend([started, created, v]);
    let mut secrets: Vec<&str> = vec![&granted, hubspot::CLIENT_SECRET];
    secrets.extend(refresh.iter().map(String::as_str));
    assert_secret_free(&answers, &log, &secrets);
}

#[test]
fn hubspot_search_past_ten_thousand_results_starts_again_after_the_last_record() {
    const TOKEN: &str = "pat-na1-search-cap";
    let mut store = Store::hubspot();
    for i in 0..10_150i64 {
        // Pairs of records share a modification time: the restart must not skip a twin.
        store.put(
            "contacts",
            &(20_000 + i).to_string(),
            1_700_000_000_000 + i / 2,
            json!({"email": format!("n{i}@globex.com")}),
        );
    }
    let hs = Hubspot::start(TOKEN, store);
    let (_dir, _log, s) = serve();
    let created = connect(
        &s,
        json!({"kind": "hubspot", "credentials": {"private_app_token": TOKEN}, "api_base_url": hs.url}),
    );
    let v = wait_sync(&s, created["id"].as_u64().unwrap(), 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"]["contact"], 10_150, "{v}");
    assert_eq!(*hs.throttled.lock().unwrap(), 0);
}

#[test]
fn a_large_salesforce_page_fits_the_nats_log() {
    // 2,000 contacts of about 1.5 KB each: one page, 3 MB, over JetStream's 1 MiB messages.
    let nats = Nats::start();
    let mut store = Store::salesforce();
    store
        .schema
        .get_mut("Contact")
        .unwrap()
        .insert("Description".into(), "textarea".into());
    let notes = "n".repeat(1500);
    for i in 0..2000i64 {
        store.put(
            "Contact",
            &format!("003N{i:05}"),
            1_700_000_000_000 + i,
            json!({"Email": format!("x{i}@acme.com"), "Description": notes}),
        );
    }
    let sf = Salesforce::start("nats-refresh", store);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        Some(&nats.url()),
        &[("TRAILSPARK_CRM_SYNC_INTERVAL", "3600")],
    );
    let created = connect(
        &s,
        json!({
            "kind": "salesforce",
            "credentials": {"client_id": salesforce::CLIENT_ID, "refresh_token": "nats-refresh"},
            "api_base_url": sf.login_url, "mapping": {"custom": {"contact": ["Description"]}},
        }),
    );
    let v = wait_sync(&s, created["id"].as_u64().unwrap(), 0);
    assert_eq!(v["sync"]["last"]["state"], "done", "{v}");
    assert_eq!(v["records"]["contact"], 2000, "{v}");
}
