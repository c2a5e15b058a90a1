//! The server's configuration as data: one typed [`ServeConfig`], read from a TOML file
//! (`--config`), the environment and the command line, then handed to the topology, which
//! builds the server from it.
//!
//! Every setting has the three forms, with one name: the flag `--data-dir`, the environment
//! variable `TRAILSPARK_DATA_DIR`, and the file key `data_dir` (the variable's name without
//! `TRAILSPARK_`, in lower case). A flag wins over the environment, which wins over the file,
//! which wins over the built-in default. A file key that names no setting is refused by name,
//! as the API refuses an unknown field: a typo must not silently leave a default in place.
//! `deploy/trailspark.toml` lists every key.

mod crm;
mod evaluation;
mod opts;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::crm::CrmOpts;
pub use self::evaluation::{EvaluationOpts, Interval};
pub use self::opts::{ArchiveOpts, DataflowOpts, HttpOpts, LogOpts, NatsAuthOpts, NatsServeOpts};

/// Everything `serve` runs with.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct ServeConfig {
    /// A TOML file of settings (keys: the environment variables' names without
    /// `TRAILSPARK_`, in lower case). Flags and the environment override it.
    #[arg(long, env = "TRAILSPARK_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub log: LogOpts,
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, env = "TRAILSPARK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The server administrator's token (may create orgs; Owner of the default org).
    #[arg(long, env = "TRAILSPARK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub dataflow: DataflowOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub archive: ArchiveOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub nats: NatsServeOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub evaluation: EvaluationOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub crm: CrmOpts,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: unknown key `{key}` (keys are the TRAILSPARK_ variables' names in lower case, without the prefix)", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ServeConfig {
    /// The settings of `serve`: `self` as the command line and environment gave it
    /// (`matches` tells which values came from there), under which the file's values take
    /// the place of defaults.
    pub fn resolve(self, matches: &ArgMatches) -> Result<ServeConfig, ConfigFileError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        self.merge_file(&path, &text, &|key| {
            matches!(
                matches.value_source(key),
                None | Some(ValueSource::DefaultValue)
            )
        })
    }

    /// Merges the TOML `text` (of file `path`): each of its keys replaces the setting's
    /// value where `defaulted(key)` says no flag or variable gave one.
    fn merge_file(
        self,
        path: &Path,
        text: &str,
        defaulted: &dyn Fn(&str) -> bool,
    ) -> Result<ServeConfig, ConfigFileError> {
        let file: toml::Table = toml::from_str(text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let config = self.config.clone();
        let mut values = match serde_json::to_value(&self) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("the settings serialize as an object"),
        };
        for (key, value) in file {
            if !values.contains_key(&key) {
                return Err(ConfigFileError::UnknownKey {
                    path: path.to_path_buf(),
                    key,
                });
            }
            if defaulted(&key) {
                let value = serde_json::to_value(value).expect("TOML values are JSON values");
                values.insert(key, value);
            }
        }
        let mut merged: ServeConfig =
            serde_json::from_value(Value::Object(values)).map_err(|e| {
                let message = e.to_string();
                ConfigFileError::Invalid {
                    path: path.to_path_buf(),
                    key: message.split('`').nth(1).unwrap_or("a setting").to_string(),
                    message,
                }
            })?;
        merged.config = config;
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn parse(args: &[&str]) -> (ServeConfig, ArgMatches) {
        let matches =
            Cli::command().get_matches_from(std::iter::once("t").chain(args.iter().copied()));
        let cli = Cli::from_arg_matches(&matches).unwrap();
        (cli.serve, matches)
    }

    fn merge(args: &[&str], text: &str) -> Result<ServeConfig, ConfigFileError> {
        let (cfg, matches) = parse(args);
        cfg.merge_file(Path::new("t.toml"), text, &|key| {
            matches!(
                matches.value_source(key),
                None | Some(ValueSource::DefaultValue)
            )
        })
    }

    #[test]
    fn the_file_fills_what_flags_leave_at_their_defaults() {
        let text = r#"
            data_dir = "/var/lib/trailspark"
            listen = "0.0.0.0:9000"
            workers = 2
            sql_timeout_secs = 5
            blocked_identifiers = ["guest", "test"]
            nats_events = false
        "#;
        let c = merge(&["--workers", "3"], text).unwrap();
        assert_eq!(c.log.data_dir, PathBuf::from("/var/lib/trailspark"));
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.dataflow.workers, 3, "the flag wins");
        assert_eq!(c.archive.sql_timeout_secs, 5);
        assert_eq!(c.dataflow.blocked_identifiers, ["guest", "test"]);
        assert!(!c.nats.nats_events);
        // Untouched settings keep their defaults.
        assert_eq!(c.archive.sql_max_rows, 100_000);
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_by_name() {
        match merge(&[], "sql_timeout_sec = 5") {
            Err(ConfigFileError::UnknownKey { key, .. }) => assert_eq!(key, "sql_timeout_sec"),
            other => panic!("{other:?}"),
        }
        match merge(&[], "workers = \"many\"") {
            Err(ConfigFileError::Invalid { message, .. }) => assert!(message.contains("many")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            merge(&[], "workers = "),
            Err(ConfigFileError::Parse { .. })
        ));
    }

    /// Every setting's variable is `TRAILSPARK_` and its key in upper case, so the three
    /// names of a setting never drift apart.
    #[test]
    fn every_setting_has_one_name_in_three_forms() {
        let cmd = Cli::command();
        let mut n = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().to_string());
            assert_eq!(
                env,
                Some(format!("TRAILSPARK_{}", id.to_uppercase())),
                "{id}"
            );
            n += 1;
        }
        assert!(n > 40);
    }

    /// The example file in `deploy/` names only real settings, with valid values, and every
    /// setting.
    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../deploy/trailspark.toml");
        merge(&[], text).unwrap();
        let keys: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| l.trim_start_matches("# ").trim())
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
            .collect();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "config" {
                assert!(
                    keys.contains(id),
                    "deploy/trailspark.toml does not name {id}"
                );
            }
        }
    }
}
