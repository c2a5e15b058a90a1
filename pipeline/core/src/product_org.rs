//! Product-org updates: applying a key's payload template to an incoming payload.
//!
//! Extraction happens when the update arrives, with the key's template at that moment, and
//! the extracted fields are what goes on the log: an entry is self-contained, and a template
//! edit applies from then on. A field whose path resolves to the wrong type is reported and
//! left out; the other fields still apply.

use serde_json::Value;

use crate::normalize::event_time;
use crate::path;
use crate::tenancy::ProductOrgTemplate;

/// The trial states a product org can be in.
pub const TRIAL_STATUSES: &[&str] = &["active", "expired", "converted"];

/// What a template extracted from one payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extracted {
    pub product_org_id: String,
    /// Event time (payload `timestamp`, else receipt): the latest wins per field.
    pub event_at: i64,
    /// Field name → value as JSON text. Custom fields are named `custom.<name>`.
    pub fields: Vec<(String, String)>,
    /// Field name → why it was left out.
    pub errors: Vec<(String, String)>,
    /// Field name → what is unusual about a value that was kept (a trial status outside the
    /// known ones).
    pub warnings: Vec<(String, String)>,
}

/// The template Segment `group` calls are read with, as the product documents it for the
/// Product Org Updates page's own example: `traits.plan` is the plan's id (`"pro"`),
/// `traits.plan_name` its name (`"Pro Annual"`), `traits.employees` the user count.
pub fn segment_group_template() -> ProductOrgTemplate {
    ProductOrgTemplate {
        product_org_id: "groupId".into(),
        name: Some("traits.name".into()),
        plan_id: Some("traits.plan".into()),
        plan_name: Some("traits.plan_name".into()),
        user_count: Some("traits.employees".into()),
        mrr: Some("traits.mrr".into()),
        trial_status: Some("traits.trial_status".into()),
        last_active_at: Some("traits.last_active_at".into()),
        feature_flags: Some("traits.feature_flags".into()),
        custom_fields: Default::default(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Count,
    Trial,
    Time,
    Object,
    Any,
}

fn check(kind: Kind, v: &Value) -> Result<Value, String> {
    match (kind, v) {
        (Kind::Text, Value::String(_)) => Ok(v.clone()),
        (Kind::Text, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (Kind::Text, _) => Err("expected a string".into()),
        (Kind::Count, Value::Number(n)) if n.as_u64().is_some() => Ok(v.clone()),
        (Kind::Count, Value::Number(n))
            if n.as_f64().is_some_and(|f| f >= 0.0 && f.fract() == 0.0) =>
        {
            Ok(Value::from(n.as_f64().unwrap() as u64))
        }
        (Kind::Count, Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
            Ok(Value::from(s.trim().parse::<u64>().unwrap()))
        }
        (Kind::Count, _) => Err("expected a non-negative whole number".into()),
        (Kind::Trial, Value::String(s))
            if TRIAL_STATUSES.contains(&s.to_ascii_lowercase().as_str()) =>
        {
            Ok(Value::String(s.to_ascii_lowercase()))
        }
        // Another status (`not_applicable`, `paused`, …) is kept as sent; the caller warns.
        (Kind::Trial, Value::String(s)) if !s.trim().is_empty() => Ok(v.clone()),
        (Kind::Trial, _) => Err("expected a trial status (a string)".into()),
        (Kind::Time, Value::String(s)) if crate::normalize::parse_time(s).is_some() => {
            Ok(v.clone())
        }
        (Kind::Time, _) => Err("expected an RFC 3339 timestamp".into()),
        (Kind::Object, Value::Object(_)) => Ok(v.clone()),
        (Kind::Object, _) => Err("expected a JSON object".into()),
        (Kind::Any, _) => Ok(v.clone()),
    }
}

/// Applies `template` to `payload`. `Err` names the product-org ID path when it resolves to
/// nothing usable (the request is then refused with 422).
pub fn extract(
    template: &ProductOrgTemplate,
    payload: &Value,
    received_at: i64,
) -> Result<Extracted, String> {
    let id = path::get_str(payload, &template.product_org_id).ok_or_else(|| {
        format!(
            "no Product Org ID at `{}` in the payload",
            template.product_org_id
        )
    })?;
    let mut out = Extracted {
        product_org_id: id,
        event_at: event_time(payload, received_at),
        ..Default::default()
    };
    let named = [
        ("name", &template.name, Kind::Text),
        ("plan_id", &template.plan_id, Kind::Text),
        ("plan_name", &template.plan_name, Kind::Text),
        ("user_count", &template.user_count, Kind::Count),
        ("mrr", &template.mrr, Kind::Count),
        ("trial_status", &template.trial_status, Kind::Trial),
        ("last_active_at", &template.last_active_at, Kind::Time),
        ("feature_flags", &template.feature_flags, Kind::Object),
    ];
    let custom = template
        .custom_fields
        .iter()
        .map(|(k, p)| (format!("custom.{k}"), Some(p.clone()), Kind::Any));
    let named = named
        .into_iter()
        .map(|(n, p, k)| (n.to_string(), p.clone(), k));
    for (field, p, kind) in named.chain(custom) {
        let Some(p) = p else { continue };
        match path::get(payload, &p) {
            None | Some(Value::Null) => {}
            Some(v) => match check(kind, v) {
                Ok(v) => {
                    if let (Kind::Trial, Some(s)) = (kind, v.as_str()) {
                        if !TRIAL_STATUSES.contains(&s) {
                            out.warnings.push((
                                field.clone(),
                                format!(
                                    "`{p}`: `{s}` is not one of active, expired, converted; kept as sent"
                                ),
                            ));
                        }
                    }
                    out.fields.push((field, v.to_string()))
                }
                Err(why) => out.errors.push((field, format!("`{p}`: {why}"))),
            },
        }
    }
    out.fields.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(id: &str) -> ProductOrgTemplate {
        ProductOrgTemplate {
            product_org_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn segment_group_shape() {
        let mut t = template("groupId");
        t.name = Some("traits.name".into());
        t.mrr = Some("traits.mrr".into());
        let e = extract(
            &t,
            &json!({"type": "group", "groupId": "ws_1", "traits": {"name": "Acme", "mrr": 49900}}),
            5,
        )
        .unwrap();
        assert_eq!(e.product_org_id, "ws_1");
        assert_eq!(
            e.fields,
            vec![
                ("mrr".into(), "49900".into()),
                ("name".into(), "\"Acme\"".into())
            ]
        );
        assert_eq!(e.event_at, 5);
    }

    #[test]
    fn flat_and_nested_shapes_and_custom_fields() {
        let mut t = template("data.tenant.id");
        t.custom_fields
            .insert("projects_count".into(), "metrics.total_projects".into());
        let p = json!({"data": {"tenant": {"id": 42}}, "metrics": {"total_projects": 7}, "timestamp": "2024-01-15T14:30:00Z"});
        let e = extract(&t, &p, 0).unwrap();
        assert_eq!(e.product_org_id, "42");
        assert_eq!(e.fields, vec![("custom.projects_count".into(), "7".into())]);
        assert_eq!(e.event_at, 1_705_329_000_000);
        let flat = template("workspace_id");
        assert_eq!(
            extract(&flat, &json!({"workspace_id": "w9"}), 0)
                .unwrap()
                .product_org_id,
            "w9"
        );
    }

    #[test]
    fn wrong_types_are_reported_per_field_and_missing_id_is_an_error() {
        let mut t = template("id");
        t.user_count = Some("users".into());
        t.trial_status = Some("trial".into());
        t.name = Some("name".into());
        t.feature_flags = Some("flags".into());
        let e = extract(
            &t,
            &json!({"id": "x", "users": "many", "trial": "Converted", "name": "N", "flags": [1]}),
            0,
        )
        .unwrap();
        assert_eq!(
            e.fields,
            vec![
                ("name".into(), "\"N\"".into()),
                ("trial_status".into(), "\"converted\"".into())
            ]
        );
        let bad: Vec<&str> = e.errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(bad, vec!["user_count", "feature_flags"]);
        assert!(e.warnings.is_empty());
        assert!(extract(&t, &json!({"name": "N"}), 0)
            .unwrap_err()
            .contains("`id`"));
        assert!(extract(&t, &json!({"id": ""}), 0).is_err());
    }

    /// The Product Org Updates page's examples: the Segment group call maps `traits.plan` to
    /// the plan id, `traits.plan_name` to its name and `traits.employees` to the user count;
    /// the nested example's `trial.status: "not_applicable"` is kept, with a warning.
    #[test]
    fn the_documented_examples() {
        let group = json!({"type": "group", "groupId": "acct_123", "traits": {
            "name": "Acme Corp", "plan": "pro", "plan_name": "Pro Annual", "employees": 47,
            "mrr": 49900}});
        let e = extract(&segment_group_template(), &group, 0).unwrap();
        let fields: std::collections::BTreeMap<&str, &str> = e
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(fields["plan_id"], "\"pro\"");
        assert_eq!(fields["plan_name"], "\"Pro Annual\"");
        assert_eq!(fields["user_count"], "47");
        assert_eq!(fields["name"], "\"Acme Corp\"");
        assert!(e.errors.is_empty() && e.warnings.is_empty());

        let mut t = template("organization.id");
        t.trial_status = Some("trial.status".into());
        t.plan_name = Some("subscription.plan".into());
        let nested = json!({"organization": {"id": "org_456"}, "subscription": {"plan": "Enterprise"},
            "trial": {"status": "not_applicable"}});
        let e = extract(&t, &nested, 0).unwrap();
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert!(e
            .fields
            .contains(&("trial_status".into(), "\"not_applicable\"".into())));
        assert_eq!(e.warnings.len(), 1);
        assert!(e.warnings[0].1.contains("not_applicable"));
    }
}
