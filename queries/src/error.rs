//! Why a query was refused or failed, with the HTTP status and code each answers with.

use std::time::Duration;

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("only read queries (SELECT, WITH, VALUES, EXPLAIN) are allowed: {0}")]
    NotAQuery(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooComplex(String),
    #[error("{0}; retry when one has finished")]
    Busy(String),
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the result is larger than {0}; add a LIMIT or aggregate")]
    TooLarge(String),
    #[error("the query needs more memory than allowed: {0}")]
    ResourcesExhausted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::NotAQuery(_) => "not_a_query",
            SqlError::Invalid(_) => "invalid_sql",
            SqlError::TooComplex(_) => "query_too_complex",
            SqlError::Busy(_) => "too_many_queries",
            SqlError::Timeout(_) => "query_timeout",
            SqlError::TooLarge(_) => "result_too_large",
            SqlError::ResourcesExhausted(_) => "resources_exhausted",
            SqlError::Internal(_) => "internal_error",
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        match self {
            SqlError::NotAQuery(_) | SqlError::Invalid(_) | SqlError::TooComplex(_) => 400,
            SqlError::Busy(_) => 429,
            SqlError::TooLarge(_) => 413,
            SqlError::Timeout(_) => 408,
            SqlError::ResourcesExhausted(_) => 422,
            SqlError::Internal(_) => 500,
        }
    }

    /// Seconds to wait before retrying, for the answers that ask for it.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, SqlError::Busy(_)).then_some(1)
    }
}

pub(crate) fn classify(e: DataFusionError) -> SqlError {
    // Operators wrap what a memory pool or a bounded function refused in errors of their
    // own (arrow's, a spawned task's); the root says what happened.
    if let DataFusionError::ResourcesExhausted(m) = e.find_root() {
        return SqlError::ResourcesExhausted(m.clone());
    }
    match e {
        DataFusionError::ResourcesExhausted(m) => SqlError::ResourcesExhausted(m),
        DataFusionError::Context(_, inner) => classify(*inner),
        DataFusionError::Shared(inner) => classify(DataFusionError::External(Box::new(inner))),
        DataFusionError::ObjectStore(e) => SqlError::Internal(e.to_string()),
        DataFusionError::IoError(e) => SqlError::Internal(e.to_string()),
        DataFusionError::Internal(m) => SqlError::Internal(m),
        DataFusionError::Plan(m)
            if [
                "DDL not supported",
                "DML not supported",
                "Statement not supported",
            ]
            .iter()
            .any(|p| m.starts_with(p)) =>
        {
            SqlError::NotAQuery(m)
        }
        DataFusionError::External(e) => SqlError::Invalid(e.to_string()),
        other => SqlError::Invalid(other.to_string()),
    }
}
