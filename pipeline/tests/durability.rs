//! Durability of the embedded journal under kill -9 and torn writes, through the binary.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn kill9_during_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), None);
    let (acked, retried) = kill9_under_load(&mut s, Duration::from_millis(1500));
    eprintln!("journal: {acked} signals acked before kill -9, {retried} re-sent after restart");
}

#[test]
fn torn_last_record_is_cut_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), None);
    let key = s.new_key();
    for i in 0..20 {
        assert_eq!(
            s.post_signal(&key, &format!(r#"{{"n":{i}}}"#)).status(),
            202
        );
    }
    s.kill9();
    let before = signals(&s.dump()).len();
    // Simulate a crash in the middle of writing a record: a header and part of a body.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'S', 3, 0, 0])
        .unwrap();
    drop(f);
    s.restart();
    let r = s.post_signal(&key, r#"{"n":"after"}"#);
    assert_eq!(r.status(), 202);
    s.kill9();
    let sigs: Vec<_> = signals(&s.dump()).into_iter().cloned().collect();
    assert_eq!(
        sigs.len(),
        before + 1,
        "the torn record is gone, the new one follows the good ones"
    );
    assert_eq!(sigs.last().unwrap()["payload"]["n"], "after");
}

/// Waits until every log position up to `pos` is in an archive file.
fn wait_archived(s: &Server, pos: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = s
            .admin(
                reqwest::Method::GET,
                "/api/admin/archive",
                ADMIN_TOKEN,
                None,
            )
            .json()
            .unwrap();
        if v["checkpoint"].as_u64().unwrap() > pos {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "archive never reached {pos}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cuts the last `n` records off the journal's last segment, as a disk fault or a restored
/// snapshot would lose acknowledged entries.
fn cut_records(data_dir: &std::path::Path, n: usize) {
    let mut segs: Vec<_> = std::fs::read_dir(data_dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let mut starts = Vec::new();
    let mut off = 0;
    while off + 8 <= bytes.len() {
        starts.push(off);
        off += 8 + u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
    }
    assert!(
        starts.len() > n,
        "the last segment holds {} records",
        starts.len()
    );
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(starts[starts.len() - n] as u64).unwrap();
}

fn sql_count(s: &Server, sql: &str) -> u64 {
    sql_ok(s, ADMIN_TOKEN, sql)["rows"][0][0].as_u64().unwrap()
}

#[test]
fn a_lost_journal_tail_is_restored_from_the_archive_and_no_id_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let fast = [("TRAILSPARK_ARCHIVE_MAX_AGE_SECS", "1")];
    let mut s = Server::start_with(dir.path(), None, &fast);
    let key = s.first_key.clone().unwrap();
    let body = |i: usize| format!(r#"{{"email":"u{i}@x.io","event":"e{i}"}}"#);
    let mut ids = Vec::new();
    for i in 0..20 {
        let r: serde_json::Value = s.post_signal(&key, &body(i)).json().unwrap();
        ids.push(r["id"].as_u64().unwrap());
    }
    // A config event inside the tail that will be lost: it cannot come back.
    let extra = s.new_key();
    for i in 20..30 {
        let r: serde_json::Value = s.post_signal(&key, &body(i)).json().unwrap();
        ids.push(r["id"].as_u64().unwrap());
    }
    let last = *ids.last().unwrap();
    wait_archived(&s, last);
    s.kill9();
    cut_records(dir.path(), 12); // the last 10 signals, the key, one signal before it

    let s = Server::start_with(dir.path(), None, &fast);
    let dump = s.dump();
    let lost: Vec<u64> = dump
        .iter()
        .filter(|e| e["config"]["event"] == "entry_lost")
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lost,
        vec![ids[19] + 1],
        "the key's creation is marked lost, by position"
    );
    let positions: Vec<u64> = dump
        .iter()
        .filter(|e| e["kind"] == "signal")
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, ids, "every signal is back at its own id");
    // The lost key is gone; the explorer, SQL and the archive agree on 30 signals.
    assert_eq!(s.post_signal(&extra, &body(99)).status(), 401);
    let stats: serde_json::Value = s.get_at("/api/explorer/stats", last).json().unwrap();
    assert_eq!(stats["total"], 30);
    assert_eq!(sql_count(&s, "SELECT count(*) FROM signals"), 30);
    assert_eq!(sql_count(&s, "SELECT count(DISTINCT id) FROM signals"), 30);
    // A retry of a restored signal is recognised; a new signal gets a fresh id.
    let retry: serde_json::Value = s.post_signal(&key, &body(25)).json().unwrap();
    assert_eq!(
        (retry["id"].as_u64(), &retry["duplicate"]),
        (Some(ids[25]), &serde_json::json!(true))
    );
    let new: serde_json::Value = s.post_signal(&key, &body(30)).json().unwrap();
    let new_id = new["id"].as_u64().unwrap();
    assert!(
        new_id > last,
        "{new_id} is past every used position ({last})"
    );
    wait_archived(&s, new_id);
    let stats: serde_json::Value = s.get_at("/api/explorer/stats", new_id).json().unwrap();
    assert_eq!(stats["total"], 31);
    assert_eq!(sql_count(&s, "SELECT count(*) FROM signals"), 31);
    let email = sql_ok(
        &s,
        ADMIN_TOKEN,
        &format!("SELECT email FROM signals WHERE id = {new_id}"),
    );
    assert_eq!(
        email["rows"][0][0], "u30@x.io",
        "the new signal is archived under its own id"
    );
}
