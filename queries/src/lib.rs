//! Queries over trailspark's data: org-scoped DataFusion SQL over the Parquet archive and the
//! live read models ([`catalog`]), typed lookups of archived signals for the server's own use
//! ([`lookup`]), the explorer's views of the read models ([`explorer`]), and the result
//! encodings of `POST /api/sql` ([`output`]).
//!
//! Every query runs on the SQL threads ([`pool`]), in a session that holds one org's tables
//! and nothing else, within [`Limits`]; statements other than queries are refused by
//! DataFusion's SQL options before planning.

mod bounded;
pub mod catalog;
mod error;
pub mod explorer;
pub mod lookup;
pub mod output;
mod pool;
pub mod scoring;
pub mod shape;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt;
use trailspark_sinks::archive::Archiver;

pub use self::catalog::Live;
use self::catalog::OrgSchema;
pub(crate) use self::error::classify;
pub use self::error::SqlError;
pub use self::lookup::{ArchiveLookup, LookupFilter};
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
    pool: Arc<SqlPool>,
}

/// What a query's task needs, shared with it.
struct Inner {
    archiver: Option<Arc<Archiver>>,
    live: Option<Live>,
    limits: Limits,
}

impl SqlEngine {
    /// An engine over `archiver`'s files and `live` models; either may be absent (an
    /// archive read without a server has no live models; tables without data are empty).
    pub fn new(
        archiver: Option<Arc<Archiver>>,
        live: Option<Live>,
        limits: Limits,
    ) -> Result<Self, SqlError> {
        let pool = SqlPool::new(limits.threads)
            .map_err(|e| SqlError::Internal(format!("starting the SQL threads: {e}")))?;
        Ok(SqlEngine {
            admission: Admission::new(limits.per_org, limits.concurrent),
            inner: Arc::new(Inner {
                archiver,
                live,
                limits,
            }),
            pool: Arc::new(pool),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Queries of `org` holding a place now: running, or stopping after a timeout.
    pub fn running(&self, org: u64) -> usize {
        self.admission.running(org)
    }

    /// Typed lookups of archived signals for the server's own use (rehydration, signal
    /// detail), on the same threads, within limits of their own; `None` without an archive.
    pub fn lookup(&self, limits: lookup::LookupLimits) -> Option<ArchiveLookup> {
        let archiver = self.inner.archiver.clone()?;
        Some(ArchiveLookup::new(archiver, self.pool.clone(), limits))
    }

    /// Runs one read query for `org` over its tables, within the limits.
    ///
    /// The caller's thread only waits: the text is checked, planned and run on the SQL
    /// threads. The timeout is kept here, on the caller's clock, so a pool busy with other
    /// queries cannot delay it; when it fires, the query's work is aborted.
    pub async fn query(&self, org: u64, sql: &str) -> Result<QueryOutput, SqlError> {
        let ticket = self.admission.enter(org)?;
        let limits = &self.inner.limits;
        let text = sql.to_string();
        let inner = self.inner.clone();
        let running = self.pool.spawn(async move {
            let _ticket = ticket;
            shape::check(&text, inner.limits.shape)?;
            run(&inner, org, &text).await
        });
        match tokio::time::timeout(limits.timeout, running).await {
            Ok(r) => r?,
            Err(_) => Err(SqlError::Timeout(limits.timeout)),
        }
    }
}

/// Plans and runs `sql` in an org-scoped session, collecting its result within the limits.
async fn run(inner: &Inner, org: u64, sql: &str) -> Result<QueryOutput, SqlError> {
    let limits = &inner.limits;
    let ctx = session(
        inner.archiver.as_ref(),
        inner.live.clone(),
        org,
        limits.memory,
    )?;
    bounded::install(&ctx, limits.max_string_growth);
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

/// A session holding `org`'s tables and nothing else (see [`catalog`]).
///
/// Each session has a runtime of its own, so its memory pool bounds this query alone.
fn session(
    archiver: Option<&Arc<Archiver>>,
    live: Option<Live>,
    org: u64,
    memory: usize,
) -> Result<SessionContext, SqlError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory, 1.0)
        .build_arc()
        .map_err(classify)?;
    if let Some(a) = archiver {
        let loc = a.location();
        let url = ObjectStoreUrl::parse(&loc.store_url).map_err(classify)?;
        runtime.register_object_store(url.as_ref(), loc.store.clone());
    }
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(2);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let schema = OrgSchema {
        org,
        archiver: archiver.cloned(),
        live,
    };
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| SqlError::Internal("no default catalog".into()))?;
    catalog
        .register_schema("public", Arc::new(schema))
        .map_err(classify)?;
    Ok(ctx)
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
