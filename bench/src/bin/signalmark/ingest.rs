//! The ingest scenarios: HTTP single events and batches, NATS, against live servers.

#[allow(unused_imports)]
use super::*;

/// A generator seeded apart from the workload, for the throughput scenarios (their events
/// must be new to the server each time).
pub(crate) fn fresh_events(a: &Args, salt: u64) -> Generator {
    Generator::new(Config {
        seed: a.scale.seed ^ (salt << 32),
        events: u64::MAX / 2,
        orgs: a.scale.orgs,
        ..Default::default()
    })
}

// ---------------------------------------------------------------- scenario 3

pub(crate) async fn ingest(ts: &Path, work: &Path, a: &Args) -> anyhow::Result<Vec<Row>> {
    let c = reqwest::Client::new();
    let limit = Some(Duration::from_secs(a.seconds));
    let mut rows = Vec::new();
    let dir = work.join("ingest-http");
    let s = serve(ts, &dir, None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    std::fs::write(work.join("access.json"), serde_json::to_vec_pretty(&orgs)?)?;
    let mut load = HttpLoad {
        base: s.base.clone(),
        orgs: orgs.clone(),
        mode: Mode::Single,
        rate: None,
        concurrency: 32,
        limit,
        clock: None,
    };
    let single = http_load(&load, fresh_events(a, 1)).await?;
    rows.push(row(
        "ingest: HTTP, one signal per request (events/s, 32 connections)",
        format!("{:.0}", single.rate()),
    ));
    load.mode = Mode::Batch(100);
    let batched = http_load(&load, fresh_events(a, 2)).await?;
    rows.push(row(
        "ingest: HTTP, batches of 100 (events/s)",
        format!("{:.0}", batched.rate()),
    ));
    caught_up(&c, &s.base, &orgs).await?;

    // Freshness at half the one-per-request maximum.
    let rate = single.rate() / 2.0;
    load.mode = Mode::Single;
    load.rate = Some(rate);
    let t0 = Instant::now();
    load.clock = Some(t0);
    let until = t0 + Duration::from_secs(a.seconds + 3);
    let poller = tokio::spawn({
        let (base, token) = (s.base.clone(), orgs[0].token.clone());
        async move { poll_positions(&base, &token, t0, until).await }
    });
    let before = metrics(&c, &s.base).await?;
    let paced = http_load(&load, fresh_events(a, 3)).await?;
    let polls = poller.await??;
    let after = metrics(&c, &s.base).await?;
    let mut f = freshness(&paced.acks, &polls);
    f.sort();
    rows.push(row(
        format!(
            "freshness: 202 → visible in the explorer at {rate:.0} events/s, p50 / p99 / p999 (ms, {} signals)",
            f.len()
        ),
        format!(
            "{:.1} / {:.1} / {:.1}",
            ms(quantile(&f, 0.5)),
            ms(quantile(&f, 0.99)),
            ms(quantile(&f, 0.999))
        ),
    ));
    // The server's own view of the same load: from each epoch's commit to the log to each
    // stage (the bucket bounds of its histograms, which double).
    for stage in ["taken", "fed", "complete", "applied"] {
        let label = format!("stage=\"{stage}\"");
        let d = scrape::between(
            &scrape::buckets(&before, "trailspark_freshness_seconds", &label),
            &scrape::buckets(&after, "trailspark_freshness_seconds", &label),
        );
        let bound =
            |p| scrape::quantile_bound(&d, p).map_or("–".into(), |s| format!("≤ {:.1}", s * 1e3));
        rows.push(row(
            format!(
                "freshness in the server: commit → {stage}, p50 / p99 / max (ms, {} epochs)",
                d.last().map_or(0.0, |b| b.1)
            ),
            format!("{} / {} / {}", bound(0.5), bound(0.99), bound(1.0)),
        ));
    }
    stop(s)?;

    // NATS.
    if nats_server_bin().is_none() {
        bail!("nats-server is not installed (apt-get install nats-server)");
    }
    let store = work.join("ingest-nats-store");
    let (mut ns, url) = start_nats(&store)?;
    let s = serve(ts, &work.join("ingest-nats"), Some(&url))?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    let t = Instant::now();
    let events = fresh_events(a, 4)
        .filter(|e| e.kind == Kind::Signal)
        .take(a.nats_events);
    let published = nats_load(&url, &orgs, events, 256, None).await?;
    loop {
        let h: Value = c
            .get(format!("{}/healthz", s.base))
            .send()
            .await?
            .json()
            .await?;
        let cons = &h["nats"]["source_consumer"];
        if cons["pending"].as_u64() == Some(0) && cons["ack_pending"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t.elapsed();
    rows.push(row(
        "ingest: NATS JetStream → source → log (events/s, publish to all acked)",
        format!(
            "{:.0} ({} events)",
            published.accepted as f64 / drained.as_secs_f64(),
            published.accepted
        ),
    ));
    stop(s)?;
    ns.kill()?;
    ns.wait()?;
    Ok(rows)
}

/// The server's metrics, as text.
async fn metrics(c: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(c.get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}
