//! What a query's text may be before it is planned: its size, and how deep a plan it makes.
//!
//! DataFusion plans and optimizes recursively, one stack frame (or several) per level of a
//! plan or expression. `SELECT 1+1+…` with a thousand terms is 2 KB of text and a
//! thousand-level expression, which overflowed a 2 MiB thread stack and aborted the server.
//! The parser bounds nesting that recurses in the parser itself (parentheses, subqueries:
//! DataFusion's `recursion_limit`), but chains it parses in a loop (`a + b + …`,
//! `a AND b AND …`, `x || y || …`, `UNION` after `UNION`, joins after joins) still make a
//! plan as deep as they are long. So the parsed statement is measured here and refused past
//! the limits, and everything from this check on runs on the SQL threads, whose stacks
//! are sized for a plan within them (see [`crate::pool`]).

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Select, SetExpr, Visit, Visitor};

use crate::SqlError;

/// The bounds on a query's text.
#[derive(Clone, Copy, Debug)]
pub struct ShapeLimits {
    /// Bytes of SQL text.
    pub max_text: usize,
    /// Deepest nesting of expressions, of set operations in one query, and of the tables
    /// joined in one `SELECT`.
    pub max_depth: usize,
}

#[derive(Default)]
struct Measure {
    depth: usize,
    max_expr_depth: usize,
    max_set_ops: usize,
    max_relations: usize,
}

impl Visitor for Measure {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.depth += 1;
        self.max_expr_depth = self.max_expr_depth.max(self.depth);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        // The set operations of this query's body, counted without recursion; nested
        // queries are visited on their own.
        let mut ops = 0;
        let mut stack: Vec<&SetExpr> = vec![&q.body];
        while let Some(s) = stack.pop() {
            if let SetExpr::SetOperation { left, right, .. } = s {
                ops += 1;
                stack.push(left);
                stack.push(right);
            }
        }
        self.max_set_ops = self.max_set_ops.max(ops);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let relations: usize = s.from.iter().map(|t| 1 + t.joins.len()).sum();
        self.max_relations = self.max_relations.max(relations);
        ControlFlow::Continue(())
    }
}

fn too_complex(what: &str, found: usize, limit: usize) -> SqlError {
    SqlError::TooComplex(format!(
        "the query's {what} is {found}; the limit is {limit}"
    ))
}

/// Checks `sql` against `limits`. Errors of the parser are left for planning to report in its
/// own words (the query fails there the same way).
pub fn check(sql: &str, limits: ShapeLimits) -> Result<(), SqlError> {
    if sql.len() > limits.max_text {
        return Err(too_complex(
            "text length in bytes",
            sql.len(),
            limits.max_text,
        ));
    }
    let Ok(mut statements) = DFParserBuilder::new(sql)
        .build()
        .and_then(|mut p| p.parse_statements())
    else {
        return Ok(());
    };
    let Some(statement) = statements.pop_front() else {
        return Ok(());
    };
    if !statements.is_empty() {
        return Ok(());
    }
    if let Statement::Statement(inner) = &statement {
        let mut m = Measure::default();
        let _ = inner.visit(&mut m);
        for (what, found) in [
            ("expression nesting depth", m.max_expr_depth),
            (
                "number of set operations (UNION, INTERSECT, EXCEPT)",
                m.max_set_ops,
            ),
            ("number of tables joined in one SELECT", m.max_relations),
        ] {
            if found > limits.max_depth {
                return Err(too_complex(what, found, limits.max_depth));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ShapeLimits = ShapeLimits {
        max_text: 64 << 10,
        max_depth: 200,
    };

    /// The checks run on the SQL threads' large stacks; so do they here.
    fn check(sql: &str, limits: ShapeLimits) -> Result<(), SqlError> {
        let sql = sql.to_string();
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || super::check(&sql, limits))
            .unwrap()
            .join()
            .unwrap()
    }

    fn chain(op: &str, n: usize) -> String {
        vec!["1"; n].join(op)
    }

    #[test]
    fn long_chains_are_refused_by_name() {
        for (sql, what) in [
            (format!("SELECT {}", chain("+", 1000)), "expression nesting"),
            (
                format!("SELECT 1 WHERE {}", chain(" = 1 AND ", 500)),
                "expression",
            ),
            (format!("SELECT {}", chain(" || ", 1000)), "expression"),
            (vec!["SELECT 1"; 300].join(" UNION ALL "), "set operations"),
            (
                format!("SELECT 1 FROM {}", vec!["leads"; 300].join(", ")),
                "tables joined",
            ),
            (
                format!(
                    "SELECT 1 FROM leads {}",
                    "JOIN leads USING (lead_id) ".repeat(300)
                ),
                "tables joined",
            ),
        ] {
            match check(&sql, LIMITS) {
                Err(SqlError::TooComplex(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{sql:.60}: {other:?}"),
            }
        }
        let long = format!("SELECT '{}'", "x".repeat(70_000));
        assert!(
            matches!(check(&long, LIMITS), Err(SqlError::TooComplex(m)) if m.contains("bytes"))
        );
    }

    #[test]
    fn ordinary_queries_pass() {
        check(
            "SELECT l.email, count(*) FROM leads l JOIN signals s ON s.lead_id = l.lead_id \
             WHERE s.event_name IN ('a', 'b', 'c') GROUP BY 1",
            LIMITS,
        )
        .unwrap();
        // A long IN list is wide, not deep.
        let ids = (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(check(
            &format!("SELECT 1 FROM signals WHERE id IN ({ids})"),
            LIMITS
        )
        .is_ok());
        check("SELECT * FROM information_schema.tables", LIMITS).unwrap();
        check("SELEC nonsense", LIMITS).unwrap();
    }
}
