//! Fuzz targets: the dot-path extraction, the log entry decoder and the
//! normalizer. Under `cargo test` each runs its corpus (`tests/corpus/<target>/`) and then
//! random inputs for a bounded time (`BOLERO_RANDOM_TEST_TIME_MS`, default 1 s); under
//! `cargo bolero test <target>` the same closures run with a coverage-guided engine.
//!
//! Each checks more than "no panic": paths against the parse-then-walk reference, decoding
//! against encoding, normalization against its own invariants.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use trailspark_core::fuzz_input::Choices;
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::{path, LogEntry, OrgId};

/// Runs `f` on every file of the target's corpus, then on random inputs; prints how many
/// inputs ran.
fn fuzz(target: &str, f: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut corpus = 0;
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            f(&std::fs::read(e.unwrap().path()).unwrap());
            corpus += 1;
        }
    }
    let runs = AtomicU64::new(0);
    bolero::check!()
        .with_test_time(std::time::Duration::from_secs(1))
        .for_each(|input: &[u8]| {
            runs.fetch_add(1, Ordering::Relaxed);
            f(input)
        });
    eprintln!(
        "fuzz {target}: {corpus} corpus inputs, {} random inputs",
        runs.load(Ordering::Relaxed)
    );
}

#[test]
fn dot_paths() {
    fuzz("dot_paths", |bytes| {
        let mut c = Choices::new(bytes);
        let value = c.value(5);
        let text = c.document(&value);
        let segs: Vec<String> = (0..c.pick(4)).map(|_| c.key()).collect();
        let p = segs.join(".");
        let _ = path::is_valid(&p);
        // The streaming lookup finds exactly what parsing the whole text and walking it finds.
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let want = parsed.as_ref().and_then(|v| path::get(v, &p).cloned());
        assert_eq!(path::lookup(&text, &p), want, "path {p:?} in {text:?}");
        if let Some(v) = &parsed {
            let s = path::get_str(v, &p);
            assert!(s.is_none_or(|s| !s.is_empty() && s.trim() == s));
        }
    });
}

/// An entry of each kind built from the choices, encoded, with a few bytes changed.
fn damaged_encoding(c: &mut Choices<'_>) -> Vec<u8> {
    let ctx = Context {
        org_id: OrgId(c.byte() as u64),
        api_key_id: 1,
        received_at: 1_700_000_000_000,
        url_source: None,
        header_source: None,
    };
    let payload = Value::Object(c.object(3));
    let entry = match c.pick(3) {
        0 => LogEntry::Signal(normalize(&ctx, &payload, payload.to_string())),
        1 => LogEntry::ProductOrgUpdate(trailspark_core::ProductOrgRecord {
            org_id: ctx.org_id,
            api_key_id: 1,
            received_at: ctx.received_at,
            product_org_id: c.text(),
            event_at: ctx.received_at,
            fields: Default::default(),
            payload: payload.to_string(),
        }),
        _ => LogEntry::Config(trailspark_core::ConfigEvent::EntryLost {
            position: c.byte() as u64,
            at: 5,
        }),
    };
    let mut bytes = entry.encode();
    for _ in 0..c.pick(4) {
        let at = c.pick(bytes.len().max(1));
        if let Some(b) = bytes.get_mut(at) {
            *b = c.byte();
        }
    }
    if c.pick(4) == 0 {
        bytes.truncate(c.pick(bytes.len() + 1));
    }
    bytes
}

#[test]
fn log_entry_decoder() {
    fuzz("log_entry_decoder", |input| {
        // Half the inputs are bytes as they come, half real encodings damaged.
        let (first, rest) = input.split_first().unwrap_or((&0, &[]));
        let damaged;
        let bytes = if first % 2 == 0 {
            rest
        } else {
            damaged = damaged_encoding(&mut Choices::new(rest));
            &damaged[..]
        };
        let decoded = LogEntry::decode(bytes);
        let peeked = LogEntry::peek(bytes);
        if let Ok(e) = decoded {
            assert!(peeked.is_ok(), "decodable but not peekable");
            // What decodes, encodes and decodes back to itself.
            let again = LogEntry::decode(&e.encode()).expect("an encoding decodes");
            assert_eq!(again, e);
        }
    });
}

#[test]
fn normalizer() {
    fuzz("normalizer", |bytes| {
        let mut c = Choices::new(bytes);
        let payload = Value::Object(c.object(4));
        let text = payload.to_string();
        let ctx = Context {
            org_id: OrgId(7),
            api_key_id: 3,
            received_at: 1_700_000_000_000,
            url_source: None,
            header_source: None,
        };
        let r = normalize(&ctx, &payload, text.clone());
        assert_eq!(
            (r.org_id, r.api_key_id, r.received_at),
            (OrgId(7), 3, 1_700_000_000_000)
        );
        assert!(!r.source.is_empty() && !r.event_type.is_empty());
        assert_eq!(r.content_hash.len(), 64);
        // Identifiers are trimmed and never empty; emails are lowercase.
        let ids = serde_json::to_value(&r.ids).unwrap();
        for (k, v) in ids.as_object().unwrap() {
            let s = v.as_str().unwrap();
            assert!(!s.is_empty() && s.trim() == s, "{k}: {s:?}");
            if k == "email" {
                assert_eq!(s, s.to_lowercase());
            }
        }
        // The same content normalizes to the same record, however its keys are ordered.
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        let again = normalize(&ctx, &reparsed, text);
        assert_eq!(again.content_hash, r.content_hash);
        assert_eq!(again.dedup_bits(), r.dedup_bits());
    });
}
