//! `trailspark backfill`: imports files through a running server or into a stopped one's log.

use std::path::PathBuf;

use anyhow::bail;
use trailspark::backfill::{offline_target, Backfill, Target};
use trailspark::config::NatsAuthOpts;
use trailspark::log::open::{open_for_append, LogLocation};
use trailspark_core::tenancy::SharedRegistry;

pub async fn run(
    key: String,
    server: Option<String>,
    data_dir: Option<PathBuf>,
    nats_url: Option<String>,
    auth: NatsAuthOpts,
    rejects: Option<PathBuf>,
    files: Vec<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let progress = std::io::stderr().is_terminal();
    let mut _opened = None;
    let target = match (server, data_dir) {
        (Some(url), _) => Target::Server(url),
        (None, Some(dir)) => {
            let loc = LogLocation {
                data_dir: dir,
                nats_url,
                nats_auth: auth.auth(),
                ..Default::default()
            };
            let registry = SharedRegistry::default();
            let opened = open_for_append(&loc, &registry).await?;
            let t = offline_target(opened.log.clone(), &registry.read().unwrap(), &key)?;
            _opened = Some(opened);
            t
        }
        (None, None) => bail!("give --server URL or --data-dir DIR"),
    };
    let summary = Backfill {
        key,
        target,
        files,
        rejects,
        progress,
    }
    .run()
    .await?;
    println!(
        "accepted={} duplicates={} rejected={}",
        summary.accepted, summary.duplicates, summary.rejected
    );
    Ok(())
}
