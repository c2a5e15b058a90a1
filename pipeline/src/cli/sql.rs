//! `trailspark sql`: one read-only query for an org, without a server.
//!
//! Over a data directory (the default) it sees what the server would: the log is replayed
//! into an engine of its own, whose read models hold the live tables, and the archive plus
//! the log's tail not yet archived make the archive tables (the server must be stopped: it
//! holds the directory). With `--archive URL` and no data directory it reads the archive
//! alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use trailspark::engine::{Engine, EngineConfig};
use trailspark::log::open::{open, LogLocation};
use trailspark::log::{Follower, Followers};
use trailspark::topology::ArchiveFollower;
use trailspark_core::tenancy::SharedRegistry;
use trailspark_queries::output::{encode, to_table, Format};
use trailspark_queries::{Limits, Live, SqlEngine};
use trailspark_sinks::archive::{ArchiveConfig, Archiver, Location, NoStamps};
use trailspark_sinks::read_models::ReadStamper;

pub async fn run(
    sql: String,
    org: u64,
    data_dir: Option<PathBuf>,
    archive: Option<String>,
    format: String,
    max_rows: usize,
) -> anyhow::Result<()> {
    let limits = Limits {
        max_rows,
        ..Default::default()
    };
    // Kept alive until the query has run: the replayed log and its engine.
    let mut _replayed = None;
    let engine = match (data_dir, &archive) {
        (None, Some(url)) => {
            let archiver = Archiver::open(
                Location::parse(url)?,
                ArchiveConfig::default(),
                Arc::new(NoStamps),
            )
            .await
            .with_context(|| format!("opening the archive at {url}"))?;
            SqlEngine::new(Some(archiver), None, limits)?
        }
        (dir, _) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("trailspark-data"));
            if !dir.exists() {
                bail!(
                    "the data directory {} does not exist (give --data-dir, or --archive URL alone)",
                    dir.display()
                );
            }
            let url = archive.unwrap_or_else(|| dir.join("archive").display().to_string());
            let engine = Engine::start(EngineConfig::default());
            let archiver = Archiver::open(
                Location::parse(&url)?,
                ArchiveConfig::default(),
                Arc::new(ReadStamper(engine.read.clone())),
            )
            .await
            .with_context(|| format!("opening the archive at {url}"))?;
            let registry = SharedRegistry::default();
            let loc = LogLocation {
                data_dir: dir,
                ..Default::default()
            };
            let followers = Followers::new(vec![
                Arc::new(ArchiveFollower(archiver.clone())) as Arc<dyn Follower>,
                engine.clone(),
            ]);
            let opened = open(&loc, &registry, followers, None).await?;
            let head = opened.log.head();
            if !engine
                .read
                .wait_settled(None, head, Duration::from_secs(600))
                .await
            {
                bail!("the dataflow did not catch up with the log in 10 minutes");
            }
            let live = Live {
                models: engine.read.clone(),
                registry,
            };
            _replayed = Some((opened, engine));
            SqlEngine::new(Some(archiver), Some(live), limits)?
        }
    };
    let out = engine.query(org, &sql).await?;
    let text = match format.as_str() {
        "table" => to_table(&out)?,
        "json" => String::from_utf8(encode(&out, Format::Json)?)?,
        "csv" => String::from_utf8(encode(&out, Format::Csv)?)?,
        other => bail!("--format must be table, json or csv, not {other}"),
    };
    println!("{}", text.trim_end());
    Ok(())
}
