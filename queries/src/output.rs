//! Result encodings: JSON (`{"columns": [...], "rows": [[...]]}`), CSV, Arrow IPC stream and
//! Parquet, chosen by the request's `Accept` header.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use crate::QueryOutput;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    ArrowStream,
    Parquet,
}

impl Format {
    /// The first format the `Accept` header names; JSON when it names none we produce.
    pub fn from_accept(accept: Option<&str>) -> Format {
        for part in accept.unwrap_or("").split(',') {
            let mime = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match mime.as_str() {
                "application/json" => return Format::Json,
                "text/csv" => return Format::Csv,
                "application/vnd.apache.arrow.stream" => return Format::ArrowStream,
                "application/vnd.apache.parquet"
                | "application/parquet"
                | "application/x-parquet" => return Format::Parquet,
                _ => {}
            }
        }
        Format::Json
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::ArrowStream => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

fn cell(a: &dyn Array, i: usize, fmt: &ArrayFormatter) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(a.as_primitive::<$t>().value(i))
        };
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => Number::from_f64(a.as_primitive::<Float32Type>().value(i) as f64)
            .map_or(Value::Null, Value::Number),
        DataType::Float64 => Number::from_f64(a.as_primitive::<Float64Type>().value(i))
            .map_or(Value::Null, Value::Number),
        _ => Value::String(fmt.value(i).to_string()),
    }
}

/// Each row of `batches` as JSON values, one per column (numbers and booleans typed,
/// everything else as its text).
fn rows(batches: &[RecordBatch], mut row: impl FnMut(Vec<Value>)) -> Result<(), ArrowError> {
    let opts = FormatOptions::default().with_display_error(true);
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            row(b
                .columns()
                .iter()
                .zip(&fmts)
                .map(|(c, f)| cell(c.as_ref(), i, f))
                .collect());
        }
    }
    Ok(())
}

/// The JSON body: column names and rows of values (numbers and booleans typed, everything
/// else as its text).
pub fn to_json(out: &QueryOutput) -> Result<Value, ArrowError> {
    let columns: Vec<Value> = out
        .schema
        .fields()
        .iter()
        .map(|f| Value::from(f.name().as_str()))
        .collect();
    let mut values = Vec::with_capacity(out.rows);
    rows(&out.batches, |r| values.push(Value::Array(r)))?;
    let mut m = Map::new();
    m.insert("columns".into(), Value::Array(columns));
    m.insert("rows".into(), Value::Array(values));
    Ok(Value::Object(m))
}

/// Each row of `batches` as a JSON object keyed by column name, with the values as
/// [`to_json`] writes them.
pub fn to_objects(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, ArrowError> {
    let mut out = Vec::new();
    for b in batches {
        let names: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        rows(std::slice::from_ref(b), |r| {
            out.push(names.iter().cloned().zip(r).collect());
        })?;
    }
    Ok(out)
}

/// Encodes the result in `format`.
pub fn encode(out: &QueryOutput, format: Format) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    match format {
        Format::Json => {
            buf = serde_json::to_vec(&to_json(out)?)
                .map_err(|e| ArrowError::JsonError(e.to_string()))?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            if out.batches.is_empty() {
                w.write(&RecordBatch::new_empty(out.schema.clone()))?;
            }
            for b in &out.batches {
                w.write(b)?;
            }
        }
        Format::ArrowStream => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &out.schema)?;
            for b in &out.batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, out.schema.clone(), None)
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            for b in &out.batches {
                w.write(b)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            }
            w.close()
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        }
    }
    Ok(buf)
}

/// The result as a text table, for the CLI.
pub fn to_table(out: &QueryOutput) -> Result<String, ArrowError> {
    Ok(arrow::util::pretty::pretty_format_batches(&out.batches)?.to_string())
}
