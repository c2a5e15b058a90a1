use super::*;
use bytes::Bytes;
use trailspark_core::OrgId;

fn record(org: u64, i: u64, anonymous: bool) -> SignalRecord {
    SignalRecord {
        org_id: OrgId(org),
        api_key_id: 1,
        received_at: 1_700_000_000_000 + i as i64,
        event_at: 1_600_000_000_000,
        source: "generic".into(),
        event_type: "track".into(),
        event_name: Some(format!("e{}", i % 3)),
        ids: trailspark_core::Identifiers {
            email: (!anonymous).then(|| format!("u{i}@x.com")),
            anonymous_id: Some(format!("a{i}")),
            ..Default::default()
        },
        message_id: None,
        content_hash: format!("{i:064x}"),
        anonymous,
        payload: format!("{{\"i\":{i}}}"),
    }
}

use trailspark_core::SignalRecord;

fn entries(range: std::ops::Range<u64>) -> Vec<(u64, LogEntry)> {
    range
        .map(|i| (i, LogEntry::Signal(record(1 + i % 2, i, i % 5 == 0))))
        .collect()
}

async fn all_rows(a: &Archiver) -> Vec<u64> {
    let mut ids = Vec::new();
    for f in a.files() {
        ids.extend(
            read_file(a.location(), &f)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id),
        );
    }
    ids.sort();
    ids
}

fn cfg(max_rows: usize) -> ArchiveConfig {
    ArchiveConfig {
        max_rows,
        ..Default::default()
    }
}

#[tokio::test]
async fn rows_round_trip_through_files() {
    let loc = Location::parse("memory://").unwrap();
    let a = Archiver::open(loc, cfg(1000), Arc::new(NoStamps))
        .await
        .unwrap();
    let input = entries(0..100);
    a.offer(&input);
    a.flush(true).await.unwrap();
    let mut back = Vec::new();
    for f in a.files() {
        for r in read_file(a.location(), &f).await.unwrap() {
            assert_eq!(f.partition.kind == Kind::Anonymous, r.record.anonymous);
            assert_eq!(f.partition.org, r.record.org_id.0);
            back.push(r);
        }
    }
    back.sort_by_key(|r| r.id);
    let want: Vec<SignalRecord> = input
        .into_iter()
        .map(|(_, e)| match e {
            LogEntry::Signal(s) => s,
            _ => unreachable!(),
        })
        .collect();
    let got: Vec<SignalRecord> = back.iter().map(|r| (*r.record).clone()).collect();
    assert_eq!(got, want);
    assert_eq!(a.stats().checkpoint, 100);
}

#[tokio::test]
async fn reopening_and_replaying_never_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let a = Archiver::open(Location::parse(&url).unwrap(), cfg(7), Arc::new(NoStamps))
        .await
        .unwrap();
    a.offer(&entries(0..50));
    // Write only what is due (full buffers of 7): the rest stays buffered, as at a crash.
    a.flush(false).await.unwrap();
    let partial = all_rows(&a).await;
    assert!(!partial.is_empty() && partial.len() < 50);
    drop(a);
    // Restart: the log is replayed from the checkpoint.
    let b = Archiver::open(Location::parse(&url).unwrap(), cfg(7), Arc::new(NoStamps))
        .await
        .unwrap();
    let start = b.start();
    assert!(start <= 50);
    b.offer(&entries(start..50));
    b.flush(true).await.unwrap();
    assert_eq!(all_rows(&b).await, (0..50).collect::<Vec<_>>());
    // Offering everything again changes nothing.
    b.offer(&entries(0..50));
    b.flush(true).await.unwrap();
    assert_eq!(all_rows(&b).await, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn snapshot_holds_each_row_once() {
    let a = Archiver::open(
        Location::parse("memory://").unwrap(),
        cfg(10),
        Arc::new(NoStamps),
    )
    .await
    .unwrap();
    a.offer(&entries(0..95));
    a.flush(false).await.unwrap();
    let snap = a.snapshot(Kind::Signals, 1);
    let mut ids: Vec<u64> = snap.rows.iter().map(|r| r.id).collect();
    for f in &snap.files {
        ids.extend(
            read_file(a.location(), f)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id),
        );
    }
    ids.sort();
    let want: Vec<u64> = (0..95).filter(|i| i % 2 == 0 && i % 5 != 0).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn compaction_merges_and_a_half_done_one_heals() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_string();
    let a = Archiver::open(Location::parse(&url).unwrap(), cfg(5), Arc::new(NoStamps))
        .await
        .unwrap();
    a.offer(&entries(0..60));
    a.flush(true).await.unwrap();
    let before = a.files();
    assert!(before.len() > 4);
    // A crash after the merged file's write but before the deletes: put the small files back.
    let saved: Vec<(FileMeta, Bytes)> =
        futures_util::future::join_all(before.iter().map(|f| async {
            let b = a
                .location()
                .store
                .get(&f.path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            (f.clone(), b)
        }))
        .await;
    let (parts, merged) = a.compact().await.unwrap();
    assert_eq!(merged, before.len());
    assert_eq!(a.files().len(), parts);
    for (f, b) in saved {
        a.location().store.put(&f.path, b.into()).await.unwrap();
    }
    let b = Archiver::open(Location::parse(&url).unwrap(), cfg(5), Arc::new(NoStamps))
        .await
        .unwrap();
    assert_eq!(b.files().len(), parts);
    assert_eq!(all_rows(&b).await, (0..60).collect::<Vec<_>>());
    assert_eq!(b.delete_before(i32::MAX).await.unwrap(), parts);
    assert!(b.files().is_empty());
}
