//! The server's Prometheus metrics: one process-wide registry, exposed at `GET /metrics` in
//! the Prometheus text format.
//!
//! Two kinds live here. Event counts and latencies (requests, journal appends and fsyncs,
//! epochs, SQL queries, hot-window moves) are counted where they happen, through the
//! [`METRICS`] handles. Levels that some part already tracks (log head and applied position,
//! archive files, read-model sizes, NATS consumer lag) are read when a scrape asks for them
//! (`http::metrics`), so nothing on a hot path pays for them.
//!
//! Names follow Prometheus' conventions: a `trailspark_` prefix, `_total` on counters, base
//! units (`_seconds`, `_bytes`). Labels are bounded: a route template (see
//! [`bounded_route`]), a status code, a model or arrangement name from the code, a worker
//! index; never a key, an email or an org's own text. The process collector adds the
//! standard `process_*` series (resident memory, open file descriptors, CPU), under the
//! names dashboards expect.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric of the server, registered once in [`Metrics::registry`].
pub struct Metrics {
    pub registry: Registry,
    /// `trailspark_http_requests_total{route, status}`.
    pub http_requests: IntCounterVec,
    /// `trailspark_http_request_duration_seconds{route}`: handler time, body read included.
    pub http_duration: HistogramVec,
    /// `trailspark_http_response_bytes_total{route}`.
    pub http_response_bytes: IntCounterVec,
    /// Entries made durable in the journal (duplicates not counted).
    pub log_appended: IntCounter,
    /// Each journal group write with its `fdatasync` (with JetStream: each append's wait for
    /// the stream's acknowledgements).
    pub log_fsync: Histogram,
    pub log_head: IntGauge,
    pub applied: IntGauge,
    /// Log head minus the position the read models reflect: the dataflow's lag.
    pub dataflow_lag: IntGauge,
    /// Log entries per epoch fed to the dataflow.
    pub epoch_entries: Histogram,
    /// From an epoch's feeding to the read models having it, on worker 0.
    pub epoch_duration: Histogram,
    /// `trailspark_freshness_seconds{stage}`, one series per stage (see [`Freshness`]).
    pub freshness: Freshness,
    /// Slices of rule edits with reprocess sent to the dataflow.
    pub reprocess_slices: IntCounter,
    /// Orgs with a rule edit with reprocess still reaching back over their history.
    pub reprocessing_orgs: IntGauge,
    /// Updates held by each arrangement, per worker.
    pub arrangement_records: IntGaugeVec,
    /// Bytes each arrangement's batches allocated, per worker.
    pub arrangement_bytes: IntGaugeVec,
    /// Entries of each read model, all orgs together.
    pub read_model_entries: IntGaugeVec,
    pub archive_files: IntGauge,
    pub archive_bytes: IntGauge,
    pub archive_buffered_rows: IntGauge,
    /// Log positions not yet in an archive file.
    pub archive_lag: IntGauge,
    /// `trailspark_sql_queries_total{outcome}`: `ok` or the error's code.
    pub sql_queries: IntCounterVec,
    pub sql_duration: Histogram,
    pub nats_connected: IntGauge,
    pub nats_consumer_pending: IntGauge,
    pub nats_consumer_ack_pending: IntGauge,
    pub nats_accepted: IntCounter,
    pub nats_dead_letters: IntCounter,
    pub nats_events_backlog: IntGauge,
    pub hot_evictions: IntCounter,
    pub hot_rehydrations: IntCounter,
    /// Scorer calls (deterministic and LLM) by the evaluator.
    pub evaluator_calls: IntCounter,
    /// Evaluations waiting for delivery, all destinations.
    pub destination_queued: IntGauge,
    pub destination_delivered: IntCounter,
    pub destination_unchanged: IntCounter,
    /// Records whose latest delivery failed.
    pub destination_failed: IntGauge,
    /// Each (route, status) pair's series, so a request costs one read lock and no label
    /// hashing by the registry (see [`Metrics::request`]).
    routes: RwLock<HashMap<(String, u16), Series>>,
    /// Whether the NATS metrics are registered (see [`Metrics::with_nats`]).
    nats_shown: std::sync::Once,
}

/// The stages of a write's path to the explorer, each timed from its commit to the log: the
/// log's commit, the feeder's queue, the dataflow, the read models. A slow answer shows
/// where its time went without a profiler. The series are resolved once, here, so that
/// timing an epoch costs no label lookup.
pub struct Freshness {
    /// The feeder took the entries (once per take, by its oldest chunk).
    pub taken: Histogram,
    /// The epoch was sent to the workers.
    pub fed: Histogram,
    /// The dataflow completed the epoch (worker 0's probe).
    pub complete: Histogram,
    /// The read models applied the epoch: queries see it.
    pub applied: Histogram,
}

impl Freshness {
    fn new(v: HistogramVec) -> Freshness {
        let stage = |s: &str| v.with_label_values(&[s]);
        Freshness {
            taken: stage("taken"),
            fed: stage("fed"),
            complete: stage("complete"),
            applied: stage("applied"),
        }
    }
}

/// Records in `stage` the time since `committed`.
pub fn since(stage: &Histogram, committed: std::time::Instant) {
    stage.observe(committed.elapsed().as_secs_f64());
}

/// At most this many (route, status) pairs; later new routes count as `other`.
const MAX_SERIES: usize = 1024;

/// The series one (route, status) pair counts into.
struct Series {
    requests: IntCounter,
    duration: Histogram,
    bytes: IntCounter,
}

/// The server's metrics, created and registered on first use.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("trailspark_{name}"), help)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(format!("trailspark_{name}"), help).buckets(buckets)
}

/// 100 µs to about 26 s, doubling.
fn seconds() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 19).expect("valid buckets")
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric");
                r.register(Box::new(m.clone())).expect("unique metric");
                m
            }};
        }
        // Registered only by a server that uses NATS (see `Metrics::with_nats`): a
        // `nats_connected 0` from a server without NATS would read as an outage.
        macro_rules! nats {
            ($m:expr) => {
                $m.expect("valid metric")
            };
        }
        let m = Metrics {
            http_requests: reg!(IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests answered, by route template and status."
                ),
                &["route", "status"]
            )),
            http_duration: reg!(HistogramVec::new(
                hopts(
                    "http_request_duration_seconds",
                    "Time to answer an HTTP request, by route template.",
                    seconds()
                ),
                &["route"]
            )),
            http_response_bytes: reg!(IntCounterVec::new(
                opts(
                    "http_response_bytes_total",
                    "Bytes of HTTP response bodies, by route template."
                ),
                &["route"]
            )),
            log_appended: reg!(IntCounter::with_opts(opts(
                "log_appended_entries_total",
                "Entries made durable in the journal (duplicates excluded)."
            ))),
            log_fsync: reg!(Histogram::with_opts(hopts(
                "log_fsync_duration_seconds",
                "Time of each journal group write and its fdatasync (JetStream: of each append's acknowledgements).",
                seconds()
            ))),
            log_head: reg!(IntGauge::with_opts(opts(
                "log_head_position",
                "The log's last position."
            ))),
            applied: reg!(IntGauge::with_opts(opts(
                "read_models_applied_position",
                "The last log position the read models reflect."
            ))),
            dataflow_lag: reg!(IntGauge::with_opts(opts(
                "dataflow_lag_entries",
                "Log positions appended but not yet reflected in the read models."
            ))),
            epoch_entries: reg!(Histogram::with_opts(hopts(
                "epoch_entries",
                "Log entries per epoch fed to the dataflow.",
                exponential_buckets(1.0, 4.0, 10).expect("valid buckets")
            ))),
            freshness: Freshness::new(reg!(HistogramVec::new(
                hopts(
                    "freshness_seconds",
                    "Time from log entries being committed to their being taken by the dataflow's feeder, fed to the dataflow, complete in it, and applied to the read models (stage; each epoch counts once by its oldest entry, each take of the feeder once by its oldest chunk).",
                    seconds()
                ),
                &["stage"]
            ))),
            epoch_duration: reg!(Histogram::with_opts(hopts(
                "epoch_duration_seconds",
                "Time from feeding an epoch to the dataflow to its outputs being complete.",
                seconds()
            ))),
            reprocess_slices: reg!(IntCounter::with_opts(opts(
                "reprocess_slices_total",
                "Slices of rule edits with reprocess sent to the dataflow between the log's epochs."
            ))),
            reprocessing_orgs: reg!(IntGauge::with_opts(opts(
                "reprocessing_orgs",
                "Orgs with a rule edit with reprocess still reaching back over their history."
            ))),
            arrangement_records: reg!(IntGaugeVec::new(
                opts(
                    "arrangement_records",
                    "Updates held by each dataflow arrangement, per worker."
                ),
                &["arrangement", "worker"]
            )),
            arrangement_bytes: reg!(IntGaugeVec::new(
                opts(
                    "arrangement_bytes",
                    "Bytes the batches of each dataflow arrangement allocated, per worker (not what records point to)."
                ),
                &["arrangement", "worker"]
            )),
            read_model_entries: reg!(IntGaugeVec::new(
                opts(
                    "read_model_entries",
                    "Entries in each read model, all orgs together."
                ),
                &["model"]
            )),
            archive_files: reg!(IntGauge::with_opts(opts(
                "archive_files",
                "Parquet files in the archive."
            ))),
            archive_bytes: reg!(IntGauge::with_opts(opts(
                "archive_bytes",
                "Bytes of the archive's Parquet files."
            ))),
            archive_buffered_rows: reg!(IntGauge::with_opts(opts(
                "archive_buffered_rows",
                "Rows the archiver holds that are not in a file yet."
            ))),
            archive_lag: reg!(IntGauge::with_opts(opts(
                "archive_lag_entries",
                "Log positions appended but not yet covered by the archive's checkpoint."
            ))),
            sql_queries: reg!(IntCounterVec::new(
                opts(
                    "sql_queries_total",
                    "SQL queries run, by outcome (ok or the error code)."
                ),
                &["outcome"]
            )),
            sql_duration: reg!(Histogram::with_opts(hopts(
                "sql_query_duration_seconds",
                "Time to run a SQL query.",
                seconds()
            ))),
            nats_connected: nats!(IntGauge::with_opts(opts(
                "nats_connected",
                "1 while the NATS connection is up (absent on a server without NATS)."
            ))),
            nats_consumer_pending: nats!(IntGauge::with_opts(opts(
                "nats_consumer_pending_messages",
                "Messages the NATS source's consumer has not been delivered yet."
            ))),
            nats_consumer_ack_pending: nats!(IntGauge::with_opts(opts(
                "nats_consumer_ack_pending_messages",
                "Messages delivered to the NATS source and not yet acknowledged."
            ))),
            nats_accepted: nats!(IntCounter::with_opts(opts(
                "nats_source_accepted_total",
                "Messages the NATS source accepted."
            ))),
            nats_dead_letters: nats!(IntCounter::with_opts(opts(
                "nats_source_dead_letters_total",
                "Messages the NATS source refused to its dead-letter subject."
            ))),
            nats_events_backlog: nats!(IntGauge::with_opts(opts(
                "nats_events_backlog",
                "Change events waiting to be published to NATS."
            ))),
            hot_evictions: reg!(IntCounter::with_opts(opts(
                "hot_window_evictions_total",
                "Anonymous signals taken out of the dataflow by the hot window."
            ))),
            hot_rehydrations: reg!(IntCounter::with_opts(opts(
                "hot_window_rehydrations_total",
                "Signals brought back into the dataflow from the archive."
            ))),
            evaluator_calls: reg!(IntCounter::with_opts(opts(
                "evaluator_scorer_calls_total",
                "Scorer calls (deterministic or LLM) made by the evaluator."
            ))),
            destination_queued: reg!(IntGauge::with_opts(opts(
                "destination_queued_evaluations",
                "Evaluations waiting to be delivered to a CRM, all destinations."
            ))),
            destination_delivered: reg!(IntCounter::with_opts(opts(
                "destination_delivered_total",
                "Evaluations written to a CRM record, all destinations."
            ))),
            destination_unchanged: reg!(IntCounter::with_opts(opts(
                "destination_unchanged_total",
                "Evaluations not sent because the CRM record already held their values."
            ))),
            destination_failed: reg!(IntGauge::with_opts(opts(
                "destination_failed_records",
                "CRM records whose latest delivery failed, all destinations."
            ))),
            routes: RwLock::new(HashMap::new()),
            nats_shown: std::sync::Once::new(),
            registry: r,
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        m.registry
            .register(Box::new(process))
            .expect("unique process metrics");
        m
    }

    /// Counts one answered request.
    ///
    /// The route label stays bounded: a 404 or 405 is `unmatched` (whatever path a client
    /// invents), and past [`MAX_SERIES`] pairs a new route is `other`.
    pub fn request(&self, route: &str, status: u16, bytes: usize, seconds: f64) {
        let route = if status == 404 || status == 405 {
            "unmatched"
        } else {
            route
        };
        let count = |s: &Series| {
            s.requests.inc();
            s.duration.observe(seconds);
            s.bytes.inc_by(bytes as u64);
        };
        let key = (route.to_string(), status);
        if let Some(s) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return count(s);
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let key = if routes.len() >= MAX_SERIES && !routes.contains_key(&key) {
            ("other".to_string(), status)
        } else {
            key
        };
        let code = status.to_string();
        let s = routes.entry(key).or_insert_with_key(|(route, _)| Series {
            requests: self
                .http_requests
                .with_label_values(&[route.as_str(), &code]),
            duration: self.http_duration.with_label_values(&[route.as_str()]),
            bytes: self
                .http_response_bytes
                .with_label_values(&[route.as_str()]),
        });
        count(s);
    }

    /// Exposes the NATS metrics from now on: called by a server that has NATS.
    pub fn with_nats(&self) {
        self.nats_shown.call_once(|| {
            let gauges = [
                &self.nats_connected,
                &self.nats_consumer_pending,
                &self.nats_consumer_ack_pending,
                &self.nats_events_backlog,
            ];
            for g in gauges {
                let _ = self.registry.register(Box::new(g.clone()));
            }
            for c in [&self.nats_accepted, &self.nats_dead_letters] {
                let _ = self.registry.register(Box::new(c.clone()));
            }
        });
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec only fails on invalid metric data, which `register` refused.
        let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut out);
        out
    }
}

/// Raises a counter that mirrors a count kept elsewhere to that count (never lowers it).
pub fn raise_to(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_stay_bounded() {
        let m = Metrics::new();
        m.request("/a/x", 404, 0, 0.1);
        m.request("/api/leads", 200, 0, 0.1);
        for i in 0..MAX_SERIES * 2 {
            m.request(&format!("/r{i}"), 200, 0, 0.1);
        }
        m.request("/api/leads", 200, 0, 0.1);
        m.request("/new", 400, 0, 0.1);
        let text = String::from_utf8(m.encode()).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("trailspark_http_requests_total{"))
            .count();
        assert!(series <= MAX_SERIES + 2, "{series} series");
        for line in [
            "trailspark_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "trailspark_http_requests_total{route=\"/api/leads\",status=\"200\"} 2",
            "trailspark_http_requests_total{route=\"other\",status=\"400\"} 1",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(!text.contains("/a/x"));
    }

    #[test]
    fn the_exposition_names_every_family() {
        // An instance of its own: the process-wide one counts the other tests' appends.
        let m = Metrics::new();
        m.request("/healthz", 200, 10, 0.001);
        m.log_appended.inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            !text.contains("nats"),
            "NATS series only once a server has NATS"
        );
        m.with_nats();
        raise_to(&m.nats_accepted, 5);
        raise_to(&m.nats_accepted, 3);
        assert_eq!(m.nats_accepted.get(), 5);
        let text = String::from_utf8(m.encode()).unwrap();
        for name in [
            "trailspark_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "# TYPE trailspark_http_request_duration_seconds histogram",
            "trailspark_log_appended_entries_total 1",
            "trailspark_nats_source_accepted_total 5",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
