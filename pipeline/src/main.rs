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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRAILSPARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    cli::run().await
}
