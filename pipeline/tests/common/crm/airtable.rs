//! Airtable's Web API as documented: personal access tokens scoped to bases (403
//! `INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND` for a base outside the token's list), base
//! schema at `/v0/meta/bases/{baseId}/tables`, list records with `pageSize` (at most 100),
//! `offset` paging, `fields[]` (422 `UNKNOWN_FIELD_NAME`) and `filterByFormula` on
//! `LAST_MODIFIED_TIME()`, and 5 requests a second per base: more answer 429 and the base
//! stays refused for the penalty (30 s).
//!
//! Writes: `PATCH /v0/{base}/{table}` with at most 10 records, by id or with
//! `performUpsert.fieldsToMergeOn` (0 matches creates, 1 updates, more is a 422), answering
//! `records`, `createdRecords` and `updatedRecords`; unknown fields are a 422. Lookups:
//! `filterByFormula` of `OR(LOWER({Field})='value', …)`.
//!
//! Faults: `burst` (the next request counts as over the limit, starting the penalty);
//! `Store::down_until` answers every call 503.

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
    if store.down() {
        return at_error(
            503,
            "SERVICE_UNAVAILABLE",
            "The service is temporarily unavailable.",
        );
    }
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
    if r.method == "PATCH" {
        return write(&mut store, table, &schema, &r);
    }
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
    let mut equals: Option<(String, Vec<String>)> = None;
    let after = match r.params("filterByFormula").pop() {
        None => None,
        Some(f) if f.starts_with("OR(LOWER({") => {
            let re = Regex::new(r"LOWER\(\{([^}]+)\}\)='((?:[^'\\]|\\.)*)'").unwrap();
            let mut field = String::new();
            let mut values = Vec::new();
            for c in re.captures_iter(&f) {
                field = c[1].to_string();
                values.push(c[2].replace("\\'", "'"));
            }
            if !schema.contains_key(&field) {
                return at_error(
                    422,
                    "INVALID_FILTER_BY_FORMULA",
                    "Unknown field names in the formula",
                );
            }
            equals = Some((field, values));
            None
        }
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
        .filter(|rec| {
            equals.as_ref().is_none_or(|(f, values)| {
                rec.fields
                    .get(f)
                    .and_then(Value::as_str)
                    .is_some_and(|v| values.contains(&v.to_lowercase()))
            })
        })
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

/// `PATCH /v0/{base}/{table}`: update by id, or upsert on `fieldsToMergeOn`.
fn write(
    store: &mut Store,
    table: &str,
    schema: &BTreeMap<String, String>,
    r: &Req,
) -> warp::reply::Response {
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return at_error(
            422,
            "INVALID_REQUEST_UNKNOWN",
            "Invalid request: parameter validation failed. Check your request data.",
        );
    };
    let records = body["records"].as_array().cloned().unwrap_or_default();
    if records.is_empty() || records.len() > 10 {
        return at_error(
            422,
            "INVALID_RECORDS",
            "You must provide an array of up to 10 record objects.",
        );
    }
    let merge: Option<Vec<String>> = body.pointer("/performUpsert/fieldsToMergeOn").map(|v| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    });
    if let Some(m) = &merge {
        if m.is_empty() || m.len() > 3 || m.iter().any(|f| !schema.contains_key(f)) {
            return at_error(
                422,
                "INVALID_MERGE_FIELD",
                "fieldsToMergeOn names 1 to 3 fields of the table",
            );
        }
    }
    for rec in &records {
        for k in rec["fields"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !schema.contains_key(k) {
                return at_error(
                    422,
                    "UNKNOWN_FIELD_NAME",
                    &format!("Unknown field name: \"{k}\""),
                );
            }
        }
    }
    // Every record is resolved before anything is written: a request fails as a whole.
    let mut targets: Vec<Option<String>> = Vec::new();
    for rec in &records {
        let fields = rec["fields"].as_object().cloned().unwrap_or_default();
        let target = match (&merge, rec["id"].as_str()) {
            (_, Some(id)) => {
                if !store
                    .objects
                    .get(table)
                    .is_some_and(|v| v.iter().any(|x| x.id == id))
                {
                    return at_error(
                        404,
                        "NOT_FOUND",
                        &format!("Record {id} does not exist in this table"),
                    );
                }
                Some(id.to_string())
            }
            (Some(m), None) => {
                let matches: Vec<&super::Rec> = store
                    .objects
                    .get(table)
                    .into_iter()
                    .flatten()
                    .filter(|x| m.iter().all(|f| x.fields.get(f) == fields.get(f)))
                    .collect();
                match matches.as_slice() {
                    [] => None,
                    [one] => Some(one.id.clone()),
                    _ => {
                        return at_error(
                            422,
                            "INVALID_VALUE_FOR_COLUMN",
                            "More than one record matches the fields to merge on",
                        )
                    }
                }
            }
            (None, None) => return at_error(422, "INVALID_RECORDS", "Each record needs an id"),
        };
        targets.push(target);
    }
    store.wrote(&r.path, records.len());
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    let (mut created, mut updated) = (Vec::new(), Vec::new());
    for (rec, target) in records.iter().zip(targets) {
        let new_fields = rec["fields"].as_object().cloned().unwrap_or_default();
        let id = match target {
            Some(id) => {
                updated.push(id.clone());
                id
            }
            None => {
                let n = store.objects.values().map(Vec::len).sum::<usize>() + 1;
                let id = format!("recNEW{n:08}");
                created.push(id.clone());
                id
            }
        };
        let mut fields = store
            .objects
            .get(table)
            .and_then(|v| v.iter().find(|x| x.id == id))
            .map(|x| x.fields.clone())
            .unwrap_or_default();
        fields.extend(new_fields);
        store.put(table, &id, now, Value::Object(fields.clone()));
        out.push(json!({"id": id, "createdTime": super::iso(now), "fields": fields}));
    }
    let mut body = json!({"records": out});
    if merge.is_some() {
        body["createdRecords"] = json!(created);
        body["updatedRecords"] = json!(updated);
    }
    answer(200, &[], &body)
}
