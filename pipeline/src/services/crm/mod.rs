//! The CRM sync service: builds a connector for each connected integration (opening its
//! sealed credentials in memory only), pulls what changed since each object's committed
//! cursor, and appends every page to the log with the cursor it reached. Syncs run on a
//! schedule, at once when an integration connects, and when asked through the API; one
//! integration never has two syncs at a time.

mod connect;
mod oauth;
mod sync;
pub mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use trailspark_core::crm::seal::SealKey;
use trailspark_core::crm::{Integration, Status};
use trailspark_crm::IntegrationConfig;
use trailspark_sources::crm::client::CrmHttp;
use trailspark_sources::crm::{connector, Connector, CrmError};

use crate::control::Control;

pub use connect::{IntegrationChange, IntegrationError, NewIntegration};
pub use oauth::{OAuthStart, HUBSPOT_SCOPES, PENDING_FOR, SALESFORCE_SCOPES};

/// What a reader or writer of `i` is built from, with its credentials opened (in memory
/// only).
pub fn integration_config(seal: &SealKey, i: &Integration) -> Result<IntegrationConfig, CrmError> {
    let credentials = seal
        .open(&i.sealed)
        .map_err(|e| CrmError::Invalid(format!("the stored credentials: {e}")))?;
    Ok(IntegrationConfig {
        kind: i.kind,
        api_base_url: i.api_base_url.clone(),
        login_url: i.login_url.clone(),
        settings: i.settings.clone(),
        credentials: serde_json::from_str(&credentials)
            .map_err(|_| CrmError::Invalid("the stored credentials are not JSON".into()))?,
        mapping: i.mapping.clone(),
    })
}

/// How the service runs.
#[derive(Clone, Debug)]
pub struct CrmConfig {
    /// Scheduled syncs (on top of the first one and those asked for).
    pub scheduled: bool,
    pub interval: Duration,
    /// The server's public URL, for OAuth callbacks (else the request's `Host`).
    pub public_url: Option<String>,
}

/// The last sync of an integration, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// `running`, `done`, `rate_limited` or `failed`.
    pub state: &'static str,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Records taken per object.
    pub records: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The log position of the last page taken: `?wait_for=` it to read the records back.
    pub log_position: u64,
}

pub struct CrmService {
    control: Arc<Control>,
    seal: SealKey,
    http: CrmHttp,
    config: CrmConfig,
    running: Mutex<HashSet<u64>>,
    requested: Mutex<HashSet<u64>>,
    started: Mutex<HashMap<u64, Instant>>,
    reports: Mutex<HashMap<u64, SyncReport>>,
    /// OAuth authorizations waiting for their callback, by `state`.
    pending: Mutex<HashMap<String, oauth::Pending>>,
    wake: tokio::sync::Notify,
}

impl CrmService {
    /// `http` is shared with the destinations, so that reading and writing one CRM scope
    /// (an Airtable base, a HubSpot token) stay under its limit together.
    pub fn new(
        control: Arc<Control>,
        seal: SealKey,
        config: CrmConfig,
        http: CrmHttp,
    ) -> Arc<CrmService> {
        Arc::new(CrmService {
            http,
            control,
            seal,
            config,
            running: Mutex::default(),
            requested: Mutex::default(),
            started: Mutex::default(),
            reports: Mutex::default(),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The connector for `i`, with its credentials opened.
    fn connector(&self, i: &Integration) -> Result<Box<dyn Connector>, CrmError> {
        connector(integration_config(&self.seal, i)?, self.http.clone())
    }

    /// Asks for a sync of `id` now.
    pub fn request_sync(&self, id: u64) {
        self.requested.lock().unwrap().insert(id);
        self.wake.notify_one();
    }

    /// Where a CRM sends the browser back to after consent.
    pub fn redirect_uri(&self, kind: &str, host: Option<&str>) -> String {
        let base = match (&self.config.public_url, host) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(h)) => format!("http://{h}"),
            (None, None) => "http://localhost".to_string(),
        };
        format!("{base}/api/oauth/callback/{kind}")
    }

    pub fn report(&self, id: u64) -> Option<SyncReport> {
        self.reports.lock().unwrap().get(&id).cloned()
    }

    /// Whether a sync of `id` is running.
    pub fn is_running(&self, id: u64) -> bool {
        self.running.lock().unwrap().contains(&id)
    }

    /// Starts the syncs that are due: asked for, or (when scheduled) an interval after the
    /// last one started in this process, and every connected integration once at start.
    fn start_due(self: &Arc<Self>) {
        let now = Instant::now();
        let connected: Vec<u64> = {
            let reg = self.control.registry.read().unwrap();
            reg.integrations()
                .all()
                .filter(|i| i.status == Status::Connected)
                .map(|i| i.id)
                .collect()
        };
        let requested: HashSet<u64> = std::mem::take(&mut *self.requested.lock().unwrap());
        for id in connected {
            let due = requested.contains(&id)
                || match self.started.lock().unwrap().get(&id) {
                    // Once at start when scheduled; otherwise only when asked (connecting asks).
                    None => self.config.scheduled,
                    Some(at) => self.config.scheduled && now >= *at + self.config.interval,
                };
            if !due || !self.running.lock().unwrap().insert(id) {
                if requested.contains(&id) && self.is_running(id) {
                    // Asked for while one runs: run again once it ends.
                    self.requested.lock().unwrap().insert(id);
                }
                continue;
            }
            self.started.lock().unwrap().insert(id, now);
            let me = self.clone();
            tokio::spawn(async move {
                me.sync(id).await;
                me.running.lock().unwrap().remove(&id);
                me.wake.notify_one();
            });
        }
    }

    /// Runs syncs until the server stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.start_due();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}
