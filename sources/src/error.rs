//! The ingestion edge's errors, each with its HTTP status and a stable machine-readable code.

use thiserror::Error;
pub use trailspark_core::admission::LimitReached;
use warp::http::StatusCode;

/// An error answered to a producer. `code` values are part of the interface.
#[derive(Debug, Clone, Error)]
pub enum IngestError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    NotAnObject(String),
    #[error("JSON nesting is deeper than {0} levels")]
    TooDeep(usize),
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    TooManyItems(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown API key")]
    InvalidApiKey,
    #[error("API key has been revoked")]
    KeyInactive,
    #[error("API key has expired")]
    KeyExpired,
    #[error("this API key requires its secret in X-Api-Secret or an X-Signature HMAC")]
    MissingSecret,
    #[error("X-Api-Secret or X-Signature does not match the key's secret")]
    InvalidSecret,
    #[error("this API key is a {0} key and cannot be used on this endpoint")]
    WrongEndpointType(&'static str),
    #[error(
        "the API key belongs to another organization than {subject_org}, the one the subject names"
    )]
    WrongOrg { subject_org: u64 },
    #[error("this API key does not allow browser requests from origin `{0}`; add it to the key's allowed_origins")]
    OriginNotAllowed(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("the organization's raw signal limit of {} for {} is reached; enable overages or upgrade the plan", .0.limit, .0.period())]
    LimitReached(LimitReached),
    #[error("{0}")]
    RequestTimeout(String),
    /// With the methods the endpoint takes, as the `Allow` header lists them.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    #[error("no such endpoint")]
    NotFound,
    #[error("Content-Encoding {0} is not supported (use gzip or none)")]
    UnsupportedEncoding(String),
    #[error("ingestion is overloaded; retry shortly")]
    Overloaded,
    /// The log cannot take writes now (its cause kept, shared: errors are cloned per item).
    #[error("the log is unavailable: {0}")]
    Unavailable(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        use IngestError::*;
        match self {
            InvalidJson(_) | NotAnObject(_) | TooDeep(_) | TooManyItems(_) | BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidApiKey | KeyInactive | KeyExpired | MissingSecret | InvalidSecret => {
                StatusCode::UNAUTHORIZED
            }
            WrongEndpointType(_) | WrongOrg { .. } | OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotFound => StatusCode::NOT_FOUND,
            Overloaded | Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use IngestError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            NotAnObject(_) => "not_an_object",
            TooDeep(_) => "too_deep",
            TooLarge(_) => "payload_too_large",
            TooManyItems(_) => "too_many_items",
            BadRequest(_) => "bad_request",
            InvalidApiKey => "invalid_api_key",
            KeyInactive => "api_key_inactive",
            KeyExpired => "api_key_expired",
            MissingSecret => "missing_secret",
            InvalidSecret => "invalid_secret",
            WrongEndpointType(_) => "wrong_endpoint_type",
            WrongOrg { .. } => "wrong_org",
            OriginNotAllowed(_) => "origin_not_allowed",
            Unprocessable(_) => "unprocessable",
            LimitReached(_) => "limit_reached",
            RequestTimeout(_) => "request_timeout",
            MethodNotAllowed(_) => "method_not_allowed",
            NotFound => "not_found",
            UnsupportedEncoding(_) => "unsupported_encoding",
            Overloaded => "overloaded",
            Unavailable(_) => "log_unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait before retrying: for the 503s, and for a refusal at
    /// the plan's limit (decided once, in [`LimitReached`]).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            IngestError::Overloaded | IngestError::Unavailable(_) => Some(1),
            IngestError::LimitReached(l) => Some(l.retry_after_secs as u32),
            _ => None,
        }
    }

    /// The JSON error body: `{"error": code, "code": code, "message": text}`. `code` repeats
    /// `error` because Segment's SDKs read `code` and `message` from error bodies.
    pub fn body(&self) -> serde_json::Value {
        let mut b = serde_json::json!({"error": self.code(), "code": self.code(), "message": self.to_string()});
        if let IngestError::LimitReached(l) = self {
            b["limit"] = serde_json::json!({"name": "raw_signal_limit", "value": l.limit, "period": l.period()});
        }
        b
    }
}
