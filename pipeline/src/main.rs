//! `trailspark`: the server and its command-line tools.

/// jemalloc instead of the system allocator: the dataflow allocates and frees an epoch's
/// batches from several threads, and glibc's per-thread arenas keep much of that freed memory
/// resident (see bench/RESULTS.md, "allocator"). The `jemalloc` feature is on by default.
#[cfg(all(unix, not(target_env = "musl"), feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them). By default jemalloc returns freed pages to the system only from inside
/// later allocation calls, ten seconds after they were freed; the dataflow frees whole
/// merged batches at a time, so the peak held their dead pages as well as the live ones. A
/// background thread purging dirty pages after 1 s took the replay's peak resident memory of
/// signalmark's 1M data directory from 2.90 to 2.61 GB (0.90×) at the same replay time; after
/// 0 s it went to 2.28 GB, but the replay was 1.3× slower (bench/RESULTS.md, "Read models'
/// processed records and jemalloc purging").
#[cfg(all(unix, not(target_env = "musl"), feature = "jemalloc"))]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

mod cli;

/// Logs go to stderr, filtered by `TRAILSPARK_LOG` (default `info`): as text, coloured only
/// when stderr is a terminal (a file or a pipe gets no escape codes), or as one JSON object
/// per line with the request's span fields (`request_id`, `org`) on each (`json_log`).
///
/// Lines are formatted where they are logged and written by a thread of their own, in bursts
/// through a buffer, so a request never waits on stderr's `write` (bench/RESULTS.md,
/// "Observability"). Nothing is dropped: past 128,000 lines waiting, loggers wait. The
/// returned guard writes what is left when it is dropped.
pub fn init_tracing(format: cli::LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRAILSPARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The writer thread takes every line waiting, then flushes: through a buffer, that is
        // one `write` for a burst of lines instead of one per line.
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        cli::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::LogFormat::Json => builder
            .fmt_fields(trailspark::json_log::JsonPairs)
            .event_format(trailspark::json_log::JsonLine)
            .init(),
    }
    guard
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::run().await
}
