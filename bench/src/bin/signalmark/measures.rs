//! Latency measures: SQL queries, rehydration after an identify.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn timed_median(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
) -> anyhow::Result<(f64, usize)> {
    let mut rows = sql(c, base, token, q).await?.len();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rows = sql(c, base, token, q).await?.len();
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok((times[2], rows))
}

pub(crate) async fn sql_latencies(
    c: &reqwest::Client,
    base: &str,
    o: &OrgAccess,
    duck: &Value,
) -> anyhow::Result<Vec<Row>> {
    let lead = sql(
        c,
        base,
        &o.token,
        "SELECT lead_id FROM leads ORDER BY signals DESC, lead_id LIMIT 1",
    )
    .await?;
    let lead = lead
        .first()
        .and_then(|r| r[0].as_str())
        .context("no lead in org 1")?
        .to_string();
    let anon = duck["pending_anonymous_org1"][0][0]
        .as_str()
        .context("no pending anonymous visitor in org 1")?
        .to_string();
    let queries = [
        (
            "count by event group",
            "SELECT source, event_type, count(*) AS n FROM signals GROUP BY source, event_type"
                .to_string(),
        ),
        (
            "lead timeline (newest 100, with payloads)",
            format!(
                "SELECT id, event_type, event_at, payload FROM signals WHERE lead_id = '{lead}' \
                 ORDER BY event_at DESC LIMIT 100"
            ),
        ),
        (
            "anonymous_id lookup",
            format!("SELECT id, event_type, event_at FROM anonymous_signals WHERE anonymous_id = '{anon}'"),
        ),
    ];
    let mut rows = Vec::new();
    for (name, q) in queries {
        let (m, n) = timed_median(c, base, &o.token, &q).await?;
        rows.push(row(
            format!("SQL (org 1, POST /api/sql, median of 5): {name} (ms, {n} rows)"),
            format!("{m:.1}"),
        ));
    }
    Ok(rows)
}

/// Identifies for the largest pending anonymous visitors of org 1: each timed from the POST
/// to the read models reflecting it, and checked: the new lead holds the visitor's signals.
pub(crate) async fn rehydrations(
    c: &reqwest::Client,
    base: &str,
    o: &OrgAccess,
    duck: &Value,
) -> anyhow::Result<Row> {
    let visitors = duck["pending_anonymous_org1"]
        .as_array()
        .context("pending_anonymous_org1")?;
    let mut times = Vec::new();
    let mut signals = 0;
    for (i, v) in visitors.iter().take(20).enumerate() {
        let anon = v[0].as_str().context("anonymous id")?;
        let n = v[1].as_u64().context("count")?;
        let email = format!("rehydrated{i}@signalmark.example");
        let t = Instant::now();
        let ack = c
            .post(format!("{base}/api/signal-staging/webhook/{}", o.key))
            .json(
                &json!({"type": "identify", "userId": format!("rh-{i}"), "anonymousId": anon,
                          "messageId": format!("signalmark-rehydrate-{i}"),
                          "traits": {"email": email}}),
            )
            .send()
            .await?
            .json::<Value>()
            .await?;
        let pos = ack["log_position"].as_u64().context("log_position")?;
        call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/explorer/stats?wait_for={pos}"),
            &o.token,
            None,
        )
        .await?;
        times.push(ms(t.elapsed()));
        let lead = call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/leads?email={}", email.replace('@', "%40")),
            &o.token,
            None,
        )
        .await?;
        let got = lead_signal_count(&lead);
        if got != Some(n + 1) {
            bail!(
                "identify of {anon}: the lead has {got:?} signals, expected {} ({lead})",
                n + 1
            );
        }
        signals += n;
    }
    times.sort_by(f64::total_cmp);
    let k = times.len().max(1);
    Ok(row(
        format!(
            "identify rehydrating a pending visitor (ms, median of {}; {:.0} signals each on average, checked)",
            times.len(),
            signals as f64 / k as f64
        ),
        format!("{:.1}", times.get(times.len() / 2).copied().unwrap_or(0.0)),
    ))
}
