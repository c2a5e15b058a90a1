//! Starting and stopping the servers under test, and talking to them.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: impl Into<String>,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url: String = url.into();
    let mut r = c.request(method.clone(), &url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.with_context(|| format!("{method} {url}"))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {url}: {status} {v}");
    }
    Ok(v)
}

/// Waits until the read models reflect everything on the log, in every org: an org's rule
/// edit with reprocess is waited for with that org's token (`?wait_for=` waits only for the
/// asking org's reprocessing).
pub(crate) async fn caught_up(
    c: &reqwest::Client,
    base: &str,
    orgs: &[OrgAccess],
) -> anyhow::Result<()> {
    let h: Value = c
        .get(format!("{base}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    let head = h["log_head"].as_u64().unwrap_or(0);
    for o in orgs {
        loop {
            let r = c
                .get(format!("{base}/api/explorer/stats?wait_for={head}"))
                .bearer_auth(&o.token)
                .send()
                .await?;
            if r.status().is_success() {
                break;
            }
        }
    }
    Ok(())
}

/// Creates the workload's orgs on a fresh server: unlimited plans, a Signal Staging key, a
/// product-org key with the workload's template, and the workload's rules (reprocess).
pub(crate) async fn setup(
    c: &reqwest::Client,
    s: &Server,
    orgs: usize,
) -> anyhow::Result<Vec<OrgAccess>> {
    let base = &s.base;
    let mut out = Vec::new();
    for i in 0..orgs {
        let (org_id, token) = if i == 0 {
            (1, s.owner.clone().context("no first-start owner token")?)
        } else {
            let v = call(
                c,
                reqwest::Method::POST,
                &format!("{base}/api/admin/orgs"),
                ADMIN,
                Some(json!({"name": format!("Org {}", i + 1)})),
            )
            .await?;
            (
                v["id"].as_u64().context("org id")?,
                v["owner_token"]
                    .as_str()
                    .context("owner_token")?
                    .to_string(),
            )
        };
        let send = |method: reqwest::Method, path: &str, body: Value| {
            call(c, method, format!("{base}{path}"), &token, Some(body))
        };
        let post = |path: &str, body: Value| send(reqwest::Method::POST, path, body);
        send(
            reqwest::Method::PUT,
            "/api/admin/plan",
            json!({"raw_signal_limit": 0, "mapped_signal_limit": 0, "overage": false}),
        )
        .await?;
        let key = post(
            "/api/admin/keys",
            json!({"name": "signalmark", "endpoint_type": "signal_staging"}),
        )
        .await?["key"]
            .as_str()
            .context("key")?
            .to_string();
        let product_key = post(
            "/api/admin/keys",
            json!({"name": "products", "endpoint_type": "product_org",
                   "template": product_org_template()}),
        )
        .await?["key"]
            .as_str()
            .context("product key")?
            .to_string();
        let mut rule_ids = Vec::new();
        for mut r in rules() {
            r["reprocess"] = json!(true);
            let v = post("/api/mapping-rules", r).await?;
            rule_ids.push(v["id"].as_u64().context("rule id")?);
        }
        out.push(OrgAccess {
            org_id,
            token,
            key,
            product_key,
            rule_ids,
        });
    }
    Ok(out)
}

pub(crate) fn serve(ts: &Path, dir: &Path, nats: Option<&str>) -> anyhow::Result<Server> {
    start_server(
        ts,
        dir,
        nats,
        &[
            ("TRAILSPARK_ADMIN_TOKEN", ADMIN),
            ("TRAILSPARK_SQL_MAX_ROWS", "100000000"),
        ],
        &[],
    )
}

pub(crate) fn stop(mut s: Server) -> anyhow::Result<()> {
    s.child.kill()?;
    s.child.wait()?;
    Ok(())
}

pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
