//! Airtable's Web API as documented: personal access tokens scoped to bases (403
//! `INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND` for a base outside the token's list), base
//! schema at `/v0/meta/bases/{baseId}/tables`, list records with `pageSize` (at most 100),
//! `offset` paging, `fields[]` (422 `UNKNOWN_FIELD_NAME`) and `filterByFormula` on
//! `LAST_MODIFIED_TIME()`, and 5 requests a second per base: more answer 429 and the base
//! stays refused for the penalty (30 s).
//!
//! Faults: `burst` (the next request counts as over the limit, starting the penalty).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};

use super::{answer, bearer, Req, Shared, Store, Window};

pub const MODIFIED: &str = "Last Modified";

pub struct Airtable {
    pub url: String,
    pub store: Shared,
    /// Requests answered 429.
    pub limited: Arc<Mutex<usize>>,
}

struct Limits {
    window: Window,
    penalty_until: BTreeMap<String, Instant>,
    penalty: Duration,
}

fn at_error(status: u16, kind: &str, message: &str) -> warp::reply::Response {
    answer(
        status,
        &[],
        &json!({"error": {"type": kind, "message": message}}),
    )
}

impl Airtable {
    /// `tables`: table name → the store's object holding its records.
    pub fn start(token: &str, base: &str, store: Store, penalty: Duration) -> Airtable {
        let store: Shared = Arc::new(Mutex::new(store));
        let limited = Arc::new(Mutex::new(0));
        let limits = Arc::new(Mutex::new(Limits {
            window: Window::default(),
            penalty_until: BTreeMap::new(),
            penalty,
        }));
        let (token, base, l2) = (token.to_string(), base.to_string(), limited.clone());
        let addr = super::serve_fn(store.clone(), move |st, r| {
            handle(st, &token, &base, &limits, &l2, r)
        });
        Airtable {
            url: format!("http://{addr}"),
            store,
            limited,
        }
    }
}

fn handle(
    st: &Shared,
    token: &str,
    base: &str,
    limits: &Mutex<Limits>,
    limited: &Mutex<usize>,
    r: Req,
) -> warp::reply::Response {
    if bearer(&r.auth) != Some(token) {
        return answer(401, &[], &json!({"error": "AUTHENTICATION_REQUIRED"}));
    }
    let segs: Vec<String> = r
        .path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let req_base = match segs.as_slice() {
        [v, meta, bases, b, _] if v == "v0" && meta == "meta" && bases == "bases" => b.clone(),
        [v, b, _] if v == "v0" => b.clone(),
        _ => return at_error(404, "NOT_FOUND", "Could not find what you are looking for"),
    };
    if req_base != base {
        return at_error(403, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", "Invalid permissions, or the requested model was not found. Check that both your user and your token have the required permissions, and that the model names and/or ids are correct.");
    }
    let mut store = st.lock().unwrap();
    {
        let mut l = limits.lock().unwrap();
        let now = Instant::now();
        let burst = store.fault(&["burst"]).is_some();
        let over = burst || !l.window.admit(base, 5, Duration::from_secs(1));
        if over {
            let until = now + l.penalty;
            l.penalty_until.insert(base.to_string(), until);
        }
        if l.penalty_until.get(base).is_some_and(|u| now < *u) {
            *limited.lock().unwrap() += 1;
            return answer(
                429,
                &[],
                &json!({"errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]}),
            );
        }
    }
    if segs[1] == "meta" {
        let tables: Vec<Value> = store.schema.iter().map(|(t, fields)| {
            let fields: Vec<Value> = fields.iter().map(|(n, ty)| json!({"id": format!("fld{n}"), "name": n, "type": ty})).collect();
            json!({"id": format!("tbl{}", t.len()), "name": t, "primaryFieldId": "fld0", "fields": fields})
        }).collect();
        return answer(200, &[], &json!({"tables": tables}));
    }
    let table = &segs[2];
    let Some(schema) = store.schema.get(table).cloned() else {
        return at_error(
            404,
            "TABLE_NOT_FOUND",
            &format!("Could not find table {table} in application {base}"),
        );
    };
    let page_size: usize = r
        .params("pageSize")
        .pop()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    if page_size == 0 || page_size > 100 {
        return at_error(
            422,
            "INVALID_REQUEST_UNKNOWN",
            "Invalid request: parameter validation failed. Check your request data.",
        );
    }
    let fields = r.params("fields[]");
    for f in &fields {
        if !schema.contains_key(f) {
            return at_error(
                422,
                "UNKNOWN_FIELD_NAME",
                &format!("Unknown field name: \"{f}\""),
            );
        }
    }
    let after = match r.params("filterByFormula").pop() {
        None => None,
        Some(f) => {
            let re = Regex::new(r"^IS_AFTER\(LAST_MODIFIED_TIME\(\), '([^']+)'\)$").unwrap();
            let Some(c) = re.captures(&f) else {
                return at_error(
                    422,
                    "INVALID_FILTER_BY_FORMULA",
                    "The formula for filtering records is invalid",
                );
            };
            Some(
                chrono::DateTime::parse_from_rfc3339(&c[1])
                    .unwrap()
                    .timestamp_millis(),
            )
        }
    };
    let offset: usize = match r.params("offset").pop() {
        None => 0,
        Some(o) => match o
            .strip_prefix("itr")
            .and_then(|x| x.split('/').next())
            .and_then(|x| x.parse().ok())
        {
            Some(n) => n,
            None => {
                return at_error(
                    422,
                    "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                    "offset is invalid",
                )
            }
        },
    };
    let rows: Vec<&super::Rec> = store
        .objects
        .get(table)
        .into_iter()
        .flatten()
        .filter(|rec| after.is_none_or(|a| rec.modified > a))
        .collect();
    let total = rows.len();
    let records: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|rec| {
            let mut f = serde_json::Map::new();
            for (k, v) in &rec.fields {
                if fields.is_empty() || fields.contains(k) {
                    f.insert(k.clone(), v.clone());
                }
            }
            if fields.is_empty() || fields.iter().any(|x| x == MODIFIED) {
                f.insert(MODIFIED.into(), json!(super::iso(rec.modified)));
            }
            json!({"id": rec.id, "createdTime": super::iso(rec.modified), "fields": f})
        })
        .collect();
    let n = records.len();
    *store.served.entry(table.clone()).or_default() += n;
    let mut out = json!({"records": records});
    if offset + n < total {
        out["offset"] = json!(format!("itr{}/rec{}", offset + n, offset + n));
    }
    answer(200, &[], &out)
}
