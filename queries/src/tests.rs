use super::*;
use trailspark_core::{LogEntry, OrgId, SignalRecord};
use trailspark_sinks::archive::{ArchiveConfig, Location, NoStamps};

fn live(org: u64) -> Vec<Table> {
    vec![Table::new("leads").column("lead_id", Column::Str(vec![Some(format!("lead-of-{org}"))]))]
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
    let e = SqlEngine::new(Some(a.clone()), Limits::default()).unwrap();
    (a, e)
}

async fn scalar(e: &SqlEngine, org: u64, sql: &str) -> serde_json::Value {
    let out = e.query(org, sql, live(org)).await.unwrap();
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
        "lead-of-1"
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
            .query(1, sql, live(1))
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} ran"));
        assert_eq!(err.status(), 400, "{sql}: {err}");
    }
    let err = e
        .query(1, "SELECT * FROM '/etc/passwd'", vec![])
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
        Limits {
            timeout: Duration::from_millis(300),
            max_rows: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    let err = e
        .query(1, "SELECT * FROM generate_series(1, 5000)", vec![])
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "result_too_large");
    let err = e
        .query(
            1,
            "SELECT count(*) FROM generate_series(1, 100000000000) a",
            vec![],
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "query_timeout");
}

#[tokio::test]
async fn the_byte_limit_counts_the_rows_of_a_page_not_the_batch_it_is_cut_from() {
    let e = SqlEngine::new(
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
            "SELECT value, repeat('x', 100) AS s FROM generate_series(1, 100000) LIMIT 10 OFFSET 20000",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page.rows, 10);
    let err = e
        .query(
            1,
            "SELECT value, repeat('x', 100) AS s FROM generate_series(1, 5000)",
            vec![],
        )
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "result_too_large");
}

#[test]
fn tables_read_names_what_a_query_reads_or_says_it_cannot_tell() {
    let names = |sql: &str| SqlEngine::tables_read(sql).map(|s| s.into_iter().collect::<Vec<_>>());
    assert_eq!(names("SELECT 1"), Some(vec![]));
    assert_eq!(
        names("SELECT count(*) FROM signals WHERE lead_id IN (SELECT lead_id FROM LEADS)"),
        Some(vec!["leads".into(), "signals".into()])
    );
    assert_eq!(
        names(
            "WITH g AS (SELECT title FROM signal_groups) \
             SELECT * FROM g UNION ALL SELECT meter FROM usage"
        ),
        Some(vec!["signal_groups".into(), "usage".into()])
    );
    assert_eq!(
        names("EXPLAIN SELECT * FROM identities i JOIN mapping_rules r ON true"),
        Some(vec!["identities".into(), "mapping_rules".into()])
    );
    // Catalog views list every table; unparsable text and several statements are left to
    // the planner to refuse.
    assert_eq!(names("SELECT * FROM information_schema.tables"), None);
    assert_eq!(names("SELECT * FROM public.leads"), None);
    assert_eq!(names("SELEC nonsense"), None);
    assert_eq!(names("SELECT 1; SELECT * FROM leads"), None);
}

/// Hostile queries (issue 20): each is refused with its own code, on the SQL threads,
/// and the engine still answers afterwards.
#[tokio::test]
async fn hostile_queries_are_refused_and_the_engine_keeps_answering() {
    let e = SqlEngine::new(
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
        assert_eq!(
            code(e.query(1, &sql, vec![]).await),
            Some("query_too_complex")
        );
    }
    // Within the limit a deep plan runs, on stacks sized for it.
    let sum = e
        .query(1, &format!("SELECT {} AS n", terms("+", 250)), vec![])
        .await
        .unwrap();
    assert_eq!(output::to_json(&sum).unwrap()["rows"][0][0], 250);
    let unions = vec!["SELECT 1 AS n"; 200].join(" UNION ALL ");
    let out = e
        .query(1, &format!("SELECT count(*) FROM ({unions})"), vec![])
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
            code(e.query(1, sql, vec![]).await),
            Some("resources_exhausted"),
            "{sql}"
        );
    }
    // A recursive CTE that doubles its strings runs into the query's own memory pool.
    let doubling = "WITH RECURSIVE t(n, s) AS (SELECT 1, repeat('x', 1000) \
                    UNION ALL SELECT n + 1, s || s FROM t WHERE n < 40) \
                    SELECT max(length(s)) FROM t";
    assert_eq!(
        code(e.query(1, doubling, vec![]).await),
        Some("resources_exhausted")
    );
    // CPU without end: the timeout fires on time and aborts the work, freeing the threads.
    let started = std::time::Instant::now();
    let cross =
        "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b";
    assert_eq!(code(e.query(1, cross, vec![]).await), Some("query_timeout"));
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
            tokio::spawn(async move { e.query(1, slow, vec![]).await.err().map(|e| e.code()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = e.query(1, "SELECT 1", vec![]).await.err().unwrap();
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
