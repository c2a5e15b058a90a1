//! NATS beyond the log: connecting with credentials, the producer-facing source (signals
//! published straight to NATS, DESIGN.md "Sources") and the change-event sink for downstream
//! consumers. The log itself on JetStream is `crate::log::jetstream`.

pub mod events;
pub mod source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use serde_json::{json, Value};

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
pub async fn connect(url: &str, auth: &NatsAuth) -> anyhow::Result<async_nats::Client> {
    let mut opts = match &auth.creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .with_context(|| format!("reading the NATS credentials file {}", path.display()))?,
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
        _ => {
            anyhow::bail!("a NATS client certificate needs both --nats-tls-cert and --nats-tls-key")
        }
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
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// What the health endpoint reports about NATS.
#[derive(Default)]
pub struct NatsStatus {
    pub client: Mutex<Option<async_nats::Client>>,
    /// The source's durable consumer, once created.
    pub consumer: Mutex<Option<PullConsumer>>,
    /// Change events derived but not yet acknowledged by JetStream.
    pub events_backlog: AtomicU64,
    /// Change events published (acknowledged) by this process.
    pub events_published: AtomicU64,
    /// Producer messages the source accepted / sent to the dead-letter subject.
    pub source_accepted: AtomicU64,
    pub source_dead_lettered: AtomicU64,
}

impl NatsStatus {
    /// The `nats` object of `/healthz`: connectivity, the consumer's lag, the event backlog.
    pub async fn health(&self) -> Value {
        let client = self.client.lock().unwrap().clone();
        let state = client.as_ref().map(|c| c.connection_state());
        let connected = state == Some(async_nats::connection::State::Connected);
        let consumer = self.consumer.lock().unwrap().clone();
        let mut lag = Value::Null;
        if let (true, Some(mut c)) = (connected, consumer) {
            if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), c.info()).await {
                lag = json!({
                    "name": info.name,
                    "pending": info.num_pending,
                    "ack_pending": info.num_ack_pending,
                    "redelivered": info.num_redelivered,
                    "delivered_stream_seq": info.delivered.stream_sequence,
                    "ack_floor_stream_seq": info.ack_floor.stream_sequence,
                });
            }
        }
        json!({
            "connected": connected,
            "state": state.map(|s| s.to_string()),
            "source_consumer": lag,
            "source_accepted": self.source_accepted.load(Ordering::Relaxed),
            "source_dead_lettered": self.source_dead_lettered.load(Ordering::Relaxed),
            "events_backlog": self.events_backlog.load(Ordering::Relaxed),
            "events_published": self.events_published.load(Ordering::Relaxed),
        })
    }
}

/// The value of header `name` (compared case-insensitively: HTTP-minded producers lowercase).
pub fn header<'a>(headers: Option<&'a async_nats::HeaderMap>, name: &str) -> Option<&'a str> {
    let h = headers?;
    if let Some(v) = h.get(name) {
        return Some(v.as_str());
    }
    h.iter()
        .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str())
}
