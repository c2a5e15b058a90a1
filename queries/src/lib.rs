//! Queries over trailspark's data: org-scoped DataFusion SQL over the Parquet archive and the
//! live read models, and the result encodings of `POST /api/sql`.
//!
//! Tenant isolation is structural. Each query runs in a session of its own that holds only
//! the caller's org's tables: archive tables read only that org's hive directory, live
//! tables hold only that org's rows. There is no catalog of other orgs to reach, URL tables
//! are off, and statements other than queries are refused by DataFusion's SQL options
//! before planning, so no text check is needed for isolation.

mod bounded;
pub mod live;
pub mod output;
mod pool;
pub mod shape;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{col, lit, DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt;
use trailspark_sinks::archive::{to_batch, Archiver, Kind, Partition, SCHEMA};

pub use self::live::{Column, Table};
use self::pool::{Admission, SqlPool};
pub use self::shape::ShapeLimits;

/// Bounds on one query, and on how many run at once.
#[derive(Clone, Debug)]
pub struct Limits {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Bytes of result batches held in memory.
    pub max_bytes: usize,
    /// Memory one query's operators may hold (sorts, joins, aggregates, the work table of a
    /// recursive CTE). Each query has a pool of its own, so the total is at most this times
    /// [`Limits::concurrent`].
    pub memory: usize,
    /// Bytes a string function may add to its input in one call (see [`bounded`]).
    pub max_string_growth: usize,
    /// Bytes of SQL text, and the deepest plan a query may make (see [`shape`]).
    pub shape: ShapeLimits,
    /// Queries one org may run at once; more are refused with 429.
    pub per_org: usize,
    /// Queries the server runs at once, over all orgs.
    pub concurrent: usize,
    /// Threads of the SQL runtime.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            max_bytes: 64 << 20,
            memory: 256 << 20,
            max_string_growth: 64 << 20,
            shape: ShapeLimits {
                max_text: 64 << 10,
                max_depth: 256,
            },
            per_org: 2,
            concurrent: 4,
            threads: 2,
        }
    }
}

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

fn classify(e: DataFusionError) -> SqlError {
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

/// A query's result.
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
}

/// Runs org-scoped SQL on threads of its own (see [`pool`]), each query within [`Limits`].
pub struct SqlEngine {
    inner: Arc<Inner>,
    admission: Arc<Admission>,
    pool: SqlPool,
}

/// What a query's task needs, shared with it.
struct Inner {
    archiver: Option<Arc<Archiver>>,
    limits: Limits,
}

/// The archive tables and their trees.
pub const ARCHIVE_TABLES: [(&str, Kind); 2] = [
    ("signals", Kind::Signals),
    ("anonymous_signals", Kind::Anonymous),
];

impl SqlEngine {
    pub fn new(archiver: Option<Arc<Archiver>>, limits: Limits) -> Result<Self, SqlError> {
        let pool = SqlPool::new(limits.threads)
            .map_err(|e| SqlError::Internal(format!("starting the SQL threads: {e}")))?;
        Ok(SqlEngine {
            admission: Admission::new(limits.per_org, limits.concurrent),
            inner: Arc::new(Inner { archiver, limits }),
            pool,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Queries of `org` holding a place now: running, or stopping after a timeout.
    pub fn running(&self, org: u64) -> usize {
        self.admission.running(org)
    }

    /// The tables `sql` reads, by name (see [`shape::Reads`]), with no bound on its shape.
    pub fn tables_read(sql: &str) -> Option<std::collections::BTreeSet<String>> {
        let unbounded = ShapeLimits {
            max_text: usize::MAX,
            max_depth: usize::MAX,
        };
        shape::check(sql, unbounded).ok().flatten()
    }

    /// Runs one read query for `org` over its archive and `live` tables, within the limits.
    pub async fn query(
        &self,
        org: u64,
        sql: &str,
        live: Vec<Table>,
    ) -> Result<QueryOutput, SqlError> {
        self.query_with(org, sql, |_| live).await
    }

    /// [`Self::query`], with the live tables built by `live` from a predicate that says
    /// which table names the query reads: building one is a copy of the org's rows out of
    /// the read models, so a query pays only for what it reads.
    ///
    /// The caller's thread only waits: the text is checked, planned and run on the SQL
    /// threads. The timeout is kept here, on the caller's clock, so a pool busy with other
    /// queries cannot delay it; when it fires, the query's work is aborted.
    pub async fn query_with(
        &self,
        org: u64,
        sql: &str,
        live: impl FnOnce(&dyn Fn(&str) -> bool) -> Vec<Table>,
    ) -> Result<QueryOutput, SqlError> {
        let ticket = self.admission.enter(org)?;
        let limits = &self.inner.limits;
        let started = tokio::time::Instant::now();
        let text = sql.to_string();
        let shape_limits = limits.shape;
        let checked = self.pool.spawn(async move {
            let reads = shape::check(&text, shape_limits);
            (text, reads)
        });
        let (text, reads) = match tokio::time::timeout(limits.timeout, checked).await {
            Ok(r) => r?,
            Err(_) => return Err(SqlError::Timeout(limits.timeout)),
        };
        let reads = reads?;
        let live = live(&|t| reads.as_ref().is_none_or(|r| r.contains(t)));
        let inner = self.inner.clone();
        let running = self.pool.spawn(async move {
            let _ticket = ticket;
            run(&inner, org, &text, live, reads.as_ref()).await
        });
        let left = limits.timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, running).await {
            Ok(r) => r?,
            Err(_) => Err(SqlError::Timeout(limits.timeout)),
        }
    }
}

/// Plans and runs `sql` in an org-scoped session, collecting its result within the limits.
async fn run(
    inner: &Inner,
    org: u64,
    sql: &str,
    live: Vec<Table>,
    reads: Option<&std::collections::BTreeSet<String>>,
) -> Result<QueryOutput, SqlError> {
    let limits = &inner.limits;
    let ctx = session(inner, org, live, reads).await?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(classify)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let task = df.task_ctx();
    let plan = cooperative(df.create_physical_plan().await.map_err(classify)?)?;
    let mut stream =
        datafusion::physical_plan::execute_stream(plan, Arc::new(task)).map_err(classify)?;
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    while let Some(b) = stream.next().await {
        let b = b.map_err(classify)?;
        rows += b.num_rows();
        bytes += answer_bytes(&b);
        if rows > limits.max_rows {
            return Err(SqlError::TooLarge(format!("{} rows", limits.max_rows)));
        }
        if bytes > limits.max_bytes {
            return Err(SqlError::TooLarge(format!("{} bytes", limits.max_bytes)));
        }
        batches.push(b);
    }
    Ok(QueryOutput {
        schema,
        batches,
        rows,
    })
}

/// The plan with every operator's output made cooperative: each batch it hands on spends
/// the task's scheduling budget, so the task yields every 128 batches and a timed-out
/// query's abort takes effect. DataFusion wraps only the leaves; a join that makes a
/// hundred thousand batches out of each input batch then ran for minutes without yielding,
/// holding a SQL thread and its org's place after its timeout had fired.
fn cooperative(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, SqlError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    plan.transform_up(|node| {
        if node.is::<CooperativeExec>() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(CooperativeExec::new(node))
            as Arc<dyn datafusion::physical_plan::ExecutionPlan>))
    })
    .map(|t| t.data)
    .map_err(classify)
}

/// A session holding `org`'s tables and nothing else: its archive trees and `live`, the
/// tables the pipeline built from its read models for this org only. With `reads`, only
/// the archive tables named there: each one copies the archiver's buffered rows of the org
/// into a batch, which right after a load (hundreds of thousands of rows not yet in a file)
/// is most of a query's time.
///
/// Each session has a runtime of its own, so its memory pool bounds this query alone. The
/// listing cache is off: archive files appear as the archiver writes them, and a stale
/// listing would hide rows that have left the archiver's buffers.
async fn session(
    inner: &Inner,
    org: u64,
    live: Vec<Table>,
    reads: Option<&std::collections::BTreeSet<String>>,
) -> Result<SessionContext, SqlError> {
    let limits = &inner.limits;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory, 1.0)
        .with_object_list_cache_limit(0)
        .build_arc()
        .map_err(classify)?;
    if let Some(a) = &inner.archiver {
        let loc = a.location();
        let url = ObjectStoreUrl::parse(&loc.store_url).map_err(classify)?;
        runtime.register_object_store(url.as_ref(), loc.store.clone());
    }
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(2);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    bounded::install(&ctx, limits.max_string_growth);
    for (name, kind) in ARCHIVE_TABLES {
        if reads.is_some_and(|r| !r.contains(name)) {
            continue;
        }
        let df = archive_table(inner.archiver.as_ref(), &ctx, kind, org).await?;
        ctx.register_table(name, df.into_view()).map_err(classify)?;
    }
    for t in live {
        let (name, batch) = t
            .into_batch()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        let mem = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(classify)?;
        ctx.register_table(name, Arc::new(mem)).map_err(classify)?;
    }
    Ok(ctx)
}

/// One archive tree of one org: its files (listed when the query runs) and the rows not yet
/// in a file, without double counting (see [`trailspark_sinks::archive::Snapshot`]).
async fn archive_table(
    archiver: Option<&Arc<Archiver>>,
    ctx: &SessionContext,
    kind: Kind,
    org: u64,
) -> Result<DataFrame, SqlError> {
    let mut columns: Vec<datafusion::prelude::Expr> = vec![lit(org).alias("org_id"), col("date")];
    columns.extend(SCHEMA.fields().iter().map(|f| col(f.name())));
    let date_field = Field::new("date", DataType::Utf8, false);
    let mut fields: Vec<Field> = SCHEMA.fields().iter().map(|f| (**f).clone()).collect();
    fields.push(date_field);
    let with_date = Arc::new(Schema::new(fields));
    let Some(archiver) = archiver else {
        let empty = MemTable::try_new(with_date, vec![vec![]]).map_err(classify)?;
        return ctx
            .read_table(Arc::new(empty))
            .and_then(|df| df.select(columns))
            .map_err(classify);
    };
    let snap = archiver.snapshot(kind, org);
    let loc = archiver.location();
    let url = format!("{}/", loc.url_of(&loc.org_dir(kind, org)));
    let table_url = ListingTableUrl::parse(&url).map_err(classify)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("date".into(), DataType::Utf8)]);
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(SCHEMA.clone());
    let files = ListingTable::try_new(config).map_err(classify)?;
    let mut files_df = ctx.read_table(Arc::new(files)).map_err(classify)?;
    for (day, from) in &snap.fences {
        let date = Partition {
            kind,
            org,
            day: *day,
        }
        .date();
        let fenced = col("date").eq(lit(date)).and(col("id").gt_eq(lit(*from)));
        files_df = files_df
            .filter(datafusion::prelude::not(fenced))
            .map_err(classify)?;
    }
    let buffered = to_batch(&snap.rows).map_err(|e| SqlError::Internal(e.to_string()))?;
    let dates: StringArray = snap
        .rows
        .iter()
        .map(|r| Some(Partition::of(kind, org, r.record.received_at).date()))
        .collect();
    let mut arrays: Vec<ArrayRef> = buffered.columns().to_vec();
    arrays.push(Arc::new(dates));
    let buffered = RecordBatch::try_new(with_date.clone(), arrays)
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    let mem = MemTable::try_new(with_date, vec![vec![buffered]]).map_err(classify)?;
    let mem_df = ctx.read_table(Arc::new(mem)).map_err(classify)?;
    files_df
        .select(columns.clone())
        .and_then(|f| f.union(mem_df.select(columns)?))
        .map_err(classify)
}

/// The bytes of the rows `b` holds. `get_array_memory_size` counts whole buffers, and a
/// `LIMIT`'s batches are slices of larger ones: paging through a table 50,000 rows at a time
/// was refused as too large because each page counted the buffers of every row around it.
fn answer_bytes(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

#[cfg(test)]
mod tests;
