//! Accepting HTTP connections within bounds: how many are open, how long a client may take
//! to send its headers (or to send the next request on a kept-alive connection), and how
//! long a body may stall.
//!
//! Without these, 1,100 idle sockets used up the process's file descriptors: the journal
//! then could not open its next segment, and ingestion was refused until a restart. Now a
//! connection over the cap is answered 503 at once and closed, an idle one is closed after
//! the header timeout, and the cap is kept below the descriptor limit so that the log and
//! the archive always have descriptors left.
//!
//! A client may half-close its side after sending a complete request (some HTTP/1.0
//! clients and `curl --no-keepalive` scripts do); it still gets its answer.

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// What serves the requests: warp's filters as a tower service, cloned per connection.
pub trait HttpService:
    tower_service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = warp::reply::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Bounds on the HTTP connections.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a kept-alive
    /// connection may wait idle for its next request.
    pub header_timeout: Duration,
    /// Longest pause within a request body.
    pub body_idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Descriptors kept for everything but client connections: journal segments, archive
/// files, NATS, DataFusion's file reads.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard limit (as a service would get from
/// `LimitNOFILE`) and answers how many connections fit below it.
pub fn connection_budget(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct passed; a failure leaves
        // the limit as it was.
        let soft = unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return wanted;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur
        };
        let fit = soft.saturating_sub(RESERVED_FDS).max(16);
        if (wanted as u64) > fit {
            tracing::warn!(
                wanted,
                open_files_limit = soft,
                max_connections = fit,
                "Lowered the connection cap to fit the open-files limit."
            );
            return fit as usize;
        }
        wanted
    }
    #[cfg(not(unix))]
    wanted
}

/// The answer to a connection over the cap. Sent without reading the request.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 106\r\n\r\n\
{\"error\":\"overloaded\",\"code\":\"overloaded\",\"message\":\"the server has too many open connections; retry\"}";

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(OVER_CAP).await?;
        stream.shutdown().await
    })
    .await;
}

/// Accept errors that mean "out of a resource": wait a little instead of spinning.
fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops accepting and lets
/// open connections finish (within [`DRAIN_TIMEOUT`]): a request in flight or already sent
/// is answered, and a connection the kernel queued before the stop is taken and answered once.
pub async fn serve<S>(
    listener: TcpListener,
    limits: HttpLimits,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: HttpService,
{
    let cap = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(cap));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_resource_log = None::<tokio::time::Instant>;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if is_resource_error(&e) => {
                let now = tokio::time::Instant::now();
                if last_resource_log.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    tracing::error!(error = %e, "Cannot accept connections: out of resources.");
                    last_resource_log = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => continue,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (service, stop) = (service.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_until_stopped(stream, limits, service, stop).await;
        });
    }
    let mut late = take_queued_and_close(listener, &limits, &service);
    let _ = stop_tx.send(true);
    let drained = async {
        // Every serving connection holds a permit until it ends.
        let _ = permits.acquire_many(cap as u32).await;
        while late.join_next().await.is_some() {}
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "Closed the connections still open at shutdown after waiting for them."
        );
    }
}

/// Takes every connection the kernel has completed on `listener`, then closes it, with no
/// await in between: a connection still queued when the socket closes is reset by the kernel
/// with its request unanswered, so the gap between the last `accept` that found the queue
/// empty and the close is kept to two system calls.
///
/// Tokio's `accept` answers from the readiness its reactor last saw, which can lag the
/// kernel's queue by a reactor turn; the blocking socket's own `accept` asks the kernel.
fn take_queued_and_close<S>(listener: TcpListener, limits: &HttpLimits, service: &S) -> JoinSet<()>
where
    S: HttpService,
{
    let mut late = JoinSet::new();
    let Ok(listener) = listener.into_std() else {
        return late;
    };
    let mut queued = Vec::new();
    loop {
        match listener.accept() {
            Ok((s, _)) => queued.push(s),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) => {}
            Err(_) => break,
        }
    }
    drop(listener);
    for s in queued {
        let Some(s) = s
            .set_nonblocking(true)
            .ok()
            .and_then(|()| TcpStream::from_std(s).ok())
        else {
            continue;
        };
        let conn = connection(s, limits, service, false);
        late.spawn(async move {
            let _ = conn.await;
        });
    }
    late
}

/// Serves one connection until it ends or the server stops. On the stop, a connection that
/// has not begun a request is given [`SETTLE`] to begin one (its request may be in the socket,
/// unread: closing would reset it unanswered); then the connection finishes the request in
/// flight, if any, and closes.
async fn serve_until_stopped<S>(
    stream: TcpStream,
    limits: HttpLimits,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    S: HttpService,
{
    let begun = Arc::new(AtomicBool::new(false));
    let service = Marking {
        inner: service,
        begun: begun.clone(),
    };
    let mut conn = std::pin::pin!(connection(stream, &limits, &service, true));
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    if !begun.load(Ordering::Acquire) {
        // Polling the connection reads what the client has sent; the request begins (and the
        // service is called) as soon as its headers are in.
        let settle = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(true),
            Poll::Pending if begun.load(Ordering::Acquire) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        });
        if let Ok(true) = tokio::time::timeout(SETTLE, settle).await {
            return;
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A service that notes when its connection begins its first request.
#[derive(Clone)]
struct Marking<S> {
    inner: S,
    begun: Arc<AtomicBool>,
}

impl<S, R> tower_service::Service<R> for Marking<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.begun.store(true, Ordering::Release);
        self.inner.call(req)
    }
}

/// One HTTP/1 connection serving `service` within `limits`; `serving` is false for one
/// accepted while stopping, which answers a single request (no keep-alive).
fn connection<S>(
    stream: TcpStream,
    limits: &HttpLimits,
    service: &S,
    serving: bool,
) -> hyper::server::conn::http1::Connection<
    TokioIo<TcpStream>,
    hyper_util::service::TowerToHyperService<S>,
>
where
    S: HttpService,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .half_close(serving)
        .keep_alive(serving);
    http.serve_connection(
        TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(service.clone()),
    )
}

/// How long a connection that has not begun a request when the server stops gets to begin one.
const SETTLE: Duration = Duration::from_millis(250);

/// How long a shutdown waits for requests in flight (a slow upload, a long SQL query) before
/// closing their connections; systemd's default stop timeout is 90 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
