//! The boundary between the HTTP edge and the log: what the edge needs from the server, and
//! the shared step that turns normalized items into a response with per-item results.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};
use trailspark_core::tenancy::{ApiKey, KeyRejection};
use trailspark_core::{LogEntry, SignalRecord};

use crate::error::IngestError;

/// What the server provides to the ingestion routes. Implemented by the pipeline over its
/// registry and its log; tests can implement it over plain collections.
pub trait Ingest: Send + Sync + 'static {
    /// Looks up a presented API key at time `now_ms`.
    fn check_key(&self, presented: &str, now_ms: i64) -> Result<ApiKey, KeyRejection>;

    /// Makes `entries` durable, in order, and answers one result per entry: a receipt, or why
    /// that entry was refused (e.g. the org's signal limit). Resolves only once every accepted
    /// entry is durable (journal fsync or JetStream ack); on a whole-request error, none of the
    /// entries may be reported as accepted.
    fn submit(&self, entries: Vec<LogEntry>) -> SubmitFuture;

    /// Waits until what the log holds up to `pos` is applied downstream (readable), or
    /// `timeout` passes; answers whether it is. The NATS source acks a message only then.
    /// Without a downstream to wait for, everything durable counts as applied.
    /// Whether an anonymous signal's identifiers already belong to a lead, so that it goes
    /// straight to the lead rather than to cold storage. Without read models nothing is known.
    fn joins_lead(&self, record: &SignalRecord) -> bool {
        let _ = record;
        false
    }

    /// The URL browsers reach the server at, when configured (analytics.js's settings point
    /// at it); `None` lets each request's host tell.
    fn public_url(&self) -> Option<&str> {
        None
    }

    fn wait_applied(&self, pos: u64, timeout: std::time::Duration) -> WaitFuture {
        let _ = (pos, timeout);
        Box::pin(std::future::ready(true))
    }
}

/// The answer of [`Ingest::wait_applied`].
pub type WaitFuture = Pin<Box<dyn Future<Output = bool> + Send + 'static>>;

/// The answer of [`Ingest::submit`].
pub type SubmitFuture = Pin<
    Box<
        dyn Future<Output = Result<Vec<Result<Receipt, IngestError>>, IngestError>>
            + Send
            + 'static,
    >,
>;

/// Where an entry landed on the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The log position; for a recognised retry, the position of the original.
    pub position: u64,
    /// The entry was a retry of one already on the log and was not appended again.
    pub duplicate: bool,
}

/// The message of the single-signal 202 (exact, as the hosted product answers).
pub const ACCEPTED_MESSAGE: &str = "Signal received and queued for processing";

/// Whether an accepted signal waits in cold storage: anonymous, and its anonymous id not
/// (yet) known to belong to a lead.
pub fn cold_storage(ingest: &dyn Ingest, record: &SignalRecord) -> bool {
    record.anonymous && !ingest.joins_lead(record)
}

/// The 202 body of one accepted signal: the four documented fields plus our `log_position`
/// (for read-your-writes waits) and `duplicate`. `cold` is [`cold_storage`]'s answer.
pub fn accepted_body(record: &SignalRecord, receipt: Receipt, cold: bool) -> Value {
    json!({
        "id": receipt.position,
        "message": ACCEPTED_MESSAGE,
        "source": record.source,
        "cold_storage": cold,
        "log_position": receipt.position,
        "duplicate": receipt.duplicate,
    })
}

/// One item of a batch, bulk or Segment batch request, after parsing and normalization.
pub struct ItemOutcome {
    pub index: usize,
    /// 1-based line in the body, for bulk bodies.
    pub line: Option<u64>,
    pub record: Result<SignalRecord, IngestError>,
}

/// Totals and per-item results of a multi-item request.
pub struct ItemResults {
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<Value>,
    /// The first refusal at the plan's limit, if an item got one.
    pub limited: Option<IngestError>,
}

impl ItemResults {
    pub fn new() -> Self {
        ItemResults {
            accepted: 0,
            rejected: 0,
            results: Vec::new(),
            limited: None,
        }
    }

    pub fn reject(&mut self, index: usize, line: Option<u64>, err: &IngestError) {
        self.rejected += 1;
        if matches!(err, IngestError::LimitReached(_)) && self.limited.is_none() {
            self.limited = Some(err.clone());
        }
        let mut r = json!({"index": index, "error": err.code(), "message": err.to_string()});
        if let Some(line) = line {
            r["line"] = json!(line);
        }
        self.results.push(r);
    }

    /// `ok`, unless nothing was accepted and some item hit the signal limit: then 429, so
    /// that clients back off as they would for a single signal.
    pub fn status(&self, ok: warp::http::StatusCode) -> warp::http::StatusCode {
        if self.accepted == 0 && self.limited.is_some() {
            warp::http::StatusCode::TOO_MANY_REQUESTS
        } else {
            ok
        }
    }

    /// The `Retry-After` of the answer: a 429's, from its refusal.
    pub fn retry_after(&self) -> Option<u32> {
        (self.accepted == 0)
            .then(|| self.limited.as_ref().and_then(IngestError::retry_after))
            .flatten()
    }

    pub fn to_json(&self) -> Value {
        json!({"accepted": self.accepted, "rejected": self.rejected, "results": self.results})
    }
}

impl Default for ItemResults {
    fn default() -> Self {
        Self::new()
    }
}

/// Submits the good items of `outcomes` in one append (one durable write for the whole
/// request) and records per-item results in `into`, in item order.
pub async fn submit_items(
    ingest: &dyn Ingest,
    outcomes: Vec<ItemOutcome>,
    into: &mut ItemResults,
) -> Result<(), IngestError> {
    let mut entries = Vec::with_capacity(outcomes.len());
    let mut slots = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        match o.record {
            Ok(rec) => {
                let cold = cold_storage(ingest, &rec);
                slots.push((o.index, o.line, Ok((rec.source.clone(), cold))));
                entries.push(LogEntry::Signal(rec));
            }
            Err(e) => slots.push((o.index, o.line, Err(e))),
        }
    }
    let receipts = if entries.is_empty() {
        Vec::new()
    } else {
        ingest.submit(entries).await?
    };
    let mut receipts = receipts.into_iter();
    for (index, line, slot) in slots {
        match slot {
            Ok((source, cold)) => {
                let next = receipts.next();
                let r = match next.ok_or_else(|| IngestError::Internal("missing receipt".into()))? {
                    Ok(r) => r,
                    Err(e) => {
                        into.reject(index, line, &e);
                        continue;
                    }
                };
                into.accepted += 1;
                let mut v = json!({
                    "index": index,
                    "id": r.position,
                    "source": source,
                    "cold_storage": cold,
                    "log_position": r.position,
                    "duplicate": r.duplicate,
                });
                if let Some(line) = line {
                    v["line"] = json!(line);
                }
                into.results.push(v);
            }
            Err(e) => into.reject(index, line, &e),
        }
    }
    Ok(())
}
