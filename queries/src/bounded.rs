//! String functions whose output a query could make far larger than its input, wrapped so
//! that the allocation they make is bounded.
//!
//! DataFusion's memory pool bounds what operators hold (sorts, joins, aggregates, the work
//! table of a recursive CTE), but a scalar function allocates its output array directly:
//! `repeat('x', 1000000000)` asked for a gigabyte in one call, past any pool. Each function
//! here has a worst-case output per row (`repeat`: length × count; `lpad`: the target length
//! in 4-byte characters; `replace`: one replacement per possible match). The wrapper cuts a
//! batch into slices whose worst case fits the limit, refuses a single row whose worst case
//! does not, and stops as soon as the real output has grown past the input by more than
//! the limit. A batch whose worst case already fits is evaluated in one call, unchanged.
//!
//! `levenshtein` is bounded in work instead: its cost is the product of the two lengths, and
//! one call runs to its end without yielding, so a query's timeout could not stop it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::length::length;
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// How a wrapped function's output can grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n`.
    Repeat,
    /// `lpad/rpad(s, n[, fill])`: `n` characters of up to 4 bytes (or `s` cut to them).
    Pad,
    /// `replace(s, from, to)`: a `to` for every possible match of `from`.
    Replace,
    /// `regexp_replace(s, pattern, repl[, flags])`: a `repl` at every position, each group
    /// reference in it (at most one per two bytes) expanding to at most `s`.
    RegexpReplace,
    /// `levenshtein(a, b)`: bounded in work, `len(a) × len(b)` per row.
    Levenshtein,
}

const WRAPPED: [(&str, Growth); 6] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("levenshtein", Growth::Levenshtein),
];

/// Most `levenshtein` cell updates one batch may cost (about a second of one core).
const LEVENSHTEIN_WORK: u128 = 2_000_000_000;

/// Replaces the session's amplifying string functions with bounded ones: no call may grow
/// its output past its input by more than `max_growth` bytes.
pub fn install(ctx: &SessionContext, max_growth: usize) {
    for (name, growth) in WRAPPED {
        if let Ok(inner) = ctx.udf(name) {
            let wrapped = Bounded {
                inner,
                growth,
                max_growth,
            };
            ctx.register_udf(ScalarUDF::new_from_impl(wrapped));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_growth: usize,
}

/// Per-row values of one argument: a scalar broadcast to every row, or one per row.
enum PerRow {
    Const(u64),
    Rows(Vec<u64>),
}

impl PerRow {
    fn at(&self, i: usize) -> u64 {
        match self {
            PerRow::Const(v) => *v,
            PerRow::Rows(v) => v[i],
        }
    }
}

/// Byte lengths of a string argument (null: 0).
fn lengths(v: &ColumnarValue) -> Result<PerRow> {
    let arr = match v {
        ColumnarValue::Scalar(s) if s.is_null() => return Ok(PerRow::Const(0)),
        ColumnarValue::Scalar(s) => s.to_array_of_size(1)?,
        ColumnarValue::Array(a) => a.clone(),
    };
    let lens = length(&arr)?;
    let lens = arrow::compute::cast(&lens, &DataType::Int64)?;
    let lens = lens.as_primitive::<Int64Type>();
    let vals: Vec<u64> = (0..lens.len())
        .map(|i| {
            if lens.is_null(i) {
                0
            } else {
                lens.value(i).max(0) as u64
            }
        })
        .collect();
    Ok(match v {
        ColumnarValue::Scalar(_) => PerRow::Const(vals[0]),
        ColumnarValue::Array(_) => PerRow::Rows(vals),
    })
}

/// Values of an integer argument, negative and null as 0.
fn counts(v: &ColumnarValue) -> Result<PerRow> {
    match v {
        ColumnarValue::Scalar(s) => {
            let n = match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) => n.max(0) as u64,
                _ => 0,
            };
            Ok(PerRow::Const(n))
        }
        ColumnarValue::Array(a) => {
            let a = arrow::compute::cast(a, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            Ok(PerRow::Rows(
                (0..a.len())
                    .map(|i| {
                        if a.is_null(i) {
                            0
                        } else {
                            a.value(i).max(0) as u64
                        }
                    })
                    .collect(),
            ))
        }
    }
}

fn arg(args: &[ColumnarValue], i: usize) -> Option<&ColumnarValue> {
    args.get(i)
}

impl Bounded {
    /// The worst-case output bytes (or, for levenshtein, work) of each row.
    fn worst_case(&self, args: &[ColumnarValue], rows: usize) -> Result<Vec<u128>> {
        let s = match arg(args, 0) {
            Some(a) => lengths(a)?,
            None => return Ok(vec![0; rows]),
        };
        let per_row: Box<dyn Fn(usize) -> u128> = match self.growth {
            Growth::Repeat => {
                let n = arg(args, 1).map(counts).transpose()?;
                Box::new(move |i| s.at(i) as u128 * n.as_ref().map_or(1, |n| n.at(i)) as u128)
            }
            Growth::Pad => {
                let n = arg(args, 1).map(counts).transpose()?;
                Box::new(move |i| {
                    let target = n.as_ref().map_or(0, |n| n.at(i)) as u128 * 4;
                    target.max(s.at(i) as u128)
                })
            }
            Growth::Replace => {
                let from = arg(args, 1).map(lengths).transpose()?;
                let to = arg(args, 2).map(lengths).transpose()?;
                Box::new(move |i| {
                    let len = s.at(i) as u128;
                    let from = from.as_ref().map_or(1, |f| f.at(i)).max(1) as u128;
                    let to = to.as_ref().map_or(0, |t| t.at(i)) as u128;
                    len + (len / from + 1) * to
                })
            }
            Growth::RegexpReplace => {
                let repl = arg(args, 2).map(lengths).transpose()?;
                Box::new(move |i| {
                    let len = s.at(i) as u128;
                    let repl = repl.as_ref().map_or(0, |r| r.at(i)) as u128;
                    (len + 1) * (1 + 2 * repl)
                })
            }
            Growth::Levenshtein => {
                let b = arg(args, 1).map(lengths).transpose()?;
                Box::new(move |i| s.at(i) as u128 * b.as_ref().map_or(0, |b| b.at(i)) as u128)
            }
        };
        Ok((0..rows).map(per_row).collect())
    }

    fn refuse(&self, what: String) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() {what}; a query may grow a string column by at most {} bytes per call",
            self.inner.name(),
            self.max_growth
        ))
    }

    /// Evaluates `args` for rows `[from, from + len)` of the batch.
    fn invoke_slice(&self, args: &ScalarFunctionArgs, from: usize, len: usize) -> Result<ArrayRef> {
        let sliced = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Array(arr) => ColumnarValue::Array(arr.slice(from, len)),
                s => s.clone(),
            })
            .collect();
        let out = self.inner.invoke_with_args(ScalarFunctionArgs {
            args: sliced,
            arg_fields: args.arg_fields.clone(),
            number_rows: len,
            return_field: args.return_field.clone(),
            config_options: args.config_options.clone(),
        })?;
        out.into_array(len)
    }
}

fn output_bytes(a: &dyn Array) -> u128 {
    a.to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| a.get_array_memory_size()) as u128
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let worst = self.worst_case(&args.args, rows)?;
        let total: u128 = worst.iter().sum();
        let limit = self.max_growth as u128;
        if self.growth == Growth::Levenshtein {
            if total > LEVENSHTEIN_WORK {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "levenshtein() over these strings would take {total} steps for one batch; \
                     the limit is {LEVENSHTEIN_WORK}"
                )));
            }
            return self.inner.invoke_with_args(args);
        }
        let input = match arg(&args.args, 0) {
            Some(a) => {
                let l = lengths(a)?;
                (0..rows).map(|i| l.at(i) as u128).sum::<u128>()
            }
            None => 0,
        };
        if total <= input + limit {
            return self.inner.invoke_with_args(args);
        }
        if let Some(big) = worst.iter().find(|w| **w > input + limit) {
            return Err(self.refuse(format!("could produce {big} bytes for a single row")));
        }
        if all_scalar {
            return self.inner.invoke_with_args(args);
        }
        // Slices whose worst case fits; the real output may stay far smaller, so go on while
        // the growth so far is within the limit.
        let mut parts: Vec<ArrayRef> = Vec::new();
        let (mut produced, mut start, mut acc) = (0u128, 0usize, 0u128);
        for (i, w) in worst.iter().enumerate() {
            if acc + w > limit && i > start {
                let part = self.invoke_slice(&args, start, i - start)?;
                produced += output_bytes(&part);
                parts.push(part);
                if produced > input + limit {
                    return Err(self.refuse(format!("produced over {produced} bytes")));
                }
                start = i;
                acc = 0;
            }
            acc += w;
        }
        if start < rows {
            let part = self.invoke_slice(&args, start, rows - start)?;
            produced += output_bytes(&part);
            parts.push(part);
            if produced > input + limit {
                return Err(self.refuse(format!("produced over {produced} bytes")));
            }
        }
        let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
        Ok(ColumnarValue::Array(arrow::compute::concat(&refs)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    #[tokio::test]
    async fn amplifiers_are_refused_and_ordinary_calls_unchanged() {
        let ctx = SessionContext::new();
        install(&ctx, 1 << 20);
        for sql in [
            "SELECT length(repeat('x', 1000000000))",
            "SELECT length(lpad('x', 1000000000))",
            "SELECT length(rpad('x', 500000000, 'ab'))",
            "SELECT length(replace(repeat('x', 100000), 'x', repeat('y', 1000)))",
            "SELECT length(regexp_replace(repeat('x', 100000), '', repeat('y', 100), 'g'))",
            "SELECT levenshtein(repeat('a', 100000), repeat('b', 100000))",
        ] {
            let err = run(&ctx, sql).await.expect_err(sql);
            assert!(
                err.to_string().contains("Resources exhausted"),
                "{sql}: {err}"
            );
        }
        let ok = run(
            &ctx,
            "SELECT repeat('ab', 3) AS r, lpad('7', 3, '0') AS l, replace('aXb', 'X', '--') AS p, \
             regexp_replace('a1b22', '[0-9]+', '#', 'g') AS g, levenshtein('kitten', 'sitting') AS d",
        )
        .await
        .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&ok)
            .unwrap()
            .to_string();
        for want in ["ababab", "007", "a--b", "a#b#", "| 3 "] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[tokio::test]
    async fn a_column_whose_worst_case_is_large_is_evaluated_in_slices() {
        let ctx = SessionContext::new();
        install(&ctx, 64 << 10);
        // 5,000 rows of ~104 bytes; replacing every 'x' by 10 bytes has a worst case of
        // ~5 MB but the real output is small: no 'x' occurs.
        let out = run(
            &ctx,
            "SELECT sum(length(replace(concat(repeat('a', 100), CAST(value AS VARCHAR)), 'x', \
             '0123456789'))) AS n FROM generate_series(1, 5000)",
        )
        .await
        .unwrap();
        let n = out[0].column(0).as_primitive::<Int64Type>().value(0);
        // 100 'a's per row, plus the digits of 1..=5000.
        assert_eq!(n, 500_000 + 9 + 90 * 2 + 900 * 3 + 4001 * 4);
        // Real growth past the limit is refused.
        let err = run(
            &ctx,
            "SELECT sum(length(replace(concat(repeat('x', 100), CAST(value AS VARCHAR)), 'x', \
             '0123456789'))) FROM generate_series(1, 5000)",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("Resources exhausted"), "{err}");
    }
}
