//! Where the archive lives and how its objects are named.
//!
//! ```text
//! <root>/signals/org_id=<org>/date=<YYYY-MM-DD>/part-<first id>-<last id>.parquet
//! <root>/anonymous/org_id=<org>/date=<YYYY-MM-DD>/part-<first id>-<last id>.parquet
//! <root>/_state/checkpoint
//! ```
//!
//! A file's name is the range of log positions (signal ids) it holds, so a file is named by
//! its content: rewriting the same rows after a crash writes the same name, and on start the
//! largest `last id` of a partition says which of its rows are already archived.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::ArchiveError;

/// The two trees of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Staged signals (anything not anonymous when it arrived).
    Signals,
    /// Anonymous signals: the cold store of anonymous signals.
    Anonymous,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Signals => "signals",
            Kind::Anonymous => "anonymous",
        }
    }
}

/// One hive partition: a kind, an org and a receipt date (days since 1970-01-01, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub kind: Kind,
    pub org: u64,
    pub day: i32,
}

impl Partition {
    /// The partition of a signal received at `received_at` (Unix ms).
    pub fn of(kind: Kind, org: u64, received_at: i64) -> Self {
        Partition {
            kind,
            org,
            day: received_at.div_euclid(86_400_000) as i32,
        }
    }

    pub fn date(&self) -> String {
        let d = chrono::DateTime::from_timestamp(self.day as i64 * 86_400, 0).unwrap_or_default();
        d.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/org_id={}/date={}",
            self.kind.dir(),
            self.org,
            self.date()
        )
    }
}

/// One archive file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub partition: Partition,
    pub first: u64,
    pub last: u64,
    pub size: u64,
    pub path: Path,
}

/// Distinguishes the staged writes of one process.
static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An object store and the prefix the archive lives under.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// The store's URL as DataFusion registers it: `file://`, `s3://bucket`, `memory://`.
    pub store_url: String,
    /// The archive's root inside the store.
    pub root: Path,
    /// As the user wrote it, for messages.
    pub display: String,
    /// Writes go to `_staging/` first and are renamed into place (see [`Location::put_atomic`]).
    pub staged: bool,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl Location {
    /// Parses an archive location: `s3://bucket/prefix` (credentials, region and endpoint from
    /// the usual `AWS_*` environment), `memory://` (tests), `file:///dir` or a plain path.
    pub fn parse(url: &str) -> Result<Self, ArchiveError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ArchiveError::BadLocation(format!("{url}: no bucket")));
            }
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            return Ok(Location {
                store: Arc::new(store),
                store_url: format!("s3://{bucket}"),
                root: Path::from(prefix.trim_matches('/')),
                display: url.to_string(),
                staged: false,
            });
        }
        if url == "memory://" || url.starts_with("memory://") {
            return Ok(Location {
                store: Arc::new(InMemory::new()),
                store_url: "memory://".into(),
                root: Path::from(url.trim_start_matches("memory://").trim_matches('/')),
                display: url.to_string(),
                staged: false,
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(ArchiveError::BadLocation(format!(
                "{url}: use s3://bucket/prefix, memory://, file:///dir or a directory path"
            )));
        }
        let dir = std::path::PathBuf::from(url.trim_start_matches("file://"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| ArchiveError::BadLocation(format!("{}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| ArchiveError::BadLocation(format!("{}: {e}", dir.display())))?;
        let root = Path::from_absolute_path(&dir)
            .map_err(|e| ArchiveError::BadLocation(format!("{}: {e}", dir.display())))?;
        Ok(Location {
            store: Arc::new(LocalFileSystem::new()),
            store_url: "file://".into(),
            root,
            display: dir.display().to_string(),
            staged: true,
        })
    }

    /// Where files are written before they are renamed into place.
    pub fn staging_dir(&self) -> Path {
        self.root.clone().join("_staging")
    }

    /// Writes one object so that no reader ever sees part of it. An S3 `PUT` is atomic as it
    /// is. On a directory, the store's own put goes through a temporary file next to the
    /// target, which a crash can leave behind where a reader globbing `*/*` would trip over
    /// it; so the object is first written under `_staging/` (which readers of the trees never
    /// look at, and which [`Location::clear_staging`] empties on start) and then renamed, an
    /// atomic step on one file system.
    pub async fn put_atomic(&self, path: &Path, bytes: Bytes) -> Result<(), object_store::Error> {
        if !self.staged {
            self.store.put(path, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .staging_dir()
            .join(format!("{}-{n}", std::process::id()).as_str());
        self.store.put(&tmp, PutPayload::from(bytes)).await?;
        self.store.rename(&tmp, path).await
    }

    /// Deletes what interrupted writes left under `_staging/`.
    pub async fn clear_staging(&self) -> Result<(), object_store::Error> {
        if !self.staged {
            return Ok(());
        }
        let dir = self.staging_dir();
        let left: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        for m in left {
            self.store.delete(&m.location).await?;
        }
        Ok(())
    }

    /// Writes and deletes a small object under `_state/`, for readiness: an archive that
    /// cannot take a write (a read-only disk, revoked credentials) fails here rather than at
    /// the next flush.
    pub async fn probe_writable(&self) -> Result<(), object_store::Error> {
        let path = self.root.clone().join("_state").join("ready-probe");
        self.store
            .put(&path, Bytes::from_static(b"ok").into())
            .await?;
        self.store.delete(&path).await
    }

    /// The directory of a partition.
    pub fn partition_dir(&self, p: &Partition) -> Path {
        let mut path = self.root.clone();
        for part in p.to_string().split('/') {
            path = path.join(part);
        }
        path
    }

    /// The directory of an org in one tree: what an org-scoped reader may list.
    pub fn org_dir(&self, kind: Kind, org: u64) -> Path {
        self.root
            .clone()
            .join(kind.dir())
            .join(format!("org_id={org}").as_str())
    }

    pub fn file_path(&self, p: &Partition, first: u64, last: u64) -> Path {
        self.partition_dir(p)
            .join(format!("part-{first:020}-{last:020}.parquet").as_str())
    }

    pub fn checkpoint_path(&self) -> Path {
        self.root.clone().join("_state").join("checkpoint")
    }

    /// A file's full URL, as DataFusion's listing tables take it.
    pub fn url_of(&self, path: &Path) -> String {
        match self.store_url.strip_suffix("://") {
            // `file://` and `memory://` have no authority: the path follows a third slash.
            Some(scheme) => format!("{scheme}:///{path}"),
            None => format!("{}/{path}", self.store_url),
        }
    }

    /// Recognises an archive file from its path; `None` for anything else (temporary files of
    /// an interrupted write, the checkpoint, foreign objects).
    pub fn parse_file(&self, path: &Path, size: u64) -> Option<FileMeta> {
        let rel: Vec<_> = path.prefix_match(&self.root)?.collect();
        let [kind, org, date, name] = rel.as_slice() else {
            return None;
        };
        let kind = match kind.as_ref() {
            "signals" => Kind::Signals,
            "anonymous" => Kind::Anonymous,
            _ => return None,
        };
        let org = org.as_ref().strip_prefix("org_id=")?.parse().ok()?;
        let date = date.as_ref().strip_prefix("date=")?;
        let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        let day = (day - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32;
        let name = name
            .as_ref()
            .strip_prefix("part-")?
            .strip_suffix(".parquet")?;
        let (first, last) = name.split_once('-')?;
        Some(FileMeta {
            partition: Partition { kind, org, day },
            first: first.parse().ok()?,
            last: last.parse().ok()?,
            size,
            path: path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let loc = Location::parse("memory://arch/v1").unwrap();
        let p = Partition::of(Kind::Anonymous, 42, 1_700_000_000_000);
        assert_eq!(p.date(), "2023-11-14");
        let path = loc.file_path(&p, 7, 1234);
        assert_eq!(
            path.as_ref(),
            "arch/v1/anonymous/org_id=42/date=2023-11-14/part-00000000000000000007-00000000000000001234.parquet"
        );
        let meta = loc.parse_file(&path, 10).unwrap();
        assert_eq!((meta.partition, meta.first, meta.last), (p, 7, 1234));
        assert!(loc.parse_file(&loc.checkpoint_path(), 1).is_none());
        assert!(loc
            .parse_file(&Path::from(format!("{path}#1")), 1)
            .is_none());
    }

    #[test]
    fn locations() {
        assert!(Location::parse("gs://x").is_err());
        assert!(Location::parse("s3://").is_err());
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(loc.store_url, "file://");
        assert!(loc.url_of(&loc.checkpoint_path()).starts_with("file:///"));
    }
}
