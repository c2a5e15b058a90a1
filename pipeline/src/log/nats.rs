//! Connecting to NATS, with credentials and TLS: one client serves the log, the NATS source
//! and the change events.

use std::path::PathBuf;
use std::time::Duration;

/// Why a connection to NATS could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the NATS credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a NATS client certificate needs both --nats-tls-cert and --nats-tls-key")]
    HalfCertificate,
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// How to authenticate to NATS and whether to use TLS. Every field is optional; several may
/// be combined as the server requires (e.g. a creds file and a client certificate).
#[derive(Clone, Debug, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// An nkey seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// A `.creds` file (user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// Root certificate(s) to trust, PEM.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key, PEM, for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub require_tls: bool,
}

/// Connects to NATS. Reconnects forever after a lost connection, with the client's
/// exponential backoff (up to a few seconds between attempts); meanwhile appends to the log
/// fail fast (the edge answers 503) and the consumers and the event publisher wait.
pub async fn connect(url: &str, auth: &NatsAuth) -> Result<async_nats::Client, ConnectError> {
    let mut opts = match &auth.creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(user) = &auth.user {
        opts = opts.user_and_password(user.clone(), auth.password.clone().unwrap_or_default());
    }
    if let Some(token) = &auth.token {
        opts = opts.token(token.clone());
    }
    if let Some(seed) = &auth.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    if let Some(ca) = &auth.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    match (&auth.tls_cert, &auth.tls_key) {
        (Some(cert), Some(key)) => opts = opts.add_client_certificate(cert.clone(), key.clone()),
        (None, None) => {}
        _ => return Err(ConnectError::HalfCertificate),
    }
    if auth.require_tls {
        opts = opts.require_tls(true);
    }
    opts.name("trailspark")
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("Lost the connection to NATS; reconnecting.")
                }
                async_nats::Event::Connected => tracing::info!("Connected to NATS."),
                other => tracing::debug!(event = %other, "NATS event."),
            }
        })
        .connect(url)
        .await
        .map_err(|source| ConnectError::Connect {
            url: url.to_string(),
            source,
        })
}
