//! The journal's writer recovers when it cannot open its next segment .
//!
//! This binary lowers its own open-files limit and uses up the descriptors, so it holds
//! this one test only: nothing else shares the process.

use std::fs::File;

use trailspark::log::{Journal, JournalConfig};
use trailspark_core::normalize::{normalize, Context};
use trailspark_core::tenancy::OrgId;
use trailspark_core::LogEntry;

fn signal(n: u64) -> LogEntry {
    let payload = serde_json::json!({"event": "e", "n": n, "pad": "x".repeat(100)});
    let ctx = Context {
        org_id: OrgId(1),
        api_key_id: 1,
        received_at: 1_700_000_000_000,
        ..Default::default()
    };
    LogEntry::Signal(normalize(&ctx, &payload, payload.to_string()))
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_segment_roll_keeps_appends_going_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(dir.path());
    cfg.segment_bytes = 600; // a roll every few appends
    let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
    for n in 0..10 {
        j.append(vec![signal(n)]).await.unwrap();
    }
    let before = segments(dir.path());
    assert!(before > 1);
    assert_eq!(j.health().roll_error, None);

    // Use up every descriptor the process may open.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let lowered = libc::rlimit {
            rlim_cur: 256.min(lim.rlim_cur),
            rlim_max: lim.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
    }
    let mut hogs = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => hogs.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // Appends go on into the current segment (they were refused until a restart before),
    // and health says the roll is failing.
    for n in 10..30 {
        let r = j.append(vec![signal(n)]).await;
        assert!(r.is_ok(), "append {n}: {r:?}");
    }
    let h = j.health();
    assert_eq!(h.write_error, None);
    assert!(
        h.roll_error
            .as_deref()
            .is_some_and(|e| e.contains("open files")),
        "{h:?}"
    );

    // The cause goes away: the next append rolls and health clears.
    drop(hogs);
    // A roll that failed halfway (its directory sync) leaves no empty segment behind: only
    // the newest may be empty, freshly rolled.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    for p in &segs[..segs.len() - 1] {
        assert!(std::fs::metadata(p).unwrap().len() > 0, "{p:?} is empty");
    }
    j.append(vec![signal(30)]).await.unwrap();
    assert_eq!(j.health(), Default::default());
    assert!(segments(dir.path()) > before);
    for n in 31..40 {
        j.append(vec![signal(n)]).await.unwrap();
    }
    // SAFETY: as above.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    drop(j);

    // Every entry is there, in order, once.
    let mut seen = Vec::new();
    let j = Journal::open(cfg, &mut |pos, _| {
        seen.push(pos);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
    let dup = j.append(vec![signal(5)]).await.unwrap();
    assert!(dup[0].duplicate);
}
