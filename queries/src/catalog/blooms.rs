//! The archive's bloom filters, kept for the process once read.
//!
//! A lookup by `anonymous_id`, `email` or `lead_id` reads that column's bloom filter in every
//! row group of every file it may touch, one read per row group, and a partition opens its
//! files one after another. With the footers already cached ([`super::archive::FOOTERS`]),
//! these reads were most of a lookup's time: the anonymous_id lookup fell from 12.9 to 7.2 ms
//! and the lead timeline from 25.4 to 18.3 ms once they were kept (bench/RESULTS.md).
//!
//! The Parquet reader fetches a bloom filter with a single-range read (`get_bytes`); data
//! comes through `get_byte_ranges` and metadata through `get_metadata`, both passed on to
//! DataFusion's reader untouched. So what this keeps is bloom filters (and any other
//! single-range read of at most [`MAX_KEPT`] bytes), never column data.
//!
//! Archive files never change once written, so a filter read once is right for as long as
//! its file exists; entries of deleted files age out of the LRU. A key holds the file's
//! size and modification time, which for archive files carries the archiver's instance
//! ([`super::archive`] sets it), so another archive's file of the same name misses.

use std::ops::Range;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use datafusion::common::TableReference;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheKey, CacheValue};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::ParquetMetaData;

/// Bytes of bloom filters kept for the process. A file has a filter on each of three columns,
/// sized for its rows at a 1% false-positive rate (about 1.2 bytes a row, rounded up to a
/// power of two), so this holds the filters of some ten million archived signals; beyond
/// that the least recently used go.
const BUDGET: usize = 64 << 20;

/// The largest single-range read kept. A filter of the largest row group (64k rows) is
/// 128 KB; a larger read is not a bloom filter of ours.
const MAX_KEPT: u64 = 1 << 20;

/// The bloom filters read so far, shared by every query.
pub(crate) static BLOOMS: LazyLock<DefaultCache<RangeKey, Kept>> =
    LazyLock::new(|| DefaultCache::new(BUDGET).with_name("ArchiveBloomFilters"));

/// One version of one file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub path: Path,
    pub size: u64,
    /// The file's modification time in nanoseconds: for archive files, the archiver's
    /// instance.
    pub modified: i64,
}

/// One range of one version of one file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RangeKey {
    pub file: FileVersion,
    pub range: Range<u64>,
}

impl CacheKey for RangeKey {
    fn size(&self) -> usize {
        self.file.path.as_ref().len() + std::mem::size_of::<Self>()
    }

    fn table_ref(&self) -> Option<&TableReference> {
        None
    }
}

/// The bytes of one kept range.
#[derive(Clone, Debug)]
pub(crate) struct Kept(Bytes);

impl CacheValue for Kept {
    fn size(&self) -> usize {
        self.0.len()
    }
}

/// DataFusion's reader factory, with single-range reads served from [`BLOOMS`].
#[derive(Debug)]
pub(crate) struct KeepBlooms<F>(pub F);

impl<F: ParquetFileReaderFactory> ParquetFileReaderFactory for KeepBlooms<F> {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let meta = &file.object_meta;
        let version = FileVersion {
            path: meta.location.clone(),
            size: meta.size,
            modified: meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
        };
        let inner = self
            .0
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(Reader { inner, version }))
    }
}

struct Reader {
    inner: Box<dyn AsyncFileReader + Send>,
    version: FileVersion,
}

impl AsyncFileReader for Reader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        if range.end.saturating_sub(range.start) > MAX_KEPT {
            return self.inner.get_bytes(range);
        }
        let key = RangeKey {
            file: self.version.clone(),
            range: range.clone(),
        };
        if let Some(Kept(bytes)) = BLOOMS.get(&key) {
            return async move { Ok(bytes) }.boxed();
        }
        async move {
            let bytes = self.inner.get_bytes(range).await?;
            BLOOMS.put(&key, Kept(bytes.clone()));
            Ok(bytes)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.inner.get_metadata(options)
    }
}
