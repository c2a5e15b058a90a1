//! Product orgs: the merged state of each product org from its updates.
//!
//! Every field takes its value from the latest update that set it, by event time and then log
//! position, so an older update arriving late never overwrites a newer one and the result is
//! the same in any arrival order. Fields an update does not carry are left alone.

use std::collections::BTreeMap;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::order::TotalOrder;
use timely::progress::Timestamp;
use trailspark_core::ProductOrgRecord;

use crate::footprint::MeasuredByKey;
use crate::ident::Org;

/// One update, as the dataflow sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductOrgUpdate {
    pub org: Org,
    pub product_org_id: String,
    pub event_at: i64,
    pub pos: u64,
    /// Field name → JSON text.
    pub fields: Vec<(String, String)>,
}

impl ProductOrgUpdate {
    pub fn from_record(pos: u64, r: &ProductOrgRecord) -> ProductOrgUpdate {
        ProductOrgUpdate {
            org: r.org_id.0,
            product_org_id: r.product_org_id.clone(),
            event_at: r.event_at,
            pos,
            fields: r.fields.clone(),
        }
    }
}

/// A product org's merged state.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductOrg {
    /// Field name → JSON text, each from the latest update that set it.
    pub fields: Vec<(String, String)>,
    /// The latest event time of any update.
    pub last_updated_at: i64,
    pub updates: u64,
}

/// Merges updates (any order) into the product org's state.
pub fn merge(updates: &[&ProductOrgUpdate]) -> ProductOrg {
    let mut latest: BTreeMap<&str, ((i64, u64), &str)> = BTreeMap::new();
    for u in updates {
        for (k, v) in &u.fields {
            let at = (u.event_at, u.pos);
            match latest.get(k.as_str()) {
                Some((seen, _)) if *seen >= at => {}
                _ => {
                    latest.insert(k, (at, v));
                }
            }
        }
    }
    ProductOrg {
        fields: latest
            .into_iter()
            .map(|(k, (_, v))| (k.to_string(), v.to_string()))
            .collect(),
        last_updated_at: updates.iter().map(|u| u.event_at).max().unwrap_or(0),
        updates: updates.len() as u64,
    }
}

/// The merged state of every product org, keyed by (org, product org id).
pub fn product_orgs<'s, T>(
    updates: VecCollection<'s, T, ProductOrgUpdate, isize>,
) -> VecCollection<'s, T, ((Org, String), ProductOrg), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    updates
        .map(|u| ((u.org, u.product_org_id.clone()), u))
        .reduce_measured("ProductOrg", |_k, updates, out| {
            let updates: Vec<&ProductOrgUpdate> = updates.iter().map(|(u, _)| *u).collect();
            out.push((merge(&updates), 1));
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{run, shuffle_into_batches};
    use proptest::prelude::*;

    fn upd(id: &str, event_at: i64, pos: u64, fields: &[(&str, &str)]) -> ProductOrgUpdate {
        ProductOrgUpdate {
            org: 1,
            product_org_id: id.into(),
            event_at,
            pos,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_late_older_update_does_not_overwrite() {
        let newer = upd(
            "ws_1",
            200,
            1,
            &[("plan_name", "\"Pro\""), ("name", "\"Acme\"")],
        );
        let older = upd(
            "ws_1",
            100,
            2,
            &[("plan_name", "\"Free\""), ("mrr", "49900")],
        );
        let m = merge(&[&newer, &older]);
        assert_eq!(
            m.fields,
            vec![
                ("mrr".into(), "49900".into()),
                ("name".into(), "\"Acme\"".into()),
                ("plan_name".into(), "\"Pro\"".into())
            ]
        );
        assert_eq!(m.last_updated_at, 200);
        // A second update with only the plan keeps name and MRR.
        let plan = upd("ws_1", 300, 3, &[("plan_name", "\"Team\"")]);
        let m = merge(&[&newer, &older, &plan]);
        assert!(m.fields.contains(&("plan_name".into(), "\"Team\"".into())));
        assert!(m.fields.contains(&("name".into(), "\"Acme\"".into())));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_the_fold_in_any_order(
            raw in proptest::collection::vec((0u8..3, 0i64..5, 0u8..3, 0u8..4), 0..40),
            seed in any::<u64>(),
        ) {
            let updates: Vec<ProductOrgUpdate> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (id, at, field, val))| {
                    let f = ["name", "plan_name", "mrr"][field as usize].to_string();
                    upd(&format!("ws_{id}"), at, i as u64, &[(&f, &val.to_string())])
                })
                .collect();
            let mut expected: BTreeMap<(Org, String), Vec<&ProductOrgUpdate>> = BTreeMap::new();
            for u in &updates {
                expected.entry((u.org, u.product_org_id.clone())).or_default().push(u);
            }
            let expected: Vec<((Org, String), ProductOrg)> = expected.into_iter().map(|(k, us)| (k, merge(&us))).collect();
            for workers in [1, 2] {
                let batches = shuffle_into_batches(&updates, 3, seed)
                    .into_iter()
                    .map(|b| b.into_iter().map(|u| (u, 1)).collect())
                    .collect();
                let got: Vec<_> = run(workers, batches, product_orgs).into_iter().map(|(d, r)| { assert_eq!(r, 1); d }).collect();
                prop_assert_eq!(&got, &expected);
            }
        }
    }
}
