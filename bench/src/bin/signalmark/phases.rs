//! The incremental and batch loads, and the rule edit, each timed.

#[allow(unused_imports)]
use super::*;

pub(crate) struct Incremental {
    pub(crate) part_s: Vec<f64>,
    pub(crate) outputs: Value,
}

pub(crate) fn product_org_events(
    data: &Path,
    orgs: usize,
    part: Option<usize>,
    parts: usize,
) -> Vec<Event> {
    let mut out = Vec::new();
    let range = part.map_or(0..parts, |p| p..p + 1);
    for p in range {
        for org in 0..orgs {
            let Ok(f) = std::fs::File::open(part_file(data, Kind::ProductOrg, org, p)) else {
                continue;
            };
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                out.push(Event {
                    org,
                    kind: Kind::ProductOrg,
                    body: line,
                });
            }
        }
    }
    out
}

pub(crate) fn backfill(
    ts: &Path,
    key: &str,
    target: &[&str],
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let files: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    if files.is_empty() {
        return Ok(());
    }
    let out = Command::new(ts)
        .args(["backfill", "--key", key])
        .args(target)
        .args(&files)
        .env("TRAILSPARK_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!(
            "trailspark backfill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("rejected=0") {
        bail!("trailspark backfill refused events: {text}");
    }
    Ok(())
}

pub(crate) async fn edit_rule(
    c: &reqwest::Client,
    base: &str,
    orgs: &[OrgAccess],
) -> anyhow::Result<()> {
    let (idx, mut def) = rule_edit();
    def["reprocess"] = json!(true);
    for o in orgs {
        call(
            c,
            reqwest::Method::PUT,
            &format!("{base}/api/mapping-rules/{}", o.rule_ids[idx]),
            &o.token,
            Some(def.clone()),
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn incremental(
    ts: &Path,
    work: &Path,
    data: &Path,
    a: &Args,
) -> anyhow::Result<Incremental> {
    let c = reqwest::Client::new();
    let s = serve(ts, &work.join("incremental"), None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    let mut part_s = Vec::new();
    for p in 0..a.parts {
        let t = Instant::now();
        for (i, o) in orgs.iter().enumerate() {
            backfill(
                ts,
                &o.key,
                &["--server", &s.base],
                &[part_file(data, Kind::Signal, i, p)],
            )?;
        }
        let updates = product_org_events(data, a.scale.orgs, Some(p), a.parts);
        post_product_orgs(&s.base, &orgs, updates).await?;
        if p == a.parts / 2 {
            edit_rule(&c, &s.base, &orgs).await?;
        }
        caught_up(&c, &s.base, &orgs).await?;
        part_s.push(t.elapsed().as_secs_f64());
        eprintln!("  part {p}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let outputs = collect(&c, &s.base, &orgs).await?;
    stop(s)?;
    Ok(Incremental { part_s, outputs })
}

pub(crate) async fn post_product_orgs(
    base: &str,
    orgs: &[OrgAccess],
    updates: Vec<Event>,
) -> anyhow::Result<()> {
    let load = HttpLoad {
        base: base.to_string(),
        orgs: orgs.to_vec(),
        mode: Mode::Single,
        rate: None,
        concurrency: 16,
        limit: None,
        clock: None,
    };
    let n = updates.len() as u64;
    let st = http_load(&load, updates.into_iter()).await?;
    if st.errors > 0 || st.accepted != n {
        bail!("product-org updates: {} of {n} accepted", st.accepted);
    }
    Ok(())
}

pub(crate) struct Batch {
    pub(crate) backfill_s: f64,
    pub(crate) serve_s: f64,
    pub(crate) outputs: Value,
    pub(crate) rows: Vec<Row>,
}

pub(crate) async fn batch(
    ts: &Path,
    work: &Path,
    data: &Path,
    a: &Args,
    duck: &Value,
) -> anyhow::Result<Batch> {
    let c = reqwest::Client::new();
    let dir = work.join("batch");
    let s = serve(ts, &dir, None)?;
    let orgs = setup(&c, &s, a.scale.orgs).await?;
    stop(s)?;
    let t = Instant::now();
    for (i, o) in orgs.iter().enumerate() {
        let files: Vec<PathBuf> = (0..a.parts)
            .map(|p| part_file(data, Kind::Signal, i, p))
            .collect();
        backfill(ts, &o.key, &["--data-dir", dir.to_str().unwrap()], &files)?;
    }
    let backfill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = serve(ts, &dir, None)?;
    caught_up(&c, &s.base, &orgs).await?;
    let serve_s = t.elapsed().as_secs_f64();
    let rss = rss_bytes(s.child.id());
    let unique: u64 = duck["orgs"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v["unique"].as_u64()).sum())
        .unwrap_or(0);
    let mut rows = vec![
        row(
            format!("restart-to-serving: {unique} signals in the log (s)"),
            format!("{serve_s:.1}"),
        ),
        row(
            "dataflow throughput: log replay into the read models (signals/s)",
            format!("{:.0}", unique as f64 / serve_s),
        ),
        row(
            "resident memory per million signals (MiB)",
            format!(
                "{:.0} (RSS {:.0} MiB)",
                rss as f64 / (1 << 20) as f64 / (unique as f64 / 1e6),
                rss as f64 / (1 << 20) as f64
            ),
        ),
    ];

    let t = Instant::now();
    edit_rule(&c, &s.base, &orgs).await?;
    caught_up(&c, &s.base, &orgs).await?;
    rows.push(row(
        format!(
            "rule edit with reprocessing, one rule in each of {} orgs (ms)",
            a.scale.orgs
        ),
        format!("{:.0}", ms(t.elapsed())),
    ));
    post_product_orgs(
        &s.base,
        &orgs,
        product_org_events(data, a.scale.orgs, None, a.parts),
    )
    .await?;
    caught_up(&c, &s.base, &orgs).await?;
    let outputs = collect(&c, &s.base, &orgs).await?;

    rows.extend(sql_latencies(&c, &s.base, &orgs[0], duck).await?);
    rows.push(rehydrations(&c, &s.base, &orgs[0], duck).await?);
    stop(s)?;
    Ok(Batch {
        backfill_s,
        serve_s,
        outputs,
        rows,
    })
}
