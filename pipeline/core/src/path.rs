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

/// The value at `path` in the JSON document `text`: what [`get`] finds in the parsed
/// document (`None` if the text does not parse), without building the rest of it. Rules
/// look up a path or two of every signal's payload; parsing the whole payload into a
/// `Value` for that cost several times as much as the lookups. Like parsing into a `Value`,
/// a key that occurs twice in one object takes its last value, and text that does not parse
/// as one document finds nothing.
pub fn lookup(text: &str, path: &str) -> Option<Value> {
    use serde::de::DeserializeSeed;
    let segs: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').collect()
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let found = At(&segs).deserialize(&mut de).ok().flatten();
    // Text after the document makes it no document at all, as for a full parse (the fuzz
    // target found `{} x` answering `{}` here).
    de.end().ok()?;
    found
}

/// Finds the rest of a path in the value being deserialized.
struct At<'p>(&'p [&'p str]);

impl<'de> serde::de::DeserializeSeed<'de> for At<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        use serde::Deserialize;
        match self.0.split_first() {
            None => Value::deserialize(d).map(Some),
            Some((seg, rest)) => d.deserialize_any(Step { seg, rest }),
        }
    }
}

/// One segment of a path: a key of an object or an index of an array. Anything else does
/// not have it.
struct Step<'p> {
    seg: &'p str,
    rest: &'p [&'p str],
}

impl<'de> serde::de::Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = m.next_key_seed(KeyIs(self.seg))? {
            if hit {
                found = m.next_value_seed(At(self.rest))?;
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let index = self.seg.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match s.next_element_seed(At(self.rest))? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if s.next_element::<serde::de::IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether an object's key is this one.
struct KeyIs<'p>(&'p str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
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
    fn lookup_finds_what_get_finds() {
        let doc = r#"{"a": {"b": [1, {"c": "x"}, 2.50], "e\u0078": true}, "n": null, "a2": 1e2,
                      "d": {"k": 1}, "d": {"j": 2}, "s": "str", "arr": [[1, 2], []]}"#;
        let v: Value = serde_json::from_str(doc).unwrap();
        for p in [
            "",
            "a",
            "a.b",
            "a.b.0",
            "a.b.1.c",
            "a.b.2",
            "a.b.3",
            "a.b.x",
            "a.ex",
            "a.e",
            "n",
            "n.x",
            "a2",
            "d",
            "d.k",
            "d.j",
            "s",
            "s.0",
            "arr.0.1",
            "arr.1.0",
            "missing",
            "a.b.1.c.d",
            "a.b.+1.c",
        ] {
            assert_eq!(lookup(doc, p), get(&v, p).cloned(), "{p:?}");
        }
        assert_eq!(lookup("{not json", "a"), None);
    }

    proptest::proptest! {
        #[test]
        fn lookup_agrees_with_get_on_random_documents(
            doc in arb_json(),
            path in proptest::collection::vec(proptest::prop_oneof!["[a-c]", "[0-2]"], 0..4),
        ) {
            // Against the document parsed back from its text (a float's text may not round
            // trip to the same float, whichever way it is read).
            let text = doc.to_string();
            let parsed: Value = serde_json::from_str(&text).unwrap();
            let path = path.join(".");
            proptest::prop_assert_eq!(lookup(&text, &path), get(&parsed, &path).cloned());
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|n| json!(n)),
            "[a-z\\\"]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn validity() {
        assert!(is_valid("a.b.0"));
        assert!(!is_valid(""));
        assert!(!is_valid("a..b"));
        assert!(!is_valid(".a"));
    }
}
