//! Deduplication, in one place: how a signal's dedup key is made, the log's exact index of
//! every key it holds, and the set of keys the dataflow has staged.
//!
//! **The key.** Segment's `messageId` when the producer set one (stable across an SDK's
//! retries even when transport fields change), else the content hash: SHA-256 over the org
//! id and the canonical JSON of the payload, where canonical means keys sorted at every level
//! and no insignificant whitespace, and where the transport-only top-level fields `sentAt`,
//! `receivedAt` and `writeKey` are left out. An SDK's retry of the same event therefore
//! hashes the same even though its `sentAt` moved; two events that differ in `timestamp` do
//! not. Both kinds of key are scoped to the org. The indexes keep the key's first 128 bits.
//!
//! **Two indexes, two jobs.** [`DedupIndex`] is the log's: before an append, a key already on
//! the log answers with the original position instead of being appended again, however late
//! the retry comes. [`FirstSeen`] is the engine's: it stages the first copy of each key the
//! engine reads and passes the others over. The second is not redundant with the first,
//! because the log index is per process: two processes appending to one JetStream log (a
//! server and an offline `backfill --nats`) each know only what they read when they opened
//! it, and JetStream's own `Nats-Msg-Id` window is two minutes, so a duplicate can reach the
//! log; a log written before the index existed can hold them too. The engine reads the log in
//! position order, so the first copy it reads is the earliest, whatever wrote the log.

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::signal::SignalRecord;
use crate::tenancy::OrgId;

/// Top-level fields that describe the delivery, not the event, and so stay out of the hash.
const TRANSPORT_FIELDS: &[&str] = &["sentAt", "receivedAt", "writeKey"];

/// The org-scoped content hash of a payload, hex (see the module docs).
pub fn content_hash(org_id: OrgId, payload: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(org_id.0.to_le_bytes());
    let mut w = HashWriter(&mut hasher);
    match payload.as_object() {
        // Written field by field, so that transport fields are skipped without copying the
        // payload. `serde_json::Map` iterates in key order (its `preserve_order` feature is
        // off in this workspace; a test guards that), so the output is canonical.
        Some(obj) => {
            w.put(b"{");
            let mut first = true;
            for (k, v) in obj
                .iter()
                .filter(|(k, _)| !TRANSPORT_FIELDS.contains(&k.as_str()))
            {
                if !first {
                    w.put(b",");
                }
                first = false;
                serde_json::to_writer(&mut w, k).expect("writing to a hasher cannot fail");
                w.put(b":");
                serde_json::to_writer(&mut w, v).expect("writing to a hasher cannot fail");
            }
            w.put(b"}");
        }
        None => serde_json::to_writer(&mut w, payload).expect("writing to a hasher cannot fail"),
    }
    hex::encode(hasher.finalize())
}

/// Feeds serialized JSON straight into the hash, with no intermediate buffer.
struct HashWriter<'a>(&'a mut Sha256);

impl HashWriter<'_> {
    fn put(&mut self, b: &[u8]) {
        self.0.update(b);
    }
}

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The dedup key of a Segment `messageId`, scoped to the org, hex.
pub fn message_id_key(org_id: OrgId, message_id: &str) -> String {
    hex::encode(message_id_digest(org_id, message_id))
}

/// The SHA-256 that [`message_id_key`] is the hex of.
pub fn message_id_digest(org_id: OrgId, message_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"messageId\0");
    hasher.update(org_id.0.to_le_bytes());
    hasher.update(message_id.as_bytes());
    hasher.finalize().into()
}

impl SignalRecord {
    /// The first 128 bits of [`Self::dedup_key`], which both indexes keep.
    ///
    /// Computed from the digest (or the content hash's hex prefix) without building the hex
    /// key: every log append and every replayed entry computes it.
    pub fn dedup_bits(&self) -> u128 {
        match &self.message_id {
            Some(mid) => {
                let d = message_id_digest(self.org_id, mid);
                u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
            }
            None => u128::from_str_radix(&self.content_hash[..32], 16)
                .expect("content hashes are hex SHA-256"),
        }
    }

    /// The key under which retries of this signal are recognised (see the module docs).
    pub fn dedup_key(&self) -> String {
        match &self.message_id {
            Some(mid) => message_id_key(self.org_id, mid),
            None => self.content_hash.clone(),
        }
    }
}

/// The log's index: every signal's dedup key with the log position of its first occurrence.
/// Exact and never forgotten: at about 30 bytes a signal it is small next to the dataflow's
/// state, and it lets a retry (or a re-run backfill) hours later still be answered with the
/// original id instead of being appended again. The keys are SHA-256 bits, so a fast unkeyed
/// hash spreads them as well as a keyed one (every append and every replayed entry looks one
/// up).
#[derive(Default)]
pub struct DedupIndex {
    first: FxHashMap<u128, u64>,
}

impl DedupIndex {
    /// The position of the signal with this key, if it is on the log.
    pub fn get(&self, key: u128) -> Option<u64> {
        self.first.get(&key).copied()
    }

    /// Records a signal's position; keeps the first one.
    pub fn insert(&mut self, key: u128, pos: u64) {
        self.first.entry(key).or_insert(pos);
    }

    pub fn remove(&mut self, key: u128) {
        self.first.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// The engine's set of the (org, dedup key) pairs already staged. Offered in log order, the
/// first copy of a key is the earliest, and only it enters the dataflow (an in-dataflow
/// `reduce` did the same with two arrangements of every whole signal, several hundred bytes a
/// signal against the ~20–40 bytes of a set entry).
#[derive(Debug, Default)]
pub struct FirstSeen {
    by_org: FxHashMap<u64, FxHashSet<u128>>,
    len: usize,
}

impl FirstSeen {
    /// Records `(org, key)`; true if it had not been seen, i.e. this is the copy to stage.
    /// Callers offer signals in log order.
    pub fn insert(&mut self, org: u64, key: u128) -> bool {
        let new = self.by_org.entry(org).or_default().insert(key);
        self.len += usize::from(new);
        new
    }

    /// How many distinct keys have been staged.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;
    use crate::normalize::tests::ctx;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn hash_is_canonical_and_ignores_transport_fields() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":1}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "a" : {"x":1,"y":2}, "b":1, "sentAt":"t"}"#).unwrap();
        assert_eq!(content_hash(OrgId(1), &a), content_hash(OrgId(1), &b));
        assert_ne!(content_hash(OrgId(1), &a), content_hash(OrgId(2), &a));
        let c = json!({"b": 1, "a": {"x": 1, "y": 3}});
        assert_ne!(content_hash(OrgId(1), &a), content_hash(OrgId(1), &c));
        // Key order of the serialized map is sorted (preserve_order must stay off).
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"a":{"x":1,"y":2},"b":1}"#
        );
    }

    #[test]
    fn dedup_key_prefers_message_id() {
        let r1 = normalize(
            &ctx(),
            &json!({"messageId": "m1", "event": "a"}),
            String::new(),
        );
        let r2 = normalize(
            &ctx(),
            &json!({"messageId": "m1", "event": "a", "x": 1}),
            String::new(),
        );
        assert_eq!(r1.dedup_key(), r2.dedup_key());
        let r3 = normalize(&ctx(), &json!({"event": "a"}), String::new());
        assert_eq!(r3.dedup_key(), r3.content_hash);
        // The bits are the key's first 128 bits, whichever way the key is made.
        for r in [&r1, &r3] {
            assert_eq!(
                r.dedup_bits(),
                u128::from_str_radix(&r.dedup_key()[..32], 16).unwrap()
            );
        }
    }

    #[test]
    fn first_seen_counts_distinct_keys_per_org() {
        let mut seen = FirstSeen::default();
        assert!(seen.insert(1, 7));
        assert!(!seen.insert(1, 7));
        assert!(seen.insert(2, 7), "keys are scoped to the org");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn the_index_keeps_the_first_position() {
        let mut index = DedupIndex::default();
        index.insert(9, 4);
        index.insert(9, 2);
        assert_eq!(index.get(9), Some(4));
        index.remove(9);
        assert!(index.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Offered in log order, the copies `FirstSeen` stages are, for each (org, key), the
        /// one with the smallest position: what a sequential dedup keeps.
        #[test]
        fn first_seen_keeps_the_earliest_copy(
            items in proptest::collection::vec((1u64..4, 0u64..200, 0u8..12), 0..80)
        ) {
            // Positions are unique on a log; the engine reads them in order.
            let mut items = items;
            items.sort_by_key(|i| i.1);
            items.dedup_by_key(|i| i.1);
            let mut seen = FirstSeen::default();
            let staged: std::collections::BTreeSet<(u64, u64)> = items
                .iter()
                .filter(|(org, _, key)| seen.insert(*org, u128::from(*key)))
                .map(|(org, pos, _)| (*org, *pos))
                .collect();
            let mut earliest = std::collections::BTreeMap::new();
            for (org, pos, key) in &items {
                earliest.entry((*org, *key)).or_insert(*pos);
            }
            let want: std::collections::BTreeSet<(u64, u64)> =
                earliest.into_iter().map(|((org, _), pos)| (org, pos)).collect();
            prop_assert_eq!(staged, want);
        }
    }
}
