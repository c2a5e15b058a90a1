use super::*;
use trailspark_core::{LogEntry, OrgId, SignalRecord};
use trailspark_operators::leads::LeadProfile;
use trailspark_operators::{IdKind, Ident};
use trailspark_sinks::archive::{ArchiveConfig, Location, NoStamps};
use trailspark_sinks::read_models::{lead_id, Marker, ReadModels, Update};

/// The lead each org has in [`live`].
fn lead_of(org: u64) -> Ident {
    Ident::new(org, IdKind::Email, format!("lead-of-{org}@x.io"))
}

/// Read models holding one lead in org 1 and one in org 2.
fn live() -> Live {
    let models = Arc::new(ReadModels::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let leads = [1, 2]
        .map(|org| ((lead_of(org), LeadProfile::default()), 1, 1))
        .to_vec();
    tx.send(Update::Leads(leads)).unwrap();
    tx.send(Update::Applied(Marker {
        time: 1,
        pos: 1,
        sides: 0,
        reprocessing: Vec::new(),
        committed: None,
    }))
    .unwrap();
    drop(tx);
    models.run(rx);
    Live {
        models,
        registry: Default::default(),
    }
}

fn entry(org: u64, i: u64) -> (u64, LogEntry) {
    (
        i,
        LogEntry::Signal(SignalRecord {
            org_id: OrgId(org),
            api_key_id: 1,
            received_at: 1_700_000_000_000 + i as i64,
            event_at: 1_700_000_000_000,
            source: "generic".into(),
            event_type: if i.is_multiple_of(3) { "page" } else { "track" }.into(),
            event_name: None,
            ids: trailspark_core::Identifiers {
                anonymous_id: Some(format!("a{}", i % 10)),
                email: (!i.is_multiple_of(7)).then(|| format!("u{i}@x.com")),
                ..Default::default()
            },
            message_id: None,
            content_hash: format!("{i:064x}"),
            anonymous: i.is_multiple_of(7),
            payload: format!("{{\"i\":{i},\"secret\":\"org{org}\"}}"),
        }),
    )
}

async fn engine(max_rows: usize) -> (Arc<Archiver>, SqlEngine) {
    let a = Archiver::open(
        Location::parse("memory://").unwrap(),
        ArchiveConfig {
            max_rows,
            ..Default::default()
        },
        Arc::new(NoStamps),
    )
    .await
    .unwrap();
    let e = SqlEngine::new(Some(a.clone()), Some(live()), Limits::default()).unwrap();
    (a, e)
}

async fn scalar(e: &SqlEngine, org: u64, sql: &str) -> serde_json::Value {
    let out = e.query(org, sql).await.unwrap();
    output::to_json(&out).unwrap()["rows"][0][0].clone()
}

#[tokio::test]
async fn files_and_buffers_count_once_whatever_is_flushed() {
    let (a, e) = engine(10).await;
    let entries: Vec<_> = (0..200).map(|i| entry(1 + i % 2, i)).collect();
    let want_1 = (0..200).filter(|i| i % 2 == 0 && i % 7 != 0).count() as u64;
    let want_anon_1 = (0..200).filter(|i| i % 2 == 0 && i % 7 == 0).count() as u64;
    for chunk in entries.chunks(37) {
        a.offer(chunk);
        assert!(
            scalar(&e, 1, "SELECT count(*) FROM signals")
                .await
                .as_u64()
                .unwrap()
                <= want_1
        );
        a.flush(false).await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(scalar(&e, 1, "SELECT count(*) FROM signals").await, want_1);
        assert_eq!(
            scalar(&e, 1, "SELECT count(*) FROM anonymous_signals").await,
            want_anon_1
        );
        assert_eq!(
            scalar(&e, 1, "SELECT count(DISTINCT id) FROM signals").await,
            want_1
        );
        a.flush(true).await.unwrap();
    }
    assert_eq!(scalar(&e, 1, "SELECT max(org_id) FROM signals").await, 1);
    assert_eq!(scalar(&e, 2, "SELECT min(org_id) FROM signals").await, 2);
    assert_eq!(
        scalar(&e, 1, "SELECT lead_id FROM leads").await,
        lead_id(&lead_of(1))
    );
    assert_eq!(
        scalar(&e, 2, "SELECT lead_id FROM leads").await,
        lead_id(&lead_of(2))
    );
}

#[tokio::test]
async fn only_queries_run() {
    let (_a, e) = engine(10).await;
    for sql in [
        "CREATE TABLE t (a int)",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
        "INSERT INTO signals SELECT * FROM signals",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
        "DROP TABLE signals",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let err = e
            .query(1, sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} ran"));
        assert_eq!(err.status(), 400, "{sql}: {err}");
    }
    let err = e
        .query(1, "SELECT * FROM '/etc/passwd'")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "invalid_sql", "{err}");
}

#[tokio::test]
async fn limits_stop_big_results_and_long_queries() {
    let a = Archiver::open(
        Location::parse("memory://").unwrap(),
        ArchiveConfig::default(),
        Arc::new(NoStamps),
    )
    .await
    .unwrap();
    let e = SqlEngine::new(
        Some(a),
        None,
        Limits {
            timeout: Duration::from_millis(300),
            max_rows: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    let err = e
        .query(1, "SELECT * FROM generate_series(1, 5000)")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "result_too_large");
    let err = e
        .query(1, "SELECT count(*) FROM generate_series(1, 100000000000) a")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "query_timeout");
}

#[tokio::test]
async fn the_byte_limit_counts_the_rows_of_a_page_not_the_batch_it_is_cut_from() {
    let e = SqlEngine::new(
        None,
        None,
        Limits {
            max_bytes: 100_000,
            ..Default::default()
        },
    )
    .unwrap();
    // generate_series yields batches of 8,192 rows, ~800 kB here; LIMIT slices one.
    let page = e
        .query(
            1,
            "SELECT value, repeat('x', 100) AS s FROM generate_series(1, 100000) LIMIT 10 OFFSET 20000")
        .await
        .unwrap();
    assert_eq!(page.rows, 10);
    let err = e
        .query(
            1,
            "SELECT value, repeat('x', 100) AS s FROM generate_series(1, 5000)",
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "result_too_large");
}

/// A query builds only the tables its plan names: with the read models locked for
/// writing, a query over the archive alone still answers (nothing copies the models), and one
/// that names a live table waits for them (here, until its timeout).
#[tokio::test]
// The lock is held across the queries on purpose: they run on the SQL threads, and the one
// that names a live table must wait for it.
#[allow(clippy::await_holding_lock)]
async fn only_the_tables_a_plan_names_are_built() {
    use datafusion::catalog::SchemaProvider;
    let live = live();
    let schema = catalog::OrgSchema {
        org: 1,
        archiver: None,
        live: Some(live.clone()),
    };
    assert!(schema.table_exist("leads") && schema.table_exist("signals"));
    assert!(!schema.table_exist("other_orgs"));
    assert!(schema.table("nope").await.unwrap().is_none());
    let e = SqlEngine::new(
        None,
        Some(live.clone()),
        Limits {
            timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .unwrap();
    let held = live.models.write();
    let out = e.query(1, "SELECT count(*) FROM signals").await.unwrap();
    assert_eq!(output::to_json(&out).unwrap()["rows"][0][0], 0);
    let err = e
        .query(1, "SELECT count(*) FROM leads")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "query_timeout");
    drop(held);
    let out = e.query(1, "SELECT count(*) FROM leads").await.unwrap();
    assert_eq!(output::to_json(&out).unwrap()["rows"][0][0], 1);
}

/// Hostile queries: each is refused with its own code, on the SQL threads,
/// and the engine still answers afterwards.
#[tokio::test]
async fn hostile_queries_are_refused_and_the_engine_keeps_answering() {
    let e = SqlEngine::new(
        None,
        None,
        Limits {
            timeout: Duration::from_secs(3),
            memory: 64 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let code = |r: Result<QueryOutput, SqlError>| r.err().map(|e| e.code());
    let terms = |op: &str, n: usize| vec!["1"; n].join(op);
    // Deep chains: refused by name before planning (a 1,000-term sum aborted the server).
    for sql in [
        format!("SELECT {}", terms("+", 1000)),
        format!("SELECT 1 WHERE {}", terms(" = 1 OR ", 2000)),
        format!("SELECT {}", terms(" || ", 3000)),
    ] {
        assert_eq!(code(e.query(1, &sql).await), Some("query_too_complex"));
    }
    // Within the limit a deep plan runs, on stacks sized for it.
    let sum = e
        .query(1, &format!("SELECT {} AS n", terms("+", 250)))
        .await
        .unwrap();
    assert_eq!(output::to_json(&sum).unwrap()["rows"][0][0], 250);
    let unions = vec!["SELECT 1 AS n"; 200].join(" UNION ALL ");
    let out = e
        .query(1, &format!("SELECT count(*) FROM ({unions})"))
        .await
        .unwrap();
    assert_eq!(output::to_json(&out).unwrap()["rows"][0][0], 200);
    // Strings that functions would blow up past the memory pool.
    for sql in [
        "SELECT length(repeat('x', 1000000000))",
        "SELECT length(lpad('x', 1000000000))",
        "SELECT length(repeat('x', 2100000000))",
    ] {
        assert_eq!(
            code(e.query(1, sql).await),
            Some("resources_exhausted"),
            "{sql}"
        );
    }
    // A recursive CTE that doubles its strings runs into the query's own memory pool.
    let doubling = "WITH RECURSIVE t(n, s) AS (SELECT 1, repeat('x', 1000) \
                    UNION ALL SELECT n + 1, s || s FROM t WHERE n < 40) \
                    SELECT max(length(s)) FROM t";
    assert_eq!(
        code(e.query(1, doubling).await),
        Some("resources_exhausted")
    );
    // CPU without end: the timeout fires on time and aborts the work, freeing the threads.
    let started = std::time::Instant::now();
    let cross =
        "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b";
    assert_eq!(code(e.query(1, cross).await), Some("query_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Its work stops soon after: the join yields, so the abort takes effect.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while e.running(1) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out join kept running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(scalar(&e, 1, "SELECT 1 + 1").await, 2);
}

#[tokio::test]
async fn an_org_runs_a_bounded_number_of_queries_at_once() {
    let e = Arc::new(
        SqlEngine::new(
            None,
            None,
            Limits {
                timeout: Duration::from_secs(2),
                per_org: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000)";
    let running: Vec<_> = (0..2)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.query(1, slow).await.err().map(|e| e.code()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = e.query(1, "SELECT 1").await.err().unwrap();
    assert_eq!(
        (third.code(), third.status(), third.retry_after()),
        ("too_many_queries", 429, Some(1))
    );
    // Another org is not held back by the first one's queries.
    assert_eq!(scalar(&e, 2, "SELECT 41 + 1").await, 42);
    for r in running {
        assert_eq!(r.await.unwrap(), Some("query_timeout"));
    }
    // The timed-out queries' work was aborted: their places come back.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while e.running(1) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "aborted queries kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scalar(&e, 1, "SELECT 2 + 2").await, 4);
}

/// Archive lookups find exactly the rows a plain filter over everything archived would, in
/// files and buffers alike, whatever the file pruning skips; and never another org's.
#[tokio::test]
async fn lookups_find_what_a_plain_filter_finds_in_files_and_buffers() {
    use trailspark_sinks::archive::Kind;
    let (a, e) = engine(10).await;
    let entries: Vec<_> = (0..300).map(|i| entry(1 + i % 2, i)).collect();
    a.offer(&entries[..200]);
    a.flush(true).await.unwrap();
    a.offer(&entries[200..]);
    let lookup = e.lookup(lookup::LookupLimits::default()).unwrap();
    let records: Vec<_> = entries
        .iter()
        .filter_map(|(pos, e)| match e {
            LogEntry::Signal(s) => Some((*pos, s.clone())),
            _ => None,
        })
        .collect();
    type Want = Box<dyn Fn(u64, &SignalRecord) -> bool>;
    let cases: Vec<(LookupFilter, Want)> = vec![
        (
            LookupFilter {
                ids: Some(vec![4, 77, 150, 210, 298, 299]),
                ..Default::default()
            },
            Box::new(|pos, _| [4, 77, 150, 210, 298, 299].contains(&pos)),
        ),
        (
            LookupFilter {
                identifiers: vec![("anonymous_id", "a3".into()), ("email", "u11@x.com".into())],
                ..Default::default()
            },
            Box::new(|_, s| {
                s.ids.anonymous_id.as_deref() == Some("a3")
                    || s.ids.email.as_deref() == Some("u11@x.com")
            }),
        ),
        (
            LookupFilter {
                ids: Some((100..260).collect()),
                equals: vec![("event_type", "page".into())],
                limit: Some(5),
                ..Default::default()
            },
            Box::new(|pos, s| (100..260).contains(&pos) && s.event_type == "page"),
        ),
    ];
    for (filter, want) in cases {
        for org in [1u64, 2] {
            for kind in [Kind::Signals, Kind::Anonymous] {
                let mut expected: Vec<u64> = records
                    .iter()
                    .filter(|(pos, s)| {
                        s.org_id.0 == org
                            && s.anonymous == (kind == Kind::Anonymous)
                            && want(*pos, s)
                    })
                    .map(|(pos, _)| *pos)
                    .collect();
                if let Some(n) = filter.limit {
                    expected.truncate(n);
                }
                let got: Vec<u64> = lookup
                    .rows(org, &[kind], &filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        assert_eq!(r.record.org_id.0, org);
                        r.id
                    })
                    .collect();
                assert_eq!(got, expected, "{filter:?} org {org} {kind:?}");
            }
        }
    }
}

/// Two archives of the same 60 signals of org 1, flushed: the same positions and times, so
/// the same file names, with `change` applied to each signal of the second.
async fn twin_archives(
    change: impl Fn(&mut SignalRecord),
) -> ((Arc<Archiver>, SqlEngine), (Arc<Archiver>, SqlEngine)) {
    let (ours, theirs) = (engine(10).await, engine(10).await);
    let entries: Vec<_> = (0..60).map(|i| entry(1, i)).collect();
    let changed: Vec<_> = entries
        .iter()
        .cloned()
        .map(|(p, mut e)| {
            if let LogEntry::Signal(s) = &mut e {
                change(s);
            }
            (p, e)
        })
        .collect();
    for (archive, entries) in [(&ours.0, &entries), (&theirs.0, &changed)] {
        archive.offer(entries);
        archive.flush(true).await.unwrap();
    }
    (ours, theirs)
}

/// A file's Parquet metadata is read once and then served from the process's cache, and two
/// archives whose files have the same names (every `memory://` archive here) never read each
/// other's.
#[tokio::test]
async fn file_metadata_is_cached_per_archive() {
    use trailspark_sinks::archive::Kind;
    // The other archive's payloads are of the same length and say something else.
    let ((a, e), (b, f)) =
        twin_archives(|s| s.payload = s.payload.replace("secret", "sekret")).await;
    let files = a.snapshot(Kind::Signals, 1).files;
    assert!(files.len() > 1, "{} files", files.len());
    let other = b.snapshot(Kind::Signals, 1).files;
    assert_eq!(
        files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        other.iter().map(|f| &f.path).collect::<Vec<_>>(),
        "the same names"
    );
    let sekret = "SELECT count(*) FROM signals WHERE payload LIKE '%sekret%'";
    for _ in 0..2 {
        let n = scalar(&e, 1, "SELECT count(*) FROM signals").await;
        assert!(n.as_u64().unwrap() > 0);
        assert_eq!(scalar(&f, 1, "SELECT count(*) FROM signals").await, n);
        assert_eq!(scalar(&e, 1, sekret).await, 0);
        assert_eq!(scalar(&f, 1, sekret).await, n);
    }
    for f in &files {
        assert!(
            crate::catalog::archive::FOOTERS.contains_key(&f.path),
            "{} not cached",
            f.path
        );
    }
}

/// A lookup's bloom filters are read once and then served from the process's cache (every
/// filter of the looked-up column in every file the query opened is kept), and two archives
/// whose files have the same names never prune with each other's: a filter of the wrong
/// archive would drop the row group that holds the other's value.
#[tokio::test]
async fn bloom_filters_are_kept_per_archive() {
    use crate::catalog::blooms::{FileVersion, RangeKey, BLOOMS};
    use datafusion::execution::cache::Cache;
    use object_store::ObjectStoreExt;
    use parquet::file::metadata::ParquetMetaDataReader;
    use trailspark_sinks::archive::Kind;

    // The other archive's emails are of the same length, in another domain.
    let ((a, e), (_, f)) =
        twin_archives(|s| s.ids.email = s.ids.email.take().map(|m| m.replace("@x.", "@y."))).await;
    let files = a.snapshot(Kind::Signals, 1).files;
    assert!(files.len() > 1, "{} files", files.len());

    let lookup =
        |domain: &str| format!("SELECT count(*) FROM signals WHERE email = 'u5@{domain}.com'");
    for _ in 0..2 {
        assert_eq!(scalar(&e, 1, &lookup("x")).await, 1);
        assert_eq!(scalar(&f, 1, &lookup("y")).await, 1);
        assert_eq!(scalar(&e, 1, &lookup("y")).await, 0);
        assert_eq!(scalar(&f, 1, &lookup("x")).await, 0);
    }

    // The email filter of every row group whose statistics admit the value (the reader
    // reads no filter of one they exclude) is in the cache, under our archive's instance.
    let store = &a.location().store;
    let wanted = b"u5@x.com".as_slice();
    let mut kept = 0;
    for file in &files {
        let bytes = store.get(&file.path).await.unwrap().bytes().await.unwrap();
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .unwrap();
        let email = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == "email")
            .unwrap();
        for rg in meta.row_groups() {
            let col = rg.column(email);
            let stats = col.statistics().unwrap();
            let (min, max) = (
                stats.min_bytes_opt().unwrap(),
                stats.max_bytes_opt().unwrap(),
            );
            if wanted < min || wanted > max {
                continue;
            }
            let start = col.bloom_filter_offset().unwrap() as u64;
            let len = col.bloom_filter_length().unwrap() as u64;
            let key = RangeKey {
                file: FileVersion {
                    path: file.path.clone(),
                    size: file.size,
                    modified: a.instance() as i64,
                },
                range: start..start + len,
            };
            assert!(BLOOMS.contains_key(&key), "{} not kept", file.path);
            kept += 1;
        }
    }
    assert!(kept > 0, "no row group admits the value");
}
