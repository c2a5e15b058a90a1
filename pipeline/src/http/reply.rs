//! What the API's handlers share: error bodies, authentication and roles, JSON bodies, query
//! parameters, and how each layer's errors become answers.

use serde::Deserialize;
use serde_json::{json, Value};
use trailspark_core::tenancy::{Principal, Role};
use trailspark_queries::explorer::ViewError;
use trailspark_queries::SqlError;
use trailspark_sources::{body, Reply, Request};
use warp::http::StatusCode;

use crate::control::{ConfigError, Control};

/// Largest JSON body of the admin and configuration API.
const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: `{"error": code, "code": code, "message": …}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({"error": code, "code": code, "message": message.into()}),
    )
}

pub fn not_found(what: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such {what}"),
    )
}

pub fn bad_request(message: impl Into<String>) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

pub fn method_not_allowed(method: &warp::http::Method) -> Reply {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here"),
    )
}

impl From<ConfigError> for Reply {
    fn from(e: ConfigError) -> Reply {
        match &e {
            ConfigError::Invalid(m) => bad_request(m.clone()),
            ConfigError::InvalidField(field, m) => {
                let mut r = bad_request(m.clone());
                r.body["field"] = json!(field);
                r
            }
            ConfigError::LimitReached(m, retry) => {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "limit_reached", m.clone());
                r.retry_after = Some((*retry).min(u64::from(u32::MAX)) as u32);
                r
            }
            ConfigError::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ConfigError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            ConfigError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m.clone()),
            ConfigError::Log(_) => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_unavailable",
                    e.to_string(),
                );
                r.retry_after = Some(1);
                r
            }
        }
    }
}

/// A view's error as an answer.
pub fn view_error(e: ViewError) -> Reply {
    {
        match e {
            ViewError::BadRequest(m) => bad_request(m),
            ViewError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            ViewError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ViewError::TooMany(m) => error(StatusCode::UNPROCESSABLE_ENTITY, "too_many_signals", m),
            ViewError::Lookup(e) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string())
            }
        }
    }
}

/// A SQL error's answer: its status, code and, for 429, `Retry-After`.
pub fn sql_error(e: SqlError) -> Reply {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = error(status, e.code(), e.to_string());
    r.retry_after = e.retry_after();
    r
}

pub fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers.get("authorization")?.to_str().ok()?.trim();
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// The principal of the request's bearer token, or the 401 to answer.
pub fn authenticate(control: &Control, req: &Request) -> Result<Principal, Reply> {
    bearer(req)
        .and_then(|t| control.principal(t))
        .inspect(|p| super::access::record_org(p.org_id.0))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` is required",
            )
        })
}

pub fn require(p: &Principal, role: Role) -> Result<(), Reply> {
    if p.role >= role {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the {} role or above; the token is {}",
                role.as_str(),
                p.role.as_str()
            ),
        ))
    }
}

/// Reads a JSON body of at most 64 KiB. An unknown field is refused by name (`field`).
pub async fn json_body<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, Reply> {
    json_body_or(req, None).await
}

/// [`json_body`], answering `empty` when the body is empty (a body that may be left out).
pub async fn json_body_or<T: for<'de> Deserialize<'de>>(
    req: Request,
    empty: Option<T>,
) -> Result<T, Reply> {
    let len = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let raw = body::read_limited(req.body, len, BODY_LIMIT)
        .await
        .map_err(Reply::from)?;
    if let (true, Some(v)) = (raw.iter().all(u8::is_ascii_whitespace), empty) {
        return Ok(v);
    }
    serde_json::from_slice(&raw).map_err(|e| {
        let message = e.to_string();
        let mut r = bad_request(format!("body: {message}"));
        // Name the field a typo introduced, for clients that read it.
        if let Some(field) = message
            .split("unknown field `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
        {
            r.body["field"] = json!(field);
        }
        r
    })
}

/// A query parameter, decoded as `application/x-www-form-urlencoded` (how clients send
/// query strings); the first one when it is repeated.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A path segment, percent-decoded.
pub fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `v` with the log position the answer reflects.
pub fn with_position(mut v: Value, pos: u64) -> Reply {
    v["log_position"] = json!(pos);
    Reply::json(StatusCode::OK, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_paths_are_decoded() {
        assert_eq!(
            query_param("email=a%40b.io&x=100%", "email").as_deref(),
            Some("a@b.io")
        );
        assert_eq!(
            query_param("email=a%40b.io&x=100%", "x").as_deref(),
            Some("100%")
        );
        assert_eq!(path_segment("ws%2F1+a"), "ws/1+a");
    }
}
