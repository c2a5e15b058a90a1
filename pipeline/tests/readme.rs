//! The README as a newcomer uses it: every curl line of its shell examples runs, as written,
//! against a server, after the names its "First steps" table defines are set, and answers
//! without an error (curl's `--fail-with-body`: no transport error and no HTTP 4xx/5xx).
//! Every link of the README resolves inside the repository.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The lines of every ```sh block.
fn shell_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => current = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap()),
            (Some(b), _) => b.push(line.to_string()),
            _ => {}
        }
    }
    blocks
}

/// True when `text` leaves a single-quoted string open (shell rules: no escapes inside).
fn open_quote(text: &str) -> bool {
    let (mut single, mut double) = (false, false);
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double => break,
            _ => {}
        }
    }
    single
}

/// The commands of the blocks that start with one of `programs`, each with its continuation
/// lines (a trailing backslash, or a quoted string still open).
fn commands(blocks: &[Vec<String>], programs: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for block in blocks {
        let mut lines = block.iter();
        while let Some(line) = lines.next() {
            if !programs.iter().any(|p| line.starts_with(&format!("{p} "))) {
                continue;
            }
            let mut cmd = line.clone();
            while cmd.ends_with('\\') || open_quote(&cmd) {
                let Some(next) = lines.next() else { break };
                cmd.push('\n');
                cmd.push_str(next);
            }
            out.push(cmd);
        }
    }
    out
}

/// The `$NAME`s a command uses.
fn names(cmd: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = cmd;
    while let Some(i) = rest.find('$') {
        let tail = &rest[i + 1..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
        rest = tail;
    }
    out
}

/// The names the "First steps" table defines (its rows' first cells).
fn defined_names(text: &str) -> BTreeSet<String> {
    let start = text.find("## First steps").expect("a First steps section");
    let section = &text[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let cell = l.split('|').nth(1).unwrap_or("");
            cell.split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_link_of_the_readme_resolves_in_the_repository() {
    let text = readme();
    let anchors: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with('#') && !l.starts_with("#!"))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let mut checked = 0;
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let end = tail.find(')').expect("a closed link");
        let target = &tail[..end];
        rest = &tail[end..];
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (path, frag) = target.split_once('#').unwrap_or((target, ""));
        if path.is_empty() {
            assert!(anchors.contains(frag), "no heading for #{frag}");
        } else {
            assert!(
                !path.starts_with(".."),
                "{target} points outside the repository"
            );
            assert!(repo().join(path).exists(), "{target} does not exist");
            if path.ends_with(".md") && !frag.is_empty() {
                let other = std::fs::read_to_string(repo().join(path)).unwrap();
                let found = other
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| anchor(l.trim_start_matches('#')) == frag);
                assert!(found, "{path} has no heading for #{frag}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} links checked");
    for (n, line) in text.lines().enumerate() {
        assert!(
            !line.contains("../shared") && !line.contains("[?"),
            "line {}: {line}",
            n + 1
        );
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            let numbered = w[1].trim_matches(|c: char| !c.is_ascii_alphanumeric());
            assert!(
                !(matches!(w[0], "spec" | "issue" | "Issue" | "Spec")
                    && !numbered.is_empty()
                    && numbered.chars().all(|c| c.is_ascii_digit())),
                "line {} cites {} {numbered}, which the repository cannot resolve",
                n + 1,
                w[0]
            );
        }
    }
}

fn call(s: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let r = s.admin(method, path, ADMIN_TOKEN, body);
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// Values for the names of the First steps table, made the way the README says to get them.
fn setup(s: &Server) -> BTreeMap<&'static str, String> {
    let key = s.first_key.clone().unwrap();
    let post = |body: Value| -> Value { s.post_signal(&key, &body.to_string()).json().unwrap() };
    let signal = post(json!({"type": "identify", "userId": "u1",
                             "traits": {"email": "test@example.com", "title": "CTO"}}));
    let grouped = post(
        json!({"type": "track", "event": "Form Submitted", "userId": "u2",
                              "properties": {"form_id": "demo"}, "traits": {"email": "p@acme.io"}}),
    );
    let pos = grouped["log_position"].as_u64().unwrap();
    let lead = call(
        s,
        Method::GET,
        &format!("/api/leads?email=test%40example.com&wait_for={pos}"),
        None,
    );
    let groups = call(s, Method::GET, "/api/signal-queue/groups", None);
    let new_key = |body: Value| call(s, Method::POST, "/api/admin/keys", Some(body));
    let staging = new_key(json!({"name": "to revoke", "endpoint_type": "signal_staging"}));
    let product = new_key(json!({"name": "Product", "endpoint_type": "product_org",
                                 "template": {"product_org_id": "groupId"}}));
    call(
        s,
        Method::POST,
        "/api/mapping-rules",
        Some(json!({"name": "Tests", "signal_type": "Sales Event",
                    "conditions": [{"field": "event_name", "op": "equals", "value": "test"}],
                    "mappings": [{"field": "email", "path": "email"}]})),
    );
    // The lead is eligible for evaluation: three mapped signals of two types.
    call(
        s,
        Method::POST,
        "/api/mapping-rules",
        Some(json!({"name": "Pricing", "signal_type": "Page View",
                    "conditions": [{"field": "event", "op": "equals", "value": "Pricing Viewed"}],
                    "mappings": [{"field": "email", "path": "email"}], "reprocess": true})),
    );
    for (i, event) in ["test", "Pricing Viewed", "Pricing Viewed"]
        .iter()
        .enumerate()
    {
        post(json!({"event": event, "email": "test@example.com", "n": i}));
    }
    // The rule the README's examples edit and delete (not one the lead's signals need).
    let rule = call(
        s,
        Method::POST,
        "/api/mapping-rules",
        Some(
            json!({"name": "Edited by the README", "signal_type": "Sales Event",
                    "conditions": [{"field": "event", "op": "equals", "value": "Nothing"}],
                    "mappings": [{"field": "email", "path": "email"}]}),
        ),
    );
    let model = call(
        s,
        Method::POST,
        "/api/icp-models",
        Some(json!({"name": "ICP", "account_profile": "B2B SaaS companies."})),
    );
    let eval_rule = call(
        s,
        Method::POST,
        "/api/evaluation-rules",
        Some(json!({"name": "Any", "conditions": [{"field": "lead.email", "op": "is_not_empty"}]})),
    );
    // Integrations the examples test, sync and write to, on a local Airtable with the
    // destination's columns (kept for the test's life); one already has a destination.
    let mut store = common::crm::Store::airtable();
    for f in [
        "TrailSpark Score",
        "TrailSpark Reasoning",
        "TrailSpark Evaluation Date",
    ] {
        let people = store.schema.get_mut("People").unwrap();
        people.insert(f.into(), "singleLineText".into());
    }
    let companies = store.schema.get_mut("Companies").unwrap();
    companies.insert("TrailSpark Propensity".into(), "singleSelect".into());
    let at: &'static common::crm::airtable::Airtable =
        Box::leak(Box::new(common::crm::airtable::Airtable::start(
            "patREADME.0",
            "appREADME",
            store,
            std::time::Duration::from_secs(30),
        )));
    let connect = |name: &str| {
        call(
            s,
            Method::POST,
            "/api/integrations",
            Some(json!({"kind": "airtable", "name": name,
                    "credentials": {"personal_access_token": "patREADME.0", "base_id": "appREADME",
                                    "tables": {"contacts": "People", "companies": "Companies"}},
                    "api_base_url": at.url})),
        )
    };
    let integration = connect("README");
    let other = connect("README, with a destination");
    let destination = call(
        s,
        Method::POST,
        "/api/destinations",
        Some(json!({"integration_id": other["id"],
                    "field_mapping": {"score": "TrailSpark Score", "reasoning": "TrailSpark Reasoning",
                                      "evaluated_at": "TrailSpark Evaluation Date"}})),
    );
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    BTreeMap::from([
        ("HOST", s.base.trim_start_matches("http://").to_string()),
        ("T", s.owner_token.clone().unwrap()),
        ("ADMIN", ADMIN_TOKEN.to_string()),
        ("KEY", key.clone()),
        ("PKEY", text(&product["key"])),
        ("PKEY_ID", text(&product["id"])),
        ("KEY_ID", text(&staging["id"])),
        ("POS", pos.to_string()),
        ("SIGNAL_ID", text(&signal["id"])),
        ("LEAD", text(&lead["id"])),
        ("GROUP", text(&groups["groups"][0]["id"])),
        ("RULE", text(&rule["id"])),
        ("MODEL", text(&model["id"])),
        ("EVAL_RULE", text(&eval_rule["id"])),
        ("INTEGRATION", text(&integration["id"])),
        ("DESTINATION", text(&destination["id"])),
    ])
}

#[test]
fn every_curl_line_of_the_readme_runs() {
    let version = Command::new("curl").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "curl is needed (scripts/test installs it)"
    );
    let text = readme();
    let cmds = commands(&shell_blocks(&text), &["curl", "printf"]);
    assert!(cmds.len() >= 40, "only {} commands found", cmds.len());
    let defined = defined_names(&text);
    for cmd in &cmds {
        for n in names(cmd) {
            assert!(
                defined.contains(&n),
                "{cmd}\nuses ${n}, which First steps does not define"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), None);
    let mut vars = setup(&s);
    assert_eq!(
        defined,
        vars.keys().map(|k| k.to_string()).collect(),
        "the test sets exactly the names the README defines"
    );
    // Every curl fails on an HTTP error status as well as on a transport error.
    let curl_home = dir.path().join("curl");
    std::fs::create_dir_all(&curl_home).unwrap();
    std::fs::write(
        curl_home.join(".curlrc"),
        "--silent\n--show-error\n--fail-with-body\n--max-time 60\n",
    )
    .unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    for cmd in &cmds {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", cmd])
            .current_dir(&work)
            .env("CURL_HOME", &curl_home)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}\nexited {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // As the README says of POS: the log_position of the latest answer that has one.
        if let Some(p) = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["log_position"].as_u64())
        {
            vars.insert("POS", p.to_string());
        }
    }
}
