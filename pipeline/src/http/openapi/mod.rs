//! `GET /openapi.json`: an OpenAPI 3.1 document of the whole HTTP surface, built from
//! [`table::OPS`] and the request types themselves.
//!
//! Request bodies' schemas come from the types the handlers deserialize (`utoipa::ToSchema`
//! derived beside `serde::Deserialize`, so a field added to one is in the other). Every
//! error answers the one shape `{"error", "code", "message"}` (some add context fields), so
//! every operation's `default` answer is that schema. `tests/openapi.rs` checks the table
//! against the routers both ways.

mod table;

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use trailspark_sources::Reply;
use utoipa::openapi::{RefOr, Schema};
use warp::http::StatusCode;

pub use table::OPS;

/// Schemas a document's operations refer to, by component name.
pub(super) type Components = Vec<(String, RefOr<Schema>)>;

/// One operation: a method on a path template.
#[derive(Clone, Copy)]
pub struct Op {
    /// Lower case, as OpenAPI writes it.
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub body: Body,
    /// The status of a successful answer.
    pub ok: u16,
    pub query: &'static [Query],
    /// A request body to show, and for schemathesis' examples phase to send (JSON text).
    pub example: Option<&'static str>,
    pub answer: Answer,
}

/// What a successful answer holds, where it is typed.
#[derive(Clone, Copy)]
pub enum Answer {
    /// A JSON object (described by the summary and the README).
    Object,
    /// The schema of a type.
    One(Schemer),
    /// `{"<name>": [<type>, …]}`.
    List(&'static str, Schemer),
    /// A page: `{"<name>": [<type>, …], "next_cursor": <string or null>}`.
    Page(&'static str, Schemer),
    /// A mapping rule's body, as `POST /api/mapping-rules` takes it (a suggested rule is
    /// posted unchanged).
    RuleBody,
}

/// Adds a type's schema to the components and answers a reference to it.
type Schemer = fn(&mut Components) -> RefOr<Schema>;

/// An answer typed by `T`.
pub const fn one<T: utoipa::ToSchema>() -> Answer {
    Answer::One(schema_of::<T>)
}

/// An answer listing `T`s under `name`.
pub const fn list<T: utoipa::ToSchema>(name: &'static str) -> Answer {
    Answer::List(name, schema_of::<T>)
}

/// A page of `T`s under `name`, continued by `next_cursor`.
pub const fn page<T: utoipa::ToSchema>(name: &'static str) -> Answer {
    Answer::Page(name, schema_of::<T>)
}

/// A query parameter: name, JSON type, description.
pub type Query = (&'static str, &'static str, &'static str);

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Auth {
    /// Anyone.
    None,
    /// `Authorization: Bearer <token>`; the summary names the least role.
    Bearer,
    /// An API key (`sk_…`) in the path; keys created with a secret also need it in
    /// `Trailspark-Api-Secret`, `X-Api-Secret` or an `X-Signature` HMAC.
    PathKey,
    /// A Segment write key (an API key) as the Basic user, or `writeKey` in the body.
    WriteKey,
}

/// What an operation's request body is.
#[derive(Clone, Copy)]
pub enum Body {
    Empty,
    /// A JSON object, or an array of them (a batch).
    Signal,
    /// A JSON array of objects, or `{"batch": [...]}`.
    Signals,
    /// Newline-delimited JSON.
    Ndjson,
    /// A Segment message (JSON, or `text/plain` holding JSON, as analytics.js sends).
    Segment,
    /// Any JSON.
    Any,
    /// A mapping rule's definition and `reprocess`.
    Rule,
    /// The schema of a type, and the components it refers to.
    Typed(Schemer),
}

/// A request body typed by `T`: its schema, with the schemas it refers to collected.
pub const fn typed<T: utoipa::ToSchema>() -> Body {
    Body::Typed(schema_of::<T>)
}

fn schema_of<T: utoipa::ToSchema>(components: &mut Components) -> RefOr<Schema> {
    T::schemas(components);
    let name = T::name();
    components.push((name.to_string(), T::schema()));
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

/// The document, built once.
pub fn document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec(&build()).expect("the document serializes"))
}

pub fn serve() -> Reply {
    Reply::bytes(StatusCode::OK, "application/json", document().to_vec())
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error", "code", "message"],
        "properties": {
            "error": {"type": "string", "description": "the error's code (kept for clients of the first API)"},
            "code": {"type": "string", "description": "what went wrong, stable for programs: unauthorized, invalid_request, not_found, rate_limited …"},
            "message": {"type": "string", "description": "what went wrong, for people"}
        },
        "additionalProperties": true
    })
}

/// The answers whose shape several operations share, and the signal record, whose schema
/// is generated from the archive's columns.
fn answer_schemas() -> [(&'static str, Value); 5] {
    [
        (
            "ProductOrgAccepted",
            json!({
                "type": "object",
                "description": "a product org update, durable in the log",
                "required": ["id", "product_org_id", "log_position", "duplicate", "message", "field_errors", "warnings"],
                "properties": {
                    "id": {"type": "integer"},
                    "product_org_id": {"type": "string"},
                    "log_position": {"type": "integer"},
                    "duplicate": {"type": "boolean"},
                    "message": {"type": "string"},
                    "field_errors": {"type": "object", "description": "template field → why it could not be read from the update"},
                    "warnings": {"type": "object", "description": "template field → what was odd about its value"}
                }
            }),
        ),
        (
            "SignalRecord",
            trailspark_queries::explorer::signals::record_schema(),
        ),
        (
            "Accepted",
            json!({
                "type": "object",
                "description": "one signal, durable in the log",
                "required": ["id", "log_position", "duplicate", "source", "message"],
                "properties": {
                    "id": {"type": "integer"},
                    "log_position": {"type": "integer", "description": "for `?wait_for=` to read this write back"},
                    "duplicate": {"type": "boolean", "description": "the same signal was accepted before; this is its id"},
                    "cold_storage": {"type": "boolean"},
                    "source": {"type": "string"},
                    "message": {"type": "string"}
                }
            }),
        ),
        (
            "BatchResult",
            json!({
                "type": "object",
                "description": "a batch: what was accepted and, item by item, what was refused and why",
                "required": ["accepted", "rejected", "results"],
                "properties": {
                    "accepted": {"type": "integer"},
                    "rejected": {"type": "integer"},
                    "results": {"type": "array", "items": {
                        "type": "object",
                        "required": ["index"],
                        "properties": {
                            "index": {"type": "integer"},
                            "id": {"type": "integer"},
                            "log_position": {"type": "integer"},
                            "duplicate": {"type": "boolean"},
                            "error": {"type": "string", "description": "the item's error code"},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }),
        ),
        (
            "Health",
            json!({
                "type": "object",
                "required": ["status", "log", "log_head", "read_models_position"],
                "properties": {
                    "status": {"type": "string", "description": "ok, degraded, failed, replaying or archive_unwritable"},
                    "log": {"type": "string", "enum": ["journal", "jetstream"]},
                    "log_head": {"type": "integer"},
                    "read_models_position": {"type": "integer"},
                    "reason": {"type": "string"}
                }
            }),
        ),
    ]
}

fn object() -> Value {
    json!({"type": "object", "additionalProperties": true})
}

/// A mapping rule's definition with `reprocess` added: an `allOf` would keep the
/// definition's refusal of unknown fields, `reprocess` among them.
fn rule_body_schema(components: &mut Components) -> Value {
    use utoipa::{PartialSchema, ToSchema};
    type Def = trailspark_core::rules::RuleDef;
    Def::schemas(components);
    let mut schema = serde_json::to_value(Def::schema()).expect("schemas serialize");
    schema["properties"]["reprocess"] = json!({
        "type": "boolean",
        "description": "re-derive the signals the change affects (default false)"
    });
    schema
}

fn request_body(op: &Op, components: &mut Components) -> Option<Value> {
    let body = op.body;
    let content = match body {
        Body::Empty => return None,
        Body::Signal => json!({"application/json": {"schema": {"oneOf": [
            object(), {"type": "array", "items": object()}
        ]}}}),
        Body::Signals => json!({"application/json": {"schema": {"oneOf": [
            {"type": "array", "items": object()},
            {"type": "object", "required": ["batch"], "properties": {"batch": {"type": "array", "items": object()}}}
        ]}}}),
        Body::Ndjson => json!({"application/x-ndjson": {"schema": {"type": "string"}}}),
        Body::Segment => json!({
            "application/json": {"schema": object()},
            "text/plain": {"schema": {"type": "string", "description": "a Segment message as JSON text"}}
        }),
        Body::Any => json!({"application/json": {"schema": {}}}),
        Body::Rule => json!({"application/json": {"schema": rule_body_schema(components)}}),
        Body::Typed(f) => {
            let schema = serde_json::to_value(f(components)).expect("schemas serialize");
            json!({"application/json": {"schema": schema}})
        }
    };
    let mut content = content;
    if let (Some(example), Some(media)) = (op.example, content.get_mut("application/json")) {
        media["example"] = serde_json::from_str(example).expect("examples are JSON");
    }
    // A retry without a body retries every failed delivery.
    let required = !op.path.ends_with("/retry");
    Some(json!({"required": required, "content": content}))
}

fn ok_response(op: &Op, components: &mut Components) -> Value {
    let typed = |schema: RefOr<Schema>| serde_json::to_value(schema).expect("schemas serialize");
    match op.answer {
        Answer::Object => {}
        Answer::One(f) => {
            let schema = typed(f(components));
            return json!({"description": op.summary, "content": {"application/json": {"schema": schema}}});
        }
        Answer::List(name, f) => {
            let items = typed(f(components));
            let schema = json!({"type": "object", "required": [name], "properties": {name: {"type": "array", "items": items}}});
            return json!({"description": op.summary, "content": {"application/json": {"schema": schema}}});
        }
        Answer::RuleBody => {
            let schema = rule_body_schema(components);
            return json!({"description": op.summary, "content": {"application/json": {"schema": schema}}});
        }
        Answer::Page(name, f) => {
            let items = typed(f(components));
            let schema = json!({"type": "object", "required": [name, "next_cursor"], "properties": {
                name: {"type": "array", "items": items},
                "next_cursor": {"type": ["string", "null"], "description": "the `cursor` of the next page; null on the last"}
            }});
            return json!({"description": op.summary, "content": {"application/json": {"schema": schema}}});
        }
    }
    let content = match (op.method, op.path) {
        ("head", _) => return json!({"description": "the headers of the GET"}),
        (_, "/metrics") => json!({"text/plain": {"schema": {"type": "string"}}}),
        (_, "/js/trailspark.js") => {
            json!({"application/javascript": {"schema": {"type": "string"}}})
        }
        (_, "/api/sql") => json!({
            "application/json": {"schema": {"type": "object", "required": ["columns", "rows"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": {"type": "array"}}
            }}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}
        }),
        (_, "/healthz" | "/readyz") => {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}})
        }
        ("post" | "put" | "patch", p)
            if p.starts_with("/api/signal-staging/webhook/") && !p.ends_with("/batch") =>
        {
            json!({"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Accepted"},
                {"$ref": "#/components/schemas/BatchResult"}
            ]}}})
        }
        ("post", "/api/product-orgs/webhook/{key}") => {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/ProductOrgAccepted"}}})
        }
        ("post" | "put" | "patch", p)
            if p.ends_with("/batch")
                || p.starts_with("/api/signal-staging/bulk/")
                || (p.starts_with("/v1/") && p != "/v1/m") =>
        {
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}})
        }
        _ => json!({"application/json": {"schema": object()}}),
    };
    json!({"description": op.summary, "content": content})
}

fn operation(op: &Op, components: &mut Components) -> Value {
    let mut params: Vec<Value> = path_params(op.path)
        .map(|name| {
            let description = match name {
                "key" => "an API key (`sk_…`)",
                "source" => "the signals' source label",
                "kind" => "salesforce, hubspot or airtable",
                _ => "the record's id",
            };
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}, "description": description})
        })
        .collect();
    for (name, ty, description) in op.query {
        params.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": description}));
    }
    let mut responses = Map::new();
    responses.insert(op.ok.to_string(), ok_response(op, components));
    if matches!(op.path, "/healthz" | "/readyz") && op.method == "get" {
        responses.insert("503".into(), json!({"description": "not live or not ready, with the reason", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}));
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "an error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }),
    );
    let mut v = json!({
        "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.', '-'], "_")),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    });
    match op.auth {
        Auth::None | Auth::PathKey => v["security"] = json!([]),
        Auth::Bearer => v["security"] = json!([{"bearer": []}]),
        Auth::WriteKey => v["security"] = json!([{"writeKey": []}, {}]),
    }
    if let Some(body) = request_body(op, components) {
        v["requestBody"] = body;
    }
    v
}

/// The methods the document lists for `path` (a concrete path), as an `Allow` header lists
/// them; `None` when no operation has that path.
pub fn allowed(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let fits = |template: &str| {
        let t: Vec<&str> = template.trim_matches('/').split('/').collect();
        t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    };
    // A literal segment wins over a variable one (`/keys/{id}` vs a literal sibling).
    let matching: Vec<&Op> = OPS.iter().filter(|op| fits(op.path)).collect();
    let best = matching
        .iter()
        .map(|op| op.path.matches('{').count())
        .min()?;
    let methods: Vec<String> = matching
        .iter()
        .filter(|op| op.path.matches('{').count() == best)
        .map(|op| op.method.to_uppercase())
        .collect();
    Some(methods.join(", "))
}

/// The `{name}` parts of a path template.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn build() -> Value {
    let mut components = Vec::new();
    let mut paths = Map::new();
    for op in OPS {
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method] = operation(op, &mut components);
    }
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for (name, schema) in answer_schemas() {
        schemas.insert(name.into(), schema);
    }
    for (name, schema) in components {
        schemas.insert(
            name,
            serde_json::to_value(schema).expect("schemas serialize"),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "trailspark",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Signal ingestion, identity, mapping rules, lead evaluation and CRM delivery. Errors answer {\"error\", \"code\", \"message\"}. Ingestion paths also answer CORS preflights (OPTIONS) by each key's allowed origins.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an org token (`ts_…`) with its role, or the server administrator's"},
                "writeKey": {"type": "http", "scheme": "basic", "description": "a Segment write key (an API key) as the user, no password; analytics.js may send `writeKey` in the body instead"}
            }
        }
    })
}
