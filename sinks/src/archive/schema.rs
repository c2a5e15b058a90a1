//! The archive's row type and its Arrow schema: the canonical record's fields as typed
//! columns, the processing outcome known when the row was written, and the raw payload as
//! one JSON string.
//!
//! `org_id` and the receipt date are not columns of the files: they are the hive partition
//! (`org_id=…/date=…`), so independent readers (pyarrow, DuckDB) get them from the path and
//! a file never disagrees with its directory.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, TimestampMillisecondBuilder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use trailspark_core::{Identifiers, OrgId, SignalRecord};

/// What processing had made of a signal when it was archived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Processing {
    /// `pending`, `completed`, `failed` or `skipped`; `None` when unknown.
    pub status: Option<String>,
    pub rule_id: Option<u64>,
    pub rule_name: Option<String>,
    pub lead_id: Option<String>,
    pub error: Option<String>,
}

/// One archived signal.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveRow {
    /// The signal's id: its log position.
    pub id: u64,
    pub record: Arc<SignalRecord>,
    pub processing: Processing,
}

impl ArchiveRow {
    /// Bytes this row holds in a buffer, roughly: what rolling by size counts.
    pub fn approx_bytes(&self) -> usize {
        let r = &self.record;
        160 + r.payload.len() + r.source.len() + r.event_type.len() + r.content_hash.len()
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The columns of an archive file, in order.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("api_key_id", DataType::UInt64, false),
        Field::new("received_at", ts(), false),
        Field::new("event_at", ts(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        s("event_name"),
        s("email"),
        s("anonymous_id"),
        s("user_id"),
        s("product_user_id"),
        s("crm_id"),
        s("map_id"),
        s("device_id"),
        s("product_org_id"),
        s("mkt_lead_id"),
        s("phone"),
        s("message_id"),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("anonymous", DataType::Boolean, false),
        s("status"),
        Field::new("rule_id", DataType::UInt64, true),
        s("rule_name"),
        s("lead_id"),
        s("error"),
        Field::new("payload", DataType::Utf8, false),
    ]))
});

/// A text column of a row, by its index in [`SCHEMA`] (`None` for other columns).
pub fn text_of(r: &ArchiveRow, i: usize) -> Option<&str> {
    let rec = &r.record;
    match i {
        4 => Some(&rec.source),
        5 => Some(&rec.event_type),
        6 => rec.event_name.as_deref(),
        7 => rec.ids.email.as_deref(),
        8 => rec.ids.anonymous_id.as_deref(),
        9 => rec.ids.user_id.as_deref(),
        10 => rec.ids.product_user_id.as_deref(),
        11 => rec.ids.crm_id.as_deref(),
        12 => rec.ids.map_id.as_deref(),
        13 => rec.ids.device_id.as_deref(),
        14 => rec.ids.product_org_id.as_deref(),
        15 => rec.ids.mkt_lead_id.as_deref(),
        16 => rec.ids.phone.as_deref(),
        17 => rec.message_id.as_deref(),
        18 => Some(&rec.content_hash),
        20 => r.processing.status.as_deref(),
        22 => r.processing.rule_name.as_deref(),
        23 => r.processing.lead_id.as_deref(),
        24 => r.processing.error.as_deref(),
        25 => Some(&rec.payload),
        _ => None,
    }
}

/// Column `i` of [`SCHEMA`] for `rows`.
fn build_column(rows: &[ArchiveRow], i: usize) -> ArrayRef {
    let n = rows.len();
    let u64s = |f: &dyn Fn(&ArchiveRow) -> u64| {
        let mut b = UInt64Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let times = |f: &dyn Fn(&ArchiveRow) -> i64| {
        let mut b = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    match i {
        0 => u64s(&|r| r.id),
        1 => u64s(&|r| r.record.api_key_id),
        2 => times(&|r| r.record.received_at),
        3 => times(&|r| r.record.event_at),
        19 => {
            let mut b = BooleanBuilder::with_capacity(n);
            rows.iter().for_each(|r| b.append_value(r.record.anonymous));
            Arc::new(b.finish())
        }
        21 => {
            let mut b = UInt64Builder::with_capacity(n);
            rows.iter()
                .for_each(|r| b.append_option(r.processing.rule_id));
            Arc::new(b.finish())
        }
        _ => {
            let bytes: usize = rows.iter().map(|r| text_of(r, i).map_or(0, str::len)).sum();
            let mut b = StringBuilder::with_capacity(n, bytes);
            rows.iter().for_each(|r| b.append_option(text_of(r, i)));
            Arc::new(b.finish())
        }
    }
}

/// Builds one record batch from rows (all of one org).
pub fn to_batch(rows: &[ArchiveRow]) -> Result<RecordBatch, ArrowError> {
    let columns = (0..SCHEMA.fields().len())
        .map(|i| build_column(rows, i))
        .collect();
    RecordBatch::try_new(SCHEMA.clone(), columns)
}

/// The columns `projection` (indices into [`SCHEMA`]) of rows, as a batch of just those: a
/// query that reads two columns of buffered rows does not copy every payload.
pub fn to_batch_projected(
    rows: &[ArchiveRow],
    projection: &[usize],
) -> Result<RecordBatch, ArrowError> {
    let schema = Arc::new(SCHEMA.project(projection)?);
    let columns = projection.iter().map(|i| build_column(rows, *i)).collect();
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("archive column `{name}` missing or mistyped"))
        })
}

/// Reads rows back from a batch of an archive file of org `org` (for replay and rehydration).
pub fn from_batch(org: OrgId, batch: &RecordBatch) -> Result<Vec<ArchiveRow>, ArrowError> {
    let id = column::<UInt64Array>(batch, "id")?;
    let key = column::<UInt64Array>(batch, "api_key_id")?;
    let received = column::<TimestampMillisecondArray>(batch, "received_at")?;
    let event = column::<TimestampMillisecondArray>(batch, "event_at")?;
    let anon = column::<BooleanArray>(batch, "anonymous")?;
    let rule = column::<UInt64Array>(batch, "rule_id")?;
    let s = |name| column::<StringArray>(batch, name);
    let (source, event_type, event_name) = (s("source")?, s("event_type")?, s("event_name")?);
    let (email, anonymous_id, user_id) = (s("email")?, s("anonymous_id")?, s("user_id")?);
    let (product_user_id, crm_id, map_id) = (s("product_user_id")?, s("crm_id")?, s("map_id")?);
    let (device_id, product_org_id) = (s("device_id")?, s("product_org_id")?);
    let (mkt_lead_id, phone, message_id) = (s("mkt_lead_id")?, s("phone")?, s("message_id")?);
    let (content_hash, payload) = (s("content_hash")?, s("payload")?);
    let (status, rule_name, lead_id, error) =
        (s("status")?, s("rule_name")?, s("lead_id")?, s("error")?);
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    Ok((0..batch.num_rows())
        .map(|i| ArchiveRow {
            id: id.value(i),
            record: Arc::new(SignalRecord {
                org_id: org,
                api_key_id: key.value(i),
                received_at: received.value(i),
                event_at: event.value(i),
                source: source.value(i).to_string(),
                event_type: event_type.value(i).to_string(),
                event_name: opt(event_name, i),
                ids: Identifiers {
                    email: opt(email, i),
                    anonymous_id: opt(anonymous_id, i),
                    user_id: opt(user_id, i),
                    product_user_id: opt(product_user_id, i),
                    crm_id: opt(crm_id, i),
                    map_id: opt(map_id, i),
                    device_id: opt(device_id, i),
                    product_org_id: opt(product_org_id, i),
                    mkt_lead_id: opt(mkt_lead_id, i),
                    phone: opt(phone, i),
                },
                message_id: opt(message_id, i),
                content_hash: content_hash.value(i).to_string(),
                anonymous: anon.value(i),
                payload: payload.value(i).to_string(),
            }),
            processing: Processing {
                status: opt(status, i),
                rule_id: (!rule.is_null(i)).then(|| rule.value(i)),
                rule_name: opt(rule_name, i),
                lead_id: opt(lead_id, i),
                error: opt(error, i),
            },
        })
        .collect())
}
