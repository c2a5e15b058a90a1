//! The OpenAPI document against the routers, both ways:
//! - every path pattern in the routers' source is a path of the document;
//! - every operation of the document is served (a running server does not answer it with
//!   the routers' "no such endpoint" or a 405), and every other method on its path is
//!   refused with 405 (or that 404).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

const METHODS: [&str; 6] = ["get", "head", "post", "put", "patch", "delete"];

fn document(s: &Server) -> Value {
    let r = client().get(s.url("/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().unwrap()
}

/// `"/api/leads/{id}"` → `"/api/leads/{}"`: templates compared without their names.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The slice patterns of a router's `match` arms (`["leads", id, "timeline"]`), as paths
/// under `prefix` with variables as `{}`; arms that end in `..` (catch-alls) are skipped.
fn patterns(file: &str, prefix: &str) -> BTreeSet<String> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    // A router arm starts with a literal segment: `["leads", id]`, not `[entry]`.
    let arm = regex::Regex::new(
        r#"\[(\s*"[a-z0-9.\-]+"(?:\s*,\s*(?:"[a-z0-9.\-]+"|[a-z_]+))*)\s*\]\s*(?:=>|,\s*&?Method|,\s*_\)|\))"#,
    )
    .unwrap();
    let mut out = BTreeSet::new();
    for c in arm.captures_iter(&src) {
        let segs: Vec<String> = c[1]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('"') {
                Some(word) => word.trim_end_matches('"').to_string(),
                None => "{}".to_string(),
            })
            .collect();
        out.insert(format!("{prefix}/{}", segs.join("/")));
    }
    out
}

#[test]
fn every_router_path_is_documented_and_every_documented_path_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), None);
    let doc = document(&s);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().map(|p| shape(p)).collect();

    // Router → document.
    let mut routed = BTreeSet::new();
    routed.extend(patterns("src/http/admin.rs", "/api/admin"));
    for file in [
        "src/http/api/mod.rs",
        "src/http/scoring.rs",
        "src/http/integrations.rs",
        "src/http/destinations.rs",
    ] {
        routed.extend(patterns(file, "/api"));
    }
    // The ingestion router matches whole paths; its `["v1", kind]` arm takes the Segment
    // kinds and their short forms.
    for p in patterns("../sources/src/routes.rs", "") {
        if p == "/v1/{}" {
            for kind in [
                "track", "page", "identify", "group", "alias", "screen", "batch", "t", "p", "i",
                "g", "a", "s", "b",
            ] {
                routed.insert(format!("/v1/{kind}"));
            }
        } else {
            routed.insert(p);
        }
    }
    for fixed in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        routed.insert(fixed.to_string());
    }
    assert!(
        routed.len() > 60,
        "found only {} router paths: {routed:?}",
        routed.len()
    );
    let undocumented: Vec<&String> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in /openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<&String> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "in /openapi.json but no router arm: {unrouted:?}"
    );

    // Document → server, method by method.
    let key = s.first_key.clone().unwrap();
    let c = client();
    for (path, item) in paths {
        let url = path
            .replace("{key}", &key)
            .replace("{source}", "web")
            .replace("{kind}", "hubspot")
            .replace("{id}", "999999");
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = c
                .request(method, s.url(&url))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(if m == "get" || m == "head" { "" } else { "{}" })
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            let unrouted = status == 404 && body.contains("no such endpoint");
            if item.get(m).is_some() {
                assert!(
                    !unrouted && status != 405,
                    "{m} {path}: documented, but the server answered {status} {body}"
                );
            } else {
                assert!(
                    unrouted || status == 405,
                    "{m} {path}: not documented, but the server answered {status} {body}"
                );
            }
        }
    }
}

#[test]
fn the_document_describes_auth_errors_and_request_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), None);
    let doc = document(&s);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["writeKey"]["scheme"], "basic");
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        serde_json::json!(["error", "code", "message"])
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            assert_eq!(
                op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{m} {path} names its error body"
            );
            assert!(op["security"].is_array(), "{m} {path} says who may call it");
            let unique = op["operationId"].as_str().unwrap();
            assert!(!unique.is_empty());
        }
    }
    // Request bodies are the handlers' own types: a key's fields, required ones marked.
    let key = &doc["components"]["schemas"]["CreateKey"];
    assert_eq!(key["required"], serde_json::json!(["name"]));
    for field in [
        "endpoint_type",
        "secret",
        "expires_at",
        "template",
        "allowed_origins",
    ] {
        assert!(
            key["properties"][field].is_object(),
            "CreateKey.{field}: {key}"
        );
    }
    assert_eq!(
        key["additionalProperties"], false,
        "unknown fields are refused: {key}"
    );
    let rule = &doc["paths"]["/api/mapping-rules"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert!(rule["properties"]["reprocess"].is_object(), "{rule}");
    assert!(rule["properties"]["conditions"].is_object(), "{rule}");
    let post_key = &doc["paths"]["/api/admin/keys"]["post"];
    assert_eq!(post_key["security"][0]["bearer"], serde_json::json!([]));
    assert!(post_key["responses"]["201"].is_object());
    // Typed answers are the answers: a listed key has exactly the schema's fields.
    let view = &doc["components"]["schemas"]["KeyView"];
    let listed = &doc["paths"]["/api/admin/keys"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]["properties"]["keys"]["items"]["$ref"];
    assert_eq!(listed, "#/components/schemas/KeyView");
    let keys: Value = s
        .admin(reqwest::Method::GET, "/api/admin/keys", ADMIN_TOKEN, None)
        .json()
        .unwrap();
    let fields: BTreeSet<&String> = keys["keys"][0].as_object().unwrap().keys().collect();
    let documented: BTreeSet<&String> = view["properties"].as_object().unwrap().keys().collect();
    assert_eq!(fields, documented, "a key's fields and KeyView's");
    let e1 = &doc["paths"]["/api/signal-staging/webhook/{key}"]["post"];
    assert_eq!(e1["parameters"][0]["in"], "path");
    assert!(e1["responses"]["202"].is_object());
    // Every JSON answer has a schema of its own, except the few whose content is the
    // client's or the CRM's: a signal as sent, a CRM field mapping, analytics.js' settings.
    let open = serde_json::json!({"type": "object", "additionalProperties": true});
    let mut untyped = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let schema = &response["content"]["application/json"]["schema"];
                if status.starts_with('2') && *schema == open {
                    untyped.push(format!("{} {path}", m.to_uppercase()));
                }
            }
        }
    }
    untyped.sort();
    assert_eq!(
        untyped,
        [
            "GET /api/integrations/{id}/mapping",
            "GET /openapi.json",
            "GET /v1/projects/{key}/settings",
            "POST /v1/m",
            "PUT /api/integrations/{id}/mapping",
        ],
        "answers documented as any object"
    );
}

/// A server with one of each record (keys, tokens, a mapping rule, an unmapped group, a lead
/// with signals and an evaluation, an evaluation rule, an ICP model, a product org), whose
/// every read and write answer is checked against the document's schema for it.
#[test]
fn every_answer_about_real_records_conforms_to_the_document() {
    use common::answers::Answers;
    use common::scoring::{fitting, lead};
    use reqwest::Method;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let s = common::scoring::start(&dir.path().join("data"));
    let mut a = Answers::default();
    let key = a.ok(
        &s,
        Method::POST,
        "/api/admin/keys",
        Some(json!({"name": "po", "endpoint_type": "product_org",
                    "template": {"product_org_id": "workspace_id", "name": "name", "plan_name": "plan"}})),
    );
    let po_key = key["key"].as_str().unwrap().to_string();
    let path = format!("/api/product-orgs/webhook/{po_key}");
    let r = client()
        .post(s.url(&path))
        .json(&json!({"workspace_id": "ws_1", "name": "Acme", "plan": "team"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    a.record("post", &path, 202, &r.json().unwrap());
    let path = format!("/api/signal-staging/bulk/{}", s.first_key.as_ref().unwrap());
    let r = client()
        .post(s.url(&path))
        .header("content-type", "application/x-ndjson")
        .body("{\"email\":\"bulk@example.com\",\"event\":\"imported\"}\nnot json\n")
        .send()
        .unwrap();
    let status = r.status().as_u16();
    a.record("post", &path, status, &r.json().unwrap());
    let token = a.ok(
        &s,
        Method::POST,
        "/api/admin/tokens",
        Some(json!({"role": "viewer", "name": "dashboards"})),
    );

    // Rules, a model, an evaluation rule; then a lead that fits and acts.
    let rule = a.ok(
        &s,
        Method::POST,
        "/api/mapping-rules",
        Some(json!({"name": "Demo request", "signal_type": "Form Fill", "high_intent": false,
                    "conditions": [{"field": "event", "op": "equals", "value": "Demo Requested"}],
                    "mappings": [{"field": "email", "path": "email"}, {"field": "product_user_id", "path": "user_id"}]})),
    );
    common::scoring::mapping_rules(&s);
    let model = a.ok(
        &s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "Mid-market SaaS", "account_profile": "B2B SaaS, 200-1000 employees",
                    "criteria": {"industries": ["saas"], "employee_ranges": [{"min": 200, "max": 1000}]}})),
    );
    let eval_rule = a.ok(
        &s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "No students", "conditions": [
            {"field": "lead.title", "op": "not_contains", "value": "student", "allow_if_empty": true}]})),
    );
    let ada = lead(&s, "ada@acme.com");
    ada.identify(fitting());
    ada.send(json!({"event": "Demo Requested", "email": "ada@acme.com", "user_id": "u_1"}));
    ada.event("Pricing Viewed");
    ada.event("Feature Used");
    ada.event("Something Unmapped");
    let last = ada.event("Pricing Viewed");
    let lead_id = ada.id(last);
    let evaluation = a.ok(
        &s,
        Method::POST,
        &format!("/api/leads/{lead_id}/evaluate"),
        None,
    );
    let at = |p: &str| {
        format!(
            "{p}{}wait_for={last}",
            if p.contains('?') { '&' } else { '?' }
        )
    };

    let rid = rule["id"].as_u64().unwrap();
    let mid = model["id"].as_u64().unwrap();
    let eid = eval_rule["id"].as_u64().unwrap();
    let groups = a.ok(&s, Method::GET, &at("/api/signal-queue/groups"), None);
    let group = groups["groups"][0]["id"]
        .as_str()
        .expect("a group")
        .to_string();
    let signals = a.ok(&s, Method::GET, &at("/api/explorer/signals"), None);
    let signal = signals["signals"][0]["id"].as_u64().expect("a signal");
    let accounts = a.ok(&s, Method::GET, &at("/api/accounts"), None);
    let account = accounts["accounts"][0]["id"]
        .as_str()
        .expect("an account")
        .to_string();
    assert!(evaluation["score"].is_string(), "{evaluation}");

    for path in [
        "/api/admin/whoami".to_string(),
        "/api/admin/orgs".into(),
        "/api/admin/keys".into(),
        "/api/admin/tokens".into(),
        "/api/admin/plan".into(),
        "/api/admin/archive".into(),
        "/api/admin/evaluation".into(),
        "/api/explorer/stats".into(),
        "/api/explorer/signals?tab=failed".into(),
        "/api/explorer/signals?tab=pending".into(),
        format!("/api/explorer/signals/{signal}"),
        "/api/leads?email=ada%40acme.com".into(),
        format!("/api/leads/{lead_id}"),
        format!("/api/leads/{lead_id}/timeline"),
        format!("/api/leads/{lead_id}/evaluation-context"),
        format!("/api/leads/{lead_id}/evaluations"),
        "/api/signal-queue/groups?tab=mapped".into(),
        format!("/api/signal-queue/groups/{group}"),
        format!("/api/signal-queue/groups/{group}/suggested-rule"),
        "/api/identity/conflicts".into(),
        "/api/usage".into(),
        "/api/product-orgs/ws_1".into(),
        "/api/mapping-rules".into(),
        format!("/api/mapping-rules/{rid}"),
        "/api/settings/lead-scoring".into(),
        "/api/evaluation-rules".into(),
        format!("/api/evaluation-rules/{eid}"),
        "/api/icp-models".into(),
        format!("/api/icp-models/{mid}"),
        "/api/evaluations".into(),
        "/api/evaluations?limit=1".into(),
        format!("/api/accounts/{account}"),
        "/api/integrations".into(),
        "/api/destinations".into(),
    ] {
        a.ok(&s, Method::GET, &at(&path), None);
    }
    let changed_rule = json!({"name": "Demo request", "signal_type": "Form Fill",
        "conditions": [{"field": "event", "op": "equals", "value": "Demo Requested"}],
        "mappings": [{"field": "email", "path": "email"}]});
    a.ok(
        &s,
        Method::POST,
        "/api/mapping-rules/preview",
        Some(changed_rule.clone()),
    );
    a.ok(
        &s,
        Method::PUT,
        &format!("/api/mapping-rules/{rid}"),
        Some(changed_rule),
    );
    a.ok(
        &s,
        Method::PATCH,
        "/api/settings/lead-scoring",
        Some(json!({"min_signals": 2})),
    );
    a.ok(
        &s,
        Method::PATCH,
        "/api/admin/plan",
        Some(json!({"overage": true})),
    );
    a.ok(
        &s,
        Method::PUT,
        &format!("/api/evaluation-rules/{eid}"),
        Some(json!({"name": "No interns", "conditions": [
            {"field": "lead.title", "op": "not_contains", "value": "intern"}]})),
    );
    a.ok(
        &s,
        Method::POST,
        &format!("/api/icp-models/{mid}/activate"),
        None,
    );
    a.ok(&s, Method::POST, "/api/explorer/process", None);
    a.ok(&s, Method::POST, "/api/admin/evaluation/run", None);
    a.ok(
        &s,
        Method::POST,
        "/api/signals/rehydrate",
        Some(json!({"from": "2026-01-01", "to": "2026-01-31", "ttl_hours": 1})),
    );
    a.ok(
        &s,
        Method::DELETE,
        &format!("/api/evaluation-rules/{eid}"),
        None,
    );
    a.ok(
        &s,
        Method::DELETE,
        &format!("/api/mapping-rules/{rid}"),
        None,
    );
    let tid = token["id"].as_u64().unwrap();
    a.ok(
        &s,
        Method::DELETE,
        &format!("/api/admin/tokens/{tid}"),
        None,
    );
    let kid = key["id"].as_u64().unwrap();
    a.ok(&s, Method::DELETE, &format!("/api/admin/keys/{kid}"), None);
    // Errors conform too.
    a.call(&s, Method::GET, "/api/leads/ld_none", None);
    a.call(
        &s,
        Method::POST,
        "/api/mapping-rules",
        Some(json!({"name": ""})),
    );

    let typed = a.check(&s);
    assert_eq!(typed, a.len(), "every answer here has a typed schema");
}
