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
}
