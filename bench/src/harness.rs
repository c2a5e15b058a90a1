//! Running the real processes a load harness measures: free ports, a `nats-server -js` of
//! its own, and `trailspark serve` with its address and first-start key read from stdout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 20 s for something to listen on `port`.
pub fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The installed nats-server, if any.
pub fn nats_server_bin() -> Option<&'static str> {
    ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Starts `nats-server -js` on a free port with its store in `store`; answers the child and
/// its URL.
pub fn start_nats(store: &Path) -> anyhow::Result<(Child, String)> {
    let bin = nats_server_bin().context("nats-server is not installed")?;
    let port = free_port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_port(port)?;
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

/// The trailspark binary: `explicit` when given, else the one built next to the running
/// benchmark (same target directory and profile).
pub fn trailspark_bin(explicit: Option<&Path>) -> anyhow::Result<std::path::PathBuf> {
    let ts = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("trailspark"),
    };
    if !ts.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p trailspark`",
            ts.display()
        );
    }
    Ok(ts)
}

/// A running `trailspark serve`: its process, base URL, and (on a first start) the Owner
/// token of org 1 and its Signal Staging key, both printed once.
pub struct Server {
    pub child: ServerProcess,
    pub base: String,
    pub key: Option<String>,
    pub owner: Option<String>,
}

/// A server process that never outlives its harness: a run that stops on an error would
/// otherwise leave it running, holding its memory while the next run starts (a failed 10M
/// signalmark left its 11 GB server behind, and the next run's DuckDB baseline was killed for
/// memory).
pub struct ServerProcess(Option<Child>);

impl ServerProcess {
    /// The process, no longer killed on drop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("present until taken")
    }
}

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("present until taken")
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("present until taken")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `trailspark serve` (on `nats` when given, with extra environment `env`) and reads
/// its address and first-start key from stdout.
pub fn start_trailspark(
    bin: &Path,
    dir: &Path,
    nats: Option<&str>,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String, String)> {
    let s = start_server(bin, dir, nats, env, &[])?;
    let key = s.key.context("no first-start key")?;
    Ok((s.child.into_inner(), s.base, key))
}

/// Starts `trailspark serve` with extra arguments `args`; see [`Server`].
pub fn start_server(
    bin: &Path,
    dir: &Path,
    nats: Option<&str>,
    env: &[(&str, &str)],
    args: &[&str],
) -> anyhow::Result<Server> {
    start_server_logged(bin, dir, nats, env, args, None)
}

/// [`start_server`] with the server's log (its stderr) written to `log` instead of this
/// process's stderr.
pub fn start_server_logged(
    bin: &Path,
    dir: &Path,
    nats: Option<&str>,
    env: &[(&str, &str)],
    args: &[&str],
    log: Option<&Path>,
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    if let Some(log) = log {
        cmd.stderr(std::fs::File::create(log)?);
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("TRAILSPARK_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    if let Some(url) = nats {
        cmd.args(["--nats", url]);
    }
    let mut child = cmd.spawn()?;
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut key, mut owner, mut base) = (None, None, None);
    let mut lines = out.lines();
    while base.is_none() {
        let line = lines.next().context("trailspark exited early")??;
        // Stdout is a pipe, so the first start's secrets are in a 0600 file it names.
        let mut found = vec![line];
        if let Some(path) = found[0].split(" are in ").nth(1) {
            let path = path.split(" (mode 0600)").next().unwrap_or_default();
            let text = std::fs::read_to_string(path).context("reading the credentials file")?;
            found.extend(text.lines().map(str::to_string));
        }
        for line in found {
            if let Some(k) = line.split("API key, shown once: ").nth(1) {
                key = Some(k.trim().to_string());
            }
            if let Some(k) = line.split("Owner token").nth(1) {
                owner = k.split("shown once: ").nth(1).map(|t| t.trim().to_string());
            }
            if let Some(a) = line.split("listening on ").nth(1) {
                base = Some(a.trim().to_string());
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child: ServerProcess(Some(child)),
        base: base.unwrap(),
        key,
        owner,
    })
}
