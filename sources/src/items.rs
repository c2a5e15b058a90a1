//! Turning raw payload bytes into log entries, as every edge does: one item, a batch of
//! them, a product-org update. Errors are per item.

use serde_json::Value;
use trailspark_core::normalize::{self, Context};
use trailspark_core::tenancy::ApiKey;
use trailspark_core::{product_org, LogEntry, ProductOrgRecord};

use crate::error::IngestError;
use crate::http::{BATCH_MAX_ITEMS, EVENT_LIMIT};
use crate::ingest::ItemOutcome;
use crate::parse;

/// Normalizes one item's raw text (size, JSON, object checks, then normalization); errors
/// are per item. Shared by the batch and bulk endpoints and by backfill.
pub fn item_record(
    ctx: &Context<'_>,
    raw: &[u8],
) -> Result<trailspark_core::SignalRecord, IngestError> {
    if raw.len() > EVENT_LIMIT {
        return Err(IngestError::TooLarge(EVENT_LIMIT));
    }
    let value = parse::parse_object(raw, "")?;
    Ok(normalize::normalize(ctx, &value, payload_text(raw)?))
}

/// The payload as stored: the body's text, trimmed (it already parsed as JSON, so only a
/// non-UTF-8 body can fail here).
pub(crate) fn payload_text(raw: &[u8]) -> Result<String, IngestError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| IngestError::InvalidJson("not UTF-8".into()))?;
    Ok(text.trim().to_string())
}

/// Splits a batch body (an array, or an object with a `batch` or `signals` array) into
/// per-item records by E3's rules; more than [`BATCH_MAX_ITEMS`] items is refused with the
/// message `too_many(count)`. Shared with the NATS source's array messages.
pub fn batch_items(
    ctx: &Context<'_>,
    raw: &[u8],
    too_many: impl FnOnce(usize) -> String,
) -> Result<Vec<ItemOutcome>, IngestError> {
    let items = parse::split_batch(raw)?;
    if items.len() > BATCH_MAX_ITEMS {
        return Err(IngestError::TooManyItems(too_many(items.len())));
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(index, item)| ItemOutcome {
            index,
            line: None,
            record: item_record(ctx, item.get().as_bytes()),
        })
        .collect())
}

/// The log entry of an extracted update, with its per-field errors and warnings as JSON
/// objects.
pub(crate) fn product_org_entry(
    key: &ApiKey,
    received_at: i64,
    e: product_org::Extracted,
    payload: String,
) -> (LogEntry, Value, Value) {
    let object = |v: Vec<(String, String)>| {
        Value::Object(
            v.into_iter()
                .map(|(f, why)| (f, Value::String(why)))
                .collect(),
        )
    };
    let (errors, warnings) = (object(e.errors), object(e.warnings));
    let entry = LogEntry::ProductOrgUpdate(ProductOrgRecord {
        org_id: key.org_id,
        api_key_id: key.id,
        received_at,
        product_org_id: e.product_org_id,
        event_at: e.event_at,
        fields: e.fields,
        payload,
    });
    (entry, errors, warnings)
}
