//! Settings of CRM integrations: whether syncs run, how often, and the key that seals CRM
//! credentials at rest.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use trailspark_core::crm::seal::SealKey;

use super::Interval;

/// CRM integrations.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct CrmOpts {
    /// Pull connected CRMs on a schedule (`POST /api/integrations/{id}/sync` works either way).
    #[arg(long, env = "TRAILSPARK_CRM_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub crm_sync: bool,
    /// Time between scheduled syncs of each integration (seconds, or 90s, 15m, 1h).
    #[arg(long, env = "TRAILSPARK_CRM_SYNC_INTERVAL", default_value = "15m")]
    pub crm_sync_interval: Interval,
    /// Seconds a CRM call may take before it counts as failed.
    #[arg(long, env = "TRAILSPARK_CRM_TIMEOUT_SECS", default_value_t = 60)]
    pub crm_timeout_secs: u64,
    /// The key that seals CRM credentials: 32 bytes as 64 hex digits or base64 (best given
    /// in the environment). Without it, the key file is used.
    #[arg(long, env = "TRAILSPARK_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// A file holding the key; created with a new random key (mode 0600) when missing.
    /// Default: `secret.key` in the data directory.
    #[arg(long, env = "TRAILSPARK_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Write evaluations to active destinations (off: they stay queued on the log).
    #[arg(long, env = "TRAILSPARK_DESTINATION_DELIVERY", default_value_t = true, action = clap::ArgAction::Set)]
    pub destination_delivery: bool,
    /// A destination's first wait after a transient failure, in ms; later waits are 5x,
    /// 30x, 120x and 720x it, and the fifth failure records the record as failed.
    #[arg(
        long,
        env = "TRAILSPARK_DESTINATION_RETRY_MS",
        default_value_t = 60_000
    )]
    pub destination_retry_ms: u64,
    /// How long Salesforce's REQUEST_LIMIT_EXCEEDED pauses a destination (90s, 15m, 1h).
    #[arg(
        long,
        env = "TRAILSPARK_DESTINATION_LIMIT_PAUSE",
        default_value = "15m"
    )]
    pub destination_limit_pause: Interval,
}

impl CrmOpts {
    /// How the delivery service runs.
    pub fn destination_config(&self) -> crate::services::destinations::DestinationConfig {
        crate::services::destinations::DestinationConfig {
            retry_base: std::time::Duration::from_millis(self.destination_retry_ms.max(1)),
            max_attempts: 5,
            limit_pause: self.destination_limit_pause.0,
        }
    }

    /// The sealing key: given, read from its file, or made and written there.
    pub fn seal_key(&self, data_dir: &Path) -> Result<SealKey, String> {
        if let Some(k) = &self.secret_key {
            return SealKey::parse(k).map_err(|e| format!("TRAILSPARK_SECRET_KEY: {e}"));
        }
        let path = self
            .secret_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secret.key"));
        match std::fs::read_to_string(&path) {
            Ok(text) => SealKey::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SealKey::generate();
                write_private(&path, &key.to_hex())?;
                tracing::info!(path = %path.display(), "created the key that seals CRM credentials");
                Ok(key)
            }
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}
