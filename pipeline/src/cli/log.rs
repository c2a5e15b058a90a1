//! `trailspark log dump`.

use serde_json::json;
use trailspark::config::LogOpts;
use trailspark::log::open::read_all;
use trailspark_core::LogEntry;

pub async fn dump(log: LogOpts) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut write_err = None;
    read_all(&log.location(), &mut |pos, entry| {
        let line = match &entry {
            LogEntry::Signal(s) => {
                let mut v = serde_json::to_value(s).expect("records serialize");
                v["payload"] = serde_json::from_str(&s.payload).unwrap_or(json!(s.payload));
                json!({"position": pos, "kind": "signal", "signal": v})
            }
            LogEntry::ProductOrgUpdate(p) => {
                let mut v = serde_json::to_value(p).expect("records serialize");
                v["payload"] = serde_json::from_str(&p.payload).unwrap_or(json!(p.payload));
                json!({"position": pos, "kind": "product_org_update", "update": v})
            }
            LogEntry::Config(c) => json!({"position": pos, "kind": "config", "config": redact(c)}),
            LogEntry::Evaluation(e) => {
                json!({"position": pos, "kind": "evaluation", "evaluation": e})
            }
            LogEntry::Crm(b) => json!({"position": pos, "kind": "crm_records", "records": b}),
            LogEntry::Delivery(d) => json!({"position": pos, "kind": "delivery", "delivery": d}),
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
        }
        Ok(())
    })
    .await?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    Ok(())
}

/// Config events without key secrets (hashes are harmless; secrets are not).
fn redact(c: &trailspark_core::ConfigEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(c).expect("config events serialize");
    if let Some(s) = v.get_mut("secret") {
        *s = json!("<redacted>");
    }
    // Sealed CRM credentials are useless without the key, but not worth printing either.
    for at in ["/Integration/integration/sealed", "/Integration/sealed"] {
        if let Some(s) = v.pointer_mut(at) {
            *s = json!("<sealed>");
        }
    }
    v
}
