//! The backfill source: historical events read from files, to be imported through the same
//! parsing, normalization and log as live ingestion.
//!
//! Files are NDJSON (one event per line) or a JSON array (`[...]`, also `{"batch": [...]}`),
//! plain or gzip (by magic bytes): the generic webhook shape, Segment exports and RudderStack
//! exports all arrive as one JSON object per event. They are read as streams, never whole.
//!
//! Parquet files in the archive's layout are replayed: each row's raw payload is read again,
//! with its original receipt time and source (see [`Item::archived`]). A directory is searched
//! for `*.parquet` files; a URL (`s3://bucket/prefix`, `file:///…`) names one object or every
//! object under a prefix, each streamed to a temporary file first.
//!
//! This module only reads: [`Reader`] hands out chunks of [`Item`]s, and the caller decides
//! where they go (a running server's bulk endpoint, or a stopped server's log).

mod inputs;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use self::inputs::{resolve, Input};
use crate::parse::{Framing, Piece, Splitter};

/// Why a backfill could not read its input.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("{file}: not a Parquet file: {source}")]
    Parquet {
        file: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{file}: not an archive file of trailspark: {source}")]
    NotArchive {
        file: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// One event read from a file.
pub struct Item {
    /// The file's name, for rejects.
    pub file: Arc<str>,
    /// The line (or, in Parquet, the 1-based row).
    pub line: u64,
    pub bytes: Vec<u8>,
    /// From an archive row: its receipt time and resolved source, which an import into a
    /// stopped server's log keeps (so the records are the ones the archive came from).
    pub archived: Option<(i64, String)>,
}

/// Counts the compressed bytes read, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The file being read.
enum Current {
    Lines {
        input: Input,
        reader: Box<dyn BufRead>,
        splitter: Splitter,
        framing: Framing,
        pieces: VecDeque<Piece>,
        done: bool,
    },
    Parquet {
        input: Input,
        batches: ParquetRecordBatchReader,
        size: u64,
        row: u64,
        rows: VecDeque<Item>,
    },
}

/// Reads the items of every input, in order, a chunk at a time.
pub struct Reader {
    inputs: VecDeque<Input>,
    current: Option<Current>,
    read: Arc<AtomicU64>,
    total: u64,
}

/// Most bytes one event may have in a file (larger ones are refused by the parser).
const MAX_ITEM: usize = 1 << 20;
/// Rows decoded at a time from a Parquet file.
const PARQUET_BATCH: usize = 5_000;

impl Reader {
    /// Resolves `args` (files, directories, URLs) into the inputs to read.
    pub async fn open(args: &[PathBuf]) -> Result<Reader, BackfillError> {
        let inputs = resolve(args).await?;
        let total = inputs
            .iter()
            .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(Reader {
            inputs: inputs.into(),
            current: None,
            read: Arc::new(AtomicU64::new(0)),
            total,
        })
    }

    /// Bytes of every input (compressed, as stored).
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Bytes read so far.
    pub fn read_bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Up to `max` next items; `None` once every input is read.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Item>>, BackfillError> {
        let mut out = Vec::with_capacity(max.min(PARQUET_BATCH));
        while out.len() < max {
            let Some(current) = self.current.as_mut() else {
                match self.inputs.pop_front() {
                    Some(input) => {
                        self.current = Some(self.start(input)?);
                        continue;
                    }
                    None => break,
                }
            };
            let finished = match current {
                Current::Lines {
                    input,
                    reader,
                    splitter,
                    framing,
                    pieces,
                    done,
                } => {
                    if pieces.is_empty() && !*done {
                        let mut buf = vec![0u8; 256 * 1024];
                        let n = reader.read(&mut buf).map_err(|source| BackfillError::Io {
                            what: format!("reading {}", input.name),
                            source,
                        })?;
                        let mut got = Vec::new();
                        let fed = if n == 0 {
                            *done = true;
                            std::mem::replace(splitter, Splitter::new(*framing, 0)).finish(&mut got)
                        } else {
                            splitter.feed(&buf[..n], &mut got)
                        };
                        fed.map_err(|e| BackfillError::Input(format!("{}: {e}", input.name)))?;
                        pieces.extend(got);
                    }
                    while out.len() < max {
                        let Some(Piece { line, bytes }) = pieces.pop_front() else {
                            break;
                        };
                        out.push(Item {
                            file: input.name.clone(),
                            line,
                            bytes,
                            archived: None,
                        });
                    }
                    pieces.is_empty() && *done
                }
                Current::Parquet {
                    input,
                    batches,
                    size,
                    row,
                    rows,
                } => {
                    if rows.is_empty() {
                        match batches.next() {
                            Some(batch) => {
                                let batch = batch.map_err(|e| {
                                    BackfillError::Input(format!("reading {}: {e}", input.name))
                                })?;
                                let archived = trailspark_sinks::archive::from_batch(
                                    trailspark_core::OrgId(0),
                                    &batch,
                                )
                                .map_err(|source| BackfillError::NotArchive {
                                    file: input.name.to_string(),
                                    source,
                                })?;
                                for r in archived {
                                    *row += 1;
                                    rows.push_back(Item {
                                        file: input.name.clone(),
                                        line: *row,
                                        bytes: r.record.payload.as_bytes().to_vec(),
                                        archived: Some((
                                            r.record.received_at,
                                            r.record.source.clone(),
                                        )),
                                    });
                                }
                            }
                            None => {
                                self.read.fetch_add(*size, Ordering::Relaxed);
                                self.current = None;
                                continue;
                            }
                        }
                    }
                    while out.len() < max {
                        let Some(item) = rows.pop_front() else { break };
                        out.push(item);
                    }
                    false
                }
            };
            if finished {
                self.current = None;
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Opens an input for reading.
    fn start(&self, input: Input) -> Result<Current, BackfillError> {
        let file = File::open(&input.path).map_err(|source| BackfillError::Io {
            what: format!("opening {}", input.name),
            source,
        })?;
        if input.parquet {
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let parquet = |source| BackfillError::Parquet {
                file: input.name.to_string(),
                source,
            };
            let batches = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(parquet)?
                .with_batch_size(PARQUET_BATCH)
                .build()
                .map_err(parquet)?;
            return Ok(Current::Parquet {
                input,
                batches,
                size,
                row: 0,
                rows: VecDeque::new(),
            });
        }
        let io = |source| BackfillError::Io {
            what: format!("reading {}", input.name),
            source,
        };
        let mut r = BufReader::new(Counting {
            inner: file,
            read: self.read.clone(),
        });
        let gz = r.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let mut reader: Box<dyn BufRead> = if gz {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(r)))
        } else {
            Box::new(r)
        };
        let first = reader
            .fill_buf()
            .map_err(io)?
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .copied();
        let framing = if first == Some(b'[') {
            Framing::Json
        } else {
            Framing::Lines
        };
        Ok(Current::Lines {
            input,
            reader,
            splitter: Splitter::new(framing, MAX_ITEM),
            framing,
            pieces: VecDeque::new(),
            done: false,
        })
    }
}
