//! Turns a fuzzer's bytes into JSON documents shaped like events, for the fuzz targets of
//! this crate and of `trailspark-sources` (`tests/fuzz.rs` in each).
//!
//! Random bytes almost never form JSON, so a target fed them directly would test only the
//! parser's first error. Here the bytes are read as choices (which kind of value, which
//! key, how long), so every input is a document, and the keys come mostly from the ones the
//! normalizer and the Segment API look at. The text may then be cut or extended, so that
//! malformed documents are covered too.

use serde_json::{Map, Number, Value};

/// Keys events carry, nested keys among them.
const KEYS: &[&str] = &[
    "type",
    "event",
    "email",
    "userId",
    "anonymousId",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "context",
    "traits",
    "properties",
    "library",
    "name",
    "groupId",
    "batch",
    "signals",
    "source",
    "writeKey",
    "rudderId",
    "channel",
    "data",
    "id",
    "0",
    "1",
    "",
];

const STRINGS: &[&str] = &[
    "track",
    "identify",
    "page",
    "group",
    "alias",
    "screen",
    "a@b.io",
    " A@B.IO ",
    "null",
    "anonymous",
    "2026-01-02T03:04:05Z",
    "not a time",
    "segment",
    "analytics-python",
    "0",
    "-1",
    "\u{0}",
    "é\u{1F600}",
    "",
];

/// Reads choices from the fuzzer's bytes; past the end every choice is 0.
pub struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes, at: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A choice among `n` (n > 0).
    pub fn pick(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    pub fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    /// A short text: one of the known strings, or bytes of the input.
    pub fn text(&mut self) -> String {
        if self.pick(4) > 0 {
            return STRINGS[self.pick(STRINGS.len())].to_string();
        }
        let len = self.pick(12);
        (0..len).map(|_| char::from(self.byte())).collect()
    }

    pub fn key(&mut self) -> String {
        if self.pick(8) > 0 {
            KEYS[self.pick(KEYS.len())].to_string()
        } else {
            self.text()
        }
    }

    /// A JSON value at most `depth` levels deep.
    pub fn value(&mut self, depth: usize) -> Value {
        let kinds = if depth == 0 || self.done() { 4 } else { 6 };
        match self.pick(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => match self.pick(3) {
                0 => Value::Number(Number::from(self.byte() as i64 - 128)),
                1 => Value::Number(Number::from(u64::MAX - self.byte() as u64)),
                _ => Number::from_f64(self.byte() as f64 / 7.0)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            },
            3 => Value::String(self.text()),
            4 => {
                let n = self.pick(5);
                Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
            }
            _ => Value::Object(self.object(depth - 1)),
        }
    }

    pub fn object(&mut self, depth: usize) -> Map<String, Value> {
        let n = self.pick(8);
        (0..n).map(|_| (self.key(), self.value(depth))).collect()
    }

    /// A document's text: usually the value serialized, sometimes cut short, extended or
    /// made of the remaining bytes as they are.
    pub fn document(&mut self, value: &Value) -> String {
        let text = value.to_string();
        match self.pick(8) {
            0 => {
                let cut = if text.is_empty() {
                    0
                } else {
                    self.byte() as usize % text.len()
                };
                text.char_indices()
                    .map(|(i, _)| i)
                    .take_while(|i| *i <= cut)
                    .last()
                    .map_or(String::new(), |i| text[..i].to_string())
            }
            1 => format!("{text}{}", self.text()),
            2 => String::from_utf8_lossy(&self.bytes[self.at.min(self.bytes.len())..]).into_owned(),
            _ => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_makes_a_document() {
        for seed in 0..200u32 {
            let bytes: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 3) as u8)
                .collect();
            let mut c = Choices::new(&bytes);
            let v = Value::Object(c.object(4));
            let text = c.document(&v);
            assert!(text.len() <= v.to_string().len() + 64 || !text.is_empty());
        }
    }
}
