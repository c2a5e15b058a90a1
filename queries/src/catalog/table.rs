//! Live tables: columns the pipeline fills from its read models, one table per name.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::error::ArrowError;

/// One column's values.
pub enum Column {
    Str(Vec<Option<String>>),
    U64(Vec<Option<u64>>),
    I64(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    /// Unix milliseconds, shown as UTC timestamps.
    Time(Vec<Option<i64>>),
}

/// A named table of equally long columns.
pub struct Table {
    pub name: &'static str,
    pub columns: Vec<(&'static str, Column)>,
}

impl Table {
    pub fn new(name: &'static str) -> Self {
        Table {
            name,
            columns: Vec::new(),
        }
    }

    pub fn column(mut self, name: &'static str, values: Column) -> Self {
        self.columns.push((name, values));
        self
    }

    pub fn into_batch(self) -> Result<(&'static str, RecordBatch), ArrowError> {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (name, c) in self.columns {
            let (ty, a): (DataType, ArrayRef) = match c {
                Column::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v))),
                Column::U64(v) => (DataType::UInt64, Arc::new(UInt64Array::from(v))),
                Column::I64(v) => (DataType::Int64, Arc::new(Int64Array::from(v))),
                Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v))),
                Column::Time(v) => (
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")),
                ),
            };
            fields.push(Field::new(name, ty, true));
            arrays.push(a);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        Ok((self.name, batch))
    }
}
