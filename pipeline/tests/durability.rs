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
