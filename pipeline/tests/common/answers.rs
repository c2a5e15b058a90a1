//! Real answers, recorded as a test makes its calls and then checked against the schemas
//! `/openapi.json` gives for them (by `tests/schemathesis/check_answers.py`, with Python's
//! `jsonschema`, which schemathesis installs). Schemathesis alone reaches few records by id:
//! the ids it makes up are not found. Here the answers are those of records the test made.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::{client, Server, ADMIN_TOKEN};

#[derive(Default)]
pub struct Answers {
    recorded: Vec<Value>,
}

impl Answers {
    /// Records a JSON answer of `method` on the concrete `path` (a query string is ignored).
    pub fn record(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        let path = path.split('?').next().unwrap_or(path);
        self.recorded.push(json!({
            "method": method.to_lowercase(), "path": path, "status": status, "body": body,
        }));
    }

    /// Calls the server as its administrator, records the answer and returns it.
    pub fn call(
        &mut self,
        s: &Server,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = s.admin(method.clone(), path, ADMIN_TOKEN, body);
        let status = r.status().as_u16();
        let v: Value = r
            .json()
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        self.record(method.as_str(), path, status, &v);
        (status, v)
    }

    /// [`Answers::call`], requiring a 2xx.
    pub fn ok(
        &mut self,
        s: &Server,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.call(s, method.clone(), path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub fn len(&self) -> usize {
        self.recorded.len()
    }

    /// Checks every recorded answer against `s`'s document; panics naming each answer that
    /// does not conform. Answers how many were checked against a typed schema.
    pub fn check(&self, s: &Server) -> usize {
        let doc: Value = client()
            .get(s.url("/openapi.json"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let doc_file = dir.path().join("openapi.json");
        let answers_file = dir.path().join("answers.json");
        std::fs::write(&doc_file, doc.to_string()).unwrap();
        std::fs::write(
            &answers_file,
            Value::Array(self.recorded.clone()).to_string(),
        )
        .unwrap();
        // To read what was answered: OPENAPI_ANSWERS_DUMP=<file>.
        if let Ok(to) = std::env::var("OPENAPI_ANSWERS_DUMP") {
            std::fs::copy(&answers_file, to).unwrap();
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/check_answers.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&doc_file)
            .arg(&answers_file)
            .output()
            .expect("running python3");
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "answers that differ from the document:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{report}");
        report
            .lines()
            .last()
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("the checker's summary line")
    }
}
