//! What a backfill's command line names, as local files to read: files, directories of
//! Parquet files, and object-store URLs (each object streamed to a temporary file first).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;

use super::BackfillError;

/// One file to import, local (possibly a download of an object).
pub(super) struct Input {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub parquet: bool,
    _download: Option<tempfile::TempPath>,
}

fn is_parquet(name: &str) -> bool {
    name.ends_with(".parquet")
}

/// Every `*.parquet` file under a directory (skipping `_staging` and hidden ones).
fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with('_') && !name.starts_with('.') {
                parquet_files(&p, out)?;
            }
        } else if p.to_str().is_some_and(is_parquet) {
            out.push(p);
        }
    }
    Ok(())
}

/// Orders archive files by their first id (`part-<first>-<last>.parquet`), else by name, so
/// that a partition's files replay in log order.
fn archive_order(p: &Path) -> (u64, String) {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first = name
        .strip_prefix("part-")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (first, p.display().to_string())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackfillError {
    let what = what.into();
    move |source| BackfillError::Io { what, source }
}

/// Resolves the command line's files.
pub(super) async fn resolve(args: &[PathBuf]) -> Result<Vec<Input>, BackfillError> {
    let mut out = Vec::new();
    for arg in args {
        let s = arg.to_string_lossy().to_string();
        let local = s.strip_prefix("file://").map(PathBuf::from);
        if s.contains("://") && local.is_none() {
            download(&s, &mut out).await?;
            continue;
        }
        let path = local.unwrap_or_else(|| arg.clone());
        if path.is_dir() {
            let mut files = Vec::new();
            parquet_files(&path, &mut files)
                .map_err(io(format!("reading directory {}", path.display())))?;
            if files.is_empty() {
                return Err(BackfillError::Input(format!(
                    "{}: no .parquet files in this directory",
                    path.display()
                )));
            }
            files.sort_by_key(|p| archive_order(p));
            for f in files {
                out.push(Input {
                    name: f.display().to_string().into(),
                    path: f,
                    parquet: true,
                    _download: None,
                });
            }
        } else {
            out.push(Input {
                name: path.display().to_string().into(),
                parquet: path.to_str().is_some_and(is_parquet),
                path,
                _download: None,
            });
        }
    }
    Ok(out)
}

/// Streams the object at URL `s`, or every object under it, to temporary files.
async fn download(s: &str, out: &mut Vec<Input>) -> Result<(), BackfillError> {
    let store_err = |e: object_store::Error| BackfillError::Input(format!("{s}: {e}"));
    let loc = trailspark_sinks::archive::Location::parse(s)
        .map_err(|e| BackfillError::Input(format!("{s}: {e}")))?;
    let store = loc.store.clone();
    let objects: Vec<object_store::path::Path> = match store.head(&loc.root).await {
        Ok(m) => vec![m.location],
        Err(object_store::Error::NotFound { .. }) => {
            let mut v: Vec<_> = store
                .list(Some(&loc.root))
                .map(|m| m.map(|m| m.location))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(store_err)?;
            v.retain(|p| !p.parts().any(|part| part.as_ref().starts_with('_')));
            v.sort_by_key(|p| archive_order(Path::new(p.as_ref())));
            v
        }
        Err(e) => return Err(store_err(e)),
    };
    if objects.is_empty() {
        return Err(BackfillError::Input(format!("{s}: no objects there")));
    }
    for obj in objects {
        let tmp = tempfile::NamedTempFile::new().map_err(io("creating a temporary file"))?;
        let mut f = std::io::BufWriter::new(tmp.reopen().map_err(io("opening it"))?);
        let mut stream = store.get(&obj).await.map_err(store_err)?.into_stream();
        while let Some(chunk) = stream.next().await {
            f.write_all(&chunk.map_err(store_err)?)
                .map_err(io(format!("downloading {obj}")))?;
        }
        f.flush().map_err(io(format!("downloading {obj}")))?;
        let name = format!("{}/{obj}", loc.store_url.trim_end_matches('/'));
        out.push(Input {
            parquet: is_parquet(&name),
            name: name.into(),
            path: tmp.path().to_path_buf(),
            _download: Some(tmp.into_temp_path()),
        });
    }
    Ok(())
}
