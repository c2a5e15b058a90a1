//! The models against plain recomputations, under random changes, retention passes and
//! rehydrations, and whatever order the workers send their output in.

use std::collections::{BTreeMap, BTreeSet};

use trailspark_operators::identity::SignalKey;
use trailspark_operators::leads::LeadProfile;
use trailspark_operators::status::{Processed, Status};
use trailspark_operators::{IdKind, Ident, Org};

use super::epoch::Batch;
use super::*;

impl Models {
    fn apply(&mut self, update: Batch) {
        self.apply_collect(update, None)
    }
}

fn processed(status: Status, received_at: i64) -> Processed {
    Processed {
        status,
        error: None,
        rule_id: None,
        rule_name: None,
        signal_type: None,
        high_intent: false,
        lead: None,
        source: "generic".into(),
        event_type: "e".into(),
        received_at,
        event_at: received_at,
    }
}

/// The explorer's index and statistics always agree with the processed map, through any
/// mix of dataflow changes (outcome changes arrive as a retraction and an insertion),
/// retention passes and rehydrations; and nothing retired comes back except by
/// rehydration.
#[test]
fn tabs_and_stats_follow_processed_under_retention_and_rehydration() {
    let statuses = [
        Status::Pending,
        Status::Completed,
        Status::Failed,
        Status::Skipped,
    ];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for _run in 0..50 {
        let mut m = Models::default();
        let mut retired: BTreeSet<SignalKey> = BTreeSet::new();
        for step in 0..300u64 {
            // A log position holds one signal, of one org.
            let id = rnd(40);
            let org = 1 + id % 2;
            let key = (org, id);
            match rnd(10) {
                0 => {
                    let r = Retention {
                        now_ms: step as i64,
                        cutoff_ms: step as i64 - 50,
                        below_pos: rnd(40),
                    };
                    let before: BTreeSet<SignalKey> = m.all_processed().map(|(k, _)| k).collect();
                    m.retire(org, r);
                    let after: BTreeSet<SignalKey> = m.all_processed().map(|(k, _)| k).collect();
                    retired.extend(before.difference(&after));
                }
                1 => {
                    let p = processed(statuses[rnd(3) as usize + 1], rnd(300) as i64);
                    let n = m.rehydrate(org, vec![(id, p)], step as i64 + 20);
                    if n == 1 {
                        retired.remove(&key);
                    }
                }
                _ => {
                    // A change of outcome, as differential sends it.
                    let p = processed(statuses[rnd(4) as usize], step as i64);
                    let mut v = Vec::new();
                    if let Some(old) = m.processed(key.0, key.1) {
                        v.push(((key, old.clone()), -1));
                    }
                    v.push(((key, p), 1));
                    m.apply(Batch::Processed(v));
                }
            }
            // The index and the statistics, recomputed from the processed map.
            let tabs: BTreeSet<(Org, Tab, u64)> = m
                .all_processed()
                .map(|((o, i), p)| (o, Tab::of(p.status), i))
                .collect();
            let indexed: BTreeSet<(Org, Tab, u64)> = m
                .orgs()
                .flat_map(|o| m.org(o).tabs.iter().map(move |(t, i)| (o, *t, *i)))
                .collect();
            assert_eq!(indexed, tabs);
            for o in [1, 2] {
                let mut want = Stats::default();
                for ((po, _), p) in m.all_processed() {
                    if po == o {
                        bump(&mut want, p.status, 1);
                    }
                }
                assert_eq!(m.org(o).stats, want);
            }
            for k in &retired {
                if let Some(p) = m.processed(k.0, k.1) {
                    assert!(
                        m.org(k.0).rehydrated.contains_key(&k.1)
                            || !m.org(k.0).retention.retires(k.1, &p),
                        "{k:?} came back"
                    );
                }
            }
        }
    }
}

/// However the workers split and order their output (changes of an epoch in any order,
/// in messages of any size, some of the next epoch's ahead of the marker), the models end
/// on the sequential result: each signal's last outcome, statistics that count each signal
/// once, and the leads that exist at the end. Outcomes go back and forth between a few
/// values inside one epoch (a → b → a), the case that arrival-order application got wrong.
#[test]
fn models_follow_the_net_change_whatever_the_arrival_order() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let statuses = [Status::Pending, Status::Completed, Status::Failed];
    for _run in 0..200 {
        // Each signal's outcome and each lead's profile over time, as the dataflow would
        // change them: a retraction of the old value and an insertion of the new one.
        let mut outcome: BTreeMap<SignalKey, Processed> = BTreeMap::new();
        let mut lead: BTreeMap<Ident, LeadProfile> = BTreeMap::new();
        let mut epochs: Vec<(u64, Vec<Update>)> = Vec::new();
        let mut t = 0u64;
        for _epoch in 0..1 + rnd(6) {
            let mut sent: Vec<Update> = Vec::new();
            for _ in 0..rnd(30) {
                t += 1 + rnd(3);
                // A log position holds one signal, of one org.
                let pos = rnd(12);
                let key = (1 + pos % 2, pos);
                let new = processed(statuses[rnd(3) as usize], rnd(2) as i64);
                let mut v = Vec::new();
                if let Some(old) = outcome.insert(key, new.clone()) {
                    v.push(((key, old), t, -1));
                }
                v.push(((key, new), t, 1));
                sent.push(Update::Processed(v));
                let id = Ident::new(1, IdKind::Email, format!("v{}@x.example", rnd(4)));
                let mut v = Vec::new();
                let old = lead.remove(&id);
                if let Some(old) = &old {
                    v.push(((id.clone(), old.clone()), t, -1));
                }
                if rnd(3) > 0 {
                    let p = LeadProfile {
                        signals: rnd(3),
                        ..Default::default()
                    };
                    lead.insert(id.clone(), p.clone());
                    v.push(((id, p), t, 1));
                }
                if !v.is_empty() {
                    sent.push(Update::Leads(v));
                }
            }
            epochs.push((t, sent));
        }
        // Split each worker message into single records and shuffle each epoch's.
        let mut shuffled: Vec<Vec<Update>> = Vec::new();
        for (_, sent) in epochs.iter_mut() {
            let mut single: Vec<Update> = Vec::new();
            for u in sent.drain(..) {
                match u {
                    Update::Processed(v) => {
                        single.extend(v.into_iter().map(|r| Update::Processed(vec![r])))
                    }
                    Update::Leads(v) => {
                        single.extend(v.into_iter().map(|r| Update::Leads(vec![r])))
                    }
                    _ => unreachable!(),
                }
            }
            for j in (1..single.len()).rev() {
                single.swap(j, rnd(j as u64 + 1) as usize);
            }
            shuffled.push(single);
        }
        // Each epoch's records, then some of the next epoch's (a worker may run ahead of
        // the marker), then the marker.
        let mut messages: Vec<Update> = Vec::new();
        for i in 0..shuffled.len() {
            let mine = std::mem::take(&mut shuffled[i]);
            messages.extend(mine);
            if let Some(next) = shuffled.get_mut(i + 1) {
                let early = rnd(next.len() as u64 + 1) as usize;
                messages.extend(next.drain(..early));
            }
            messages.push(Update::Applied(Marker {
                time: epochs[i].0,
                pos: epochs[i].0,
                sides: 0,
                reprocessing: Vec::new(),
                committed: None,
            }));
        }
        let read = ReadModels::default();
        let (tx, rx) = std::sync::mpsc::channel();
        for m in messages {
            tx.send(m).unwrap();
        }
        drop(tx);
        read.run(rx);
        let m = read.read();
        let got: BTreeMap<SignalKey, Processed> = m.all_processed().collect();
        assert_eq!(got, outcome);
        for o in [1, 2] {
            let mut want = Stats::default();
            for ((po, _), p) in &outcome {
                if *po == o {
                    bump(&mut want, p.status, 1);
                }
            }
            assert_eq!(m.org(o).stats, want);
        }
        let got: BTreeMap<Ident, LeadProfile> = m
            .orgs()
            .flat_map(|o| m.org(o).leads.iter())
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        assert_eq!(got, lead);
        assert_eq!(read.applied(), epochs.last().map(|e| e.0).unwrap_or(0));
    }
}

/// A reprocess reaching back over history holds back the waits of its own org's readers
/// at or after its position, and nobody else's.
#[test]
fn a_reprocess_holds_back_only_its_own_orgs_readers() {
    let read = std::sync::Arc::new(ReadModels::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = {
        let read = read.clone();
        std::thread::spawn(move || read.run(rx))
    };
    let applied = |time: u64, pos: u64, reprocessing: Vec<(Org, Option<u64>)>| {
        Update::Applied(Marker {
            time,
            pos,
            sides: 0,
            reprocessing,
            committed: None,
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let wait = |org: Option<Org>, pos: u64| {
        rt.block_on(read.wait_settled(org, pos, std::time::Duration::from_millis(50)))
    };
    let settle = |f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed().as_secs() < 10, "the models did not apply");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    // Org 1 edits a rule with reprocess at 5; the models apply up to 7.
    tx.send(applied(11, 5, vec![(1, Some(5))])).unwrap();
    tx.send(applied(15, 7, vec![])).unwrap();
    settle(&|| read.applied() == 7);
    assert!(!read.settled(Some(1), 5) && !read.settled(Some(1), 7));
    assert!(read.settled(Some(1), 4), "a read from before the edit");
    assert!(read.settled(Some(2), 7), "another org");
    assert!(!read.settled(None, 7) && read.settled(None, 4));
    assert!(!wait(Some(1), 7), "org 1 waits for its reprocess");
    assert!(wait(Some(2), 7), "org 2 does not");
    assert!(read.caught_up(Some(2), 7) && !read.caught_up(Some(1), 7));
    assert!(!read.caught_up(Some(2), 8), "past what is applied");
    // A slice (a side epoch at the same position) finishes it, and wakes a reader already
    // waiting although the position did not move.
    let waiter = {
        let read = read.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
                .block_on(read.wait_settled(Some(1), 7, std::time::Duration::from_secs(10)))
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    tx.send(applied(16, 7, vec![(1, None)])).unwrap();
    assert!(waiter.join().unwrap(), "the waiting reader was woken");
    settle(&|| read.settled(Some(1), 7));
    assert!(wait(Some(1), 7) && wait(None, 7));
    drop(tx);
    runner.join().unwrap();
}
