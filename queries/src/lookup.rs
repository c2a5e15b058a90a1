//! Lookups of archived signals that the server makes for itself: the hot window's rehydration
//! (anonymous signals by id and identifier), signal detail and the lead timeline (signals by
//! id), and retrieval (signals by date and event).
//!
//! They are typed filters over the same [`ArchiveTable`] that SQL reads, built with
//! DataFusion's expression API: no SQL text to escape, and no result encoded as JSON to be
//! parsed back. They run on the SQL threads but outside SQL's per-org admission (the server's
//! own work must not be refused because a tenant's queries fill its places), within limits of
//! their own.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{col, lit, Expr, SessionConfig, SessionContext};
use futures_util::StreamExt;
use trailspark_core::OrgId;
use trailspark_sinks::archive::{from_batch, ArchiveRow, Archiver, Kind};

use crate::catalog::ArchiveTable;
use crate::pool::SqlPool;
use crate::{classify, SqlError};

/// Bounds on one lookup.
#[derive(Clone, Copy, Debug)]
pub struct LookupLimits {
    pub timeout: Duration,
    /// Memory its operators may hold (the sort by id).
    pub memory: usize,
    /// Most rows it may answer; more is an error, never a silent truncation.
    pub max_rows: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            timeout: Duration::from_secs(120),
            memory: 256 << 20,
            max_rows: 200_000,
        }
    }
}

/// Which archived signals: every given condition must hold (`identifiers` holds when any of
/// them does).
#[derive(Clone, Debug, Default)]
pub struct LookupFilter {
    /// Signals with one of these ids.
    pub ids: Option<Vec<u64>>,
    /// Received on these dates (`YYYY-MM-DD`, UTC, inclusive).
    pub dates: Option<(String, String)>,
    /// Carrying one of these identifiers: (archive column, value).
    pub identifiers: Vec<(&'static str, String)>,
    /// Columns equal to values (`source`, `event_type`, `event_name`, ...).
    pub equals: Vec<(&'static str, String)>,
    /// Only signals archived with an outcome (`status` not null).
    pub with_status: bool,
    /// At most this many, by id ascending (`None`: all, within the row limit).
    pub limit: Option<usize>,
}

impl LookupFilter {
    fn expr(&self) -> Option<Expr> {
        let mut all: Vec<Expr> = Vec::new();
        if let Some(ids) = &self.ids {
            let lo = ids.iter().min().copied().unwrap_or(0);
            let hi = ids.iter().max().copied().unwrap_or(0);
            all.push(col("id").gt_eq(lit(lo)).and(col("id").lt_eq(lit(hi))));
            all.push(col("id").in_list(ids.iter().map(|i| lit(*i)).collect(), false));
        }
        if let Some((from, to)) = &self.dates {
            all.push(col("date").gt_eq(lit(from.clone())));
            all.push(col("date").lt_eq(lit(to.clone())));
        }
        let any: Option<Expr> = self
            .identifiers
            .iter()
            .map(|(c, v)| col(*c).eq(lit(v.clone())))
            .reduce(Expr::or);
        all.extend(any);
        for (c, v) in &self.equals {
            all.push(col(*c).eq(lit(v.clone())));
        }
        if self.with_status {
            all.push(col("status").is_not_null());
        }
        all.into_iter().reduce(Expr::and)
    }
}

/// Finds archived signals by [`LookupFilter`].
pub struct ArchiveLookup {
    archiver: Arc<Archiver>,
    pool: Arc<SqlPool>,
    limits: LookupLimits,
}

impl ArchiveLookup {
    pub(crate) fn new(archiver: Arc<Archiver>, pool: Arc<SqlPool>, limits: LookupLimits) -> Self {
        ArchiveLookup {
            archiver,
            pool,
            limits,
        }
    }

    /// The matching signals of `org` in the trees `kinds`, as batches in the columns SQL
    /// sees (`org_id`, `date`, then the archive's), each tree's by id.
    pub async fn batches(
        &self,
        org: u64,
        kinds: &[Kind],
        filter: &LookupFilter,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let archiver = self.archiver.clone();
        let limits = self.limits;
        let kinds = kinds.to_vec();
        let filter = filter.clone();
        let running = self.pool.spawn(async move {
            let mut out = Vec::new();
            let mut rows = 0;
            for kind in kinds {
                for b in run(&archiver, org, kind, &filter, limits.memory).await? {
                    rows += b.num_rows();
                    if rows > limits.max_rows {
                        return Err(SqlError::TooLarge(format!(
                            "{} rows in an archive lookup",
                            limits.max_rows
                        )));
                    }
                    out.push(b);
                }
            }
            Ok(out)
        });
        match tokio::time::timeout(limits.timeout, running).await {
            Ok(r) => r?,
            Err(_) => Err(SqlError::Timeout(limits.timeout)),
        }
    }

    /// Streams the matching signals of `org` in the trees `kinds`, batch by batch, to `each`,
    /// until it answers `false` or `budget` has passed; hands `each` back with whether every
    /// row was seen. For scans whose size is not known beforehand (a rule preview over an
    /// org's whole history), which must stay cheap: they stop, and say so, rather than run
    /// long or collect everything.
    pub async fn scan<F>(
        &self,
        org: u64,
        kinds: &[Kind],
        filter: &LookupFilter,
        budget: Duration,
        mut each: F,
    ) -> Result<(F, bool), SqlError>
    where
        F: FnMut(&RecordBatch) -> bool + Send + 'static,
    {
        let archiver = self.archiver.clone();
        let memory = self.limits.memory;
        let kinds = kinds.to_vec();
        let filter = filter.clone();
        let deadline = tokio::time::Instant::now() + budget;
        let running = self.pool.spawn(async move {
            for kind in kinds {
                let df = frame(&archiver, org, kind, &filter, memory)?;
                let mut stream = df.execute_stream().await.map_err(classify)?;
                loop {
                    let next = tokio::time::timeout_at(deadline, stream.next()).await;
                    match next {
                        Err(_) => return Ok((each, false)),
                        Ok(None) => break,
                        Ok(Some(b)) => {
                            if !each(&b.map_err(classify)?) {
                                return Ok((each, false));
                            }
                        }
                    }
                }
            }
            Ok((each, true))
        });
        running.await?
    }

    /// [`Self::batches`] as archive rows.
    pub async fn rows(
        &self,
        org: u64,
        kinds: &[Kind],
        filter: &LookupFilter,
    ) -> Result<Vec<ArchiveRow>, SqlError> {
        let mut rows = Vec::new();
        for b in self.batches(org, kinds, filter).await? {
            rows.extend(from_batch(OrgId(org), &b).map_err(|e| SqlError::Internal(e.to_string()))?);
        }
        Ok(rows)
    }
}

async fn run(
    archiver: &Arc<Archiver>,
    org: u64,
    kind: Kind,
    filter: &LookupFilter,
    memory: usize,
) -> Result<Vec<RecordBatch>, SqlError> {
    let mut df = frame(archiver, org, kind, filter, memory)?;
    df = df
        .sort(vec![col("id").sort(true, false)])
        .map_err(classify)?;
    if let Some(n) = filter.limit {
        df = df.limit(0, Some(n)).map_err(classify)?;
    }
    df.collect().await.map_err(classify)
}

/// The rows of one tree of `org` that `filter` admits, unsorted, in a session of their own.
fn frame(
    archiver: &Arc<Archiver>,
    org: u64,
    kind: Kind,
    filter: &LookupFilter,
    memory: usize,
) -> Result<datafusion::dataframe::DataFrame, SqlError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .build_arc()
        .map_err(classify)?;
    let loc = archiver.location();
    let url = ObjectStoreUrl::parse(&loc.store_url).map_err(classify)?;
    runtime.register_object_store(url.as_ref(), loc.store.clone());
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    let mut df = ctx
        .read_table(Arc::new(ArchiveTable::new(archiver.clone(), kind, org)))
        .map_err(classify)?;
    if let Some(e) = filter.expr() {
        df = df.filter(e).map_err(classify)?;
    }
    Ok(df)
}
