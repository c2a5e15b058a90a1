//! `GET /metrics`: the Prometheus text exposition of [`crate::metrics::METRICS`], after
//! reading the levels other parts keep (log positions, archive, read models, NATS) into its
//! gauges, so that those cost nothing between scrapes.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use trailspark_sources::Reply;
use warp::http::StatusCode;

use super::Api;
use crate::metrics::{raise_to, METRICS};

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape refreshes the gauges at a time (two interleaved would still be right, but the
/// counters raised from other counts read cleaner this way).
static SCRAPE: Mutex<()> = Mutex::new(());

pub async fn metrics(api: &Api) -> Reply {
    let nats = match &api.nats {
        Some(n) => Some(n.report().await),
        None => None,
    };
    let body = {
        let _one = SCRAPE.lock().unwrap_or_else(|e| e.into_inner());
        let m = &*METRICS;
        let head = api.log.head();
        let applied = api.read.applied();
        m.log_head.set(head as i64);
        m.applied.set(applied as i64);
        m.dataflow_lag.set(head.saturating_sub(applied) as i64);

        let stats = api.archiver.stats();
        let files = api.archiver.files();
        m.archive_files.set(files.len() as i64);
        m.archive_bytes
            .set(files.iter().map(|f| f.size).sum::<u64>() as i64);
        m.archive_buffered_rows.set(stats.buffered_rows as i64);
        // Positions below the checkpoint are in files: what is above it, up to the head,
        // is the archiver's lag.
        m.archive_lag
            .set((head + 1).saturating_sub(stats.checkpoint.max(1)) as i64);

        for (model, n) in api.read.read().entry_counts() {
            m.read_model_entries
                .with_label_values(&[model])
                .set(n as i64);
        }

        if let Some(e) = &api.evaluator {
            raise_to(&m.evaluator_calls, e.calls.load(Ordering::Relaxed));
        }
        if let Some(d) = &api.destinations {
            let t = d.ledger.totals();
            m.destination_queued.set(t.queued as i64);
            m.destination_failed.set(t.failed as i64);
            raise_to(&m.destination_delivered, t.delivered);
            raise_to(&m.destination_unchanged, t.unchanged);
        }
        if let (Some(n), Some(report)) = (&api.nats, &nats) {
            m.with_nats();
            m.nats_connected.set(i64::from(report["connected"] == true));
            let level = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
            m.nats_consumer_pending
                .set(level(&report["source_consumer"]["pending"]));
            m.nats_consumer_ack_pending
                .set(level(&report["source_consumer"]["ack_pending"]));
            if let Some(s) = &n.source {
                raise_to(&m.nats_accepted, s.accepted.load(Ordering::Relaxed));
                raise_to(
                    &m.nats_dead_letters,
                    s.dead_lettered.load(Ordering::Relaxed),
                );
            }
            if let Some(e) = &n.events {
                m.nats_events_backlog
                    .set(e.backlog.load(Ordering::Relaxed) as i64);
            }
        }
        m.encode()
    };
    Reply::bytes(StatusCode::OK, TEXT_FORMAT, body)
}
