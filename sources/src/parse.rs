//! Parsing of payloads: single objects with a nesting bound, batch bodies (E3), and a
//! streaming splitter for bulk bodies (E4) that never holds more than one item at a time.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::IngestError;

/// Deepest JSON nesting accepted in a payload. Real event payloads are a few levels deep;
/// the bound keeps hostile bodies from costing stack or time downstream.
pub const MAX_DEPTH: usize = 32;

/// Nesting depth of a value (a scalar is 0, `{}` is 1), computed without recursion.
pub fn depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

fn json_error(e: serde_json::Error) -> IngestError {
    if e.to_string().contains("recursion limit") {
        IngestError::TooDeep(MAX_DEPTH)
    } else {
        IngestError::InvalidJson(e.to_string())
    }
}

/// Parses any JSON value with the nesting bound.
pub fn parse_value(bytes: &[u8]) -> Result<Value, IngestError> {
    let v: Value = serde_json::from_slice(bytes).map_err(json_error)?;
    if depth(&v) > MAX_DEPTH {
        return Err(IngestError::TooDeep(MAX_DEPTH));
    }
    Ok(v)
}

/// Parses a payload that must be a JSON object (`hint` is added to the error for arrays).
pub fn parse_object(bytes: &[u8], array_hint: &str) -> Result<Value, IngestError> {
    let v = parse_value(bytes)?;
    match v {
        Value::Object(_) => Ok(v),
        Value::Array(_) => Err(IngestError::NotAnObject(format!(
            "body must be a JSON object, got an array{array_hint}"
        ))),
        other => Err(IngestError::NotAnObject(format!(
            "body must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `{"batch": […]}` or `{"signals": […]}`. (An untagged enum cannot hold borrowed raw
/// values, so the array case is told apart by its first byte instead.)
#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    signals: Option<Vec<&'a RawValue>>,
}

/// Splits a batch body into its items' raw text: a top-level array, or an object with a
/// `batch` or `signals` array.
pub fn split_batch(bytes: &[u8]) -> Result<Vec<&RawValue>, IngestError> {
    // Validate syntax first so that malformed JSON is reported as such, not as a wrong shape.
    let _: &RawValue = serde_json::from_slice(bytes).map_err(json_error)?;
    let shape_error = || {
        IngestError::BadRequest(
            "batch body must be a JSON array or an object with a `batch` or `signals` array".into(),
        )
    };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<&RawValue>>(bytes).map_err(json_error),
        Some(b'{') => match serde_json::from_slice::<Wrapped>(bytes) {
            Ok(Wrapped {
                batch: Some(items), ..
            })
            | Ok(Wrapped {
                signals: Some(items),
                ..
            }) => Ok(items),
            _ => Err(shape_error()),
        },
        _ => Err(shape_error()),
    }
}

/// How a bulk body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One JSON value per line (`application/x-ndjson`); a bad line is one bad item.
    Lines,
    /// A JSON array of items, or a sequence of top-level values (which may be `{"batch": […]}`
    /// wrappers), found by a structural scan.
    Json,
}

/// An item cut out of a bulk body: its bytes and the 1-based line it started on.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    pub line: u64,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Start,
    Array,
    Seq,
    Done,
}

/// Incremental splitter for bulk bodies. Feed it chunks as they arrive; it emits complete
/// items. It tracks strings and escapes, so braces inside strings do not confuse it, and it
/// works on bytes (every structural character of JSON is ASCII, so UTF-8 is safe).
pub struct Splitter {
    framing: Framing,
    mode: Mode,
    depth: u32,
    in_str: bool,
    esc: bool,
    cur: Vec<u8>,
    cur_line: u64,
    line: u64,
    /// Largest item kept whole; a longer one is still consumed but emitted truncated to this
    /// length plus one byte, so the caller can report it as too large without buffering it.
    max_item: usize,
}

impl Splitter {
    pub fn new(framing: Framing, max_item: usize) -> Self {
        Splitter {
            framing,
            mode: Mode::Start,
            depth: 0,
            in_str: false,
            esc: false,
            cur: Vec::new(),
            cur_line: 1,
            line: 1,
            max_item,
        }
    }

    fn push_byte(&mut self, b: u8) {
        if self.cur.is_empty() {
            self.cur_line = self.line;
        }
        if self.cur.len() <= self.max_item {
            self.cur.push(b);
        }
    }

    fn emit(&mut self, out: &mut Vec<Piece>) {
        let bytes = std::mem::take(&mut self.cur);
        if bytes.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(Piece {
                line: self.cur_line,
                bytes,
            });
        }
    }

    /// Consumes a chunk; complete items are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Piece>) -> Result<(), IngestError> {
        for &b in chunk {
            match self.framing {
                Framing::Lines => {
                    if b == b'\n' {
                        self.emit(out);
                    } else {
                        self.push_byte(b);
                    }
                }
                Framing::Json => self.scan(b, out)?,
            }
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(())
    }

    fn scan(&mut self, b: u8, out: &mut Vec<Piece>) -> Result<(), IngestError> {
        // Depth at which items live: inside the outer array, or at the top.
        let base = if self.mode == Mode::Array { 1 } else { 0 };
        if self.mode == Mode::Start {
            if b.is_ascii_whitespace() {
                return Ok(());
            }
            if b == b'[' {
                self.mode = Mode::Array;
                self.depth = 1;
                return Ok(());
            }
            self.mode = Mode::Seq;
        }
        if self.mode == Mode::Done {
            return if b.is_ascii_whitespace() {
                Ok(())
            } else {
                Err(IngestError::InvalidJson(
                    "data after the end of the array".into(),
                ))
            };
        }
        if self.in_str {
            self.push_byte(b);
            if self.esc {
                self.esc = false;
            } else if b == b'\\' {
                self.esc = true;
            } else if b == b'"' {
                self.in_str = false;
            }
            return Ok(());
        }
        let scalar_open = !self.cur.is_empty() && self.depth == base;
        match b {
            b'"' => {
                self.in_str = true;
                self.push_byte(b);
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.push_byte(b);
            }
            b'}' | b']' => {
                if self.depth == base {
                    // Only the outer array may close here.
                    if self.mode == Mode::Array && b == b']' {
                        self.emit(out);
                        self.mode = Mode::Done;
                        self.depth = 0;
                        return Ok(());
                    }
                    return Err(IngestError::InvalidJson(format!(
                        "unbalanced `{}` on line {}",
                        b as char, self.line
                    )));
                }
                self.depth -= 1;
                self.push_byte(b);
                if self.depth == base {
                    self.emit(out);
                }
            }
            b',' if self.depth == base && self.mode == Mode::Array => self.emit(out),
            c if c.is_ascii_whitespace() => {
                if scalar_open {
                    self.emit(out);
                } else if !self.cur.is_empty() {
                    self.push_byte(c);
                }
            }
            c => self.push_byte(c),
        }
        Ok(())
    }

    /// Ends the body; emits a last item if one is pending.
    pub fn finish(mut self, out: &mut Vec<Piece>) -> Result<(), IngestError> {
        match self.framing {
            Framing::Lines => self.emit(out),
            Framing::Json => {
                // The outer array's `]` moves the mode to Done, so Array here means unclosed.
                if self.mode == Mode::Array {
                    return Err(IngestError::InvalidJson("unterminated array".into()));
                }
                // A truncated last top-level value is still handed out; parsing rejects it.
                self.emit(out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(framing: Framing, body: &str, chunk: usize) -> Result<Vec<String>, IngestError> {
        let mut s = Splitter::new(framing, 1 << 20);
        let mut out = Vec::new();
        for c in body.as_bytes().chunks(chunk.max(1)) {
            s.feed(c, &mut out)?;
        }
        s.finish(&mut out)?;
        Ok(out
            .into_iter()
            .map(|p| String::from_utf8(p.bytes).unwrap().trim().to_string())
            .collect())
    }

    #[test]
    fn depth_bound() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(matches!(
            parse_value(deep.as_bytes()),
            Err(IngestError::TooDeep(_))
        ));
        let very_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(
            parse_value(very_deep.as_bytes()),
            Err(IngestError::TooDeep(_))
        ));
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": 2}]})), 3);
        assert!(matches!(
            parse_object(b"[1]", ""),
            Err(IngestError::NotAnObject(_))
        ));
        assert!(matches!(
            parse_object(b"{", ""),
            Err(IngestError::InvalidJson(_))
        ));
    }

    #[test]
    fn batch_shapes() {
        assert_eq!(split_batch(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert_eq!(split_batch(br#"{"batch":[{"a":1}]}"#).unwrap().len(), 1);
        assert_eq!(
            split_batch(br#"{"signals":[{"a":1}],"x":1}"#).unwrap()[0].get(),
            r#"{"a":1}"#
        );
        assert!(matches!(
            split_batch(br#"{"a":1}"#),
            Err(IngestError::BadRequest(_))
        ));
        assert!(matches!(
            split_batch(b"[1,"),
            Err(IngestError::InvalidJson(_))
        ));
    }

    #[test]
    fn splitter_array_and_sequences_in_any_chunking() {
        let body = r#" [ {"a":"}],{"}, {"b":[1,2]} ,3, "x\"y" ] "#;
        for chunk in [1, 2, 3, 7, 100] {
            let items = split_all(Framing::Json, body, chunk).unwrap();
            assert_eq!(
                items,
                vec![r#"{"a":"}],{"}"#, r#"{"b":[1,2]}"#, "3", r#""x\"y""#],
                "chunk {chunk}"
            );
        }
        let seq = "{\"a\":1}\n{\"b\":\n 2}\n\n{\"c\":3}";
        for chunk in [1, 4, 100] {
            assert_eq!(split_all(Framing::Json, seq, chunk).unwrap().len(), 3);
        }
        assert!(split_all(Framing::Json, "[{}] x", 3).is_err());
        assert!(split_all(Framing::Json, "[{}", 3).is_err());
    }

    #[test]
    fn splitter_lines_keep_line_numbers() {
        let mut s = Splitter::new(Framing::Lines, 100);
        let mut out = Vec::new();
        s.feed(b"{\"a\":1}\n\n{bad\n{\"c\":3}", &mut out).unwrap();
        s.finish(&mut out).unwrap();
        let lines: Vec<u64> = out.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 3, 4]);
    }

    #[test]
    fn oversized_items_are_truncated_not_buffered() {
        let mut s = Splitter::new(Framing::Lines, 4);
        let mut out = Vec::new();
        s.feed(b"0123456789\n{}\n", &mut out).unwrap();
        assert_eq!(out[0].bytes.len(), 5);
        assert_eq!(out[1].bytes, b"{}");
    }
}
