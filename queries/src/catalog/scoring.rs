//! The live tables of lead scoring: evaluations and accounts.

use trailspark_sinks::read_models::Models;

use super::table::{Column, Table};
use crate::scoring::accounts::{accounts as org_accounts, propensity, AccountKey};

fn str_col<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> Column {
    Column::Str(rows.iter().map(f).collect())
}

fn text<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

pub fn evaluations(m: &Models, org: u64) -> Table {
    let evals: Vec<_> = m.org(org).scoring.by_time.values().collect();
    let u32s = |f: fn(&trailspark_core::scoring::Evaluation) -> Option<u32>| {
        Column::I64(evals.iter().map(|e| f(e).map(i64::from)).collect())
    };
    Table::new("evaluations")
        .column("id", str_col(&evals, |e| Some(e.id.clone())))
        .column("lead_id", str_col(&evals, |e| Some(e.lead_id.clone())))
        .column("account_id", str_col(&evals, |e| e.account_id.clone()))
        .column("score", str_col(&evals, |e| Some(e.score.as_str().into())))
        .column(
            "raw_score",
            str_col(&evals, |e| Some(e.raw_score.as_str().into())),
        )
        .column("confidence", u32s(|e| Some(e.confidence)))
        .column(
            "confidence_gate_applied",
            Column::Bool(
                evals
                    .iter()
                    .map(|e| Some(e.confidence_gate_applied))
                    .collect(),
            ),
        )
        .column(
            "propensity",
            str_col(&evals, |e| e.propensity.map(|p| p.as_str().into())),
        )
        .column("trigger", str_col(&evals, |e| text(&e.trigger)))
        .column(
            "evaluated_at",
            Column::Time(evals.iter().map(|e| Some(e.evaluated_at)).collect()),
        )
        .column(
            "cooldown_until",
            Column::Time(evals.iter().map(|e| e.cooldown_until).collect()),
        )
        .column(
            "model_id",
            Column::U64(evals.iter().map(|e| Some(e.model_id)).collect()),
        )
        .column("model_version", u32s(|e| Some(e.model_version)))
        .column("scorer", str_col(&evals, |e| Some(e.scorer.clone())))
        .column("fit", u32s(|e| e.dimensions.fit))
        .column("intent", u32s(|e| e.dimensions.intent))
        .column("usage", u32s(|e| e.dimensions.usage))
        .column("reasoning", str_col(&evals, |e| Some(e.reasoning.clone())))
        .column(
            "contributions",
            str_col(&evals, |e| serde_json::to_string(&e.contributions).ok()),
        )
}

pub fn accounts(m: &Models, org: u64) -> Table {
    let accounts = org_accounts(m, org);
    Table::new("accounts")
        .column("account_id", str_col(&accounts, |a| Some(a.id.clone())))
        .column(
            "source",
            str_col(&accounts, |a| {
                a.key.as_ref().map(|k| match k {
                    AccountKey::ProductOrg(_) => "product_org".into(),
                    AccountKey::Domain(_) => "domain".into(),
                })
            }),
        )
        .column("name", str_col(&accounts, |a| a.fields.name.clone()))
        .column("domain", str_col(&accounts, |a| a.fields.domain.clone()))
        .column(
            "industry",
            str_col(&accounts, |a| a.fields.industry.clone()),
        )
        .column(
            "market_segment",
            str_col(&accounts, |a| a.fields.market_segment.clone()),
        )
        .column(
            "employee_count",
            Column::U64(accounts.iter().map(|a| a.fields.employee_count).collect()),
        )
        .column("region", str_col(&accounts, |a| a.fields.region.clone()))
        .column(
            "product_org_id",
            str_col(&accounts, |a| a.product_org_id.clone()),
        )
        .column(
            "leads",
            Column::U64(
                accounts
                    .iter()
                    .map(|a| Some(a.leads.len() as u64))
                    .collect(),
            ),
        )
        .column(
            "propensity",
            str_col(&accounts, |a| propensity(m, a).map(str::to_string)),
        )
}
