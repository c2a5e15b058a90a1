//! Mapping-rule definitions: what a rule is, as its author writes it. Evaluation
//! lives with the dataflow (`trailspark-operators`); the definitions are here because the
//! HTTP API validates them and the log carries them as config events.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::path;

/// The six signal types.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum SignalType {
    #[serde(rename = "Page View")]
    PageView,
    #[serde(rename = "Form Fill")]
    FormFill,
    #[serde(rename = "Product Activity")]
    ProductActivity,
    #[serde(rename = "Sales Event")]
    SalesEvent,
    #[serde(rename = "Email Open")]
    EmailOpen,
    #[serde(rename = "Email Click")]
    EmailClick,
}

/// Condition operators.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Equals,
    NotEquals,
    Contains,
    StartsWith,
    EndsWith,
    Exists,
    NotExists,
    In,
    Regex,
    Gt,
    Lt,
}

/// One condition: `field` is `source`, `event_type`, `event_name`, or a payload dot path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    /// The operand; for `in`, a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Operand>,
}

/// A condition's operand, kept as text so that rules are ordered, hashable data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Operand {
    One(String),
    Many(Vec<String>),
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Combinator {
    #[default]
    All,
    Any,
}

/// A lead field a rule fills from a payload path. `Trait` is any other lead
/// attribute, stored with the lead's traits. In JSON it is the field's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeadField {
    Email,
    MapId,
    CdpId,
    CrmId,
    ProductUserId,
    Title,
    Trait(String),
}

impl Serialize for LeadField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for LeadField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LeadField::parse(&String::deserialize(d)?))
    }
}

/// One mapping of a rule: fill `field` from the payload at `path`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// `email`, `map_id`, `cdp_id`, `crm_id`, `product_user_id`, `title`, or a trait's name.
    #[schema(value_type = String)]
    pub field: LeadField,
    pub path: String,
}

impl LeadField {
    pub fn parse(name: &str) -> LeadField {
        match name {
            "email" => LeadField::Email,
            "map_id" => LeadField::MapId,
            "cdp_id" => LeadField::CdpId,
            "crm_id" => LeadField::CrmId,
            "product_user_id" => LeadField::ProductUserId,
            "title" => LeadField::Title,
            other => LeadField::Trait(other.to_string()),
        }
    }

    /// Whether the field identifies a lead (the "(ID)" fields of the rule editor).
    pub fn is_identifying(&self) -> bool {
        !matches!(self, LeadField::Title | LeadField::Trait(_))
    }

    pub fn name(&self) -> String {
        match self {
            LeadField::Email => "email".into(),
            LeadField::MapId => "map_id".into(),
            LeadField::CdpId => "cdp_id".into(),
            LeadField::CrmId => "crm_id".into(),
            LeadField::ProductUserId => "product_user_id".into(),
            LeadField::Title => "title".into(),
            LeadField::Trait(t) => t.clone(),
        }
    }
}

/// What a rule is, as its author wrote it. Unknown fields are refused: a misspelt
/// `conditions` would otherwise make a rule that matches every signal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    pub signal_type: SignalType,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub high_intent: bool,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub combinator: Combinator,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub mappings: Vec<FieldMapping>,
}

impl RuleDef {
    /// Checks a rule before it is saved.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is required".into());
        }
        let ids: Vec<&LeadField> = self
            .mappings
            .iter()
            .map(|m| &m.field)
            .filter(|f| f.is_identifying())
            .collect();
        if ids.is_empty() {
            return Err(
                "map at least one identifying lead field (email, map_id, crm_id, product_user_id)"
                    .into(),
            );
        }
        if ids.iter().all(|f| **f == LeadField::CdpId) {
            return Err(
                "cdp_id alone does not identify a lead; map another identifying field too".into(),
            );
        }
        for m in &self.mappings {
            if !path::is_valid(&m.path) {
                return Err(format!(
                    "mapping for `{}`: `{}` is not a dot-notation path",
                    m.field.name(),
                    m.path
                ));
            }
            if matches!(&m.field, LeadField::Trait(name) if name.trim().is_empty()) {
                return Err("a mapping needs a `field` name".into());
            }
        }
        for c in &self.conditions {
            if !path::is_valid(&c.field) {
                return Err(format!(
                    "condition field `{}` is not a dot-notation path",
                    c.field
                ));
            }
            let needs_value = !matches!(c.op, Op::Exists | Op::NotExists);
            match (&c.value, c.op) {
                (None, _) if needs_value => {
                    return Err(format!("condition on `{}` needs a `value`", c.field))
                }
                (Some(Operand::Many(_)), op) if op != Op::In => {
                    return Err(format!(
                        "condition on `{}`: only `in` takes a list",
                        c.field
                    ))
                }
                (Some(Operand::One(v)), Op::Regex) => {
                    regex::Regex::new(v)
                        .map_err(|e| format!("condition on `{}`: bad regex: {e}", c.field))?;
                }
                (Some(Operand::One(v)), Op::Gt | Op::Lt) if v.trim().parse::<f64>().is_err() => {
                    return Err(format!("condition on `{}`: `{v}` is not a number", c.field))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
