//! The live tables: one org's rows of the read models (and of its mapping rules) as Arrow
//! columns, built when a query's plan names the table.

use serde_json::json;
use trailspark_core::{OrgId, Registry};
use trailspark_operators::groups::title;
use trailspark_operators::usage::Meter;
use trailspark_sinks::read_models::{lead_id, Models, OrgModels};

use super::table::{Column, Table};

/// The live tables' names.
pub const NAMES: [&str; 8] = [
    "leads",
    "identities",
    "signal_groups",
    "usage",
    "mapping_rules",
    "product_orgs",
    "evaluations",
    "accounts",
];

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

/// The live table `name` of `org` (one of [`NAMES`]), or `None` for another name. Only the
/// org's rows are copied in. The copy is most of a small query's time (every lead of the
/// org, with its traits as JSON), so it is made only for a table a query's plan names.
pub fn build(name: &str, models: &Models, registry: &Registry, org: u64) -> Option<Table> {
    let m = models.org(org);
    Some(match name {
        "leads" => leads(m),
        "identities" => identities(m),
        "signal_groups" => signal_groups(m),
        "usage" => usage(m),
        "mapping_rules" => mapping_rules(registry, org),
        "product_orgs" => product_orgs(m),
        "evaluations" => super::scoring::evaluations(models, org),
        "accounts" => super::scoring::accounts(models, org),
        _ => return None,
    })
}

fn leads(m: &OrgModels) -> Table {
    let mut leads: Vec<_> = m.leads.iter().collect();
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
            "product_org_ids",
            str_col(&leads, |(_, p)| {
                Some(serde_json::Value::from(p.product_orgs.clone()).to_string())
            }),
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
}

fn identities(m: &OrgModels) -> Table {
    let mut idents: Vec<_> = m.lead_of.iter().collect();
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
}

fn signal_groups(m: &OrgModels) -> Table {
    let mut groups: Vec<_> = m.groups.iter().collect();
    groups.sort_by(|a, b| a.0.cmp(b.0));
    Table::new("signal_groups")
        .column("title", str_col(&groups, |(k, _)| Some(title(k))))
        .column("source", str_col(&groups, |(k, _)| Some(k.source.clone())))
        .column("event", str_col(&groups, |(k, _)| Some(k.event.clone())))
        .column("path", str_col(&groups, |(k, _)| k.path.clone()))
        .column("form", str_col(&groups, |(k, _)| k.form.clone()))
        .column(
            "descriptor",
            str_col(&groups, |(k, _)| k.descriptor.clone()),
        )
        .column(
            "content_type",
            str_col(&groups, |(k, _)| Some(k.content_type.as_str().into())),
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
            str_col(&groups, |(_, r)| Some(r.sample().to_string())),
        )
}

fn usage(m: &OrgModels) -> Table {
    let mut usage: Vec<_> = m.usage.iter().collect();
    usage.sort();
    Table::new("usage")
        .column(
            "month",
            str_col(&usage, |((mo, _), _)| Some(month_str(*mo))),
        )
        .column(
            "meter",
            str_col(&usage, |((_, me), _)| Some(meter_str(*me).into())),
        )
        .column(
            "count",
            Column::I64(usage.iter().map(|(_, n)| Some(**n)).collect()),
        )
}

fn mapping_rules(registry: &Registry, org: u64) -> Table {
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
}

fn product_orgs(m: &OrgModels) -> Table {
    let mut pos: Vec<_> = m.product_orgs.iter().collect();
    pos.sort_by(|a, b| a.0.cmp(b.0));
    Table::new("product_orgs")
        .column(
            "product_org_id",
            str_col(&pos, |(id, _)| Some((*id).clone())),
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
}
