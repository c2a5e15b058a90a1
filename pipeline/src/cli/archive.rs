//! `trailspark archive compact|files`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use trailspark_sinks::archive::{ArchiveConfig, Archiver, Location, NoStamps};

use super::ArchiveCmd;

pub async fn run(cmd: ArchiveCmd) -> anyhow::Result<()> {
    let open_archive = |archive: Option<String>, data_dir: PathBuf| async move {
        let url = match archive {
            Some(url) => url,
            None if !data_dir.exists() => anyhow::bail!(
                "the data directory {} does not exist (give --data-dir, or --archive URL)",
                data_dir.display()
            ),
            None => data_dir.join("archive").display().to_string(),
        };
        Archiver::open(
            Location::parse(&url)?,
            ArchiveConfig::default(),
            Arc::new(NoStamps),
        )
        .await
        .with_context(|| format!("opening the archive at {url}"))
    };
    match cmd {
        ArchiveCmd::Compact { archive, data_dir } => {
            let archiver = open_archive(archive, data_dir).await?;
            let (parts, files) = archiver.compact().await?;
            println!("partitions={parts} files_merged={files}");
        }
        ArchiveCmd::Files { archive, data_dir } => {
            let archiver = open_archive(archive, data_dir).await?;
            for f in archiver.files() {
                println!(
                    "{}",
                    json!({"path": f.path.to_string(), "first_id": f.first, "last_id": f.last, "bytes": f.size})
                );
            }
        }
    }
    Ok(())
}
