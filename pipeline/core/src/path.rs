//! Dot-notation paths into JSON payloads (`traits.email`, `data.tenant.id`, `items.0.id`).
//!
//! The spec uses the same path scheme for mapping rules, product-org templates and evaluation
//! rules, so there is one implementation. Numeric segments index arrays.

use serde_json::Value;

/// Resolves `path` inside `value`. An empty path returns the value itself; a segment that does
/// not exist (or indexes past an array's end, or steps into a scalar) resolves to `None`.
pub fn get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    let mut cur = value;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Resolves `path` to a non-empty string. Numbers are rendered in their JSON form, because
/// identifiers such as `userId` are numbers in some producers and strings in others; the
/// same user must not become two identifiers.
pub fn get_str(value: &Value, path: &str) -> Option<String> {
    match get(value, path)? {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `path` is syntactically usable: non-empty segments only.
pub fn is_valid(path: &str) -> bool {
    !path.is_empty() && path.split('.').all(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_objects_and_arrays() {
        let v = json!({"data": {"tenant": {"id": "t1"}}, "items": [{"id": 7}]});
        assert_eq!(get_str(&v, "data.tenant.id").as_deref(), Some("t1"));
        assert_eq!(get_str(&v, "items.0.id").as_deref(), Some("7"));
        assert!(get(&v, "items.1.id").is_none());
        assert!(get(&v, "data.tenant.id.x").is_none());
        assert!(get(&v, "missing").is_none());
    }

    #[test]
    fn blank_strings_are_absent() {
        let v = json!({"email": "   ", "n": null});
        assert!(get_str(&v, "email").is_none());
        assert!(get_str(&v, "n").is_none());
    }

    #[test]
    fn validity() {
        assert!(is_valid("a.b.0"));
        assert!(!is_valid(""));
        assert!(!is_valid("a..b"));
        assert!(!is_valid(".a"));
    }
}
