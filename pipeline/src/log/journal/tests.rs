use super::*;
use std::io::Write;
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::tenancy::OrgId;

fn signal(n: u64) -> LogEntry {
    let payload = serde_json::json!({"event": "e", "n": n});
    let ctx = Context {
        org_id: OrgId(1),
        api_key_id: 1,
        received_at: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    LogEntry::Signal(normalize(&ctx, &payload, payload.to_string()))
}

fn collect(dir: &Path) -> Vec<(u64, LogEntry)> {
    let mut out = Vec::new();
    read(dir, &mut |p, e| {
        out.push((p, e));
        Ok(())
    })
    .unwrap();
    out
}

#[tokio::test]
async fn appends_replay_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(dir.path());
    cfg.segment_bytes = 300; // force several segments
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    for n in 0..20 {
        let r = j.append(vec![signal(n)]).await.unwrap();
        assert_eq!(
            r[0],
            Receipt {
                position: n + 1,
                duplicate: false
            }
        );
    }
    assert!(segments(dir.path()).unwrap().len() > 2);
    drop(j);
    let mut seen = Vec::new();
    let j = Journal::open(cfg, &mut |p, _| {
        seen.push(p);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    // Retries within the window are answered with the original position, also after a restart.
    let r = j.append(vec![signal(3), signal(100)]).await.unwrap();
    assert_eq!(
        r,
        vec![
            Receipt {
                position: 4,
                duplicate: true
            },
            Receipt {
                position: 21,
                duplicate: false
            }
        ]
    );
    assert_eq!(j.head(), 21);
}

#[tokio::test]
async fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    j.append(vec![signal(1), signal(2)]).await.unwrap();
    drop(j);
    let seg = segments(dir.path()).unwrap()[0].1.clone();
    let good = fs::metadata(&seg).unwrap().len();
    // A crash mid-write: a header promising more bytes than follow, then garbage.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'S', 1, 2])
        .unwrap();
    drop(f);
    assert_eq!(
        collect(dir.path()).len(),
        2,
        "readers stop at the torn tail"
    );
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    let r = j.append(vec![signal(3)]).await.unwrap();
    assert_eq!(r[0].position, 3);
    drop(j);
    assert_eq!(collect(dir.path()).len(), 3);
}

#[tokio::test]
async fn empty_segments_of_failed_rolls_are_not_read_as_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(dir.path());
    cfg.segment_bytes = 1000; // several records a segment
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    for n in 0..12 {
        j.append(vec![signal(n)]).await.unwrap();
    }
    drop(j);
    let mut segs = segments(dir.path()).unwrap();
    // When the last roll made an empty segment at 13, take it away, so that the tail is
    // the segment holding 12.
    if fs::metadata(&segs[segs.len() - 1].1).unwrap().len() == 0 {
        fs::remove_file(segs.pop().unwrap().1).unwrap();
    }
    let tail_first = segs[segs.len() - 1].0;
    assert!(segs[1].0 > 2 && tail_first < 12, "{segs:?}");
    // Rolls that created their file and then failed, while writes went on into the
    // current segment: one empty file in the middle, one named before the end.
    let empty = |pos: u64| {
        File::create_new(dir.path().join(segment_name(pos))).unwrap();
    };
    empty(segs[1].0 - 1);
    empty(tail_first + 1);
    let mut seen = Vec::new();
    let j = Journal::open(cfg.clone(), &mut |p, _| {
        seen.push(p);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    assert_eq!(j.append(vec![signal(99)]).await.unwrap()[0].position, 13);
    drop(j);
    assert_eq!(collect(dir.path()).len(), 13);
    let segs = segments(dir.path()).unwrap();
    assert!(
        segs[..segs.len() - 1]
            .iter()
            .all(|(_, p)| fs::metadata(p).unwrap().len() > 0),
        "only a fresh last segment may be empty: {segs:?}"
    );
}

#[tokio::test]
async fn flipped_bit_in_last_record_is_cut_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    j.append(vec![signal(1)]).await.unwrap();
    j.append(vec![signal(2)]).await.unwrap();
    drop(j);
    let seg = segments(dir.path()).unwrap()[0].1.clone();
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    fs::write(&seg, bytes).unwrap();
    let mut count = 0;
    Journal::open(cfg, &mut |_, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_stalled_consumer_makes_appends_refused_not_queued_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (stall_tx, stall_rx) = std::sync::mpsc::channel::<()>();
    let stall_rx = std::sync::Mutex::new(stall_rx);
    let mut cfg = JournalConfig::new(dir.path());
    cfg.queue = 1;
    // The downstream consumer stalls on the first commit until released.
    cfg.on_commit = Some(Arc::new(move |_| {
        let _ = stall_rx.lock().unwrap().recv();
    }));
    let j = Journal::open(cfg, &mut |_, _| Ok(())).unwrap();
    let first = tokio::spawn(j.append(vec![signal(1)]));
    // Wait until the writer is inside the stalled hook (the first append is answered).
    first.await.unwrap().unwrap();
    let second = tokio::spawn(j.append(vec![signal(2)])); // fills the queue of one
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let third = j.append(vec![signal(3)]).await;
    assert!(matches!(third, Err(LogError::Overloaded)), "{third:?}");
    let as_http = trailspark_sources::IngestError::from(LogError::Overloaded);
    assert_eq!(
        (as_http.status().as_u16(), as_http.retry_after()),
        (503, Some(1))
    );
    stall_tx.send(()).unwrap();
    stall_tx.send(()).unwrap();
    assert_eq!(second.await.unwrap().unwrap()[0].position, 2);
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs_and_get_distinct_positions() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(JournalConfig::new(dir.path()), &mut |_, _| Ok(())).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|n| tokio::spawn(j.append(vec![signal(n)])))
        .collect();
    let mut positions = Vec::new();
    for t in tasks {
        positions.push(t.await.unwrap().unwrap()[0].position);
    }
    positions.sort();
    assert_eq!(positions, (1..=200).collect::<Vec<_>>());
    // Group commit: the 200 waiting appends were made durable by far fewer fsyncs.
    assert!(
        j.syncs() < 50,
        "{} fsyncs for 200 concurrent appends",
        j.syncs()
    );
}
