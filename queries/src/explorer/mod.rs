//! The API's views of the read models (and, for payloads, of the archive): what the explorer,
//! leads, signal-queue and usage endpoints answer, as JSON. The HTTP layer authenticates,
//! parses parameters and maps [`ViewError`] to statuses; everything it shows is built here.

pub mod groups;
pub mod leads;
pub mod preview;
pub mod retrieval;
pub mod signals;
pub mod usage;

use crate::SqlError;

/// Why a view could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A parameter is out of range or malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist in the caller's org (404).
    #[error("{0}")]
    NotFound(String),
    /// This server cannot show it (no archive) (503).
    #[error("{0}")]
    Unavailable(String),
    /// More archived signals match than a retrieval may bring back (422).
    #[error("{0}")]
    TooMany(String),
    /// An archive lookup failed (500).
    #[error(transparent)]
    Lookup(#[from] SqlError),
}

/// Most rows one page may have.
pub const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;

/// The page size and cursor of a list request.
pub struct Page {
    pub limit: usize,
    /// Rows strictly older (smaller id) than this; the first page when `None`.
    pub cursor: Option<u64>,
}

impl Page {
    pub fn parse(limit: Option<String>, cursor: Option<String>) -> Result<Page, ViewError> {
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| ViewError::BadRequest(format!("limit must be 1-{MAX_PAGE}")))?,
        };
        let cursor = cursor
            .map(|c| {
                c.parse().map_err(|_| {
                    ViewError::BadRequest(
                        "cursor must be the next_cursor of a previous page".into(),
                    )
                })
            })
            .transpose()?;
        Ok(Page { limit, cursor })
    }
}
