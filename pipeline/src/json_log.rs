//! JSON log lines, formatted in one pass.
//!
//! `tracing-subscriber`'s own JSON format keeps each span's fields as a JSON object in text
//! and parses that text back into a map for every event that shows the span. The access log
//! writes one event per request inside the request's span, so on the E1 ingest benchmark that
//! parse cost 7–11% of the request rate against 2% for the text format (bench/RESULTS.md,
//! "Observability"). Here a span's fields are kept as ready-made `"key":value` pairs and an
//! event's line is written by concatenation: no parse, no map, one `String` per line.
//!
//! The line has the shape the JSON format had, so readers of the logs see no change:
//! `{"timestamp":…,"level":"INFO","message":…,<event fields>,"target":…,"span":{<fields>,"name":…}}`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats a span's fields as comma-separated JSON pairs without braces, so an event's line
/// can splice them in as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonPairs;

/// Formats each event as one JSON object on one line, with its current span's fields under
/// `span` (as `tracing-subscriber`'s JSON format with `flatten_event` and `with_current_span`).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

/// Collects fields as JSON pairs, and their names.
#[derive(Default)]
struct Pairs {
    out: String,
    names: Vec<&'static str>,
}

impl Pairs {
    fn key(&mut self, field: &Field) {
        self.names.push(field.name());
        if !self.out.is_empty() {
            self.out.push(',');
        }
        push_string(&mut self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for Pairs {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            // JSON has no NaN or infinity.
            push_string(&mut self.out, &value.to_string());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_string(&mut self.out, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        push_string(&mut self.out, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        // `%x` fields arrive here wrapped so that `Debug` prints their `Display`.
        push_string(&mut self.out, &format!("{value:?}"));
    }
}

/// Appends `s` as a JSON string literal.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The byte range of the pair named `key` in a pair list this module wrote, the comma before
/// it included (or after it, when it is the first).
fn find_pair(pairs: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let b = pairs.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let key_start = i;
        let key_end = string_end(b, i)?;
        let value_end = if b.get(key_end + 1) == Some(&b'"') {
            string_end(b, key_end + 1)?
        } else {
            b[key_end + 1..]
                .iter()
                .position(|&c| c == b',')
                .map_or(b.len(), |p| key_end + 1 + p)
        };
        if &pairs[key_start + 1..key_end - 1] == key {
            return Some(if key_start > 0 {
                key_start - 1..value_end
            } else {
                key_start..(value_end + 1).min(b.len())
            });
        }
        i = value_end + 1;
    }
    None
}

/// The index just past the string literal opening at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

impl<'w> FormatFields<'w> for JsonPairs {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut pairs = Pairs::default();
        fields.record(&mut pairs);
        writer.write_str(&pairs.out)
    }

    /// A field recorded after the span began (the request's `org`) replaces an earlier value
    /// of the same name, so the span's object never holds a key twice.
    fn add_fields(
        &self,
        current: &mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = Pairs::default();
        fields.record(&mut added);
        if added.out.is_empty() {
            return Ok(());
        }
        for name in &added.names {
            if let Some(range) = find_pair(&current.fields, name) {
                current.fields.replace_range(range, "");
            }
        }
        if !current.fields.is_empty() {
            current.fields.push(',');
        }
        current.fields.push_str(&added.out);
        Ok(())
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        let mut pairs = Pairs::default();
        event.record(&mut pairs);
        if !pairs.out.is_empty() {
            line.push(',');
            line.push_str(&pairs.out);
        }
        line.push_str(",\"target\":");
        push_string(&mut line, meta.target());
        if let Some(span) = ctx.event_scope().and_then(|mut scope| scope.next()) {
            line.push_str(",\"span\":{");
            let ext = span.extensions();
            if let Some(fields) = ext.get::<FormattedFields<N>>() {
                if !fields.fields.is_empty() {
                    line.push_str(&fields.fields);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            push_string(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn a_pair_is_found_and_removed_with_its_comma() {
        let pairs = r#""request_id":"a,\"b","org":1,"method":"POST""#;
        let mut s = pairs.to_string();
        s.replace_range(find_pair(&s, "org").unwrap(), "");
        assert_eq!(s, r#""request_id":"a,\"b","method":"POST""#);
        let mut s = pairs.to_string();
        s.replace_range(find_pair(&s, "request_id").unwrap(), "");
        assert_eq!(s, r#""org":1,"method":"POST""#);
        let mut s = pairs.to_string();
        s.replace_range(find_pair(&s, "method").unwrap(), "");
        assert_eq!(s, r#""request_id":"a,\"b","org":1"#);
        assert_eq!(find_pair(pairs, "missing"), None);
        assert_eq!(find_pair("", "org"), None);
    }

    /// A subscriber with this format writes lines that parse as JSON, with the span's fields
    /// (a re-recorded one once, at its last value) under `span`.
    #[test]
    fn lines_parse_and_carry_the_span() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonPairs)
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("request", request_id = %"r-1", org = tracing::field::Empty);
            let _in = span.enter();
            span.record("org", 7u64);
            span.record("org", 8u64);
            tracing::info!(target: "trailspark::access", route = "/x", status = 202u16, latency_ms = 1.5, "answered \"ok\"");
            tracing::warn!(n = -3i64, ok = true, "second");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let a = &lines[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["message"], "answered \"ok\"");
        assert_eq!(a["target"], "trailspark::access");
        assert_eq!(a["route"], "/x");
        assert_eq!(a["status"], 202);
        assert_eq!(a["latency_ms"], 1.5);
        assert_eq!(a["span"]["request_id"], "r-1");
        assert_eq!(a["span"]["org"], 8);
        assert_eq!(a["span"]["name"], "request");
        assert_eq!(text.lines().next().unwrap().matches("\"org\"").count(), 1);
        assert!(a["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["n"], -3);
        assert_eq!(lines[1]["ok"], true);
    }
}
