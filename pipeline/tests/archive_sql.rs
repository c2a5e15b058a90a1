//! The Parquet archive and SQL, through the binary: files read by independent readers
//! (pyarrow, DuckDB), kill -9 while archiving, the S3 backend against moto's server, the
//! answer formats of `POST /api/sql`, tenant isolation under hostile queries, and the
//! `trailspark sql` / `archive` commands.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the independent reader script; returns its JSON.
fn py(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/parquet_read.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "parquet_read.py {args:?} failed (needs `pip install pyarrow duckdb 'moto[server]'`; scripts/test does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Archive settings that roll files quickly.
const FAST_ARCHIVE: &[(&str, &str)] = &[
    ("TRAILSPARK_ARCHIVE_MAX_AGE_SECS", "1"),
    ("TRAILSPARK_ARCHIVE_MAX_ROWS", "25"),
];

/// Waits until every log position up to `pos` is in an archive file.
fn wait_archived(s: &Server, pos: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.admin(
            reqwest::Method::GET,
            "/api/admin/archive",
            ADMIN_TOKEN,
            None,
        );
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        if v["checkpoint"].as_u64().unwrap() > pos {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "archive never reached position {pos}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates an org; returns (id, owner token, a Signal Staging key of it).
fn new_org(s: &Server, name: &str) -> (u64, String, String) {
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/orgs",
        ADMIN_TOKEN,
        Some(json!({"name": name})),
    );
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    let token = v["owner_token"].as_str().unwrap().to_string();
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/keys",
        &token,
        Some(json!({"name": "k", "endpoint_type": "signal_staging"})),
    );
    assert_eq!(r.status(), 201);
    let key: Value = r.json().unwrap();
    (
        v["id"].as_u64().unwrap(),
        token,
        key["key"].as_str().unwrap().to_string(),
    )
}

/// Posts one signal; returns its id (= log position).
fn post(s: &Server, key: &str, body: Value) -> u64 {
    let r = s.post_signal(key, &body.to_string());
    assert_eq!(r.status(), 202);
    r.json::<Value>().unwrap()["id"].as_u64().unwrap()
}

fn count(s: &Server, token: &str, sql: &str) -> u64 {
    sql_ok(s, token, sql)["rows"][0][0].as_u64().unwrap()
}

/// Org 1 (the default, the admin token's) and org B with signals, identified and anonymous.
struct TwoOrgs {
    b: u64,
    b_token: String,
    a_ids: BTreeSet<u64>,
    a_anon: BTreeSet<u64>,
    b_ids: BTreeSet<u64>,
    last: u64,
}

fn two_orgs(s: &Server) -> TwoOrgs {
    let a_key = s.new_key();
    let (b, b_token, b_key) = new_org(s, "Victim");
    let mut t = TwoOrgs {
        b,
        b_token,
        a_ids: BTreeSet::new(),
        a_anon: BTreeSet::new(),
        b_ids: BTreeSet::new(),
        last: 0,
    };
    for i in 0..60 {
        let id = post(
            s,
            &a_key,
            json!({"email": format!("u{i}@a.io"), "event": format!("e{}", i % 3), "n": i}),
        );
        t.a_ids.insert(id);
        t.last = id;
    }
    for i in 0..7 {
        let id = post(
            s,
            &a_key,
            json!({"anonymousId": format!("anon-{i}"), "event": "page_view"}),
        );
        t.a_anon.insert(id);
        t.last = id;
    }
    for i in 0..40 {
        let id = post(
            s,
            &b_key,
            json!({"email": format!("victim{i}@orgb-secret.io"), "event": "orgb_secret_event"}),
        );
        t.b_ids.insert(id);
        t.last = id;
    }
    t
}

#[test]
fn archive_files_are_read_by_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), None, FAST_ARCHIVE);
    let t = two_orgs(&s);
    wait_archived(&s, t.last);
    let root = dir.path().join("archive");
    let v = py(&["archive", root.to_str().unwrap()]);

    // Layout: hive partitions by org and date, Parquet files only (plus the checkpoint).
    for f in v["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        let ok = f == "_state/checkpoint"
            || ((f.starts_with("signals/org_id=") || f.starts_with("anonymous/org_id="))
                && f.contains("/date=")
                && f.ends_with(".parquet"));
        assert!(ok, "unexpected file in the archive: {f}");
    }
    let signals = v["signals"].as_array().unwrap();
    let by_org = |org: u64| -> BTreeSet<u64> {
        signals
            .iter()
            .filter(|r| r["org_id"].as_u64() == Some(org))
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(by_org(1), t.a_ids, "org 1's identified signals, once each");
    assert_eq!(by_org(t.b), t.b_ids);
    assert_eq!(signals.len(), t.a_ids.len() + t.b_ids.len());
    let anon: BTreeSet<u64> = v["anonymous"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(anon, t.a_anon, "anonymous signals have their own tree");

    // Typed columns, the raw payload, and the processing outcome.
    let row = signals
        .iter()
        .find(|r| r["email"] == "u7@a.io")
        .expect("u7's signal");
    assert_eq!(row["event_name"], "e1");
    assert_eq!(row["source"], "generic");
    let payload: Value = serde_json::from_str(row["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["n"], 7);
    assert!(row["received_at"].as_str().unwrap().starts_with("20"));
    for r in signals {
        assert!(
            r["status"].is_string(),
            "every archived signal carries its status: {r}"
        );
    }
    assert!(signals.iter().all(|r| r["lead_id"].is_string()));

    // DuckDB over the same files agrees.
    assert_eq!(v["duckdb"]["1"]["rows"], t.a_ids.len());
    assert_eq!(v["duckdb"][t.b.to_string()]["distinct_ids"], t.b_ids.len());
}

#[test]
fn sql_answers_in_json_csv_arrow_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), None, FAST_ARCHIVE);
    let t = two_orgs(&s);
    // Half archived, half live: the answer must not depend on where rows are.
    wait_archived(&s, t.last);
    let key = s.new_key();
    let mut last = 0;
    for i in 0..5 {
        last = post(
            &s,
            &key,
            json!({"email": format!("late{i}@a.io"), "event": "e0"}),
        );
    }
    let q = format!(
        "SELECT event_name, count(*) AS n FROM signals WHERE id <= {last} GROUP BY event_name ORDER BY event_name"
    );
    let body = sql_ok(&s, ADMIN_TOKEN, &q);
    assert_eq!(body["columns"], json!(["event_name", "n"]));
    assert_eq!(
        body["rows"],
        json!([["e0", 25], ["e1", 20], ["e2", 20]]),
        "archive plus live tail, nothing twice"
    );

    let r = sql_as(&s, ADMIN_TOKEN, &q, Some("text/csv"));
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(r.text().unwrap(), "event_name,n\ne0,25\ne1,20\ne2,20\n");

    for (accept, kind) in [
        ("application/vnd.apache.arrow.stream", "ipc"),
        ("application/vnd.apache.parquet", "parquet"),
    ] {
        let r = sql_as(&s, ADMIN_TOKEN, &q, Some(accept));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], accept);
        let file = dir.path().join(format!("answer.{kind}"));
        std::fs::write(&file, r.bytes().unwrap()).unwrap();
        let v = py(&[kind, file.to_str().unwrap()]);
        assert_eq!(v["columns"], json!(["event_name", "n"]), "{kind}");
        assert_eq!(
            v["rows"],
            json!([["e0", 25], ["e1", 20], ["e2", 20]]),
            "{kind}"
        );
    }

    // The other tables, scoped to the org.
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM anonymous_signals"),
        7
    );
    assert_eq!(
        count(
            &s,
            ADMIN_TOKEN,
            &format!("SELECT count(*) FROM signals WHERE id <= {last}")
        ),
        65
    );
    let leads = count(&s, ADMIN_TOKEN, "SELECT count(*) FROM leads");
    assert_eq!(leads, 65, "one lead per distinct email");
    let body = sql_ok(
        &s,
        ADMIN_TOKEN,
        "SELECT l.email, count(*) FROM signals s JOIN leads l ON s.lead_id = l.lead_id \
         WHERE l.email = 'u3@a.io' GROUP BY l.email",
    );
    assert_eq!(body["rows"], json!([["u3@a.io", 1]]));
    assert_eq!(
        count(&s, &t.b_token, "SELECT count(*) FROM signals"),
        t.b_ids.len() as u64
    );

    // Errors: named, with the right status.
    let cases = [
        ("SELEC 1", 400, "invalid_sql"),
        ("SELECT * FROM nowhere", 400, "invalid_sql"),
        ("DROP TABLE signals", 400, "not_a_query"),
    ];
    for (q, status, code) in cases {
        let r = sql_as(&s, ADMIN_TOKEN, q, None);
        assert_eq!(r.status(), status, "{q}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["code"], code, "{q}: {v}");
    }
    let r = client()
        .post(s.url("/api/sql"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"query": "SELECT 1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400, "the body is {{\"sql\": ...}}");
    let r = client()
        .post(s.url("/api/sql"))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Viewers may not run SQL (Editor or above).
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/tokens",
        ADMIN_TOKEN,
        Some(json!({"role": "viewer", "name": "v"})),
    );
    assert_eq!(r.status(), 201);
    let viewer = r.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sql_as(&s, &viewer, "SELECT 1", None).status(), 403);
}

#[test]
fn sql_result_limits_answer_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = FAST_ARCHIVE.to_vec();
    env.push(("TRAILSPARK_SQL_MAX_ROWS", "10"));
    let s = Server::start_with(dir.path(), None, &env);
    two_orgs(&s);
    let r = sql_as(&s, ADMIN_TOKEN, "SELECT * FROM signals", None);
    assert_eq!(r.status(), 413);
    let v: Value = r.json().unwrap();
    assert_eq!(v["code"], "result_too_large", "{v}");
    assert_eq!(
        sql_ok(&s, ADMIN_TOKEN, "SELECT id FROM signals LIMIT 10")["rows"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn hostile_queries_never_see_another_org() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), None, FAST_ARCHIVE);
    let t = two_orgs(&s);
    wait_archived(&s, t.last);
    // Org B also has a rule, so its live tables are not empty either.
    let r = s.admin(
        reqwest::Method::POST,
        "/api/mapping-rules",
        &t.b_token,
        Some(
            json!({"name": "orgb-secret rule", "signal_type": "Sales Event",
            "conditions": [{"field": "event_name", "op": "equals", "value": "orgb_secret_event"}],
            "mappings": [{"field": "email", "path": "email"}]}),
        ),
    );
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // A file outside the archive with a marker, and org B's own archive files.
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "a,b\nFILESECRET123,1\n").unwrap();
    let secret = secret.display().to_string();
    let b_dir = dir
        .path()
        .join(format!("archive/signals/org_id={}", t.b))
        .canonicalize()
        .unwrap();
    let b_file = walk(&b_dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap()
        .display()
        .to_string();
    let b_dir = b_dir.display().to_string();
    let journal = dir.path().join("journal").display().to_string();
    let b = t.b;
    let a_total = (t.a_ids.len() + t.a_anon.len()) as u64;

    let queries: Vec<String> = vec![
        "SELECT * FROM signals".into(),
        format!("SELECT * FROM signals WHERE org_id = {b}"),
        "SELECT * FROM signals WHERE org_id <> 1".into(),
        "SELECT * FROM anonymous_signals".into(),
        "SELECT * FROM leads".into(),
        "SELECT * FROM identities".into(),
        "SELECT * FROM signal_groups".into(),
        "SELECT * FROM usage".into(),
        "SELECT * FROM mapping_rules".into(),
        "SELECT * FROM product_orgs".into(),
        "SELECT s.*, l.* FROM signals s FULL OUTER JOIN leads l ON s.lead_id = l.lead_id".into(),
        format!("SELECT * FROM signals WHERE id IN ({})", ids(&t.b_ids)),
        format!("SELECT * FROM signals WHERE id IN (SELECT id FROM signals WHERE org_id = {b})"),
        "WITH x AS (SELECT * FROM signals), y AS (SELECT * FROM anonymous_signals) SELECT x.email FROM x UNION ALL SELECT y.email FROM y".into(),
        "SELECT email FROM signals UNION SELECT key_value FROM leads UNION SELECT value FROM identities".into(),
        "SELECT * FROM signals s1 CROSS JOIN mapping_rules LIMIT 1000".into(),
        "SELECT * FROM information_schema.tables".into(),
        "SELECT * FROM information_schema.columns".into(),
        "SELECT * FROM information_schema.views".into(),
        "SELECT * FROM information_schema.df_settings".into(),
        "SHOW TABLES".into(),
        "SHOW ALL".into(),
        "EXPLAIN SELECT * FROM signals".into(),
        "EXPLAIN ANALYZE SELECT * FROM signals".into(),
        "SELECT * FROM datafusion.public.signals".into(),
        "SELECT * FROM payload_secret_probe WHERE payload LIKE '%orgb%'".into(),
        "SELECT * FROM signals WHERE payload LIKE '%orgb%' OR email LIKE '%orgb%'".into(),
        format!("SELECT * FROM '{b_file}'"),
        format!("SELECT * FROM '{b_dir}/'"),
        format!("SELECT * FROM 'file://{b_file}'"),
        format!("SELECT * FROM '{secret}'"),
        format!("SELECT * FROM read_parquet('{b_file}')"),
        format!("SELECT * FROM read_csv('{secret}')"),
        format!("SELECT * FROM parquet_metadata('{b_file}')"),
        format!("CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '{b_dir}/'"),
        format!("CREATE EXTERNAL TABLE stolen2 (a VARCHAR) STORED AS CSV LOCATION '{secret}'"),
        format!("CREATE EXTERNAL TABLE j STORED AS CSV LOCATION '{journal}/'"),
        "CREATE TABLE t AS SELECT * FROM signals".into(),
        "CREATE VIEW v AS SELECT * FROM signals".into(),
        "INSERT INTO signals SELECT * FROM signals".into(),
        "DELETE FROM signals".into(),
        "UPDATE signals SET email = 'x'".into(),
        "DROP TABLE signals".into(),
        format!("COPY (SELECT * FROM signals) TO '{}/copied.csv'", dir.path().display()),
        "SET datafusion.catalog.information_schema = false".into(),
        "SET datafusion.execution.target_partitions = 1".into(),
        format!("PREPARE p(BIGINT) AS SELECT * FROM signals WHERE org_id = $1; EXECUTE p({b})"),
        format!("SELECT 1; SELECT * FROM signals WHERE org_id = {b}"),
        "SELECT * FROM generate_series(1, 3)".into(),
        "SELECT * FROM range(3)".into(),
        "SELECT arrow_typeof(payload), count(*) FROM signals GROUP BY 1".into(),
        "SELECT count(*) FROM signals WHERE org_id IS NOT NULL".into(),
    ];
    assert!(queries.len() >= 30);
    let markers = ["orgb-secret", "orgb_secret", "FILESECRET", "victim"];
    for q in &queries {
        let r = sql_as(&s, ADMIN_TOKEN, q, None);
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        assert!(
            status == 200 || status == 400,
            "{q}: status {status}: {text}"
        );
        for m in markers {
            assert!(!text.contains(m), "{q}: answer shows `{m}`: {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        if status == 200 {
            // Every org_id column holds only the caller's org.
            let cols = v["columns"].as_array().unwrap();
            for (i, c) in cols.iter().enumerate() {
                if c == "org_id" {
                    for row in v["rows"].as_array().unwrap() {
                        assert_eq!(row[i], 1, "{q}: a row of another org: {row}");
                    }
                }
            }
        } else {
            assert!(v["code"].is_string(), "{q}: {v}");
        }
    }
    // The counts are the caller's, whatever the query shape.
    assert_eq!(
        count(
            &s,
            ADMIN_TOKEN,
            "SELECT (SELECT count(*) FROM signals) + (SELECT count(*) FROM anonymous_signals)"
        ),
        a_total
    );
    assert_eq!(
        count(&s, &t.b_token, "SELECT count(*) FROM signals"),
        t.b_ids.len() as u64
    );
    assert!(!dir.path().join("copied.csv").exists());
}

fn ids(s: &BTreeSet<u64>) -> String {
    s.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn kill9_while_archiving_loses_nothing_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRAILSPARK_ARCHIVE_MAX_AGE_SECS", "0"),
        ("TRAILSPARK_ARCHIVE_MAX_ROWS", "50"),
    ];
    let mut s = Server::start_with(dir.path(), None, &env);
    // kill9_under_load kills the server mid-load (files are being written every tick) and
    // restarts it with the default settings; it checks the log, this test the archive.
    let (acked, retried) = kill9_under_load(&mut s, Duration::from_millis(2000));
    eprintln!("archive: {acked} acked before kill -9, {retried} re-sent");
    // Everything under the trees is a whole Parquet file, right after the kill as well.
    let root = dir.path().join("archive");
    s.kill9();
    check_trees(&root);
    let s = Server::start_with(dir.path(), None, &env);
    let dump = s.dump_live();
    let in_log: BTreeSet<u64> = dump.iter().copied().collect();
    let last = *in_log.iter().max().unwrap();
    wait_archived(&s, last);
    let v = py(&["archive", root.to_str().unwrap()]);
    let archived: Vec<u64> = v["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = archived.iter().copied().collect();
    assert_eq!(archived.len(), unique.len(), "no row archived twice");
    assert_eq!(unique, in_log, "every signal of the log is archived");
    assert!(in_log.len() >= acked);
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals"),
        in_log.len() as u64
    );
    check_trees(&root);
}

/// Every file under `signals/` and `anonymous/` is a complete Parquet file (pyarrow reads
/// each on its own); nothing else is there.
fn check_trees(root: &Path) {
    for tree in ["signals", "anonymous"] {
        let d = root.join(tree);
        if !d.exists() {
            continue;
        }
        for f in walk(&d) {
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                name.starts_with("part-") && name.ends_with(".parquet"),
                "a stray file in the archive: {}",
                f.display()
            );
            py(&["parquet", f.to_str().unwrap()]);
        }
    }
}

trait DumpLive {
    fn dump_live(&self) -> Vec<u64>;
}

impl DumpLive for Server {
    /// Ids of the signals in the log, read through SQL's sibling: the log dump of a running
    /// server is not possible (it holds the lock), so ask the server for its stats instead.
    fn dump_live(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let body = sql_ok(
                self,
                ADMIN_TOKEN,
                &format!("SELECT id FROM signals ORDER BY id LIMIT 50000 OFFSET {offset}"),
            );
            let rows = body["rows"].as_array().unwrap();
            if rows.is_empty() {
                break;
            }
            offset += rows.len();
            ids.extend(rows.iter().map(|r| r[0].as_u64().unwrap()));
        }
        ids
    }
}

/// A moto S3 server on a free loopback port.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto's server (pip install 'moto[server]'; scripts/test does)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_backend_against_moto() {
    let moto = Moto::start();
    py(&["s3", &moto.endpoint, "mkbucket", "lake"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRAILSPARK_ARCHIVE", "s3://lake/trailspark/archive"),
        ("TRAILSPARK_ARCHIVE_MAX_AGE_SECS", "1"),
        ("TRAILSPARK_ARCHIVE_MAX_ROWS", "25"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut s = Server::start_with(dir.path(), None, &env);
    let t = two_orgs(&s);
    wait_archived(&s, t.last);
    let keys = py(&["s3", &moto.endpoint, "list", "lake", "trailspark/archive/"]);
    let keys: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let parts = |prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    assert!(
        parts("trailspark/archive/signals/org_id=1/date=") >= 2,
        "{keys:?}"
    );
    assert!(parts(&format!("trailspark/archive/signals/org_id={}/date=", t.b)) >= 1);
    assert!(parts("trailspark/archive/anonymous/org_id=1/date=") >= 1);
    assert!(keys.contains(&"trailspark/archive/_state/checkpoint"));
    assert!(keys
        .iter()
        .all(|k| k.ends_with(".parquet") || k.ends_with("checkpoint")));
    assert!(
        !dir.path().join("archive").exists(),
        "nothing written locally"
    );

    // SQL reads the files back from S3, also after a restart.
    let expect = t.a_ids.len() as u64;
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals"),
        expect
    );
    s.kill9();
    let s = Server::start_with(dir.path(), None, &env);
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals"),
        expect
    );
    assert_eq!(
        count(&s, &t.b_token, "SELECT count(DISTINCT id) FROM signals"),
        t.b_ids.len() as u64
    );
    // Compaction through the server: fewer files, the same rows.
    let r = s.admin(
        reqwest::Method::POST,
        "/api/admin/archive/compact",
        ADMIN_TOKEN,
        None,
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert!(v["files_merged"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals"),
        expect
    );
    let after = py(&[
        "s3",
        &moto.endpoint,
        "list",
        "lake",
        "trailspark/archive/signals/org_id=1/",
    ]);
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
}

#[test]
fn sql_and_archive_commands_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(dir.path(), None, FAST_ARCHIVE);
    let t = two_orgs(&s);
    wait_archived(&s, t.last);
    let key = s.new_key();
    // Not yet archived when the server dies: only in the log.
    for i in 0..3 {
        post(
            &s,
            &key,
            json!({"email": format!("tail{i}@a.io"), "event": "tail"}),
        );
    }
    s.kill9();
    let run = |args: &[&str]| -> String {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "trailspark {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let data = dir.path().to_str().unwrap();
    // Over the data directory: archive + log tail + live tables.
    let out = run(&[
        "sql",
        "SELECT event_name, count(*) AS n FROM signals GROUP BY event_name ORDER BY event_name",
        "--org",
        "1",
        "--data-dir",
        data,
    ]);
    for line in ["| e0         | 20 |", "| tail       | 3  |"] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let out = run(&[
        "sql",
        "SELECT count(*) AS n FROM leads",
        "--org",
        "1",
        "--data-dir",
        data,
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"], json!([[63]]));
    // Over the archive alone: what is in files.
    let archive = dir.path().join("archive");
    let out = run(&[
        "sql",
        "SELECT count(*) AS n FROM signals",
        "--org",
        &t.b.to_string(),
        "--archive",
        archive.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert_eq!(out.trim(), format!("n\n{}", t.b_ids.len()));
    let bad = Command::new(bin())
        .args([
            "sql",
            "DROP TABLE signals",
            "--org",
            "1",
            "--data-dir",
            data,
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("read"));

    // Compaction merges each partition's files; the rows stay.
    let files_before = run(&["archive", "files", "--data-dir", data])
        .lines()
        .count();
    let out = run(&["archive", "compact", "--data-dir", data]);
    assert!(out.starts_with("partitions="), "{out}");
    let files_after = run(&["archive", "files", "--data-dir", data])
        .lines()
        .count();
    assert!(
        files_after < files_before,
        "{files_before} -> {files_after}"
    );
    let per_partition: BTreeMap<String, usize> = run(&["archive", "files", "--data-dir", data])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let p = v["path"].as_str().unwrap();
            p.rsplit_once('/').unwrap().0.to_string()
        })
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p).or_default() += 1;
            m
        });
    assert!(per_partition.values().all(|&n| n == 1), "{per_partition:?}");
    let out = run(&[
        "sql",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM signals",
        "--org",
        "1",
        "--data-dir",
        data,
        "--format",
        "csv",
    ]);
    assert_eq!(out.trim(), "n,d\n63,63");
}

/// `trailspark backfill` with extra environment; returns (accepted, duplicates, rejected).
fn backfill(args: &[&str], env: &[(&str, &str)]) -> (u64, u64, u64) {
    let out = Command::new(bin())
        .arg("backfill")
        .args(args)
        .envs(env.iter().copied())
        .env("TRAILSPARK_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backfill {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().expect("a summary line").to_string();
    let n = |k: &str| -> u64 {
        last.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (n("accepted"), n("duplicates"), n("rejected"))
}

/// A fresh data directory with org 1 and its first key, server stopped.
fn fresh_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), None);
    let key = s.first_key.clone().unwrap();
    s.kill9();
    (dir, key)
}

#[test]
fn backfill_replays_the_parquet_archive_from_a_directory_and_from_s3() {
    // An archive made by a live server.
    let src = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(src.path(), None, FAST_ARCHIVE);
    let t = two_orgs(&s);
    wait_archived(&s, t.last);
    let summary_sql = "SELECT count(*), min(received_at), max(received_at), min(source), \
                       count(DISTINCT email) FROM signals";
    let want = sql_ok(&s, ADMIN_TOKEN, summary_sql)["rows"].clone();
    s.kill9();
    let org1 = src.path().join("archive/signals/org_id=1");
    let anon1 = src.path().join("archive/anonymous/org_id=1");
    let n1 = (t.a_ids.len() + t.a_anon.len()) as u64;

    // From directories, offline: the same records (receipt times, sources) in a new deployment.
    let (dst, key) = fresh_dir();
    let data = dst.path().to_str().unwrap();
    let args = [
        "--key",
        &key,
        "--data-dir",
        data,
        org1.to_str().unwrap(),
        anon1.to_str().unwrap(),
    ];
    assert_eq!(backfill(&args, &[]), (n1, 0, 0));
    assert_eq!(
        backfill(&args, &[]),
        (0, n1, 0),
        "a second run changes nothing"
    );
    let s = Server::start(dst.path(), None);
    assert_eq!(sql_ok(&s, ADMIN_TOKEN, summary_sql)["rows"], want);
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM anonymous_signals"),
        t.a_anon.len() as u64
    );
    drop(s);

    // From S3: archive files under a prefix, and an NDJSON file, by URL.
    let moto = Moto::start();
    py(&["s3", &moto.endpoint, "mkbucket", "old"]);
    for f in walk(&org1) {
        let rel = f
            .strip_prefix(src.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        py(&[
            "s3",
            &moto.endpoint,
            "put",
            "old",
            &rel,
            f.to_str().unwrap(),
        ]);
    }
    let ndjson = src.path().join("events.ndjson");
    std::fs::write(
        &ndjson,
        "{\"email\":\"s3-1@x.io\",\"event\":\"imported\"}\n{\"email\":\"s3-2@x.io\",\"event\":\"imported\"}\nnot json\n",
    )
    .unwrap();
    py(&[
        "s3",
        &moto.endpoint,
        "put",
        "old",
        "exports/events.ndjson",
        ndjson.to_str().unwrap(),
    ]);
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let (dst, key) = fresh_dir();
    let data = dst.path().to_str().unwrap();
    let args = [
        "--key",
        &key,
        "--data-dir",
        data,
        "s3://old/archive/signals/org_id=1/",
        "s3://old/exports/events.ndjson",
    ];
    assert_eq!(backfill(&args, &env), (t.a_ids.len() as u64 + 2, 0, 1));
    assert_eq!(backfill(&args, &env), (0, t.a_ids.len() as u64 + 2, 1));
    let s = Server::start(dst.path(), None);
    assert_eq!(
        count(
            &s,
            ADMIN_TOKEN,
            "SELECT count(*) FROM signals WHERE event_name = 'imported'"
        ),
        2
    );
    assert_eq!(
        count(&s, ADMIN_TOKEN, "SELECT count(*) FROM signals"),
        t.a_ids.len() as u64 + 2
    );
}
