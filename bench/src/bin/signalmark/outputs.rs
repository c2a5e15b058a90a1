//! Collecting trailspark's outputs over SQL and comparing them with DuckDB's.

#[allow(unused_imports)]
use super::*;

pub(crate) async fn sql(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    q: &str,
) -> anyhow::Result<Vec<Value>> {
    let v = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/api/sql"),
        token,
        Some(json!({ "sql": q })),
    )
    .await?;
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

/// trailspark's outputs in the baseline's shape.
pub(crate) async fn collect(
    c: &reqwest::Client,
    base: &str,
    orgs: &[OrgAccess],
) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for o in orgs {
        let t = &o.token;
        let stats = call(
            c,
            reqwest::Method::GET,
            &format!("{base}/api/explorer/stats"),
            t,
            None,
        )
        .await?;
        let mut usage = serde_json::Map::new();
        for r in sql(
            c,
            base,
            t,
            "SELECT meter, CAST(sum(count) AS BIGINT) FROM usage GROUP BY meter",
        )
        .await?
        {
            usage.insert(r[0].as_str().unwrap_or("?").to_string(), r[1].clone());
        }
        // In pages: at 10M events an org's lead list is larger than one SQL answer may be.
        const PAGE: usize = 50_000;
        let mut leads = Vec::new();
        loop {
            let page = sql(
                c,
                base,
                t,
                &format!(
                    "SELECT key_kind, key_value FROM leads ORDER BY key_kind, key_value \
                     LIMIT {PAGE} OFFSET {}",
                    leads.len()
                ),
            )
            .await?;
            let n = page.len();
            leads.extend(page);
            if n < PAGE {
                break;
            }
        }
        leads.sort_by_key(|v| v.to_string());
        let mut groups = sql(
            c,
            base,
            t,
            "SELECT source, event, path, form, descriptor, content_type, count FROM signal_groups",
        )
        .await?;
        groups.sort_by_key(|v| v.to_string());
        out.insert(
            o.org_id.to_string(),
            json!({
                "unique": stats["total"],
                "pending": stats["pending"],
                "mapped": usage.get("mapped_signals").cloned().unwrap_or(json!(0)),
                "usage": usage,
                "leads": leads,
                "groups": groups,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Differences between trailspark's outputs and DuckDB's.
pub(crate) fn compare(phase: &str, ours: &Value, theirs: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let empty = serde_json::Map::new();
    let t = theirs.as_object().unwrap_or(&empty);
    let o = ours.as_object().unwrap_or(&empty);
    for (org, want) in t {
        let Some(got) = o.get(org) else {
            diffs.push(format!("{phase}: org {org} missing"));
            continue;
        };
        for f in ["unique", "pending", "mapped"] {
            if got[f].as_u64() != want[f].as_u64() {
                diffs.push(format!(
                    "{phase}: org {org} {f}: trailspark {} DuckDB {}",
                    got[f], want[f]
                ));
            }
        }
        for m in ["raw_signals", "staged_signals", "mapped_signals", "leads"] {
            if got["usage"][m].as_u64().unwrap_or(0) != want["usage"][m].as_u64().unwrap_or(0) {
                diffs.push(format!(
                    "{phase}: org {org} usage {m}: trailspark {} DuckDB {}",
                    got["usage"][m], want["usage"][m]
                ));
            }
        }
        for f in ["leads", "groups"] {
            let set = |v: &Value| -> BTreeMap<String, usize> {
                let mut m = BTreeMap::new();
                for x in v.as_array().into_iter().flatten() {
                    *m.entry(x.to_string()).or_insert(0) += 1;
                }
                m
            };
            let (g, w) = (set(&got[f]), set(&want[f]));
            if g != w {
                let only_ours: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).take(3).collect();
                let only_theirs: Vec<_> =
                    w.keys().filter(|k| !g.contains_key(*k)).take(3).collect();
                diffs.push(format!(
                    "{phase}: org {org} {f}: {} vs {} rows; only trailspark {only_ours:?}; only DuckDB {only_theirs:?}",
                    g.len(),
                    w.len()
                ));
            }
        }
    }
    diffs
}

/// The signal count of a `GET /api/leads?email=` answer (a lead, or a list of them).
pub(crate) fn lead_signal_count(v: &Value) -> Option<u64> {
    let lead = if v["leads"].is_array() {
        v["leads"].get(0)?.clone()
    } else {
        v.clone()
    };
    lead["signals"]
        .as_u64()
        .or_else(|| lead["signal_count"].as_u64())
        .or_else(|| lead["counts"]["signals"].as_u64())
}
