//! Backfill throughput: events/s imported by `trailspark backfill` into a data
//! directory, from NDJSON and from Parquet files in the archive's layout.
//!
//! Baseline, in the same run: reading the same input with nothing else done, i.e. splitting
//! the NDJSON into lines and parsing each with serde_json, and decoding the Parquet files'
//! rows. The ratio says what normalization, hashing, the dedup index and the journal (with
//! its fsyncs) cost on top of reading.
//!
//! `backfill-bench --events 1000000`

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use trailspark::backfill::{offline_target, Backfill};
use trailspark::control::{Control, NewKey};
use trailspark::log::open::{open, open_for_append, read_all, LogLocation};
use trailspark::log::Followers;
use trailspark_core::tenancy::EndpointType;
use trailspark_core::tenancy::SharedRegistry;
use trailspark_core::LogEntry;
use trailspark_sinks::archive::{encode, ArchiveRow, Processing};

#[derive(Parser)]
struct Opts {
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
}

/// Generic, Segment and RudderStack shapes with event timestamps, ~5% retries.
fn write_ndjson(path: &Path, n: usize) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = if x.is_multiple_of(20) {
            i.saturating_sub(1)
        } else {
            i
        };
        let ts = format!("2026-0{}-1{}T10:00:00Z", 1 + x % 9, x % 10);
        let v: Value = match x % 3 {
            0 => json!({"email": format!("u{}@x.io", id % 50_000), "event": "form_submit",
                        "timestamp": ts, "properties": {"form": format!("f{}", id % 7), "n": id}}),
            1 => {
                json!({"type": "track", "event": "Pricing Viewed", "anonymousId": format!("a{}", id % 80_000),
                        "messageId": format!("m{id}"), "timestamp": ts, "properties": {"plan": "pro"}})
            }
            _ => {
                json!({"type": "identify", "userId": format!("user{}", id % 30_000), "anonymousId": format!("a{}", id % 80_000),
                        "messageId": format!("r{id}"), "originalTimestamp": ts, "traits": {"email": format!("u{}@x.io", id % 50_000)}})
            }
        };
        serde_json::to_writer(&mut w, &v)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// A data directory with org 1 and a Signal Staging key; returns the key.
async fn fresh(dir: &Path) -> anyhow::Result<String> {
    let loc = LogLocation {
        data_dir: dir.to_path_buf(),
        create: true,
        ..Default::default()
    };
    let registry = SharedRegistry::default();
    let opened = open(&loc, &registry, Followers::default(), None).await?;
    let control = Control::new(registry, opened.log.clone(), None);
    let (org, _) = control.create_org("Bench").await?;
    let key = control
        .create_key(
            org.id,
            NewKey {
                name: "bench".into(),
                endpoint_type: EndpointType::SignalStaging,
                secret: false,
                expires_at: None,
                template: None,
                allowed_origins: None,
            },
        )
        .await?;
    Ok(key.plaintext)
}

async fn import(dir: &Path, key: &str, files: Vec<PathBuf>) -> anyhow::Result<(u64, Duration)> {
    let loc = LogLocation {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let t = Instant::now();
    let registry = SharedRegistry::default();
    let opened = open_for_append(&loc, &registry).await?;
    let target = offline_target(opened.log.clone(), &registry.read().unwrap(), key)?;
    let s = Backfill {
        key: key.to_string(),
        target,
        files,
        rejects: None,
        progress: false,
    }
    .run()
    .await?;
    Ok((s.accepted + s.duplicates, t.elapsed()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let tmp = tempfile::tempdir()?;
    let ndjson = tmp.path().join("events.ndjson");
    write_ndjson(&ndjson, o.events)?;

    // Baseline: read and parse the NDJSON.
    let t = Instant::now();
    let mut parsed = 0usize;
    for line in std::io::BufReader::new(std::fs::File::open(&ndjson)?).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        parsed += v.is_object() as usize;
    }
    let parse_ndjson = t.elapsed();

    // NDJSON import.
    let a = tmp.path().join("a");
    let key_a = fresh(&a).await?;
    let (n_a, t_a) = import(&a, &key_a, vec![ndjson.clone()]).await?;

    // Parquet files in the archive layout, made from what the NDJSON import logged.
    let pq = tmp.path().join("archive/signals/org_id=1/date=2026-01-01");
    std::fs::create_dir_all(&pq)?;
    let mut rows = Vec::new();
    read_all(
        &LogLocation {
            data_dir: a.clone(),
            ..Default::default()
        },
        &mut |pos, e| {
            if let LogEntry::Signal(s) = e {
                rows.push(ArchiveRow {
                    id: pos,
                    record: Arc::new(s),
                    processing: Processing::default(),
                });
            }
            Ok(())
        },
    )
    .await?;
    for chunk in rows.chunks(250_000) {
        let name = format!(
            "part-{:020}-{:020}.parquet",
            chunk[0].id,
            chunk[chunk.len() - 1].id
        );
        std::fs::write(pq.join(name), encode(chunk)?)?;
    }
    let archive_rows = rows.len();
    drop(rows);

    // Baseline: decode the Parquet rows.
    let t = Instant::now();
    let mut decoded = 0usize;
    for e in std::fs::read_dir(&pq)? {
        let f = std::fs::File::open(e?.path())?;
        for b in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)?
            .with_batch_size(5_000)
            .build()?
        {
            decoded += trailspark_sinks::archive::from_batch(trailspark_core::OrgId(1), &b?)?.len();
        }
    }
    let decode_parquet = t.elapsed();

    // Parquet replay into a new data directory.
    let b = tmp.path().join("b");
    let key_b = fresh(&b).await?;
    let (n_b, t_b) = import(&b, &key_b, vec![tmp.path().join("archive")]).await?;
    anyhow::ensure!(n_b as usize == archive_rows && decoded == archive_rows);

    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    println!("| input | events | backfill events/s | baseline (read only) events/s | backfill / baseline |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| NDJSON ({} events, ~5% retries) | {n_a} | {:.0} | {:.0} (parse lines) | {:.2} |",
        o.events,
        rate(n_a as usize, t_a),
        rate(parsed, parse_ndjson),
        rate(n_a as usize, t_a) / rate(parsed, parse_ndjson)
    );
    println!(
        "| Parquet archive ({archive_rows} rows) | {n_b} | {:.0} | {:.0} (decode rows) | {:.2} |",
        rate(n_b as usize, t_b),
        rate(decoded, decode_parquet),
        rate(n_b as usize, t_b) / rate(decoded, decode_parquet)
    );
    Ok(())
}
