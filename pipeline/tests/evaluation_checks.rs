//! Lead evaluation's checks through HTTP: every skip reason (signal thresholds, no active
//! model, an evaluation rule on the lead or its product org, the quota), and the role matrix
//! of settings, evaluation rules and ICP models with the Models meter.

mod common;

use common::scoring::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[test]
fn every_skip_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    mapping_rules(&s);
    let evaluate = |l: &Lead, pos: u64| {
        let id = l.id(pos);
        call(&s, Method::POST, &format!("/api/leads/{id}/evaluate"), None)
    };
    let refused = |l: &Lead, pos: u64, reason: &str| {
        let (st, v) = evaluate(l, pos);
        assert_eq!(
            (st, v["error"].as_str(), v["reason"].as_str()),
            (409, Some("not_evaluated"), Some(reason)),
            "{v}"
        );
        v
    };

    let one = lead(&s, "one@acme.com");
    let p = one.event("Pricing Viewed");
    assert_eq!(one.get(p)["last_skip_reason"], "insufficient_signals");
    refused(&one, p, "insufficient_signals");

    let views = lead(&s, "views@acme.com");
    views.event("Pricing Viewed");
    views.event("Pricing Viewed");
    let p = views.event("Pricing Viewed");
    assert_eq!(
        views.get(p)["last_skip_reason"],
        "insufficient_signal_types"
    );
    refused(&views, p, "insufficient_signal_types");

    let ready = |email: &str, traits: Value| {
        let l = lead(&s, email);
        l.identify(traits);
        l.event("Pricing Viewed");
        l.event("Feature Used");
        let p = l.event("Feature Used");
        (l, p)
    };
    let (a, p) = ready("a@acme.com", fitting());
    refused(&a, p, "no_active_model");
    run_batch(&s);
    assert_eq!(a.get(0)["last_skip_reason"], "no_active_model");

    model(&s);
    let rule = ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "No students", "conditions": [
            {"field": "lead.title", "op": "not_contains", "value": "student", "allow_if_empty": true}]})),
    );
    let (st, bad) = call(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(
            json!({"name": "x", "conditions": [{"field": "title", "op": "equals", "value": "x"}]}),
        ),
    );
    assert_eq!(st, 400, "{bad}");
    let (student, p) = ready("kid@acme.com", json!({"title": "Student"}));
    let v = refused(&student, p, "excluded_by_rule");
    assert_eq!(
        (v["rule_id"].clone(), v["rule_name"].as_str()),
        (rule["id"].clone(), Some("No students"))
    );
    assert_eq!(student.get(0)["last_skip_reason"], "excluded_by_rule");
    // A rule on the product org: only leads of a paying workspace.
    let paying = ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "Paying workspaces", "conditions": [
            {"field": "product_org.plan_id", "op": "equals", "value": "pro", "allow_if_empty": true}]})),
    );
    let (free, p) = ready("free@acme.com", json!({}));
    free.send(
        json!({"event": "Pricing Viewed", "email": "free@acme.com", "productOrgId": "ws_free"}),
    );
    let pkey = s.create_key(json!({"name": "po", "endpoint_type": "product_org",
                                   "template": {"product_org_id": "groupId", "plan_id": "traits.plan"}}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client()
        .post(s.url(&format!("/api/product-orgs/webhook/{pkey}")))
        .body(
            json!({"type": "group", "groupId": "ws_free", "traits": {"plan": "free"}}).to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let pos = r.json::<Value>().unwrap()["log_position"].as_u64().unwrap();
    let v = refused(&free, pos.max(p), "excluded_by_rule");
    assert_eq!(v["rule_id"], paying["id"]);
    // The product-org update created its account (the target organization), with its lead.
    let accounts = ok(&s, Method::GET, "/api/accounts", None);
    let ws = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["productOrgId"] == "ws_free")
        .unwrap_or_else(|| panic!("{accounts}"))
        .clone();
    assert_eq!(ws["source"], "product_org");
    assert_eq!(ws["lead_ids"], json!([free.id(0)]));

    // The quota: one evaluation a month.
    ok(
        &s,
        Method::PATCH,
        "/api/admin/plan",
        Some(json!({"evaluation_limit": 1})),
    );
    let (st, first) = evaluate(&a, 0);
    assert_eq!(st, 200, "{first}");
    let (b, p) = ready("b@acme.com", fitting());
    refused(&b, p, "evaluation_limit_reached");
    run_batch(&s);
    assert_eq!(b.get(0)["last_skip_reason"], "evaluation_limit_reached");
    let plan = ok(&s, Method::GET, "/api/admin/plan", None);
    assert_eq!(plan["evaluation_limit"], 1);
    let usage = ok(&s, Method::GET, "/api/usage", None);
    let meter = usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "evaluations")
        .unwrap()
        .clone();
    assert_eq!(
        (
            meter["used"].as_i64(),
            meter["limit"].as_u64(),
            meter["color"].as_str()
        ),
        (Some(1), Some(1), Some("red")),
        "{usage}"
    );
    assert_eq!(usage["models"], 1);
}

#[test]
fn settings_rules_and_models_follow_the_role_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let token = |role: &str| {
        ok(
            &s,
            Method::POST,
            "/api/admin/tokens",
            Some(json!({"role": role, "name": role})),
        )["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (viewer, editor) = (token("viewer"), token("editor"));
    let as_ = |t: &str, m: Method, path: &str, body: Option<Value>| {
        s.admin(m, path, t, body).status().as_u16()
    };
    assert_eq!(
        as_(&viewer, Method::GET, "/api/settings/lead-scoring", None),
        200
    );
    assert_eq!(
        as_(
            &editor,
            Method::PUT,
            "/api/settings/lead-scoring",
            Some(json!({"min_signals": 2}))
        ),
        403
    );
    assert_eq!(
        as_(
            &viewer,
            Method::POST,
            "/api/evaluation-rules",
            Some(
                json!({"name": "x", "conditions": [{"field": "lead.title", "op": "is_not_empty"}]})
            )
        ),
        403
    );
    assert_eq!(
        as_(
            &editor,
            Method::POST,
            "/api/evaluation-rules",
            Some(
                json!({"name": "x", "conditions": [{"field": "lead.title", "op": "is_not_empty"}]})
            )
        ),
        201
    );
    let body =
        json!({"name": "m", "account_profile": "SaaS companies with 50-500 employees in Europe."});
    assert_eq!(
        as_(&viewer, Method::POST, "/api/icp-models", Some(body.clone())),
        403
    );
    assert_eq!(
        as_(&editor, Method::POST, "/api/icp-models", Some(body.clone())),
        201
    );
    // Read from the text: the criteria it names.
    let models = ok(&s, Method::GET, "/api/icp-models", None);
    let m = &models["models"][0];
    assert_eq!(
        m["criteria"]["employee_ranges"],
        json!([{"min": 50, "max": 500}])
    );
    assert_eq!(m["criteria"]["regions"], json!(["europe"]));
    assert!(m["derived_criteria"]
        .as_array()
        .unwrap()
        .contains(&json!("industries")));
    // A second model becomes the active one; the first can be made active again.
    let second = ok(&s, Method::POST, "/api/icp-models", Some(body));
    assert_eq!(second["version"], 2);
    let first = ok(
        &s,
        Method::POST,
        &format!("/api/icp-models/{}/activate", m["id"]),
        None,
    );
    assert_eq!(first["status"], "active");
    let again = ok(
        &s,
        Method::GET,
        &format!("/api/icp-models/{}", second["id"]),
        None,
    );
    assert_eq!(again["status"], "inactive");
    // The Models meter bounds creation.
    ok(
        &s,
        Method::PATCH,
        "/api/admin/plan",
        Some(json!({"icp_model_limit": 2})),
    );
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "third", "account_profile": "x"})),
    );
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("limit_reached")),
        "{v}"
    );
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "m", "method": "sparksense", "account_profile": "x"})),
    );
    assert_eq!(st, 400);
}
