//! Product-org updates end to end .

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn po_key(s: &Server, template: Value) -> (String, u64) {
    let k =
        s.create_key(json!({"name": "po", "endpoint_type": "product_org", "template": template}));
    (
        k["key"].as_str().unwrap().to_string(),
        k["id"].as_u64().unwrap(),
    )
}

fn post_update(s: &Server, key: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(s.url(&format!("/api/product-orgs/webhook/{key}")))
        .json(&body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn get(s: &Server, path: &str, wait_for: u64) -> (u16, Value) {
    let r = s.get_at(path, wait_for);
    (r.status().as_u16(), r.json().unwrap())
}

fn pos(v: &Value) -> u64 {
    v["log_position"].as_u64().unwrap()
}

#[test]
fn template_shapes_and_field_merging() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    // Segment group shape.
    let (key, key_id) = po_key(
        &s,
        json!({"product_org_id": "groupId", "name": "traits.name", "mrr": "traits.mrr", "plan_name": "traits.plan"}),
    );
    let (st, b) = post_update(
        &s,
        &key,
        json!({"type": "group", "groupId": "ws_1", "traits": {"name": "Acme", "mrr": 49900}}),
    );
    assert_eq!((st, b["product_org_id"].as_str()), (202, Some("ws_1")));
    let (_, b) = post_update(
        &s,
        &key,
        json!({"type": "group", "groupId": "ws_1", "traits": {"plan": "Pro"}}),
    );
    let (st, po) = get(&s, "/api/product-orgs/ws_1", pos(&b));
    assert_eq!(st, 200);
    assert_eq!(
        (
            po["name"].as_str(),
            po["mrr"].as_u64(),
            po["plan_name"].as_str()
        ),
        (Some("Acme"), Some(49900), Some("Pro"))
    );

    // Nested and custom fields, after replacing the template.
    let r = s.admin(
        Method::PUT,
        &format!("/api/admin/keys/{key_id}/template"),
        ADMIN_TOKEN,
        Some(json!({"product_org_id": "data.tenant.id", "user_count": "data.users", "trial_status": "data.trial",
                    "feature_flags": "data.features", "custom_fields": {"projects_count": "metrics.total_projects"}})),
    );
    assert_eq!(r.status(), 200);
    let (st, b) = post_update(
        &s,
        &key,
        json!({"data": {"tenant": {"id": "t-9"}, "users": "many", "trial": "Active", "features": {"sso": true}},
        "metrics": {"total_projects": 7}}),
    );
    assert_eq!(st, 202);
    assert!(
        b["field_errors"]["user_count"]
            .as_str()
            .unwrap()
            .contains("data.users"),
        "{b}"
    );
    let (_, po) = get(&s, "/api/product-orgs/t-9", pos(&b));
    assert_eq!(po["trial_status"], "active");
    assert_eq!(po["feature_flags"], json!({"sso": true}));
    assert_eq!(po["custom_fields"], json!({"projects_count": 7}));
    assert_eq!(
        po["user_count"],
        Value::Null,
        "the wrongly typed field is left out"
    );

    // Flat shape, and a late update with an older timestamp.
    let (flat, _) = po_key(
        &s,
        json!({"product_org_id": "workspace_id", "plan_name": "plan"}),
    );
    post_update(
        &s,
        &flat,
        json!({"workspace_id": "w1", "plan": "Team", "timestamp": "2026-05-02T00:00:00Z"}),
    );
    let (_, b) = post_update(
        &s,
        &flat,
        json!({"workspace_id": "w1", "plan": "Free", "timestamp": "2026-05-01T00:00:00Z"}),
    );
    let (_, po) = get(&s, "/api/product-orgs/w1", pos(&b));
    assert_eq!(
        po["plan_name"], "Team",
        "an older update arriving late does not overwrite"
    );

    // Errors: missing ID → 422 naming the path; a signal key → 403; unknown org → 404.
    let (st, b) = post_update(&s, &flat, json!({"plan": "x"}));
    assert_eq!(st, 422);
    assert!(b["message"].as_str().unwrap().contains("workspace_id"));
    let (st, _) = post_update(
        &s,
        s.first_key.as_ref().unwrap(),
        json!({"workspace_id": "w1"}),
    );
    assert_eq!(st, 403);
    assert_eq!(get(&s, "/api/product-orgs/nope", 0).0, 404);
}

#[test]
fn leads_link_to_product_orgs_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let (po, _) = po_key(
        &s,
        json!({"product_org_id": "groupId", "name": "traits.name", "plan_name": "traits.plan", "mrr": "traits.mrr",
        "user_count": "traits.users", "trial_status": "traits.trial", "feature_flags": "traits.flags",
        "custom_fields": {"projects_count": "traits.projects"}}),
    );
    s.admin(Method::POST, "/api/mapping-rules", ADMIN_TOKEN, Some(json!({"name": "Used product", "signal_type": "Product Activity",
        "conditions": [{"field": "event", "op": "equals", "value": "Feature Used"}], "mappings": [{"field": "email", "path": "email"}]})));
    // Update first, then the lead's signal.
    post_update(
        &s,
        &po,
        json!({"groupId": "ws_A", "traits": {"name": "Acme", "plan": "Pro", "mrr": 49900, "users": 12, "trial": "converted",
        "flags": {"sso": true}, "projects": 7}}),
    );
    let r = s.post_signal(
        &key,
        &json!({"event": "Feature Used", "email": "a@acme.io", "productOrgId": "ws_A"}).to_string(),
    );
    let p = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    let (_, lead) = get(&s, "/api/leads?email=a%40acme.io", p);
    assert_eq!(lead["productOrgInfo"][0]["name"], "Acme");
    let (st, ctx) = get(
        &s,
        &format!(
            "/api/leads/{}/evaluation-context",
            lead["id"].as_str().unwrap()
        ),
        p,
    );
    assert_eq!(st, 200);
    assert_eq!(
        ctx["productOrgInfo"],
        json!([{"productOrgId": "ws_A", "name": "Acme", "planId": null, "planName": "Pro", "userCount": 12, "mrr": 49900,
               "trialStatus": "converted", "lastActiveAt": null, "featureFlags": {"sso": true}, "customFields": {"projects_count": 7}}])
    );
    assert_eq!(ctx["lead"]["email"], "a@acme.io");
    assert_eq!(ctx["signals"][0]["name"], "Used product");
    assert_eq!(ctx["signals"][0]["type"], "Product Activity");
    assert_eq!(ctx["window"]["lookbackDays"], 90);
    // The lead's signal first, then the update (the id is matched case-sensitively).
    let r = s.post_signal(
        &key,
        &json!({"event": "Feature Used", "email": "b@beta.io", "productOrgId": "ws_B"}).to_string(),
    );
    let p = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    let (_, lead) = get(&s, "/api/leads?email=b%40beta.io", p);
    assert_eq!(lead["productOrgInfo"], json!([]));
    post_update(
        &s,
        &po,
        json!({"groupId": "ws_b", "traits": {"name": "wrong case"}}),
    );
    let (_, b) = post_update(
        &s,
        &po,
        json!({"groupId": "ws_B", "traits": {"name": "Beta"}}),
    );
    let (_, lead) = get(&s, "/api/leads?email=b%40beta.io", pos(&b));
    assert_eq!(lead["productOrgInfo"][0]["name"], "Beta");

    // A later signal naming another product org adds it; the first one stays.
    let r = s.post_signal(
        &key,
        &json!({"event": "Feature Used", "email": "b@beta.io", "productOrgId": "ws_A"}).to_string(),
    );
    let p = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    let (_, lead) = get(&s, "/api/leads?email=b%40beta.io", p);
    let names: Vec<&str> = lead["productOrgInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|po| po["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Acme", "Beta"]);
    assert_eq!(lead["product_org_ids"], json!(["ws_A", "ws_B"]));
}

/// The Product Org Updates page's own examples: its Segment group call, sent to the tracking
/// API, lands with plan id, plan name and user count as the page maps them; its nested
/// example keeps `trial.status: "not_applicable"`, with a warning and no field error.
#[test]
fn the_documented_examples_apply_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let group = json!({"type": "group", "userId": "user_42", "groupId": "acct_123",
        "traits": {"name": "Acme Corp", "plan": "pro", "plan_name": "Pro Annual", "employees": 47,
                   "mrr": 49900, "trial_status": "converted"}});
    let r = client()
        .post(s.url("/v1/group"))
        .basic_auth(&key, Some(""))
        .json(&group)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = s.dump().last().unwrap()["position"].as_u64().unwrap();
    let (st, po) = get(&s, "/api/product-orgs/acct_123", last);
    assert_eq!(st, 200);
    assert_eq!(
        (
            &po["plan_id"],
            &po["plan_name"],
            &po["user_count"],
            &po["name"]
        ),
        (
            &json!("pro"),
            &json!("Pro Annual"),
            &json!(47),
            &json!("Acme Corp")
        )
    );

    let (nested, _) = po_key(
        &s,
        json!({"product_org_id": "organization.id", "name": "organization.name",
               "plan_name": "subscription.plan", "mrr": "subscription.mrr_cents",
               "trial_status": "trial.status"}),
    );
    let (st, b) = post_update(
        &s,
        &nested,
        json!({"organization": {"id": "org_456", "name": "Beta Inc"},
               "subscription": {"plan": "Enterprise", "mrr_cents": 99900},
               "trial": {"status": "not_applicable"}}),
    );
    assert_eq!(st, 202, "{b}");
    assert_eq!(b["field_errors"], json!({}));
    assert!(b["warnings"]["trial_status"]
        .as_str()
        .unwrap()
        .contains("not_applicable"));
    let (_, po) = get(&s, "/api/product-orgs/org_456", pos(&b));
    assert_eq!(po["trial_status"], "not_applicable");
    assert_eq!(po["plan_name"], "Enterprise");
}

#[test]
fn segment_group_calls_update_product_orgs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    let r = client()
        .post(s.url("/v1/group"))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "u1", "groupId": "ws_seg", "traits": {"name": "Segmented", "plan": "Enterprise", "mrr": 100}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = s.dump().last().unwrap()["position"].as_u64().unwrap();
    let (st, po) = get(&s, "/api/product-orgs/ws_seg", last);
    assert_eq!(st, 200);
    // `traits.plan` is the plan's id, as the product maps a group call.
    assert_eq!(
        (
            po["name"].as_str(),
            po["plan_id"].as_str(),
            po["mrr"].as_u64()
        ),
        (Some("Segmented"), Some("Enterprise"), Some(100))
    );
}
