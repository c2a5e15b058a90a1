//! Evaluation rules: which leads may be scored at all, checked before any scorer runs.
//!
//! A rule is conditions on the lead, its traits, its product org and its account, combined
//! with `all` or `any`; a lead must pass every rule of its org. The operators and their
//! treatment of empty values follow the product's integration rules, with the semantics we
//! chose where it is silent (spec §4.5): string comparisons ignore case and surrounding
//! space, an empty field fails every operator but `is_empty` unless the condition allows it
//! to be empty, and numbers and dates compare as numbers and dates.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The operators of an evaluation-rule condition.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleOp {
    Equals,
    NotEquals,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Gt,
    Lt,
    Gte,
    Lte,
    IsEmpty,
    IsNotEmpty,
    IsTrue,
    IsFalse,
}

impl RuleOp {
    fn takes_value(self) -> bool {
        !matches!(
            self,
            RuleOp::IsEmpty | RuleOp::IsNotEmpty | RuleOp::IsTrue | RuleOp::IsFalse
        )
    }
}

/// A condition's operand: a JSON scalar, kept as text so that config events stay `Eq`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Literal {
    Bool(bool),
    /// A number, as its JSON text.
    Number(String),
    Text(String),
}

impl TryFrom<Value> for Literal {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(Literal::Bool(b)),
            Value::Number(n) => Ok(Literal::Number(n.to_string())),
            Value::String(s) => Ok(Literal::Text(s)),
            _ => Err("a condition's `value` is a string, number or boolean".into()),
        }
    }
}

impl From<Literal> for Value {
    fn from(l: Literal) -> Value {
        match l {
            Literal::Bool(b) => Value::Bool(b),
            Literal::Number(n) => serde_json::from_str(&n).unwrap_or(Value::String(n)),
            Literal::Text(s) => Value::String(s),
        }
    }
}

/// Where a condition's field is looked up.
pub const FIELD_SCOPES: [&str; 5] = ["lead.", "traits.", "product_org.", "account.", "crm."];

/// One condition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCondition {
    /// `lead.<field>`, `traits.<name>`, `product_org.<path>` or `account.<field>`.
    pub field: String,
    pub op: RuleOp,
    /// A string, number or boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<Literal>,
    /// A lead whose field has no value passes instead of failing.
    #[serde(default)]
    pub allow_if_empty: bool,
}

/// An evaluation rule as its author writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRuleDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub combinator: crate::rules::Combinator,
    pub conditions: Vec<RuleCondition>,
}

impl EvalRuleDef {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is required".into());
        }
        if self.conditions.is_empty() {
            return Err("`conditions` needs at least one condition".into());
        }
        for (i, c) in self.conditions.iter().enumerate() {
            if !FIELD_SCOPES
                .iter()
                .any(|s| c.field.starts_with(s) && crate::path::is_valid(&c.field[s.len()..]))
            {
                return Err(format!(
                    "conditions[{i}].field `{}` must start with lead., traits., product_org. or account.",
                    c.field
                ));
            }
            match (c.op.takes_value(), &c.value) {
                (true, None) => return Err(format!("conditions[{i}] needs a `value`")),
                (false, Some(_)) => {
                    return Err(format!("conditions[{i}]: `{:?}` takes no `value`", c.op))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a lead passes this rule; `field` resolves a condition's field for the lead.
    pub fn passes(&self, field: &dyn Fn(&str) -> Option<Value>) -> bool {
        let mut each = self.conditions.iter().map(|c| c.holds(field(&c.field)));
        match self.combinator {
            crate::rules::Combinator::All => each.all(|x| x),
            crate::rules::Combinator::Any => each.any(|x| x),
        }
    }
}

/// Null, missing, an empty or blank string, an empty array or object.
fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// A value's text for string comparisons: trimmed, lower case.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_lowercase(),
        other => other.to_string().to_lowercase(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC).
fn date(v: &Value) -> Option<i64> {
    let s = v.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn is_day(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").is_ok())
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Orders two values: as numbers when both are, as times when both are, else as text.
fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
    }
    if let (Some(x), Some(y)) = (date(a), date(b)) {
        return x.cmp(&y);
    }
    text(a).cmp(&text(b))
}

fn equal(field: &Value, value: &Value) -> bool {
    match (field, value) {
        (Value::Bool(a), b) => boolean(b) == Some(*a),
        (a, Value::Bool(b)) => boolean(a) == Some(*b),
        _ => {
            if let (Some(x), Some(y)) = (number(field), number(value)) {
                return x == y;
            }
            // A date without a time compares at day precision.
            if is_day(value) {
                if let (Some(x), Some(y)) = (date(field), date(value)) {
                    return x.div_euclid(86_400_000) == y.div_euclid(86_400_000);
                }
            }
            text(field) == text(value)
        }
    }
}

impl RuleCondition {
    /// Whether the condition holds for a field's value.
    pub fn holds(&self, field: Option<Value>) -> bool {
        let empty = is_empty(field.as_ref());
        match self.op {
            RuleOp::IsEmpty => return empty,
            RuleOp::IsNotEmpty => return !empty,
            _ if empty => return self.allow_if_empty,
            _ => {}
        }
        let f = field.expect("not empty");
        let v: Value = self.value.clone().map(Value::from).unwrap_or(Value::Null);
        let (ft, vt) = (text(&f), text(&v));
        match self.op {
            RuleOp::Equals => equal(&f, &v),
            RuleOp::NotEquals => !equal(&f, &v),
            RuleOp::Contains => ft.contains(&vt),
            RuleOp::NotContains => !ft.contains(&vt),
            RuleOp::StartsWith => ft.starts_with(&vt),
            RuleOp::EndsWith => ft.ends_with(&vt),
            RuleOp::Gt => order(&f, &v).is_gt(),
            RuleOp::Lt => order(&f, &v).is_lt(),
            RuleOp::Gte => order(&f, &v).is_ge(),
            RuleOp::Lte => order(&f, &v).is_le(),
            RuleOp::IsTrue => boolean(&f) == Some(true),
            RuleOp::IsFalse => boolean(&f) == Some(false),
            RuleOp::IsEmpty | RuleOp::IsNotEmpty => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(op: &str, value: Value, allow: bool) -> RuleCondition {
        serde_json::from_value(json!({"field": "traits.x", "op": op, "value": value,
                                      "allow_if_empty": allow}))
        .unwrap()
    }

    fn bare(op: &str) -> RuleCondition {
        serde_json::from_value(json!({"field": "traits.x", "op": op})).unwrap()
    }

    #[test]
    fn operators_follow_the_chosen_semantics() {
        let c = cond("equals", json!("Acme "), false);
        assert!(c.holds(Some(json!("acme"))));
        assert!(!c.holds(None), "empty fails");
        assert!(
            cond("equals", json!("x"), true).holds(None),
            "allowed empty"
        );
        assert!(!cond("not_equals", json!("x"), false).holds(Some(json!(""))));
        assert!(cond("gt", json!(100), false).holds(Some(json!("250"))));
        assert!(!cond("gt", json!(100), false).holds(Some(json!(99.5))));
        assert!(cond("lte", json!("2026-01-02"), false).holds(Some(json!("2026-01-01T23:00:00Z"))));
        assert!(
            cond("equals", json!("2026-01-01"), false).holds(Some(json!("2026-01-01T23:00:00Z")))
        );
        assert!(cond("contains", json!("SAAS"), false).holds(Some(json!("B2B SaaS"))));
        assert!(cond("not_contains", json!("edu"), false).holds(Some(json!("acme.com"))));
        assert!(cond("equals", json!(true), false).holds(Some(json!("TRUE"))));
        assert!(bare("is_true").holds(Some(json!(true))));
        assert!(!bare("is_false").holds(None), "missing is empty, not false");
        assert!(bare("is_empty").holds(Some(json!("  "))));
        assert!(bare("is_not_empty").holds(Some(json!(0))));
    }

    #[test]
    fn rules_combine_and_validate() {
        let rule: EvalRuleDef = serde_json::from_value(json!({
            "name": "Paying", "combinator": "any",
            "conditions": [{"field": "product_org.plan_id", "op": "equals", "value": "pro"},
                           {"field": "account.employee_count", "op": "gte", "value": 200}]}))
        .unwrap();
        rule.validate().unwrap();
        let fields = |f: &str| match f {
            "account.employee_count" => Some(json!(450)),
            _ => None,
        };
        assert!(rule.passes(&fields));
        let bad: EvalRuleDef = serde_json::from_value(
            json!({"name": "x", "conditions": [{"field": "plan", "op": "is_empty"}]}),
        )
        .unwrap();
        assert!(bad.validate().unwrap_err().contains("lead."));
        let bad: EvalRuleDef = serde_json::from_value(
            json!({"name": "x", "conditions": [{"field": "lead.title", "op": "equals"}]}),
        )
        .unwrap();
        assert!(bad.validate().unwrap_err().contains("value"));
        assert!(serde_json::from_value::<EvalRuleDef>(
            json!({"name": "x", "conditions": [], "conditons": []})
        )
        .is_err());
    }
}
