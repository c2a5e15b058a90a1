//! The management API under `/api/admin` (JSON, bearer tokens bound to an org and a role).
//!
//! | route | who |
//! |---|---|
//! | `POST /api/admin/orgs`, `GET /api/admin/orgs` | server administrator |
//! | `POST/GET /api/admin/keys`, `DELETE /api/admin/keys/{id}`, `PUT /api/admin/keys/{id}/template` | Editor or above (the documented role matrix) |
//! | `POST/GET /api/admin/tokens`, `DELETE /api/admin/tokens/{id}` | Admin or above (an Owner token: Owner only, never the last) |
//! | `POST /api/admin/tokens/{id}/transfer-ownership` | Owner |
//! | `GET /api/admin/whoami` | any token |

use serde::Deserialize;
use serde_json::{json, Value};
use trailspark_core::tenancy::{
    AdminToken, ApiKey, EndpointType, Org, PlanChange, Principal, ProductOrgTemplate, Role,
};
use trailspark_core::time::{opt_rfc3339, rfc3339};
use trailspark_sources::{Reply, Request};
use warp::http::{Method, StatusCode};

use super::reply::{error, json_body, method_not_allowed, require};
use super::{answers, Api};
use crate::control::NewKey;

/// An API key as the admin API and the CLI show it: never its plaintext or its secret. The
/// answer's schema in `/openapi.json` is this type's.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: u64,
    pub org_id: u64,
    pub name: String,
    pub endpoint_type: EndpointType,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub has_secret: bool,
    /// RFC 3339.
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = Option<String>)]
    pub expires_at: Value,
    #[schema(value_type = Option<String>)]
    pub revoked_at: Value,
    /// Neither revoked nor expired.
    pub active: bool,
    pub template: Option<ProductOrgTemplate>,
    pub allowed_origins: Option<Vec<String>>,
    /// Which browser origins the key takes: `any`, `none` or `listed`.
    pub browser_origins: &'static str,
}

pub fn key_json(k: &ApiKey, now: i64) -> Value {
    let view = KeyView {
        id: k.id,
        org_id: k.org_id.0,
        name: k.name.clone(),
        endpoint_type: k.endpoint_type,
        prefix: k.prefix.clone(),
        has_secret: k.secret.is_some(),
        created_at: rfc3339(k.created_at),
        expires_at: opt_rfc3339(k.expires_at),
        revoked_at: opt_rfc3339(k.revoked_at),
        active: k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now),
        template: k.template.clone(),
        allowed_origins: k.allowed_origins.clone(),
        browser_origins: match &k.allowed_origins {
            Some(_) => "listed",
            None if k.endpoint_type == EndpointType::SignalStaging => "any",
            None => "none",
        },
    };
    serde_json::to_value(view).expect("keys serialize")
}

/// A bearer token as the admin API shows it (never the token itself).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: u64,
    pub org_id: u64,
    pub role: Role,
    pub name: String,
    #[schema(value_type = String)]
    pub created_at: Value,
    #[schema(value_type = Option<String>)]
    pub revoked_at: Value,
}

fn token_json(t: &AdminToken) -> Value {
    serde_json::to_value(token_view(t)).expect("tokens serialize")
}

fn token_view(t: &AdminToken) -> TokenView {
    TokenView {
        id: t.id,
        org_id: t.org_id.0,
        role: t.role,
        name: t.name.clone(),
        created_at: rfc3339(t.created_at),
        revoked_at: opt_rfc3339(t.revoked_at),
    }
}

/// `GET /api/admin/whoami`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub org_id: u64,
    pub role: Role,
    /// Whether the caller is the server administrator (creates and lists orgs).
    pub server_admin: bool,
}

/// An org as the admin API shows it; its creation's answer adds the Owner token.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OrgView {
    pub id: u64,
    pub name: String,
    #[schema(value_type = Option<String>)]
    pub created_at: Value,
    /// The new org's Owner token: shown only in the answer that created the org.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_token: Option<String>,
}

impl OrgView {
    fn of(o: &Org, owner_token: Option<String>) -> Value {
        let view = OrgView {
            id: o.id.0,
            name: o.name.clone(),
            created_at: rfc3339(o.created_at),
            owner_token,
        };
        serde_json::to_value(view).expect("orgs serialize")
    }
}

/// Parses `expires_at`: RFC 3339 or null.
fn parse_expiry(v: &Option<String>) -> Result<Option<i64>, Reply> {
    match v {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("expires_at `{s}` is not RFC 3339"),
                )
            }),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrg {
    name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    name: String,
    #[serde(default = "default_endpoint")]
    endpoint_type: EndpointType,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    template: Option<ProductOrgTemplate>,
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
}

/// `PATCH /api/admin/keys/{id}`: what may change on a key after creation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchKey {
    /// `null` returns the key to its type's default; absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    allowed_origins: Option<Option<Vec<String>>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(d).map(Some)
}

fn default_endpoint() -> EndpointType {
    EndpointType::SignalStaging
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    role: Role,
    #[serde(default)]
    name: String,
}

/// Only the server administrator manages the archive and retention (they span every org).
fn server_admin(p: &Principal, what: &str) -> Result<(), Reply> {
    if p.server_admin {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only the server administrator {what}"),
        ))
    }
}

/// `/api/admin/…` below `/api/admin`, for principal `p`.
pub async fn dispatch(
    api: &Api,
    p: Principal,
    segs: &[&str],
    req: Request,
) -> Result<Reply, Reply> {
    let control = &api.control;
    let now = chrono::Utc::now().timestamp_millis();
    let id = |s: &str| {
        s.parse::<u64>().map_err(|_| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such id `{s}`"),
            )
        })
    };
    let method = req.method.clone();
    match (segs, &method) {
        (["whoami"], &Method::GET) => Ok(Reply::json(
            StatusCode::OK,
            serde_json::to_value(WhoAmI {
                org_id: p.org_id.0,
                role: p.role,
                server_admin: p.server_admin,
            })
            .expect("serializes"),
        )),
        (["orgs"], &Method::POST) => {
            if !p.server_admin {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "only the server administrator creates orgs",
                ));
            }
            let body: CreateOrg = json_body(req).await?;
            let (org, token) = control.create_org(&body.name).await?;
            Ok(Reply::json(
                StatusCode::CREATED,
                OrgView::of(&org, Some(token)),
            ))
        }
        (["orgs"], &Method::GET) => {
            if !p.server_admin {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "only the server administrator lists orgs",
                ));
            }
            let reg = control.registry.read().unwrap();
            let orgs: Vec<Value> = reg.orgs().map(|o| OrgView::of(o, None)).collect();
            Ok(Reply::json(StatusCode::OK, json!({"orgs": orgs})))
        }
        (["keys"], &Method::POST) => {
            require(&p, Role::Editor)?;
            let body: CreateKey = json_body(req).await?;
            let new = NewKey {
                name: body.name,
                endpoint_type: body.endpoint_type,
                secret: body.secret,
                expires_at: parse_expiry(&body.expires_at)?,
                template: body.template,
                allowed_origins: body.allowed_origins,
            };
            let created = control.create_key(p.org_id, new).await?;
            let mut v = key_json(&created.key, now);
            v["key"] = json!(created.plaintext);
            if let Some(s) = created.secret {
                v["secret"] = json!(s);
            }
            Ok(Reply::json(StatusCode::CREATED, v))
        }
        (["keys"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let reg = control.registry.read().unwrap();
            let keys: Vec<Value> = reg.keys_of(p.org_id).map(|k| key_json(k, now)).collect();
            Ok(Reply::json(StatusCode::OK, json!({"keys": keys})))
        }
        (["keys", k], &Method::DELETE) => {
            require(&p, Role::Editor)?;
            let key = control.revoke_key(p.org_id, id(k)?).await?;
            Ok(Reply::json(StatusCode::OK, key_json(&key, now)))
        }
        (["keys", k], &Method::PATCH) => {
            require(&p, Role::Editor)?;
            let kid = id(k)?;
            let body: PatchKey = json_body(req).await?;
            let key = match body.allowed_origins {
                Some(origins) => control.set_origins(p.org_id, kid, origins).await?,
                None => control.org_key(p.org_id, kid)?,
            };
            Ok(Reply::json(StatusCode::OK, key_json(&key, now)))
        }
        (["keys", k, "template"], &Method::PUT) => {
            require(&p, Role::Editor)?;
            let kid = id(k)?;
            let template: ProductOrgTemplate = json_body(req).await?;
            let key = control.set_template(p.org_id, kid, template).await?;
            Ok(Reply::json(StatusCode::OK, key_json(&key, now)))
        }
        (["plan"], &Method::PUT | &Method::PATCH) => {
            require(&p, Role::Admin)?;
            let change: PlanChange = json_body(req).await?;
            let (plan, pos) = control.change_plan(p.org_id, change).await?;
            let mut v = serde_json::to_value(plan).expect("plans serialize");
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::OK, v))
        }
        (["plan"], &Method::GET) => {
            let plan = control.registry.read().unwrap().plan(p.org_id);
            Ok(Reply::json(
                StatusCode::OK,
                serde_json::to_value(plan).expect("plans serialize"),
            ))
        }
        (["tokens"], &Method::POST) => {
            require(&p, Role::Admin)?;
            let body: CreateToken = json_body(req).await?;
            let (t, plaintext) = control.create_token(&p, body.role, &body.name).await?;
            let mut v = token_json(&t);
            v["token"] = json!(plaintext);
            Ok(Reply::json(StatusCode::CREATED, v))
        }
        (["tokens"], &Method::GET) => {
            require(&p, Role::Admin)?;
            let reg = control.registry.read().unwrap();
            let tokens: Vec<Value> = reg.tokens_of(p.org_id).map(token_json).collect();
            Ok(Reply::json(StatusCode::OK, json!({"tokens": tokens})))
        }
        (["tokens", t], &Method::DELETE) => {
            require(&p, Role::Admin)?;
            let tok = control.revoke_token(&p, id(t)?).await?;
            Ok(Reply::json(StatusCode::OK, token_json(&tok)))
        }
        (["tokens", t, "transfer-ownership"], &Method::POST) => {
            let (owner, previous) = control.transfer_ownership(&p, id(t)?).await?;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::OwnershipTransferred {
                    owner: token_view(&owner),
                    previous_owner: previous.as_ref().map(token_view),
                }),
            ))
        }
        (["archive", "compact"], &Method::POST) => {
            server_admin(&p, "manages the archive")?;
            let archiver = &api.archiver;
            let started = std::time::Instant::now();
            let (partitions, files) = archiver.compact().await.map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "archive_error",
                    e.to_string(),
                )
            })?;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::Compacted {
                    partitions,
                    files_merged: files,
                    duration_ms: started.elapsed().as_millis() as u64,
                }),
            ))
        }
        (["retention", "run"], &Method::POST) => {
            server_admin(&p, "runs retention")?;
            let stats = api.retention.pass().await.map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "archive_error",
                    e.to_string(),
                )
            })?;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::RetentionRun {
                    retired: stats.retired,
                    files_deleted: stats.files_deleted,
                    evicted: stats.evicted,
                }),
            ))
        }
        (["evaluation"], &Method::GET) => {
            server_admin(&p, "sees the evaluator")?;
            let Some(ev) = &api.evaluator else {
                let off = answers::EvaluatorState {
                    enabled: false,
                    scorer: None,
                    interval_secs: None,
                    scorer_calls: None,
                    retrying: None,
                };
                return Ok(Reply::json(StatusCode::OK, answers::json(off)));
            };
            Ok(Reply::json(StatusCode::OK, answers::json(ev.status())))
        }
        (["evaluation", "run"], &Method::POST) => {
            server_admin(&p, "runs evaluations")?;
            let Some(ev) = &api.evaluator else {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "evaluation_disabled",
                    "this server runs with evaluation off (TRAILSPARK_EVALUATION=false)",
                ));
            };
            let started = std::time::Instant::now();
            let n = ev.batch().await;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::EvaluationRun {
                    evaluated: n,
                    duration_ms: started.elapsed().as_millis() as u64,
                    log_position: api.read.applied(),
                }),
            ))
        }
        (["archive"], &Method::GET) => {
            server_admin(&p, "manages the archive")?;
            let st = api.archiver.stats();
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::ArchiveState {
                    files: st.files,
                    buffered_rows: st.buffered_rows,
                    checkpoint: st.checkpoint,
                }),
            ))
        }
        (
            ["archive"]
            | ["evaluation"]
            | ["evaluation", "run"]
            | ["archive", "compact"]
            | ["retention", "run"]
            | ["whoami"]
            | ["orgs"]
            | ["keys"]
            | ["keys", _]
            | ["keys", _, "template"]
            | ["tokens"]
            | ["tokens", _]
            | ["tokens", _, "transfer-ownership"]
            | ["plan"],
            _,
        ) => Err(method_not_allowed(&method)),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint",
        )),
    }
}
