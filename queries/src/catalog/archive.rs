//! The archive as a DataFusion table: one org's files of one tree, unioned with its rows not
//! yet in a file.
//!
//! The archiver knows its files (it wrote them, and listed them once at open), so a scan reads
//! exactly the files of its [`Snapshot`] instead of listing the store: no listing request per
//! query, and no fences against files written after the buffered rows were copied, because the
//! snapshot takes the file list and the buffered rows under one lock and together they hold
//! each archived signal once.
//!
//! Filters do three things here, before DataFusion's own [`FilterExec`] re-checks them (they
//! are pushed down as `Inexact`):
//! - whole files are skipped when the filters' `date` range or `id` constraints cannot
//!   match the partition's date or the file's id range (file names carry the first and last
//!   id): a signal-detail lookup by id reads one file;
//! - buffered rows are skipped by the same test before they are copied into a batch;
//! - the conjunction becomes the Parquet reader's predicate, which prunes row groups by
//!   their statistics and by the bloom filters on `anonymous_id`, `email` and `lead_id`.
//!
//! Each file's Parquet metadata (footer, row-group statistics, page index) is read once and
//! kept in one cache for the process ([`FOOTERS`]): every query has a session and a runtime
//! of its own (its memory pool bounds it alone), so the runtime's own cache would start empty
//! each time, and each query would fetch every footer again. Archive files never change
//! once written (compaction and retention write and delete whole files under new names), so
//! an entry is right for as long as its path exists; entries of deleted files age out of the
//! cache's LRU. The cache holds metadata only (statistics, not rows) of files a query was
//! already allowed to read. Their bloom filters are kept the same way ([`super::blooms`]).
//!
//! [`FilterExec`]: datafusion::physical_plan::filter::FilterExec

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::cache::cache_manager::{
    FileMetadataCache, DEFAULT_METADATA_CACHE_LIMIT,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use trailspark_sinks::archive::{
    text_of, to_batch_projected, ArchiveRow, Archiver, Kind, Partition, SCHEMA,
};

use super::blooms::KeepBlooms;
use super::prune::Bounds;

/// The Parquet metadata of archive files, shared by every query (see the module doc); the
/// budget is DataFusion's default for a runtime's metadata cache (50 MB).
pub(crate) static FOOTERS: LazyLock<Arc<FileMetadataCache>> = LazyLock::new(|| {
    Arc::new(DefaultCache::new(DEFAULT_METADATA_CACHE_LIMIT).with_name("ArchiveFooters"))
});

/// One org's tree of the archive (`signals` or `anonymous_signals`).
#[derive(Debug)]
pub struct ArchiveTable {
    archiver: Arc<Archiver>,
    kind: Kind,
    org: u64,
    /// What SQL sees: `org_id`, `date`, then the file columns.
    schema: SchemaRef,
    /// What the scan produces before projection: the file columns, then `org_id` and `date`
    /// (partition columns come last in a file scan).
    inner: SchemaRef,
}

fn partition_fields() -> [FieldRef; 2] {
    [
        Arc::new(Field::new("org_id", DataType::UInt64, false)),
        Arc::new(Field::new("date", DataType::Utf8, false)),
    ]
}

/// The schema SQL sees of an archive table.
pub fn table_schema() -> SchemaRef {
    let mut fields: Vec<FieldRef> = partition_fields().to_vec();
    fields.extend(SCHEMA.fields().iter().cloned());
    Arc::new(Schema::new(fields))
}

impl ArchiveTable {
    pub fn new(archiver: Arc<Archiver>, kind: Kind, org: u64) -> ArchiveTable {
        let mut inner: Vec<FieldRef> = SCHEMA.fields().iter().cloned().collect();
        inner.extend(partition_fields());
        ArchiveTable {
            archiver,
            kind,
            org,
            schema: table_schema(),
            inner: Arc::new(Schema::new(inner)),
        }
    }

    /// The inner column of column `i` of [`Self::schema`].
    fn inner_index(&self, i: usize) -> usize {
        let files = SCHEMA.fields().len();
        match i {
            0 => files,
            1 => files + 1,
            _ => i - 2,
        }
    }

    /// The buffered rows that may pass `bounds`, as one batch of the columns `projection`
    /// (indices into the inner layout) only: rows are checked against the bounds (id, date,
    /// text equalities) before anything is copied, and a column nobody reads is not built.
    fn buffered(
        &self,
        rows: &[ArchiveRow],
        bounds: &Bounds,
        projection: &[usize],
    ) -> DfResult<RecordBatch> {
        let files = SCHEMA.fields().len();
        // Dates are per partition day: format each day once.
        let mut day_text: Option<(i32, String)> = None;
        let mut date = |r: &ArchiveRow| -> String {
            let p = Partition::of(self.kind, self.org, r.record.received_at);
            match &day_text {
                Some((d, t)) if *d == p.day => t.clone(),
                _ => {
                    let t = p.date();
                    day_text = Some((p.day, t.clone()));
                    t
                }
            }
        };
        let texts: Vec<(usize, &std::collections::BTreeSet<String>)> = bounds
            .texts()
            .filter_map(|(c, v)| SCHEMA.index_of(c).ok().map(|i| (i, v)))
            .collect();
        let mut kept: Vec<ArchiveRow> = Vec::new();
        let mut dates: Vec<String> = Vec::new();
        for r in rows {
            if !bounds.may_hold_id(r.id) {
                continue;
            }
            if !texts
                .iter()
                .all(|(i, v)| text_of(r, *i).is_some_and(|x| v.contains(x)))
            {
                continue;
            }
            let d = date(r);
            if !bounds.may_hold_date(&d) {
                continue;
            }
            kept.push(r.clone());
            dates.push(d);
        }
        let file_cols: Vec<usize> = projection.iter().copied().filter(|i| *i < files).collect();
        let batch = to_batch_projected(&kept, &file_cols)?;
        let mut by_file = batch.columns().iter();
        let arrays: Vec<ArrayRef> = projection
            .iter()
            .map(|i| match *i {
                i if i < files => by_file.next().expect("one array per file column").clone(),
                i if i == files => {
                    Arc::new(UInt64Array::from(vec![self.org; kept.len()])) as ArrayRef
                }
                _ => Arc::new(
                    dates
                        .iter()
                        .map(|d| Some(d.as_str()))
                        .collect::<StringArray>(),
                ),
            })
            .collect();
        let schema = Arc::new(self.inner.project(projection)?);
        Ok(RecordBatch::try_new_with_options(
            schema,
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(kept.len())),
        )?)
    }
}

#[async_trait]
impl TableProvider for ArchiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let bounds = Bounds::of(filters);
        let snap = self.archiver.snapshot(self.kind, self.org);
        let inner_projection: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| self.inner_index(*i)).collect(),
            None => (0..self.schema.fields().len())
                .map(|i| self.inner_index(i))
                .collect(),
        };
        let projected = Arc::new(self.inner.project(&inner_projection)?);
        let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let files: Vec<PartitionedFile> = snap
            .files
            .iter()
            .filter(|f| {
                bounds.may_hold_range(f.first, f.last) && bounds.may_hold_date(&f.partition.date())
            })
            .map(|f| {
                let mut file = PartitionedFile::new(f.path.to_string(), f.size)
                    .with_partition_values(vec![
                        ScalarValue::UInt64(Some(self.org)),
                        ScalarValue::Utf8(Some(f.partition.date())),
                    ]);
                // The metadata cache checks an entry against the file's size and modification
                // time. Archive files never change, so the time carries the archiver's
                // instance instead: another archive's file of the same name (tests open
                // several in one process) misses rather than reading this one's footer.
                file.object_meta.last_modified =
                    chrono::DateTime::from_timestamp_nanos(self.archiver.instance() as i64);
                file
            })
            .collect();
        if !files.is_empty() {
            let [org_field, date_field] = partition_fields();
            let table = TableSchema::builder(SCHEMA.clone())
                .with_table_partition_cols(vec![org_field, date_field])
                .build();
            let url = ObjectStoreUrl::parse(&self.archiver.location().store_url)?;
            let store = state.runtime_env().object_store(&url)?;
            let footers = CachedParquetFileReaderFactory::new(store, FOOTERS.clone());
            let mut source = ParquetSource::new(table)
                .with_parquet_file_reader_factory(Arc::new(KeepBlooms(footers)));
            if let Some(filter) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(self.inner.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
            }
            let config = FileScanConfigBuilder::new(url, Arc::new(source))
                .with_file_groups(vec![FileGroup::new(files)])
                .with_projection_indices(Some(inner_projection.clone()))?
                .with_limit(limit)
                .build();
            parts.push(DataSourceExec::from_data_source(config));
        }

        let buffered = self.buffered(&snap.rows, &bounds, &inner_projection)?;
        if buffered.num_rows() > 0 {
            parts.push(MemorySourceConfig::try_new_exec(
                &[vec![buffered]],
                projected.clone(),
                None,
            )?);
        }
        Ok(match parts.len() {
            0 => Arc::new(EmptyExec::new(projected)),
            1 => parts.pop().expect("one part"),
            _ => UnionExec::try_new(parts)?,
        })
    }
}
