//! The destinations API: where evaluations are written back to CRMs.
//!
//! | route | needs |
//! |---|---|
//! | `GET /api/destinations[/{id}]`, `GET /api/destinations/{id}/status` | any role |
//! | `GET /api/destinations/{id}/deliveries?status=failed\|delivered\|all&lead_id=&limit=` | any role |
//! | `POST /api/destinations`, `PATCH`/`DELETE /api/destinations/{id}` | Admin or above |
//! | `POST /api/destinations/{id}/retry` (`{"lead_ids": [...]}` optional) | Admin or above |

use serde_json::{json, Value};
use trailspark_core::tenancy::{Principal, Role};
use trailspark_sources::{Reply, Request};
use warp::http::{Method, StatusCode};

use super::reply::{
    authenticate, bad_request, error, json_body, json_body_or, method_not_allowed, not_found,
    query_param, require,
};
use super::{answers, Api};
use crate::services::destinations::{DestinationInput, DestinationService};

enum Route<'a> {
    List,
    One(&'a str),
    Status(&'a str),
    Deliveries(&'a str),
    Retry(&'a str),
}

impl<'a> Route<'a> {
    fn parse(segs: &[&'a str]) -> Option<Route<'a>> {
        Some(match segs {
            ["destinations"] => Route::List,
            ["destinations", id] => Route::One(id),
            ["destinations", id, "status"] => Route::Status(id),
            ["destinations", id, "deliveries"] => Route::Deliveries(id),
            ["destinations", id, "retry"] => Route::Retry(id),
            _ => return None,
        })
    }
}

pub fn handles(segs: &[&str]) -> bool {
    Route::parse(segs).is_some()
}

pub async fn route(api: &Api, segs: &[&str], req: Request) -> Option<Reply> {
    let route = Route::parse(segs)?;
    Some(match authenticate(&api.control, &req) {
        Ok(p) => dispatch(api, p, route, req).await.unwrap_or_else(|r| r),
        Err(r) => r,
    })
}

fn service(api: &Api) -> Result<&DestinationService, Reply> {
    api.destinations.as_deref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "destinations_unavailable",
            "destinations are not running on this server",
        )
    })
}

fn id(s: &str) -> Result<u64, Reply> {
    s.parse().map_err(|_| not_found("destination"))
}

/// `{"lead_ids": [...]}` or no body.
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    #[serde(default)]
    lead_ids: Vec<String>,
}

async fn dispatch(api: &Api, p: Principal, route: Route<'_>, req: Request) -> Result<Reply, Reply> {
    let svc = service(api)?;
    let org = p.org_id;
    let method = req.method.clone();
    if method == Method::GET {
        super::api::wait_for(api, org, &req.query).await?;
    }
    match (route, &method) {
        (Route::List, &Method::GET) => {
            let list: Vec<Value> = {
                let reg = api.control.registry.read().unwrap();
                reg.destinations()
                    .of_org(org)
                    .map(|d| svc.view(d))
                    .collect()
            };
            Ok(Reply::json(StatusCode::OK, json!({"destinations": list})))
        }
        (Route::List, &Method::POST) => {
            require(&p, Role::Admin)?;
            let input: DestinationInput = json_body(req).await?;
            let (d, created) = svc.create(org, input).await?;
            let mut v = svc.view(&d);
            v["created_fields"] = json!(created);
            Ok(Reply::json(StatusCode::CREATED, v))
        }
        (Route::One(s), &Method::GET) => {
            let d = api.control.destination(org, id(s)?)?;
            Ok(Reply::json(StatusCode::OK, svc.view(&d)))
        }
        (Route::One(s), &Method::PATCH) => {
            require(&p, Role::Admin)?;
            let input: DestinationInput = json_body(req).await?;
            let (d, created) = svc.update(org, id(s)?, input).await?;
            let mut v = svc.view(&d);
            v["created_fields"] = json!(created);
            Ok(Reply::json(StatusCode::OK, v))
        }
        (Route::One(s), &Method::DELETE) => {
            require(&p, Role::Admin)?;
            let pos = svc.delete(org, id(s)?).await?;
            Ok(Reply::json(
                StatusCode::OK,
                answers::json(answers::Deleted {
                    deleted: true,
                    log_position: pos,
                }),
            ))
        }
        (Route::Status(s), &Method::GET) => {
            let d = api.control.destination(org, id(s)?)?;
            Ok(Reply::json(StatusCode::OK, svc.status(&d)))
        }
        (Route::Deliveries(s), &Method::GET) => {
            let d = api.control.destination(org, id(s)?)?;
            let status = query_param(&req.query, "status");
            let lead = query_param(&req.query, "lead_id");
            let limit = match query_param(&req.query, "limit") {
                None => 100,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| bad_request("`limit` is 1 to 10000"))?,
            };
            Ok(Reply::json(
                StatusCode::OK,
                svc.deliveries(&d, status.as_deref(), lead.as_deref(), limit)?,
            ))
        }
        (Route::Retry(s), &Method::POST) => {
            require(&p, Role::Admin)?;
            let body: RetryBody = json_body_or(req, Some(RetryBody::default())).await?;
            let v = svc.retry(org, id(s)?, body.lead_ids).await?;
            Ok(Reply::json(StatusCode::ACCEPTED, v))
        }
        _ => Err(method_not_allowed(&method)),
    }
}
