//! The ingest handle: what every source (HTTP, the Segment API, NATS) submits through. It
//! checks keys against the tenancy registry, admits signals against the plan's raw-signal
//! limit (one decision: [`Quota`]), appends them to the log and answers once they are
//! durable; the NATS source also waits through it for the read models to apply them.

use std::sync::Arc;
use std::time::Duration;

use trailspark_core::admission::Quota;
use trailspark_core::tenancy::{ApiKey, KeyRejection, OrgId, SharedRegistry};
use trailspark_core::{LogEntry, SignalRecord};
use trailspark_operators::{IdKind, Ident, Signal};
use trailspark_sinks::read_models::ReadModels;
use trailspark_sources::ingest::WaitFuture;
use trailspark_sources::{Ingest, IngestError, Receipt, SubmitFuture};

use crate::log::Log;

pub struct IngestHandle {
    registry: SharedRegistry,
    pub quota: Arc<Quota>,
    log: Log,
    read: Arc<ReadModels>,
    /// `--public-url`, for analytics.js's settings.
    pub public_url: Option<String>,
}

impl IngestHandle {
    pub fn new(
        registry: SharedRegistry,
        quota: Arc<Quota>,
        log: Log,
        read: Arc<ReadModels>,
        public_url: Option<String>,
    ) -> Arc<IngestHandle> {
        Arc::new(IngestHandle {
            registry,
            quota,
            log,
            read,
            public_url,
        })
    }
}

impl Ingest for IngestHandle {
    fn check_key(&self, presented: &str, now_ms: i64) -> Result<ApiKey, KeyRejection> {
        self.registry
            .read()
            .unwrap()
            .check_key(presented, now_ms)
            .cloned()
    }

    fn submit(&self, entries: Vec<LogEntry>) -> SubmitFuture {
        // Reserve raw-signal slots; refused entries never reach the log.
        let mut outcome: Vec<Option<IngestError>> = Vec::with_capacity(entries.len());
        let mut reserved: Vec<Option<(OrgId, u32)>> = Vec::with_capacity(entries.len());
        let mut accepted = Vec::with_capacity(entries.len());
        {
            let reg = self.registry.read().unwrap();
            for e in entries {
                let slot = match &e {
                    LogEntry::Signal(s) => {
                        let month = Signal::month_of(s.received_at);
                        match self.quota.reserve(s.org_id, month, &reg.plan(s.org_id), 1) {
                            Ok(()) => Some((s.org_id, month)),
                            Err(refused) => {
                                outcome.push(Some(IngestError::LimitReached(refused)));
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                outcome.push(None);
                reserved.push(slot);
                accepted.push(e);
            }
        }
        let quota = self.quota.clone();
        let fut = (!accepted.is_empty()).then(|| self.log.append(accepted));
        Box::pin(async move {
            let receipts: Vec<Receipt> = match fut {
                None => Vec::new(),
                Some(f) => match f.await {
                    Ok(r) => r,
                    Err(e) => {
                        for (org, month) in reserved.iter().flatten() {
                            quota.release(*org, *month, 1);
                        }
                        return Err(IngestError::from(e));
                    }
                },
            };
            // A recognised retry was not appended: it does not count.
            for (r, slot) in receipts.iter().zip(&reserved) {
                if let (true, Some((org, month))) = (r.duplicate, slot) {
                    quota.release(*org, *month, 1);
                }
            }
            let mut receipts = receipts.into_iter();
            Ok(outcome
                .into_iter()
                .map(|o| match o {
                    Some(err) => Err(err),
                    None => receipts
                        .next()
                        .ok_or_else(|| IngestError::Internal("missing receipt".into())),
                })
                .collect())
        })
    }

    fn joins_lead(&self, record: &SignalRecord) -> bool {
        let org = record.org_id.0;
        let known = |kind, v: &Option<String>| {
            v.as_deref()
                .is_some_and(|v| self.read.is_linked(&Ident::new(org, kind, v)))
        };
        known(IdKind::AnonymousId, &record.ids.anonymous_id)
            || known(IdKind::DeviceId, &record.ids.device_id)
    }

    fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    fn wait_applied(&self, pos: u64, timeout: Duration) -> WaitFuture {
        let read = self.read.clone();
        Box::pin(async move { read.wait_for(pos, timeout).await })
    }
}
