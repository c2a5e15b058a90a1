//! What a scan's filters say about `id` and `date`, the two columns the archive's layout
//! knows without reading a file: each file covers one date and an id range, and each buffered
//! row has both; and about text columns compared for equality (`anonymous_id = '…'`,
//! `lead_id IN (…)`), which buffered rows are checked against before they are copied. Only
//! conjuncts of the simplest forms are read (`col op literal`, `IN`, `BETWEEN`); anything else
//! leaves the bounds open, so pruning never drops a row that a filter would keep.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Operator};
use datafusion::prelude::Expr;

/// Bounds implied by a scan's filters (all inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    id_lo: u64,
    id_hi: u64,
    ids: Option<BTreeSet<u64>>,
    date_lo: Option<String>,
    date_hi: Option<String>,
    dates: Option<BTreeSet<String>>,
    /// Text column → the values it may equal.
    texts: BTreeMap<String, BTreeSet<String>>,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            id_lo: 0,
            id_hi: u64::MAX,
            ids: None,
            date_lo: None,
            date_hi: None,
            dates: None,
            texts: BTreeMap::new(),
        }
    }
}

fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column(&c.expr),
        Expr::TryCast(c) => column(&c.expr),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => literal(&c.expr),
        _ => None,
    }
}

/// An integer literal as an id (negative ones match no id; they are treated as 0).
fn id_of(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::UInt64(Some(n)) => i128::from(*n),
        ScalarValue::UInt32(Some(n)) => i128::from(*n),
        ScalarValue::Int64(Some(n)) => i128::from(*n),
        ScalarValue::Int32(Some(n)) => i128::from(*n),
        _ => return None,
    })
}

fn text_of(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

fn clamp(n: i128) -> u64 {
    n.clamp(0, i128::from(u64::MAX)) as u64
}

fn flip(op: Operator) -> Operator {
    match op {
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        other => other,
    }
}

impl Bounds {
    /// The bounds of the conjunction of `filters`.
    pub fn of(filters: &[Expr]) -> Bounds {
        let mut b = Bounds::default();
        for f in filters {
            b.add(f);
        }
        b
    }

    fn add(&mut self, e: &Expr) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.add(left);
                    self.add(right);
                    return;
                }
                let (col, op, v) =
                    match (column(left), literal(right), column(right), literal(left)) {
                        (Some(c), Some(v), _, _) => (c, *op, v),
                        (_, _, Some(c), Some(v)) => (c, flip(*op), v),
                        _ => return,
                    };
                match col {
                    "id" => {
                        if let Some(n) = id_of(v) {
                            self.id_cmp(op, n);
                        }
                    }
                    "date" => {
                        if let Some(s) = text_of(v) {
                            self.date_cmp(op, s);
                        }
                    }
                    other => {
                        if let (Operator::Eq, Some(s)) = (op, text_of(v)) {
                            self.text_in(other, BTreeSet::from([s]));
                        }
                    }
                }
            }
            Expr::InList(l) if !l.negated => match column(&l.expr) {
                Some("id") => {
                    let ids: Option<BTreeSet<u64>> = l
                        .list
                        .iter()
                        .map(|e| literal(e).and_then(id_of).map(clamp))
                        .collect();
                    if let Some(ids) = ids {
                        self.ids = Some(match self.ids.take() {
                            Some(cur) => cur.intersection(&ids).copied().collect(),
                            None => ids,
                        });
                    }
                }
                Some("date") => {
                    let dates: Option<BTreeSet<String>> = l
                        .list
                        .iter()
                        .map(|e| literal(e).and_then(text_of))
                        .collect();
                    if let Some(dates) = dates {
                        self.dates = Some(match self.dates.take() {
                            Some(cur) => cur.intersection(&dates).cloned().collect(),
                            None => dates,
                        });
                    }
                }
                Some(other) => {
                    let values: Option<BTreeSet<String>> = l
                        .list
                        .iter()
                        .map(|e| literal(e).and_then(text_of))
                        .collect();
                    if let Some(values) = values {
                        self.text_in(other, values);
                    }
                }
                None => {}
            },
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                self.add(&Expr::BinaryExpr(BinaryExpr::new(
                    expr.clone(),
                    Operator::GtEq,
                    low.clone(),
                )));
                self.add(&Expr::BinaryExpr(BinaryExpr::new(
                    expr.clone(),
                    Operator::LtEq,
                    high.clone(),
                )));
            }
            _ => {}
        }
    }

    fn text_in(&mut self, col: &str, values: BTreeSet<String>) {
        let merged = match self.texts.remove(col) {
            Some(cur) => cur.intersection(&values).cloned().collect(),
            None => values,
        };
        self.texts.insert(col.to_string(), merged);
    }

    /// The text columns constrained to sets of values.
    pub fn texts(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.texts.iter().map(|(c, v)| (c.as_str(), v))
    }

    fn id_cmp(&mut self, op: Operator, n: i128) {
        match op {
            Operator::Eq => {
                self.id_lo = self.id_lo.max(clamp(n));
                self.id_hi = self.id_hi.min(clamp(n));
                if n < 0 {
                    self.id_hi = 0;
                    self.id_lo = 1;
                }
            }
            Operator::Gt => self.id_lo = self.id_lo.max(clamp(n.saturating_add(1))),
            Operator::GtEq => self.id_lo = self.id_lo.max(clamp(n)),
            Operator::Lt => {
                if n <= 0 {
                    (self.id_lo, self.id_hi) = (1, 0);
                } else {
                    self.id_hi = self.id_hi.min(clamp(n - 1));
                }
            }
            Operator::LtEq => {
                if n < 0 {
                    (self.id_lo, self.id_hi) = (1, 0);
                } else {
                    self.id_hi = self.id_hi.min(clamp(n));
                }
            }
            _ => {}
        }
    }

    fn date_cmp(&mut self, op: Operator, s: String) {
        let raise = |cur: &mut Option<String>, s: String| {
            if cur.as_ref().is_none_or(|c| s > *c) {
                *cur = Some(s);
            }
        };
        let lower = |cur: &mut Option<String>, s: String| {
            if cur.as_ref().is_none_or(|c| s < *c) {
                *cur = Some(s);
            }
        };
        match op {
            Operator::Eq => {
                raise(&mut self.date_lo, s.clone());
                lower(&mut self.date_hi, s);
            }
            // Dates compare as text (`YYYY-MM-DD`); strict bounds stay inclusive, which only
            // keeps a partition that the filter then empties.
            Operator::Gt | Operator::GtEq => raise(&mut self.date_lo, s),
            Operator::Lt | Operator::LtEq => lower(&mut self.date_hi, s),
            _ => {}
        }
    }

    /// Whether a row with this id may pass.
    pub fn may_hold_id(&self, id: u64) -> bool {
        self.may_hold_range(id, id)
    }

    /// Whether a file holding ids `first..=last` may hold a row that passes.
    pub fn may_hold_range(&self, first: u64, last: u64) -> bool {
        let lo = first.max(self.id_lo);
        let hi = last.min(self.id_hi);
        if lo > hi {
            return false;
        }
        match &self.ids {
            Some(ids) => ids.range(lo..=hi).next().is_some(),
            None => true,
        }
    }

    /// Whether a partition of this date (`YYYY-MM-DD`) may hold a row that passes.
    pub fn may_hold_date(&self, date: &str) -> bool {
        self.date_lo.as_deref().is_none_or(|lo| date >= lo)
            && self.date_hi.as_deref().is_none_or(|hi| date <= hi)
            && self.dates.as_ref().is_none_or(|d| d.contains(date))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn ids_and_dates_bound_files_conservatively() {
        let b = Bounds::of(&[col("id").in_list(vec![lit(5u64), lit(90u64)], false)]);
        assert!(b.may_hold_range(1, 10) && b.may_hold_range(80, 100));
        assert!(!b.may_hold_range(6, 89));
        let b = Bounds::of(&[col("id").gt_eq(lit(10i64)).and(lit(20i64).gt(col("id")))]);
        assert!(b.may_hold_range(15, 30) && b.may_hold_range(0, 10));
        assert!(!b.may_hold_range(20, 30) && !b.may_hold_range(0, 9));
        let b = Bounds::of(&[col("date").between(lit("2026-01-02"), lit("2026-01-03"))]);
        assert!(b.may_hold_date("2026-01-02") && b.may_hold_date("2026-01-03"));
        assert!(!b.may_hold_date("2026-01-01") && !b.may_hold_date("2026-01-04"));
        // What it does not understand keeps everything.
        let b = Bounds::of(&[
            col("id").not_eq(lit(5u64)),
            col("id").in_list(vec![lit(1u64)], true),
            col("email").not_eq(lit("x")),
            (col("id") + lit(1u64)).eq(lit(7u64)),
        ]);
        assert_eq!(b, Bounds::default());
        let b = Bounds::of(&[
            col("email").eq(lit("x")),
            col("email").in_list(vec![lit("x"), lit("y")], false),
            col("lead_id").in_list(vec![lit("l1")], false),
        ]);
        let t: Vec<_> = b.texts().collect();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ("email", &BTreeSet::from(["x".to_string()])));
        assert!(!Bounds::of(&[col("id").lt(lit(0i64))]).may_hold_id(0));
    }
}
