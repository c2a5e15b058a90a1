//! One org's catalog: the schema DataFusion resolves a query's table names in.
//!
//! Tenant isolation is structural. Each query runs in a session of its own whose only schema
//! is an [`OrgSchema`]: its archive tables read only that org's files and buffered rows, its
//! live tables only that org's read models. There is no catalog of other orgs to reach.
//!
//! The schema builds a table only when a plan names it ([`SchemaProvider::table`] is called
//! per table reference), so a query pays only for what it reads: a live table is a copy of
//! the org's rows out of the read models, and an archive table a copy of its buffered rows.

pub(crate) mod archive;
pub(crate) mod blooms;
pub mod live;
mod prune;
mod scoring;
pub mod table;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemTable, SchemaProvider, Session};
use datafusion::common::Result as DfResult;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use trailspark_core::tenancy::SharedRegistry;
use trailspark_core::Registry;
use trailspark_sinks::archive::{Archiver, Kind};
use trailspark_sinks::read_models::{Models, ReadModels};

pub use self::archive::{table_schema as archive_schema, ArchiveTable};

/// The archive tables and their trees.
pub const ARCHIVE_TABLES: [(&str, Kind); 2] = [
    ("signals", Kind::Signals),
    ("anonymous_signals", Kind::Anonymous),
];

/// What the live tables are read from: the read models and the tenancy registry (for the
/// org's mapping rules).
#[derive(Clone, Debug)]
pub struct Live {
    pub models: Arc<ReadModels>,
    pub registry: SharedRegistry,
}

/// The tables of one org.
#[derive(Debug)]
pub struct OrgSchema {
    pub org: u64,
    pub archiver: Option<Arc<Archiver>>,
    pub live: Option<Live>,
}

fn internal(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(e.to_string())
}

#[async_trait]
impl SchemaProvider for OrgSchema {
    fn table_names(&self) -> Vec<String> {
        ARCHIVE_TABLES
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(live::NAMES.iter().map(|n| n.to_string()))
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some((_, kind)) = ARCHIVE_TABLES.iter().find(|(n, _)| *n == name) {
            return Ok(Some(match &self.archiver {
                Some(a) => Arc::new(ArchiveTable::new(a.clone(), *kind, self.org)),
                None => Arc::new(MemTable::try_new(archive_schema(), vec![vec![]])?),
            }));
        }
        let Some(name) = live::NAMES.iter().find(|n| **n == name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(LiveTable::new(
            name,
            self.org,
            self.live.clone(),
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        ARCHIVE_TABLES.iter().any(|(n, _)| *n == name) || live::NAMES.contains(&name)
    }
}

/// A live table of one org: built from the read models when a plan scans it.
#[derive(Debug)]
pub struct LiveTable {
    name: &'static str,
    org: u64,
    live: Option<Live>,
    schema: SchemaRef,
}

impl LiveTable {
    fn new(name: &'static str, org: u64, live: Option<Live>) -> DfResult<LiveTable> {
        // The schema of a table does not depend on its rows: build it from no models.
        let empty = live::build(name, &Models::default(), &Registry::default(), org)
            .ok_or_else(|| internal(format!("no live table {name}")))?;
        let (_, batch) = empty.into_batch()?;
        Ok(LiveTable {
            name,
            org,
            live,
            schema: batch.schema(),
        })
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table = match &self.live {
            Some(l) => {
                let m = l.models.read();
                let reg = l.registry.read().unwrap();
                live::build(self.name, &m, &reg, self.org)
            }
            None => live::build(
                self.name,
                &Models::default(),
                &Registry::default(),
                self.org,
            ),
        }
        .ok_or_else(|| internal(format!("no live table {}", self.name)))?;
        let (_, batch) = table.into_batch()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
