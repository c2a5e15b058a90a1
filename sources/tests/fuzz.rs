//! Fuzz targets: the payload parser (objects, batches, the streaming bulk
//! splitter) and the Segment normalizer. Under `cargo test` each runs its corpus
//! (`tests/corpus/<target>/`) and then random inputs for a bounded time
//! (`BOLERO_RANDOM_TEST_TIME_MS`, default 1 s); `cargo bolero test <target>` runs the same
//! closures under a coverage-guided engine.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use trailspark_core::fuzz_input::Choices;
use trailspark_core::normalize::Context;
use trailspark_core::tenancy::{ApiKey, EndpointType, OrgId};
use trailspark_sources::parse::{self, Framing, Splitter, MAX_DEPTH};
use trailspark_sources::routes::{bulk_items, BULK_MAX_ITEMS, EVENT_LIMIT};
use trailspark_sources::segment;

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

/// Splits `body` fed in chunks of the given sizes (cycled).
fn split(framing: Framing, body: &[u8], sizes: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut s = Splitter::new(framing, EVENT_LIMIT);
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n =
            (sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0) as usize + 1).min(rest.len());
        s.feed(&rest[..n], &mut out).ok()?;
        rest = &rest[n..];
        i += 1;
    }
    s.finish(&mut out).ok()?;
    Some(out.into_iter().map(|p| (p.line, p.bytes)).collect())
}

/// A body built from the choices: an array, NDJSON lines (some of them damaged), or a
/// `{"batch": […]}` wrapper.
fn generated_body(c: &mut Choices<'_>) -> Vec<u8> {
    let docs: Vec<Value> = (0..c.pick(6)).map(|_| Value::Object(c.object(3))).collect();
    match c.pick(3) {
        0 => Value::Array(docs).to_string().into_bytes(),
        1 => docs
            .iter()
            .map(|d| c.document(d) + "\n")
            .collect::<String>()
            .into_bytes(),
        _ => serde_json::json!({ "batch": docs })
            .to_string()
            .into_bytes(),
    }
}

#[test]
fn payload_parser() {
    fuzz("payload_parser", |input| {
        // Corpus files and half the random inputs are bodies as they come.
        let generated;
        let bytes = match input.split_first() {
            Some((b, rest))
                if b % 2 == 1 && !input.starts_with(b"{") && !input.starts_with(b"[") =>
            {
                generated = generated_body(&mut Choices::new(rest));
                &generated[..]
            }
            _ => input,
        };
        if let Ok(v) = parse::parse_value(bytes) {
            assert!(parse::depth(&v) <= MAX_DEPTH);
        }
        if let Ok(v) = parse::parse_object(bytes, "") {
            assert!(v.is_object());
        }
        if let Ok(items) = parse::split_batch(bytes) {
            for i in items {
                let _: Value = serde_json::from_str(i.get()).expect("items are JSON");
            }
        }
        // The streaming splitter cuts the same items however the body arrives.
        let sizes: Vec<u8> = bytes.iter().rev().take(8).copied().collect();
        for framing in [Framing::Lines, Framing::Json] {
            let whole = split(framing, bytes, &[u8::MAX]);
            let chunked = split(framing, bytes, &sizes);
            assert_eq!(whole, chunked, "{framing:?}");
            if let Ok(items) = bulk_items(framing, bytes) {
                assert!(!items.is_empty() && items.len() <= BULK_MAX_ITEMS);
            }
        }
    });
}

fn key() -> ApiKey {
    ApiKey {
        id: 9,
        org_id: OrgId(4),
        name: "k".into(),
        endpoint_type: EndpointType::SignalStaging,
        key_hash: String::new(),
        prefix: String::new(),
        secret: None,
        expires_at: None,
        created_at: 0,
        revoked_at: None,
        template: None,
        allowed_origins: None,
    }
}

#[test]
fn segment_normalizer() {
    fuzz("segment_normalizer", |bytes| {
        // A real body (the corpus), or one built from the bytes' choices.
        let (kind, body) = match serde_json::from_slice::<Map<String, Value>>(bytes) {
            Ok(b) => (
                if b.contains_key("batch") {
                    "batch"
                } else {
                    "track"
                },
                b,
            ),
            Err(_) => {
                let mut c = Choices::new(bytes);
                let kind = segment::KINDS[c.pick(segment::KINDS.len())];
                let mut body = c.object(3);
                if kind == "batch" || kind == "import" {
                    let n = c.pick(6);
                    let msgs = (0..n).map(|_| Value::Object(c.object(3))).collect();
                    body.insert("batch".into(), Value::Array(msgs));
                }
                (kind, body)
            }
        };
        let messages = match body.get("batch") {
            Some(Value::Array(a)) if kind == "batch" || kind == "import" => a.len(),
            _ => 1,
        };
        let ctx = Context {
            org_id: OrgId(4),
            api_key_id: 9,
            received_at: 1_700_000_000_000,
            url_source: None,
            header_source: None,
        };
        let Ok((outcomes, updates)) = segment::messages(&ctx, &key(), kind, body) else {
            return;
        };
        assert_eq!(outcomes.len(), messages, "{kind}");
        assert!(
            updates.len() <= messages,
            "at most one update per group call"
        );
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(o.index, i);
            if let Ok(r) = &o.record {
                assert_eq!((r.org_id, r.api_key_id), (OrgId(4), 9));
                assert!(!r.event_type.is_empty());
                assert!(r.payload.len() <= EVENT_LIMIT);
                let p: Value = serde_json::from_str(&r.payload).expect("payloads are JSON");
                assert!(p.get("writeKey").is_none(), "the write key is never stored");
            }
        }
    });
}
