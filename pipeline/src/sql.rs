//! What the SQL engine needs from the server: processing outcomes to stamp archive rows
//! with, and one org's live tables built from the read models.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use trailspark_core::OrgId;
use trailspark_core::Registry;
use trailspark_operators::graph::{Meter, Processed, Status};
use trailspark_operators::groups::title;
use trailspark_queries::{Column, Table};
use trailspark_sinks::archive::{ArchiveRow, Processing, Stamper};

use crate::engine::read::{lead_id, Models, ReadModels};

/// How long the archiver waits for the dataflow before writing what it knows. Long: under a
/// backlog (a large backfill) the dataflow may be minutes behind, and a file written early
/// would carry no statuses. Waiting costs only buffer memory, which the dataflow's bounded
/// feed queue bounds (the archive cannot get further ahead than the dataflow's backlog).
const STAMP_WAIT: Duration = Duration::from_secs(600);

pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Completed => "completed",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

fn processing(p: &Processed) -> Processing {
    Processing {
        status: Some(status_str(p.status).to_string()),
        rule_id: p.rule_id,
        rule_name: p.rule_name.as_deref().map(str::to_string),
        lead_id: p.lead.as_ref().map(lead_id),
        error: p.error.as_deref().map(str::to_string),
    }
}

/// Stamps archive rows from the read models.
pub struct ReadStamper(pub Arc<ReadModels>);

impl Stamper for ReadStamper {
    fn ready(&self, pos: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if !self.0.wait_for(pos, STAMP_WAIT).await {
                tracing::warn!(
                    pos,
                    "Archiving before the dataflow caught up; statuses may be missing."
                );
            }
        })
    }

    fn stamp(&self, org: u64, rows: &mut [ArchiveRow]) {
        let m = self.0.read();
        for r in rows {
            // A signal the dataflow dropped as a duplicate has no outcome of its own.
            r.processing = m
                .processed
                .get(&(org, r.id))
                .as_ref()
                .map(processing)
                .unwrap_or_default();
        }
    }
}

fn month_str(m: u32) -> String {
    format!("{:04}-{:02}", m / 100, m % 100)
}

fn meter_str(m: Meter) -> &'static str {
    match m {
        Meter::RawSignals => "raw_signals",
        Meter::StagedSignals => "staged_signals",
        Meter::MappedSignals => "mapped_signals",
        Meter::Leads => "leads",
    }
}

fn str_col<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> Column {
    Column::Str(rows.iter().map(f).collect())
}

/// The live tables of `org`: `leads`, `identities`, `signal_groups`, `usage`,
/// `mapping_rules`, `product_orgs`, those of them `wanted` names. Only the org's rows are
/// copied in. The copy is most of a small query's time (every lead of the org, with its
/// traits as JSON), so a query builds only the tables it reads (see
/// [`trailspark_queries::SqlEngine::tables_read`]).
pub fn live_tables(
    m: &Models,
    registry: &Registry,
    org: u64,
    wanted: impl Fn(&str) -> bool,
) -> Vec<Table> {
    let leads_t = wanted("leads").then(|| {
        let mut leads: Vec<_> = m.leads.iter().filter(|(l, _)| l.org == org).collect();
        leads.sort_by(|a, b| a.0.cmp(b.0));
        Table::new("leads")
            .column("lead_id", str_col(&leads, |(l, _)| Some(lead_id(l))))
            .column(
                "key_kind",
                str_col(&leads, |(l, _)| Some(l.kind.as_str().into())),
            )
            .column(
                "key_value",
                str_col(&leads, |(l, _)| Some(l.value.to_string())),
            )
            .column(
                "email",
                str_col(&leads, |(l, _)| {
                    m.members.get(*l).and_then(|ids| {
                        ids.iter()
                            .find(|i| i.kind == trailspark_operators::IdKind::Email)
                            .map(|i| i.value.to_string())
                    })
                }),
            )
            .column(
                "signals",
                Column::U64(leads.iter().map(|(_, p)| Some(p.signals)).collect()),
            )
            .column(
                "first_activity",
                Column::Time(leads.iter().map(|(_, p)| Some(p.first_activity)).collect()),
            )
            .column(
                "last_activity",
                Column::Time(leads.iter().map(|(_, p)| Some(p.last_activity)).collect()),
            )
            .column(
                "product_org_id",
                str_col(&leads, |(_, p)| p.product_org.clone()),
            )
            .column(
                "traits",
                str_col(&leads, |(_, p)| {
                    let o: serde_json::Map<_, _> = p
                        .traits
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    Some(serde_json::Value::Object(o).to_string())
                }),
            )
    });

    let identities = wanted("identities").then(|| {
        let mut idents: Vec<_> = m.lead_of.iter().filter(|(i, _)| i.org == org).collect();
        idents.sort();
        Table::new("identities")
            .column("lead_id", str_col(&idents, |(_, l)| Some(lead_id(l))))
            .column(
                "kind",
                str_col(&idents, |(i, _)| Some(i.kind.as_str().into())),
            )
            .column(
                "value",
                str_col(&idents, |(i, _)| Some(i.value.to_string())),
            )
            .column(
                "persistent",
                Column::Bool(
                    idents
                        .iter()
                        .map(|(i, _)| Some(i.kind.persistent()))
                        .collect(),
                ),
            )
    });

    let signal_groups = wanted("signal_groups").then(|| {
        let mut groups: Vec<_> = m.groups.iter().filter(|((o, _), _)| *o == org).collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        Table::new("signal_groups")
            .column("title", str_col(&groups, |((_, k), _)| Some(title(k))))
            .column(
                "source",
                str_col(&groups, |((_, k), _)| Some(k.source.clone())),
            )
            .column(
                "event",
                str_col(&groups, |((_, k), _)| Some(k.event.clone())),
            )
            .column("path", str_col(&groups, |((_, k), _)| k.path.clone()))
            .column("form", str_col(&groups, |((_, k), _)| k.form.clone()))
            .column(
                "descriptor",
                str_col(&groups, |((_, k), _)| k.descriptor.clone()),
            )
            .column(
                "content_type",
                str_col(&groups, |((_, k), _)| Some(k.content_type.as_str().into())),
            )
            .column(
                "count",
                Column::U64(groups.iter().map(|(_, r)| Some(r.count)).collect()),
            )
            .column(
                "unmapped",
                Column::U64(groups.iter().map(|(_, r)| Some(r.unmapped)).collect()),
            )
            .column(
                "first_seen",
                Column::Time(groups.iter().map(|(_, r)| Some(r.first_seen)).collect()),
            )
            .column(
                "last_seen",
                Column::Time(groups.iter().map(|(_, r)| Some(r.last_seen)).collect()),
            )
            .column(
                "sample",
                str_col(&groups, |(_, r)| Some(r.sample.to_string())),
            )
    });

    let usage_t = wanted("usage").then(|| {
        let mut usage: Vec<_> = m.usage.iter().filter(|((o, _, _), _)| *o == org).collect();
        usage.sort();
        Table::new("usage")
            .column(
                "month",
                str_col(&usage, |((_, mo, _), _)| Some(month_str(*mo))),
            )
            .column(
                "meter",
                str_col(&usage, |((_, _, me), _)| Some(meter_str(*me).into())),
            )
            .column(
                "count",
                Column::I64(usage.iter().map(|(_, n)| Some(**n)).collect()),
            )
    });

    let mapping_rules = wanted("mapping_rules").then(|| {
        let rules: Vec<_> = registry.rules_of(OrgId(org)).collect();
        Table::new("mapping_rules")
            .column(
                "id",
                Column::U64(rules.iter().map(|r| Some(r.id)).collect()),
            )
            .column("name", str_col(&rules, |r| Some(r.def.name.clone())))
            .column(
                "signal_type",
                str_col(&rules, |r| {
                    serde_json::to_value(r.def.signal_type)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                }),
            )
            .column(
                "priority",
                Column::I64(rules.iter().map(|r| Some(r.def.priority as i64)).collect()),
            )
            .column(
                "high_intent",
                Column::Bool(rules.iter().map(|r| Some(r.def.high_intent)).collect()),
            )
            .column(
                "version",
                Column::U64(rules.iter().map(|r| Some(r.version)).collect()),
            )
            .column(
                "created_at",
                Column::Time(rules.iter().map(|r| Some(r.created_at)).collect()),
            )
            .column(
                "updated_at",
                Column::Time(rules.iter().map(|r| Some(r.updated_at)).collect()),
            )
            .column(
                "deleted_at",
                Column::Time(rules.iter().map(|r| r.deleted_at).collect()),
            )
            .column(
                "definition",
                str_col(&rules, |r| serde_json::to_string(&r.def).ok()),
            )
    });

    let product_orgs = wanted("product_orgs").then(|| {
        let mut pos: Vec<_> = m
            .product_orgs
            .iter()
            .filter(|((o, _), _)| *o == org)
            .collect();
        pos.sort_by(|a, b| a.0.cmp(b.0));
        Table::new("product_orgs")
            .column(
                "product_org_id",
                str_col(&pos, |((_, id), _)| Some(id.clone())),
            )
            .column(
                "fields",
                str_col(&pos, |(_, p)| {
                    let o: serde_json::Map<_, _> = p
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(json!(v))))
                        .collect();
                    Some(serde_json::Value::Object(o).to_string())
                }),
            )
            .column(
                "last_updated_at",
                Column::Time(pos.iter().map(|(_, p)| Some(p.last_updated_at)).collect()),
            )
            .column(
                "updates",
                Column::U64(pos.iter().map(|(_, p)| Some(p.updates)).collect()),
            )
    });

    [
        leads_t,
        identities,
        signal_groups,
        usage_t,
        mapping_rules,
        product_orgs,
    ]
    .into_iter()
    .flatten()
    .collect()
}
