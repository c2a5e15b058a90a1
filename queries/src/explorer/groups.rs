//! Signal groups as the signal queue shows them: a group with its stable id, its detail (the
//! sample payloads and the field paths they hold), and the mapping rule the product would
//! pre-fill for it.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Value};
use trailspark_core::normalize::{event_name, event_type};
use trailspark_core::time::rfc3339_text;
use trailspark_operators::groups::{group_id, title, ContentType, GroupKey, GroupRow};
use trailspark_sinks::read_models::Models;
use utoipa::ToSchema;

/// A group as the queue lists it: the signals of one shape that no rule maps (or, on the
/// mapped tab, that rules map), with a sample payload.
#[derive(Serialize, ToSchema)]
pub struct GroupView {
    /// Stable across restarts: derived from the org and the group's key.
    pub id: String,
    pub title: String,
    pub source: String,
    pub event_type: String,
    pub path: Option<String>,
    pub form: Option<String>,
    pub descriptor: Option<String>,
    /// `webpage`, `action`, `asset` …
    pub content_type: &'static str,
    pub count: u64,
    pub unmapped: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// The newest sample's payload.
    #[schema(value_type = serde_json::Value)]
    pub sample: Value,
}

/// A group with its samples and the field paths seen in them.
#[derive(Serialize, ToSchema)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: GroupView,
    #[schema(value_type = Vec<serde_json::Value>)]
    pub samples: Vec<Value>,
    /// The samples' signal ids.
    pub sample_ids: Vec<u64>,
    /// Every leaf's dot path in the samples.
    pub field_paths: BTreeSet<String>,
}

fn group_view(org: u64, k: &GroupKey, row: &GroupRow) -> GroupView {
    GroupView {
        id: group_id(org, k),
        title: title(k),
        source: k.source.clone(),
        event_type: k.event.clone(),
        path: k.path.clone(),
        form: k.form.clone(),
        descriptor: k.descriptor.clone(),
        content_type: k.content_type.as_str(),
        count: row.count,
        unmapped: row.unmapped,
        first_seen: rfc3339_text(row.first_seen),
        last_seen: rfc3339_text(row.last_seen),
        sample: parse(row.sample()),
    }
}

pub fn group_json(org: u64, k: &GroupKey, row: &GroupRow) -> Value {
    serde_json::to_value(group_view(org, k, row)).expect("groups serialize")
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
    let detail = GroupDetail {
        group: group_view(org, k, row),
        samples,
        sample_ids: row.samples.iter().map(|s| s.1).collect(),
        field_paths: seen,
    };
    serde_json::to_value(detail).expect("groups serialize")
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
