//! The archive's files: encoding rows as Parquet, reading them back, listing them, and the
//! checkpoint.

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use trailspark_core::OrgId;

use super::{from_batch, to_batch, ArchiveError, ArchiveRow, FileMeta, Location, SCHEMA};

fn writer_properties(rows: usize) -> WriterProperties {
    // Bloom filters on the lookup keys make an anonymous-id or email lookup read only the
    // row groups that may hold it, which is what rehydration does on every identify. They
    // are sized for the file's rows (at most one row group's) at a 1% false-positive rate.
    let ndv = rows.clamp(1, 64 * 1024) as u64;
    // ZSTD at a low level: about as fast to write as snappy here, and its entropy coding
    // shrinks the JSON payloads and hex hashes that snappy leaves nearly as they are.
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("3 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(64 * 1024));
    for col in ["anonymous_id", "email", "lead_id"] {
        b = b
            .set_column_bloom_filter_enabled(col.into(), true)
            .set_column_bloom_filter_max_ndv(col.into(), ndv)
            .set_column_bloom_filter_fpp(col.into(), 0.01);
    }
    b.build()
}

/// Encodes rows as one Parquet file.
pub fn encode(rows: &[ArchiveRow]) -> Result<Bytes, ArchiveError> {
    let batch = to_batch(rows)?;
    let mut out = Vec::with_capacity(rows.len() * 200);
    let mut w = ArrowWriter::try_new(
        &mut out,
        SCHEMA.clone(),
        Some(writer_properties(rows.len())),
    )?;
    w.write(&batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// Reads every row of one archive file.
pub async fn read_file(loc: &Location, file: &FileMeta) -> Result<Vec<ArchiveRow>, ArchiveError> {
    // Files are bounded by `max_bytes`, so reading one whole is fine and keeps to the
    // synchronous reader.
    let bytes = loc.store.get(&file.path).await?.bytes().await?;
    let org = OrgId(file.partition.org);
    tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        for b in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            rows.extend(from_batch(org, &b?)?);
        }
        Ok(rows)
    })
    .await
    .expect("decoding does not panic")
}

/// Lists the archive's files, dropping (and deleting) any whose ids another file of the
/// same partition covers: what a compaction interrupted between its write and its deletes
/// leaves behind.
pub async fn list_files(loc: &Location) -> Result<Vec<FileMeta>, ArchiveError> {
    let mut files: Vec<FileMeta> = loc
        .store
        .list(Some(&loc.root))
        .try_filter_map(|m| async move { Ok(loc.parse_file(&m.location, m.size)) })
        .try_collect()
        .await?;
    files.sort_by_key(|f| (f.partition, f.first, std::cmp::Reverse(f.last)));
    let mut kept: Vec<FileMeta> = Vec::with_capacity(files.len());
    for f in files {
        match kept.last() {
            Some(k) if k.partition == f.partition && f.last <= k.last => {
                tracing::info!(path = %f.path, "Deleting an archive file a compacted file covers.");
                loc.store.delete(&f.path).await?;
            }
            _ => kept.push(f),
        }
    }
    Ok(kept)
}

/// The checkpoint: every log position below it was offered to a file (0 when none is
/// written yet).
pub(super) async fn read_checkpoint(loc: &Location) -> Result<u64, ArchiveError> {
    match loc.store.get(&loc.checkpoint_path()).await {
        Ok(r) => {
            let b = r.bytes().await?;
            let s = std::str::from_utf8(&b).unwrap_or_default().trim();
            s.parse::<u64>()
                .map_err(|_| ArchiveError::Checkpoint(format!("{s:?}")))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The highest log position the archive knows was used (by its checkpoint or by a file's
/// ids), with its files. Read-only: a log that lost its tail must not hand these positions
/// out again, or the archive would hold another entry under the same id.
pub async fn positions_used(loc: &Location) -> Result<(u64, Vec<FileMeta>), ArchiveError> {
    let checkpoint = read_checkpoint(loc).await?;
    let files: Vec<FileMeta> = loc
        .store
        .list(Some(&loc.root))
        .try_filter_map(|m| async move { Ok(loc.parse_file(&m.location, m.size)) })
        .try_collect()
        .await?;
    let used = files
        .iter()
        .map(|f| f.last)
        .max()
        .unwrap_or(0)
        .max(checkpoint.saturating_sub(1));
    Ok((used, files))
}
