//! Live load: a workload's events sent to a running trailspark over HTTP (one signal per
//! request, or batches) or NATS, at a fixed rate or as fast as the server answers, with every
//! acknowledgement's log position recorded for freshness measurements.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workload::{Event, Kind};

/// What a client needs to send as one org and read its results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrgAccess {
    pub org_id: u64,
    /// An Owner token of the org (reads, rules, plan).
    pub token: String,
    /// A Signal Staging key.
    pub key: String,
    /// A product-org key whose template reads the workload's product-org updates.
    pub product_key: String,
    /// The ids of the workload's rules, in [`crate::workload::rules`] order.
    pub rule_ids: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// E1: one signal per request.
    Single,
    /// E3: up to this many signals of one org per request.
    Batch(usize),
}

#[derive(Clone, Debug)]
pub struct HttpLoad {
    pub base: String,
    pub orgs: Vec<OrgAccess>,
    pub mode: Mode,
    /// Events per second (`None`: as fast as the server answers).
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Stop taking events after this long.
    pub limit: Option<Duration>,
    /// The instant ack times count from (default: when the load starts), so that they can
    /// be set against another task's clock (see [`poll_positions`]).
    pub clock: Option<Instant>,
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Events sent (retries of the workload included).
    pub sent: u64,
    /// Events the server accepted (2xx; for batches, their `accepted`).
    pub accepted: u64,
    /// Requests that failed or got a non-2xx answer.
    pub errors: u64,
    pub elapsed: Duration,
    /// (time since the start, log position) of every acknowledged signal request.
    pub acks: Vec<(Duration, u64)>,
}

impl LoadStats {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

struct Request {
    url: String,
    body: String,
    events: u64,
    signal: bool,
}

fn requests<'a>(
    load: &'a HttpLoad,
    events: impl Iterator<Item = Event> + 'a,
) -> impl Iterator<Item = Request> + 'a {
    let mut pending: Vec<Vec<String>> = vec![Vec::new(); load.orgs.len()];
    let mut out: VecDeque<Request> = VecDeque::new();
    let mut events = events.fuse();
    let mut drained = false;
    std::iter::from_fn(move || loop {
        if let Some(r) = out.pop_front() {
            return Some(r);
        }
        if drained {
            return None;
        }
        let Some(ev) = events.next() else {
            drained = true;
            for (o, items) in pending.iter_mut().enumerate() {
                if !items.is_empty() {
                    out.push_back(batch(load, o, std::mem::take(items)));
                }
            }
            continue;
        };
        let a = &load.orgs[ev.org];
        match (ev.kind, load.mode) {
            (Kind::ProductOrg, _) => out.push_back(Request {
                url: format!("{}/api/product-orgs/webhook/{}", load.base, a.product_key),
                body: ev.body,
                events: 1,
                signal: false,
            }),
            (Kind::Signal, Mode::Single) => out.push_back(Request {
                url: format!("{}/api/signal-staging/webhook/{}", load.base, a.key),
                body: ev.body,
                events: 1,
                signal: true,
            }),
            (Kind::Signal, Mode::Batch(n)) => {
                pending[ev.org].push(ev.body);
                if pending[ev.org].len() >= n {
                    let items = std::mem::take(&mut pending[ev.org]);
                    out.push_back(batch(load, ev.org, items));
                }
            }
        }
    })
}

fn batch(load: &HttpLoad, org: usize, items: Vec<String>) -> Request {
    Request {
        url: format!(
            "{}/api/signal-staging/webhook/{}/batch",
            load.base, load.orgs[org].key
        ),
        events: items.len() as u64,
        body: format!("[{}]", items.join(",")),
        signal: true,
    }
}

/// The highest log position an answer names (E1's `log_position`, or E3's per item).
fn answer_position(v: &Value) -> Option<u64> {
    v["log_position"].as_u64().or_else(|| {
        v["results"]
            .as_array()?
            .iter()
            .filter_map(|r| r["log_position"].as_u64())
            .max()
    })
}

/// Sends `events` as `load` says; answers what happened.
pub async fn http_load(
    load: &HttpLoad,
    events: impl Iterator<Item = Event>,
) -> anyhow::Result<LoadStats> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency)
        .build()?;
    let begin = Instant::now();
    let start = load.clock.unwrap_or(begin);
    let end = load.limit.map(|l| begin + l);
    let mut due = begin;
    let step = load.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let reqs = requests(load, events).take_while(|_| end.is_none_or(|e| Instant::now() < e));
    let answers = futures_util::stream::iter(reqs)
        .then(|r| {
            let wait = step.map(|s| {
                let at = due;
                due += s * r.events as u32;
                at
            });
            async move {
                if let Some(at) = wait {
                    tokio::time::sleep_until(at.into()).await;
                }
                r
            }
        })
        .map(|r| {
            let client = client.clone();
            async move {
                let res = client
                    .post(&r.url)
                    .header("content-type", "application/json")
                    .body(r.body)
                    .send()
                    .await;
                let answer = match res {
                    Ok(res) if res.status().is_success() => res.json::<Value>().await.ok(),
                    _ => None,
                };
                (r.events, r.signal, answer, start.elapsed())
            }
        })
        .buffer_unordered(load.concurrency.max(1));
    let mut answers = std::pin::pin!(answers);
    let mut stats = LoadStats::default();
    while let Some((n, signal, answer, at)) = answers.next().await {
        stats.sent += n;
        match answer {
            Some(v) => {
                stats.accepted += v["accepted"].as_u64().unwrap_or(n);
                if signal {
                    if let Some(pos) = answer_position(&v) {
                        stats.acks.push((at, pos));
                    }
                }
            }
            None => stats.errors += 1,
        }
    }
    stats.elapsed = begin.elapsed();
    Ok(stats)
}

/// Publishes the signals of `events` to JetStream on `trailspark.signals.<org>.auto` with the
/// org's key in `Trailspark-Api-Key` (product-org updates have no NATS subject and are
/// skipped), with up to `window` publishes awaiting their ack, for at most `limit`.
pub async fn nats_load(
    url: &str,
    orgs: &[OrgAccess],
    events: impl Iterator<Item = Event>,
    window: usize,
    limit: Option<Duration>,
) -> anyhow::Result<LoadStats> {
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let start = Instant::now();
    let mut inflight = VecDeque::new();
    let mut stats = LoadStats::default();
    for ev in events.filter(|e| e.kind == Kind::Signal) {
        if limit.is_some_and(|l| start.elapsed() >= l) {
            break;
        }
        let a = &orgs[ev.org];
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trailspark-Api-Key", a.key.as_str());
        let subject = format!("trailspark.signals.{}.auto", a.org_id);
        let ack = js
            .publish_with_headers(subject, headers, ev.body.into())
            .await?;
        inflight.push_back(ack);
        stats.sent += 1;
        if inflight.len() >= window {
            match inflight.pop_front().unwrap().await {
                Ok(_) => stats.accepted += 1,
                Err(_) => stats.errors += 1,
            }
        }
    }
    for ack in inflight {
        match ack.await {
            Ok(_) => stats.accepted += 1,
            Err(_) => stats.errors += 1,
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Reads `/api/explorer/stats` in a loop until `until` and records, at each answer, the log
/// position the read models reflect: with a load's acks, the time from each 202 to the
/// first answer that reflects it (exact up to one round trip of this loop).
pub async fn poll_positions(
    base: &str,
    token: &str,
    start: Instant,
    until: Instant,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/explorer/stats");
    let mut out = Vec::new();
    while Instant::now() < until {
        let v: Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        if let Some(p) = v["log_position"].as_u64() {
            out.push((start.elapsed(), p));
        }
    }
    Ok(out)
}

/// Freshness of each ack: the time from its 202 to the first poll answer at or after it
/// that reflects its log position (acks never reflected are left out).
pub fn freshness(acks: &[(Duration, u64)], polls: &[(Duration, u64)]) -> Vec<Duration> {
    let mut out = Vec::with_capacity(acks.len());
    for (at, pos) in acks {
        let from = polls.partition_point(|(t, _)| t < at);
        if let Some((t, _)) = polls[from..].iter().find(|(_, p)| p >= pos) {
            out.push(*t - *at);
        }
    }
    out
}

/// The `p`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn freshness_is_the_first_later_poll_that_reflects_the_position() {
        let polls = [(ms(0), 5), (ms(10), 7), (ms(20), 9), (ms(30), 12)];
        let acks = [(ms(1), 6), (ms(11), 9), (ms(12), 13), (ms(25), 8)];
        let f = freshness(&acks, &polls);
        // 6 first reflected at 10 ms; 9 at 20; 13 never; 8 is already reflected at 30.
        assert_eq!(f, vec![ms(9), ms(9), ms(5)]);
    }

    #[test]
    fn batches_group_one_orgs_signals_and_keep_product_org_updates_single() {
        let access = |i: u64| OrgAccess {
            org_id: i,
            token: String::new(),
            key: format!("k{i}"),
            product_key: format!("p{i}"),
            rule_ids: vec![],
        };
        let load = HttpLoad {
            base: "http://h".into(),
            orgs: vec![access(1), access(2)],
            mode: Mode::Batch(2),
            rate: None,
            concurrency: 1,
            limit: None,
            clock: None,
        };
        let ev = |org, kind, b: &str| Event {
            org,
            kind,
            body: b.to_string(),
        };
        let evs = vec![
            ev(0, Kind::Signal, "{\"a\":1}"),
            ev(1, Kind::Signal, "{\"b\":1}"),
            ev(0, Kind::ProductOrg, "{\"p\":1}"),
            ev(0, Kind::Signal, "{\"a\":2}"),
            ev(0, Kind::Signal, "{\"a\":3}"),
        ];
        let r: Vec<(String, String)> = requests(&load, evs.into_iter())
            .map(|r| (r.url, r.body))
            .collect();
        assert_eq!(
            r,
            vec![
                (
                    "http://h/api/product-orgs/webhook/p1".into(),
                    "{\"p\":1}".into()
                ),
                (
                    "http://h/api/signal-staging/webhook/k1/batch".into(),
                    "[{\"a\":1},{\"a\":2}]".into()
                ),
                (
                    "http://h/api/signal-staging/webhook/k1/batch".into(),
                    "[{\"a\":3}]".into()
                ),
                (
                    "http://h/api/signal-staging/webhook/k2/batch".into(),
                    "[{\"b\":1}]".into()
                ),
            ]
        );
    }
}
