//! `trailspark serve`: builds the server from its configuration and runs it until SIGTERM
//! or Ctrl-C.

use anyhow::Context;
use trailspark::config::ServeConfig;
use trailspark::control::NewKey;
use trailspark::topology;
use trailspark_core::tenancy::EndpointType;

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    if cfg.http.metrics_listen.is_some() && !cfg.http.metrics {
        anyhow::bail!("--metrics-listen needs metrics on (--metrics true)");
    }
    let server = topology::build(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let metrics = match cfg.http.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding {at} (--metrics-listen)"))?;
            Some(l)
        }
        None => None,
    };
    let control = server.api.control.clone();
    let first_start = server.first_start;
    let admin_token = cfg.admin_token.clone();
    if first_start {
        let (org, owner) = control.create_org("Default").await?;
        // Without TRAILSPARK_ADMIN_TOKEN the administrator gets a token of its own, apart
        // from every org's: no org's Owner or Admin can revoke it.
        let server_token = match &admin_token {
            None => Some(control.create_server_token().await?),
            Some(_) => None,
        };
        let key = control
            .create_key(
                org.id,
                NewKey {
                    name: "Default key".into(),
                    endpoint_type: EndpointType::SignalStaging,
                    secret: false,
                    expires_at: None,
                    template: None,
                    allowed_origins: None,
                },
            )
            .await?;
        println!(
            "trailspark: first start; created organization {} (\"{}\").",
            org.id, org.name
        );
        let mut secrets = String::new();
        let mut line = |l: String| {
            secrets.push_str(&l);
            secrets.push('\n');
        };
        line(format!("  Owner token, shown once: {owner}"));
        match &server_token {
            Some(t) => line(format!(
                "  Server administrator token (creates orgs; Owner of organization 1), shown once: {t}"
            )),
            None => line("  TRAILSPARK_ADMIN_TOKEN is the server administrator's token.".into()),
        }
        line(format!(
            "  Signal Staging API key, shown once: {}",
            key.plaintext
        ));
        line("  Send a test signal:".into());
        line(format!(
            "    curl -X POST http://{addr}/api/signal-staging/webhook/{} -H 'Content-Type: application/json' \
             -d '{{\"email\":\"test@example.com\",\"event\":\"test\"}}'",
            key.plaintext
        ));
        line(format!("  Manage keys with: curl -H 'Authorization: Bearer <owner token>' http://{addr}/api/admin/keys"));
        // The README's examples use these names; one line to paste into a shell.
        let admin = server_token
            .as_ref()
            .map(|t| format!(" ADMIN={t}"))
            .unwrap_or_else(|| " ADMIN=\"$TRAILSPARK_ADMIN_TOKEN\"".into());
        line("  For the README's examples:".into());
        line(format!(
            "    export HOST={addr} T={owner} KEY={}{admin}",
            key.plaintext
        ));
        show_secrets(&secrets, &cfg.log.data_dir)?;
    }
    println!("trailspark: listening on http://{addr}");
    if let Some(m) = &metrics {
        println!("trailspark: metrics on http://{}/metrics", m.local_addr()?);
    }
    tracing::info!(%addr, log = server.api.log.kind(), "Serving.");
    server.run(listener, metrics, shutdown_signal()).await;
    Ok(())
}

/// The name, in the data directory, of the file that holds the first start's secrets when
/// standard output is not a terminal.
const CREDENTIALS_FILE: &str = "first-start-credentials.txt";

/// Prints the first start's tokens and key on a terminal. Anywhere else (a journal, a log
/// file, a container's captured output) they would be kept in clear text by whatever reads
/// stdout, so they go to a file only the server's user can read, and only its path is printed.
fn show_secrets(secrets: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if std::io::stdout().is_terminal() {
        print!("{secrets}");
        return Ok(());
    }
    let path = data_dir.join(CREDENTIALS_FILE);
    // A file left there by someone else could have any mode: start from none.
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secrets.as_bytes())?;
    f.sync_all()?;
    println!(
        "  The Owner token, the administrator token and the API key are in {} (mode 0600), \
         not printed: standard output is not a terminal. Save them elsewhere, then delete the file.",
        path.display()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("Shutting down.");
}
