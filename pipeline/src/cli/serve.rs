//! `trailspark serve`: builds the server from its configuration and runs it until SIGTERM
//! or Ctrl-C.

use anyhow::Context;
use trailspark::config::ServeConfig;
use trailspark::control::NewKey;
use trailspark::topology;
use trailspark_core::tenancy::EndpointType;

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let server = topology::build(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
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
        println!("  Owner token, shown once: {owner}");
        match &server_token {
            Some(t) => println!(
                "  Server administrator token (creates orgs; Owner of organization 1), shown once: {t}"
            ),
            None => println!("  TRAILSPARK_ADMIN_TOKEN is the server administrator's token."),
        }
        println!("  Signal Staging API key, shown once: {}", key.plaintext);
        println!("  Send a test signal:");
        println!(
            "    curl -X POST http://{addr}/api/signal-staging/webhook/{} -H 'Content-Type: application/json' \
             -d '{{\"email\":\"test@example.com\",\"event\":\"test\"}}'",
            key.plaintext
        );
        println!("  Manage keys with: curl -H 'Authorization: Bearer <owner token>' http://{addr}/api/admin/keys");
        // The README's examples use these names; one line to paste into a shell.
        let admin = server_token
            .as_ref()
            .map(|t| format!(" ADMIN={t}"))
            .unwrap_or_else(|| " ADMIN=\"$TRAILSPARK_ADMIN_TOKEN\"".into());
        println!("  For the README's examples:");
        println!(
            "    export HOST={addr} T={owner} KEY={}{admin}",
            key.plaintext
        );
    }
    println!("trailspark: listening on http://{addr}");
    tracing::info!(%addr, log = server.api.log.kind(), "Serving.");
    server.run(listener, shutdown_signal()).await;
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
