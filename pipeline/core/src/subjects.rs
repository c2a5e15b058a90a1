//! The subjects of trailspark's JetStream stream, which the log (its writer and readers), the
//! NATS source and the dead letters share.
//!
//! One stream, [`STREAM`], holds every log entry (accepted signals on
//! `trailspark.log.signals.<org>.<source>`, product-org updates on
//! `trailspark.product_orgs.<org>`, evaluations on `trailspark.log.evaluations.<org>`, config
//! events on [`CONFIG_SUBJECT`]) and also captures what
//! producers publish straight to NATS on [`RAW_SIGNALS`], which the NATS source turns into
//! accepted signals or dead letters.

use crate::log::LogEntry;

pub const STREAM: &str = "TRAILSPARK_SIGNALS";
pub const CONFIG_SUBJECT: &str = "trailspark.config";
/// What producers publish to (raw signals, authenticated by a header).
pub const RAW_SIGNALS: &str = "trailspark.signals.>";
/// Every subject the stream captures.
pub const SUBJECTS: [&str; 4] = [
    RAW_SIGNALS,
    "trailspark.log.>",
    "trailspark.product_orgs.>",
    CONFIG_SUBJECT,
];
/// Where producers' raw signals are published: `<RAW_PREFIX>.<org>.<source>`.
pub const RAW_PREFIX: &str = "trailspark.signals";
/// Core-NATS request/reply ingestion: `<REQUEST_PREFIX>.<org>.<source>`.
pub const REQUEST_PREFIX: &str = "trailspark.ingest";
/// Refused producer messages: `<DEADLETTER_PREFIX>.<org>.<source>`, in [`DEADLETTER_STREAM`].
pub const DEADLETTER_STREAM: &str = "TRAILSPARK_DEADLETTER";
pub const DEADLETTER_PREFIX: &str = "trailspark.deadletter";

/// A subject token from a free-form label: NATS tokens cannot hold `.`, `*`, `>` or spaces.
pub fn subject_token(label: &str) -> String {
    let t: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

pub fn subject_of(entry: &LogEntry) -> String {
    match entry {
        LogEntry::Signal(s) => format!(
            "trailspark.log.signals.{}.{}",
            s.org_id,
            subject_token(&s.source)
        ),
        LogEntry::ProductOrgUpdate(p) => format!("trailspark.product_orgs.{}", p.org_id),
        LogEntry::Evaluation(e) => format!("trailspark.log.evaluations.{}", e.org_id),
        LogEntry::Crm(b) => format!("trailspark.log.crm.{}", b.org_id),
        LogEntry::Delivery(d) => format!("trailspark.log.deliveries.{}", d.org_id()),
        LogEntry::Config(_) => CONFIG_SUBJECT.to_string(),
    }
}
