//! The evaluations' Parquet archive: every evaluation on the log, in hive partitions by org
//! and evaluation date (`evaluations/org_id=N/date=YYYY-MM-DD/part-<first>-<last>.parquet`,
//! positions in the name), beside the signals' trees.
//!
//! It follows the log like the signal archiver: evaluations are buffered per partition and
//! written as one file when a buffer is a minute old or large, and at shutdown. A replay offers
//! every evaluation again; those at or below a partition's largest archived position are in a
//! file already and are skipped, so a crash loses only buffers, which the replay refills.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use parquet::arrow::ArrowWriter;
use trailspark_core::scoring::Evaluation;
use trailspark_core::LogEntry;

use super::{ArchiveError, Location};

/// The tree's directory under the archive root.
pub const DIR: &str = "evaluations";
/// A buffer becomes a file at this many rows, or when its oldest row is `max_age` old.
const MAX_ROWS: usize = 50_000;

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("position", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("lead_id", DataType::Utf8, false),
        Field::new("account_id", DataType::Utf8, true),
        Field::new("score", DataType::Utf8, false),
        Field::new("raw_score", DataType::Utf8, false),
        Field::new("confidence", DataType::Int64, false),
        Field::new("confidence_gate_applied", DataType::Boolean, false),
        Field::new("propensity", DataType::Utf8, true),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("evaluated_at", ts.clone(), false),
        Field::new("cooldown_until", ts, true),
        Field::new("model_id", DataType::UInt64, false),
        Field::new("model_version", DataType::Int64, false),
        Field::new("scorer", DataType::Utf8, false),
        Field::new("reasoning", DataType::Utf8, false),
        Field::new("contributions", DataType::Utf8, false),
    ]))
}

/// Evaluations as one record batch.
pub fn to_batch(rows: &[(u64, Arc<Evaluation>)]) -> Result<RecordBatch, ArchiveError> {
    let s = |f: &dyn Fn(&Evaluation) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter().map(|(_, e)| f(e)).collect::<Vec<_>>(),
        ))
    };
    let ts = |v: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(
            rows.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        )),
        s(&|e| Some(e.id.clone())),
        s(&|e| Some(e.lead_id.clone())),
        s(&|e| e.account_id.clone()),
        s(&|e| Some(e.score.as_str().into())),
        s(&|e| Some(e.raw_score.as_str().into())),
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|(_, e)| i64::from(e.confidence))
                .collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|(_, e)| e.confidence_gate_applied)
                .collect::<Vec<_>>(),
        )),
        s(&|e| e.propensity.map(|p| p.as_str().into())),
        s(&|e| Some(e.trigger.as_str().into())),
        ts(rows.iter().map(|(_, e)| Some(e.evaluated_at)).collect()),
        ts(rows.iter().map(|(_, e)| e.cooldown_until).collect()),
        Arc::new(UInt64Array::from(
            rows.iter().map(|(_, e)| e.model_id).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter()
                .map(|(_, e)| i64::from(e.model_version))
                .collect::<Vec<_>>(),
        )),
        s(&|e| Some(e.scorer.clone())),
        s(&|e| Some(e.reasoning.clone())),
        s(&|e| serde_json::to_string(&e.contributions).ok()),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

fn encode(rows: &[(u64, Arc<Evaluation>)]) -> Result<Bytes, ArchiveError> {
    let batch = to_batch(rows)?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// (org, day since 1970-01-01).
type Part = (u64, i32);
/// Evaluations with their log positions.
type Rows = Vec<(u64, Arc<Evaluation>)>;

fn part_of(e: &Evaluation) -> Part {
    (e.org_id.0, e.evaluated_at.div_euclid(86_400_000) as i32)
}

struct Buffer {
    rows: Rows,
    since: Instant,
}

#[derive(Default)]
struct State {
    buffers: BTreeMap<Part, Buffer>,
    /// The largest archived position per partition.
    archived: HashMap<Part, u64>,
    files: u64,
}

/// The evaluations' archive writer.
pub struct EvaluationArchive {
    loc: Location,
    max_age: Duration,
    state: Mutex<State>,
}

impl EvaluationArchive {
    /// Opens the tree at `loc`, learning from the file names what is archived.
    pub async fn open(loc: Location, max_age: Duration) -> Result<Arc<Self>, ArchiveError> {
        let mut st = State::default();
        let dir = loc.root.clone().join(DIR);
        let files: Vec<_> = loc.store.list(Some(&dir)).try_collect().await?;
        for f in files {
            if let Some((part, last)) = parse(&loc, &f.location) {
                let w = st.archived.entry(part).or_default();
                *w = (*w).max(last);
                st.files += 1;
            }
        }
        Ok(Arc::new(EvaluationArchive {
            loc,
            max_age,
            state: Mutex::new(st),
        }))
    }

    /// Buffers the evaluations among committed entries.
    pub fn offer(&self, entries: &[(u64, LogEntry)]) {
        let mut s = self.state.lock().unwrap();
        for (pos, e) in entries {
            let LogEntry::Evaluation(e) = e else { continue };
            let part = part_of(e);
            if s.archived.get(&part).is_some_and(|w| *pos <= *w) {
                continue;
            }
            s.buffers
                .entry(part)
                .or_insert_with(|| Buffer {
                    rows: Vec::new(),
                    since: Instant::now(),
                })
                .rows
                .push((*pos, Arc::new(Evaluation::clone(e))));
        }
    }

    /// Writes the buffers that are due (all of them with `all`).
    pub async fn flush(&self, all: bool) -> Result<(), ArchiveError> {
        let due: Vec<(Part, Rows)> = {
            let mut s = self.state.lock().unwrap();
            let parts: Vec<Part> = s
                .buffers
                .iter()
                .filter(|(_, b)| {
                    all || b.rows.len() >= MAX_ROWS || b.since.elapsed() >= self.max_age
                })
                .map(|(p, _)| *p)
                .collect();
            parts
                .into_iter()
                .filter_map(|p| s.buffers.remove(&p).map(|b| (p, b.rows)))
                .collect()
        };
        for ((org, day), rows) in due {
            let (first, last) = (rows[0].0, rows[rows.len() - 1].0);
            let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
                + chrono::Duration::days(i64::from(day));
            let path = self
                .loc
                .root
                .clone()
                .join(DIR)
                .join(format!("org_id={org}").as_str())
                .join(format!("date={date}").as_str())
                .join(format!("part-{first:020}-{last:020}.parquet").as_str());
            let bytes = encode(&rows)?;
            if let Err(e) = self.loc.put_atomic(&path, bytes).await {
                // Back into the buffer: the next flush retries.
                let mut s = self.state.lock().unwrap();
                let b = s.buffers.entry((org, day)).or_insert_with(|| Buffer {
                    rows: Vec::new(),
                    since: Instant::now(),
                });
                let mut rows = rows;
                rows.append(&mut b.rows);
                b.rows = rows;
                return Err(e.into());
            }
            let mut s = self.state.lock().unwrap();
            let w = s.archived.entry((org, day)).or_default();
            *w = (*w).max(last);
            s.files += 1;
        }
        Ok(())
    }

    /// Files written or found.
    pub fn files(&self) -> u64 {
        self.state.lock().unwrap().files
    }

    /// Flushes due buffers every second until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = self.flush(false).await {
                tracing::warn!(error = %e, "Could not write evaluations to the archive; retrying.");
            }
        }
    }
}

/// A file of the tree: its partition and last position.
fn parse(loc: &Location, path: &Path) -> Option<(Part, u64)> {
    let rel: Vec<_> = path.prefix_match(&loc.root)?.collect();
    let [dir, org, date, name] = rel.as_slice() else {
        return None;
    };
    if dir.as_ref() != DIR {
        return None;
    }
    let org = org.as_ref().strip_prefix("org_id=")?.parse().ok()?;
    let date =
        chrono::NaiveDate::parse_from_str(date.as_ref().strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let day = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32;
    let name = name
        .as_ref()
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?;
    let (_, last) = name.split_once('-')?;
    Some(((org, day), last.parse().ok()?))
}
