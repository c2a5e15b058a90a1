//! `trailspark-load`: a producer that publishes signals straight to NATS JetStream, as a
//! customer's service would. Used by the NATS fault tests (as a separate process that keeps
//! going through a server's or NATS's restart) and by `nats-bench`.
//!
//! Signal `i` (from `--start`) is `{"messageId": "<prefix>-i", "event": ..., "email": ...}`:
//! every third a `demo_request`, the rest `page_view`; emails cycle through `--emails`
//! addresses. Every `--dup-every`-th signal is published twice (a producer's retry), so the
//! unique count is always `--count`. A publish is retried until JetStream acknowledges it,
//! whatever happens in between (NATS restarting, the connection dropping). Prints one JSON
//! line: published, duplicates sent, retries, elapsed ms.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "trailspark-load",
    about = "Publish signals to trailspark over NATS"
)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Signal Staging API key (sent in the Trailspark-Api-Key header).
    #[arg(long)]
    key: String,
    /// The key's org id (the subject's org token).
    #[arg(long, default_value_t = 1)]
    org: u64,
    #[arg(long, default_value = "web")]
    source: String,
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    #[arg(long, default_value_t = 0)]
    start: u64,
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Distinct emails the signals cycle through.
    #[arg(long, default_value_t = 1_000)]
    emails: u64,
    /// Publish every Nth signal twice (0: never).
    #[arg(long, default_value_t = 10)]
    dup_every: u64,
    /// Signals per second (0: as fast as acks allow).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publishes in flight (unacknowledged) at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Put the send time (Unix µs) in each payload as `sent_us`.
    #[arg(long)]
    stamp: bool,
}

type Inflight = (String, String, Option<jetstream::context::PublishAckFuture>);

fn payload(a: &Args, i: u64) -> String {
    let event = if i.is_multiple_of(3) {
        "demo_request"
    } else {
        "page_view"
    };
    let mut v = json!({
        "messageId": format!("{}-{i}", a.prefix),
        "event": event,
        "email": format!("user{}@load.example", i % a.emails.max(1)),
        "properties": {"n": i},
    });
    if a.stamp {
        v["sent_us"] = json!(chrono::Utc::now().timestamp_micros());
    }
    v.to_string()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(&a.nats)
        .await
        .with_context(|| format!("connecting to {}", a.nats))?;
    let js = jetstream::new(client);
    let subject = format!("trailspark.signals.{}.{}", a.org, a.source);
    let t0 = Instant::now();
    // (message id, body, the publish's ack future; `None` when the publish itself failed).
    let mut inflight: VecDeque<Inflight> = VecDeque::new();
    let (mut published, mut dups, mut retries) = (0u64, 0u64, 0u64);
    let publish = |body: String, id: String| {
        let js = js.clone();
        let subject = subject.clone();
        let key = a.key.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Trailspark-Api-Key", key.as_str());
            headers.insert("Nats-Msg-Id", id.as_str());
            js.publish_with_headers(subject, headers, body.into()).await
        }
    };
    // Waits for the oldest publish; on failure re-publishes it until acknowledged.
    async fn settle<F, Fut>(item: Inflight, publish: &F, retries: &mut u64)
    where
        F: Fn(String, String) -> Fut,
        Fut: std::future::Future<
            Output = Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>,
        >,
    {
        let (id, body, ack) = item;
        if let Some(ack) = ack {
            if ack.await.is_ok() {
                return;
            }
        }
        loop {
            *retries += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(f) = publish(body.clone(), id.clone()).await {
                if f.await.is_ok() {
                    return;
                }
            }
        }
    }
    for n in 0..a.count {
        let i = a.start + n;
        if a.rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(n as f64 / a.rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let copies = if a.dup_every > 0 && i % a.dup_every == 0 {
            2
        } else {
            1
        };
        for c in 0..copies {
            let body = payload(&a, i);
            // A retry of a lost publish reuses the message id; the duplicate copy does not
            // (JetStream would drop it), so that trailspark's own dedup is what absorbs it.
            let id = if c == 0 {
                format!("m-{i}")
            } else {
                format!("m-{i}-dup")
            };
            let ack = publish(body.clone(), id.clone()).await.ok();
            inflight.push_back((id, body, ack));
            if c > 0 {
                dups += 1;
            }
            while inflight.len() >= a.window {
                let item = inflight.pop_front().unwrap();
                settle(item, &publish, &mut retries).await;
            }
        }
        published += 1;
    }
    while let Some(item) = inflight.pop_front() {
        settle(item, &publish, &mut retries).await;
    }
    println!(
        "{}",
        json!({"published": published, "duplicates_sent": dups, "retries": retries,
               "elapsed_ms": t0.elapsed().as_millis() as u64})
    );
    Ok(())
}
