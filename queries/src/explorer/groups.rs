//! Signal groups as the signal queue shows them: a group with its stable id, its detail (the
//! sample payloads and the field paths they hold), and the mapping rule the product would
//! pre-fill for it.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use trailspark_core::normalize::{event_name, event_type};
use trailspark_core::time::rfc3339;
use trailspark_operators::groups::{group_id, title, ContentType, GroupKey, GroupRow};
use trailspark_sinks::read_models::Models;

/// A group as the queue lists it.
pub fn group_json(org: u64, k: &GroupKey, row: &GroupRow) -> Value {
    json!({
        "id": group_id(org, k),
        "title": title(k),
        "source": k.source,
        "event_type": k.event,
        "path": k.path,
        "form": k.form,
        "descriptor": k.descriptor,
        "content_type": k.content_type.as_str(),
        "count": row.count,
        "unmapped": row.unmapped,
        "first_seen": rfc3339(row.first_seen),
        "last_seen": rfc3339(row.last_seen),
        "sample": parse(row.sample()),
    })
}

fn parse(text: &str) -> Value {
    serde_json::from_str::<Value>(text).unwrap_or(Value::Null)
}

/// The group of `org` with id `id`.
pub fn find<'m>(m: &'m Models, org: u64, id: &str) -> Option<(&'m GroupKey, &'m GroupRow)> {
    m.org(org)
        .groups
        .iter()
        .find(|(k, _)| group_id(org, k) == id)
}

/// Every leaf's dot path in `v` (arrays are leaves: a rule maps a path to one value).
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(child, &p, out);
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.to_string());
        }
        _ => {}
    }
}

/// `GET /api/signal-queue/groups/{id}`: the group with its sample payloads and the field
/// paths seen in them.
pub fn group_detail(org: u64, k: &GroupKey, row: &GroupRow) -> Value {
    let samples: Vec<Value> = row.samples.iter().map(|s| parse(&s.2)).collect();
    let mut seen = BTreeSet::new();
    for s in &samples {
        paths(s, "", &mut seen);
    }
    let mut v = group_json(org, k, row);
    v["samples"] = Value::Array(samples);
    v["sample_ids"] = json!(row.samples.iter().map(|s| s.1).collect::<Vec<_>>());
    v["field_paths"] = json!(seen);
    v
}

/// Where the product looks for a lead's email in a payload, in order.
const EMAIL_PATHS: [&str; 4] = [
    "traits.email",
    "properties.email",
    "context.traits.email",
    "email",
];

/// `GET /api/signal-queue/groups/{id}/suggested-rule`: a rule body pre-filled from the group,
/// as the product's "create rule from group" does: conditions that pick the group's signals
/// (source, event type, and event name when there is one) and mappings for the email and the
/// traits its samples carry. Posting it unchanged creates a rule that maps the group's
/// signals, those already received included (`reprocess`).
pub fn suggested_rule(k: &GroupKey, row: &GroupRow) -> Value {
    let samples: Vec<Value> = row.samples.iter().map(|s| parse(&s.2)).collect();
    let first = samples.first().cloned().unwrap_or(Value::Null);
    let mut conditions = vec![
        json!({"field": "source", "op": "equals", "value": k.source}),
        json!({"field": "event_type", "op": "equals", "value": event_type(&first)}),
    ];
    if let Some(name) = event_name(&first) {
        conditions.push(json!({"field": "event_name", "op": "equals", "value": name}));
    }
    let mut seen = BTreeSet::new();
    for s in &samples {
        paths(s, "", &mut seen);
    }
    let mut mappings = Vec::new();
    if let Some(p) = EMAIL_PATHS.iter().find(|p| seen.contains(**p)) {
        mappings.push(json!({"field": "email", "path": p}));
    } else if seen.contains("userId") {
        mappings.push(json!({"field": "product_user_id", "path": "userId"}));
    } else {
        // Nothing identifying in the samples: the usual place, for the author to adjust.
        mappings.push(json!({"field": "email", "path": EMAIL_PATHS[0]}));
    }
    for p in &seen {
        let Some(name) = p
            .strip_prefix("traits.")
            .or_else(|| p.strip_prefix("context.traits."))
        else {
            continue;
        };
        if name == "email" || name.contains('.') || mappings.iter().any(|m| m["field"] == name) {
            continue;
        }
        mappings.push(json!({"field": name, "path": p}));
    }
    let signal_type = match (k.content_type, &k.form) {
        (_, Some(_)) => "Form Fill",
        (ContentType::Webpage, _) => "Page View",
        _ => "Product Activity",
    };
    json!({
        "name": title(k),
        "signal_type": signal_type,
        "combinator": "all",
        "conditions": conditions,
        "mappings": mappings,
        "reprocess": true,
    })
}
