//! The CRM integrations API.
//!
//! | route | needs |
//! |---|---|
//! | `GET /api/integrations[/{id}]` | any role |
//! | `POST /api/integrations`, `PATCH`/`DELETE /api/integrations/{id}` | Admin or above |
//! | `POST /api/integrations/{id}/test`, `POST /api/integrations/{id}/sync` | Admin or above |
//! | `GET /api/integrations/{id}/mapping` | any role |
//! | `PUT /api/integrations/{id}/mapping` | Editor or above |
//! | `POST /api/integrations/oauth/{salesforce,hubspot}` | Admin or above |
//! | `GET /api/oauth/callback/{salesforce,hubspot}` | the `state` the start handed out |
//!
//! No answer carries a credential: integrations are shown through [`CrmService::view`].

use serde_json::json;
use trailspark_core::tenancy::{Principal, Role};
use trailspark_sources::{Reply, Request};
use warp::http::{Method, StatusCode};

use super::reply::{
    authenticate, bad_request, error, json_body, method_not_allowed, not_found, require,
};
use super::{answers, Api};
use crate::services::crm::{
    CrmService, IntegrationChange, IntegrationError, NewIntegration, OAuthStart,
};

enum Route<'a> {
    OAuthStart(&'a str),
    Callback(&'a str),
    List,
    One(&'a str),
    Test(&'a str),
    Sync(&'a str),
    Mapping(&'a str),
}

impl<'a> Route<'a> {
    fn parse(segs: &[&'a str]) -> Option<Route<'a>> {
        Some(match segs {
            ["integrations", "oauth", kind] => Route::OAuthStart(kind),
            ["oauth", "callback", kind] => Route::Callback(kind),
            ["integrations"] => Route::List,
            ["integrations", id] => Route::One(id),
            ["integrations", id, "test"] => Route::Test(id),
            ["integrations", id, "sync"] => Route::Sync(id),
            ["integrations", id, "mapping"] => Route::Mapping(id),
            _ => return None,
        })
    }
}

pub fn handles(segs: &[&str]) -> bool {
    Route::parse(segs).is_some()
}

pub async fn route(api: &Api, segs: &[&str], req: Request) -> Option<Reply> {
    let route = Route::parse(segs)?;
    if let Route::Callback(kind) = route {
        if req.method != Method::GET {
            return Some(method_not_allowed(&req.method));
        }
        // The browser returning from the CRM carries no token: the single-use `state` is
        // what ties it to the Admin who started the connection.
        return Some(callback(api, kind, &req.query).await.unwrap_or_else(|r| r));
    }
    Some(match authenticate(&api.control, &req) {
        Ok(p) => dispatch(api, p, route, req).await.unwrap_or_else(|r| r),
        Err(r) => r,
    })
}

impl From<IntegrationError> for Reply {
    fn from(e: IntegrationError) -> Reply {
        match e {
            IntegrationError::Invalid(m) => bad_request(m),
            IntegrationError::UnknownFields(fields) => {
                let names: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{}.{}", f.object, f.field))
                    .collect();
                let mut r = error(
                    StatusCode::BAD_REQUEST,
                    "unknown_crm_fields",
                    format!(
                        "the CRM does not have these mapped fields: {}",
                        names.join(", ")
                    ),
                );
                r.body["fields"] = json!(fields);
                r
            }
            IntegrationError::Crm(e) => error(
                StatusCode::BAD_GATEWAY,
                "crm_unavailable",
                format!("the CRM could not check the change: {e}"),
            ),
            IntegrationError::Config(e) => e.into(),
        }
    }
}

/// The integration's view with the records its syncs brought in, per object.
fn shown(api: &Api, crm: &CrmService, i: &trailspark_core::crm::Integration) -> serde_json::Value {
    let mut view = crm.view(i);
    view.records = Some(api.read.read().org(i.org_id.0).crm.counts(i.id));
    answers::json(view)
}

fn service(api: &Api) -> Result<&CrmService, Reply> {
    api.crm.as_deref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "integrations_unavailable",
            "CRM integrations are not running on this server",
        )
    })
}

async fn callback(api: &Api, kind: &str, query: &str) -> Result<Reply, Reply> {
    let crm = service(api)?;
    let i = crm.oauth_callback(kind, query).await?;
    Ok(Reply::json(StatusCode::CREATED, shown(api, crm, &i)))
}

fn id(s: &str) -> Result<u64, Reply> {
    s.parse().map_err(|_| not_found("integration"))
}

async fn dispatch(api: &Api, p: Principal, route: Route<'_>, req: Request) -> Result<Reply, Reply> {
    let crm = service(api)?;
    let org = p.org_id;
    let method = req.method.clone();
    if method == Method::GET {
        super::api::wait_for(api, org, &req.query).await?;
    }
    match (route, &method) {
        (Route::OAuthStart(kind), &Method::POST) => {
            require(&p, Role::Admin)?;
            let host = req
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let start: OAuthStart = json_body(req).await?;
            let redirect_uri = crm.redirect_uri(kind, host.as_deref());
            let (url, state) = crm.oauth_start(org, kind, start, redirect_uri.clone())?;
            Ok(Reply::json(
                StatusCode::CREATED,
                answers::json(answers::OAuthStarted {
                    authorize_url: url,
                    state,
                    redirect_uri,
                    expires_in: crate::services::crm::PENDING_FOR.as_secs(),
                }),
            ))
        }
        (Route::List, &Method::GET) => {
            let list: Vec<_> = {
                let reg = api.control.registry.read().unwrap();
                reg.integrations().of_org(org).cloned().collect()
            };
            let list: Vec<_> = list.iter().map(|i| shown(api, crm, i)).collect();
            Ok(Reply::json(StatusCode::OK, json!({"integrations": list})))
        }
        (Route::List, &Method::POST) => {
            require(&p, Role::Admin)?;
            let new: NewIntegration = json_body(req).await?;
            let i = crm.create(org, new).await?;
            Ok(Reply::json(StatusCode::CREATED, shown(api, crm, &i)))
        }
        (Route::One(s), &Method::GET) => {
            let i = api.control.integration(org, id(s)?)?;
            Ok(Reply::json(StatusCode::OK, shown(api, crm, &i)))
        }
        (Route::One(s), &Method::PATCH) => {
            require(&p, Role::Admin)?;
            let change: IntegrationChange = json_body(req).await?;
            let i = crm.update(org, id(s)?, change).await?;
            Ok(Reply::json(StatusCode::OK, shown(api, crm, &i)))
        }
        (Route::One(s), &Method::DELETE) => {
            require(&p, Role::Admin)?;
            let pos = api.control.delete_integration(org, id(s)?).await?;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::Deleted {
                    deleted: true,
                    log_position: pos,
                }),
            ))
        }
        (Route::Test(s), &Method::POST) => {
            require(&p, Role::Admin)?;
            let v = crm.test(org, id(s)?).await?;
            Ok(Reply::json(StatusCode::OK, answers::json(v)))
        }
        (Route::Sync(s), &Method::POST) => {
            require(&p, Role::Admin)?;
            let i = api.control.integration(org, id(s)?)?;
            if i.status != trailspark_core::crm::Status::Connected {
                return Err(error(
                    StatusCode::CONFLICT,
                    "disconnected",
                    format!(
                        "integration {} is disconnected: {}",
                        i.id,
                        i.reason.as_deref().unwrap_or("reconnect it first")
                    ),
                ));
            }
            crm.request_sync(i.id);
            Ok(Reply::json(
                StatusCode::ACCEPTED,
                answers::json(answers::SyncRequested {
                    sync: "requested",
                    integration: crm.view(&i),
                }),
            ))
        }
        (Route::Mapping(s), &Method::GET) => {
            let i = api.control.integration(org, id(s)?)?;
            Ok(Reply::json(StatusCode::OK, i.mapping.to_json(i.kind)))
        }
        (Route::Mapping(s), &Method::PUT) => {
            require(&p, Role::Editor)?;
            let mapping: serde_json::Value = json_body(req).await?;
            let change = IntegrationChange {
                mapping: Some(mapping),
                ..Default::default()
            };
            let i = crm.update(org, id(s)?, change).await?;
            Ok(Reply::json(StatusCode::OK, i.mapping.to_json(i.kind)))
        }
        _ => Err(method_not_allowed(&method)),
    }
}
