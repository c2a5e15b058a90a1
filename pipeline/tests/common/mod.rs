//! Test harness: runs the real `trailspark` binary (and a real `nats-server`) on free
//! loopback ports, and talks to them over HTTP like any client would.
#![allow(dead_code)]

pub mod answers;
pub mod crm;
pub mod destinations;
pub mod jetstream;
pub mod llm;
pub mod scoring;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "ts_test_admin_token_0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_trailspark")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `trailspark serve`.
pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub nats_url: Option<String>,
    pub base: String,
    /// The first-start Signal Staging key, when this process created it.
    pub first_key: Option<String>,
    pub owner_token: Option<String>,
    /// The first-start server administrator token (without `TRAILSPARK_ADMIN_TOKEN`).
    pub server_token: Option<String>,
}

impl Server {
    pub fn start(data_dir: &Path, nats_url: Option<&str>) -> Server {
        Server::start_with(data_dir, nats_url, &[])
    }

    /// Starts with extra environment variables (configuration under test).
    pub fn start_with(data_dir: &Path, nats_url: Option<&str>, env: &[(&str, &str)]) -> Server {
        Server::start_configured(data_dir, nats_url, env, |_| {})
    }

    /// Starts with a soft and hard limit of `max_files` open files.
    pub fn start_with_open_files(data_dir: &Path, env: &[(&str, &str)], max_files: u64) -> Server {
        use std::os::unix::process::CommandExt;
        Server::start_configured(data_dir, None, env, move |cmd| {
            // SAFETY: only setrlimit runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: max_files,
                        rlim_max: max_files,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// Starts with extra environment variables and whatever `configure` sets on the command.
    pub fn start_configured(
        data_dir: &Path,
        nats_url: Option<&str>,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut cmd = Command::new(bin());
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("TRAILSPARK_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TRAILSPARK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = nats_url {
            cmd.arg("--nats").arg(url);
        }
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawning trailspark");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut key, mut token, mut base, mut server_token) = (None, None, None, None);
        while base.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("trailspark did not report its address in time");
            // Stdout is a pipe here, so the first start's secrets are in a 0600 file.
            let mut lines = vec![line];
            if let Some(path) = lines[0].split(" are in ").nth(1) {
                let path = path.split(" (mode 0600)").next().unwrap().to_string();
                let text = std::fs::read_to_string(&path).expect("reading the credentials file");
                lines.extend(text.lines().map(str::to_string));
            }
            for line in lines {
                if let Some(k) = line.split("API key, shown once: ").nth(1) {
                    key = Some(k.trim().to_string());
                }
                if let Some(t) = line.split("Owner token, shown once: ").nth(1) {
                    token = Some(t.trim().to_string());
                }
                if line.contains("Server administrator token") {
                    server_token = line
                        .split("shown once: ")
                        .nth(1)
                        .map(|t| t.trim().to_string());
                }
                if let Some(a) = line.split("listening on ").nth(1) {
                    base = Some(a.trim().to_string());
                }
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let s = Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            nats_url: nats_url.map(str::to_string),
            base: base.unwrap(),
            first_key: key,
            owner_token: token,
            server_token,
        };
        s.wait_healthy();
        s
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client().get(format!("{}/healthz", self.base)).send() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// kill -9, then start again on the same log (the first-start secrets are kept).
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// [`Server::restart`] with extra environment variables.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.kill9();
        let fresh = Server::start_with(&self.data_dir, self.nats_url.as_deref(), env);
        let (key, token, server) = (
            self.first_key.take(),
            self.owner_token.take(),
            self.server_token.take(),
        );
        *self = fresh;
        self.first_key = key;
        self.owner_token = token;
        self.server_token = server;
    }

    /// An admin API call with a bearer token and an optional JSON body.
    pub fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::blocking::Response {
        let mut rb = client().request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().unwrap()
    }

    /// A GET as the administrator that first waits for the read models to reach `wait_for`.
    pub fn get_at(&self, path: &str, wait_for: u64) -> reqwest::blocking::Response {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}wait_for={wait_for}");
        self.admin(reqwest::Method::GET, &path, ADMIN_TOKEN, None)
    }

    /// Creates a key through the admin API; returns the full creation response.
    pub fn create_key(&self, body: Value) -> Value {
        let r = client()
            .post(self.url("/api/admin/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "creating key {body}");
        r.json().unwrap()
    }

    pub fn new_key(&self) -> String {
        self.create_key(serde_json::json!({"name": "test", "endpoint_type": "signal_staging"}))
            ["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn post_signal(&self, key: &str, body: &str) -> reqwest::blocking::Response {
        client()
            .post(self.url(&format!("/api/signal-staging/webhook/{key}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    }

    /// `trailspark log dump` for this server's log.
    pub fn dump(&self) -> Vec<Value> {
        dump_log(&self.data_dir, self.nats_url.as_deref())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn dump_log(data_dir: &Path, nats_url: Option<&str>) -> Vec<Value> {
    let mut cmd = Command::new(bin());
    cmd.args(["log", "dump", "--data-dir"]).arg(data_dir);
    if let Some(url) = nats_url {
        cmd.arg("--nats").arg(url);
    }
    let out = cmd.output().expect("running log dump");
    assert!(
        out.status.success(),
        "log dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The signals of a dump.
pub fn signals(dump: &[Value]) -> Vec<&Value> {
    dump.iter()
        .filter(|e| e["kind"] == "signal")
        .map(|e| &e["signal"])
        .collect()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Creates a mapping rule (as the server administrator) that maps signals whose event name is
/// `event`, by their `email`; returns the rule's log position.
pub fn event_rule(s: &Server, event: &str, reprocess: bool) -> u64 {
    let r = s.admin(
        reqwest::Method::POST,
        "/api/mapping-rules",
        ADMIN_TOKEN,
        Some(
            serde_json::json!({"name": format!("{event} rule"), "signal_type": "Sales Event",
            "conditions": [{"field": "event_name", "op": "equals", "value": event}],
            "mappings": [{"field": "email", "path": "email"}], "reprocess": reprocess}),
        ),
    );
    assert_eq!(r.status(), 201);
    r.json::<Value>().unwrap()["log_position"].as_u64().unwrap()
}

/// A `nats-server -js` of the test's own, on a free port, with its own store directory.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    pub store: tempfile::TempDir,
    /// More arguments for nats-server (authentication, a config file), kept for restarts.
    args: Vec<String>,
}

pub fn nats_server_bin() -> String {
    for c in [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!(
        "nats-server is not installed; `apt-get install -y nats-server` (scripts/test does this)"
    );
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// With more nats-server arguments, e.g. `--user ts --pass s3cret` or `-c auth.conf`.
    pub fn start_with(args: &[&str]) -> Nats {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut n = Nats {
            child: None,
            port,
            store,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_bin())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops nats-server as an operator would (SIGTERM: it flushes its store and closes
    /// client connections), then starts it again on the same port and store.
    pub fn restart_graceful(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends unique signals from several threads until `s` is killed with -9 after `run_for`,
/// restarts it, re-sends every signal whose answer was lost, and checks that the log holds
/// each signal that got a 202 exactly once. Returns (acked before the kill, retried).
pub fn kill9_under_load(s: &mut Server, run_for: Duration) -> (usize, usize) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let key = s.new_key();
    let url = s.url(&format!("/api/signal-staging/webhook/{key}"));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let lost = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (url, acked, lost, stop) = (url.clone(), acked.clone(), lost.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let nonce = t * 1_000_000_000 + i;
                    i += 1;
                    let body =
                        format!(r#"{{"event":"load","email":"u{nonce}@x.io","nonce":{nonce}}}"#);
                    match c
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                    {
                        Ok(r) if r.status() == 202 => acked.lock().unwrap().push(nonce),
                        _ => {
                            lost.lock().unwrap().push(nonce);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    s.kill9();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    s.restart();
    let key_url = s.url(&format!("/api/signal-staging/webhook/{key}"));
    let lost = lost.lock().unwrap().clone();
    for &nonce in &lost {
        let body = format!(r#"{{"event":"load","email":"u{nonce}@x.io","nonce":{nonce}}}"#);
        let r = client()
            .post(&key_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "a retry after restart is accepted");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    let dump = s.dump();
    let mut counts = std::collections::HashMap::<u64, usize>::new();
    for sig in signals(&dump) {
        if let Some(n) = sig["payload"]["nonce"].as_u64() {
            *counts.entry(n).or_default() += 1;
        }
    }
    for n in acked.iter().chain(lost.iter()) {
        assert_eq!(
            counts.get(n).copied().unwrap_or(0),
            1,
            "signal {n} must be in the log exactly once"
        );
    }
    (acked.len(), lost.len())
}

/// The value of the sample `series` (name and labels exactly as exposed) in a `/metrics`
/// scrape `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes `s`'s `/metrics` and answers a function reading one series (which must be there).
pub fn scrape(s: &Server) -> impl Fn(&str) -> f64 {
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    move |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// `POST /api/sql` as `token`, with an `Accept` header if given.
pub fn sql_as(
    s: &Server,
    token: &str,
    sql: &str,
    accept: Option<&str>,
) -> reqwest::blocking::Response {
    let mut rb = client()
        .post(s.url("/api/sql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "sql": sql }));
    if let Some(a) = accept {
        rb = rb.header("accept", a);
    }
    rb.send().unwrap()
}

/// A JSON SQL answer that must succeed.
pub fn sql_ok(s: &Server, token: &str, sql: &str) -> Value {
    let r = sql_as(s, token, sql, None);
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert_eq!(status, 200, "{sql}: {body}");
    body
}
