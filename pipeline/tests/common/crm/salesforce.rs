//! Salesforce's REST API as documented: the OAuth token endpoint on the login host
//! (refresh-token grant, `invalid_grant`), an instance on another port, SOQL `query` paged
//! through `nextRecordsUrl`, `sobjects/{Object}/describe`, errors as a JSON array of
//! `{message, errorCode, fields}`, `401 INVALID_SESSION_ID` for an expired session and
//! `403 REQUEST_LIMIT_EXCEEDED`.
//!
//! Writes: sObject Collections (`PATCH`/`POST composite/sobjects`, at most 200 records,
//! one `SaveResult` per record in order, per-record `INVALID_FIELD`,
//! `INVALID_CROSS_REFERENCE_KEY`, `REQUIRED_FIELD_MISSING`), and SOQL lookups `WHERE Email
//! IN (…)`.
//!
//! Faults: `expire` (every session ends before the next call), `limit` (one 403),
//! `unavailable` (one 503), `lock` (the next collection's first record answers
//! `UNABLE_TO_LOCK_ROW`); `Store::down_until` answers every call 503.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde_json::{json, Value};

use super::{answer, bearer, Req, Shared, Store};

pub const CLIENT_ID: &str = "3MVG9-test-consumer-key";

pub struct SfState {
    pub refresh_token: String,
    pub sessions: BTreeSet<String>,
    pub issued: u64,
    pub page_size: usize,
    pub cursors: BTreeMap<String, Vec<Value>>,
    pub instance: String,
    /// Authorization codes handed out: code → (PKCE challenge, redirect URI).
    pub codes: BTreeMap<String, (String, String)>,
}

pub struct Salesforce {
    pub login_url: String,
    pub instance_url: String,
    pub store: Shared,
    pub sf: Arc<Mutex<SfState>>,
}

fn sf_error(status: u16, code: &str, message: &str) -> warp::reply::Response {
    answer(
        status,
        &[],
        &json!([{"message": message, "errorCode": code, "fields": []}]),
    )
}

fn time_of(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

fn modstamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

impl Salesforce {
    pub fn start(refresh_token: &str, store: Store) -> Salesforce {
        let store: Shared = Arc::new(Mutex::new(store));
        let sf = Arc::new(Mutex::new(SfState {
            refresh_token: refresh_token.into(),
            sessions: BTreeSet::new(),
            issued: 0,
            page_size: 2000,
            cursors: BTreeMap::new(),
            instance: String::new(),
            codes: BTreeMap::new(),
        }));
        let s2 = sf.clone();
        let login = super::serve_fn(store.clone(), move |_, r| token(&s2, r));
        let s3 = sf.clone();
        let inst = super::serve_fn(store.clone(), move |st, r| instance(st, &s3, r));
        let instance_url = format!("http://{inst}");
        sf.lock().unwrap().instance = instance_url.clone();
        Salesforce {
            login_url: format!("http://{login}"),
            instance_url,
            store,
            sf,
        }
    }
}

fn oauth_error(error: &str, description: &str) -> warp::reply::Response {
    answer(
        400,
        &[],
        &json!({"error": error, "error_description": description}),
    )
}

/// The consent page: consent is given at once, and the browser is sent back with a code.
fn authorize(sf: &Arc<Mutex<SfState>>, r: &Req) -> warp::reply::Response {
    let one = |k: &str| r.params(k).pop().unwrap_or_default();
    if one("client_id") != CLIENT_ID {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if one("response_type") != "code"
        || one("code_challenge_method") != "S256"
        || one("code_challenge").len() != 43
    {
        return oauth_error(
            "invalid_request",
            "this app requires PKCE (S256) and response_type=code",
        );
    }
    let scope = one("scope");
    if !["api", "refresh_token"]
        .iter()
        .all(|w| scope.split(' ').any(|x| x == *w))
    {
        return oauth_error("invalid_scope", "the app asks for api and refresh_token");
    }
    let mut s = sf.lock().unwrap();
    s.issued += 1;
    let code = format!("aPrx{}code", s.issued);
    s.codes
        .insert(code.clone(), (one("code_challenge"), one("redirect_uri")));
    let location = format!("{}?code={code}&state={}", one("redirect_uri"), one("state"));
    warp::http::Response::builder()
        .status(302)
        .header("location", location)
        .body(Vec::new().into())
        .unwrap()
}

fn token(sf: &Arc<Mutex<SfState>>, r: Req) -> warp::reply::Response {
    if r.method == "GET" && r.path == "/services/oauth2/authorize" {
        return authorize(sf, &r);
    }
    if r.method != "POST" || r.path != "/services/oauth2/token" {
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist");
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(&r.body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut s = sf.lock().unwrap();
    if get("client_id") != CLIENT_ID {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    let mut granted = None;
    match get("grant_type").as_str() {
        "refresh_token" => {
            if get("refresh_token") != s.refresh_token {
                return oauth_error("invalid_grant", "expired access/refresh token");
            }
        }
        "authorization_code" => {
            let Some((challenge, redirect)) = s.codes.remove(&get("code")) else {
                return oauth_error("invalid_grant", "invalid authorization code");
            };
            let computed = {
                use base64::Engine;
                use sha2::Digest;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(get("code_verifier").as_bytes()))
            };
            if computed != challenge {
                return oauth_error("invalid_grant", "invalid code verifier");
            }
            if get("redirect_uri") != redirect {
                return oauth_error(
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                );
            }
            s.issued += 1;
            s.refresh_token = format!("5Aep861-granted-{}", s.issued);
            granted = Some(s.refresh_token.clone());
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    }
    s.issued += 1;
    let tok = format!("00Dxx0000001gPL!AQ4AQ{}", s.issued);
    s.sessions.insert(tok.clone());
    let mut body = json!({
        "access_token": tok,
        "instance_url": s.instance,
        "id": format!("{}/id/00Dxx0000001gPLEAY/005xx000001X7hmAAC", s.instance),
        "token_type": "Bearer",
        "issued_at": chrono::Utc::now().timestamp_millis().to_string(),
        "signature": "c2lnbmF0dXJl",
    });
    if let Some(rt) = granted {
        body["refresh_token"] = json!(rt);
        body["scope"] = json!("api refresh_token");
    }
    answer(200, &[], &body)
}

fn instance(st: &Shared, sf: &Arc<Mutex<SfState>>, r: Req) -> warp::reply::Response {
    let mut store = st.lock().unwrap();
    let mut s = sf.lock().unwrap();
    if store.down() {
        return sf_error(503, "SERVER_UNAVAILABLE", "Server Unavailable");
    }
    if store.fault(&["expire"]).is_some() {
        s.sessions.clear();
    }
    if !bearer(&r.auth).is_some_and(|t| s.sessions.contains(t)) {
        return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid");
    }
    if store.fault(&["limit"]).is_some() {
        return sf_error(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        );
    }
    if store.fault(&["unavailable"]).is_some() {
        return sf_error(503, "SERVER_UNAVAILABLE", "Server Unavailable");
    }
    let v = "/services/data/v62.0";
    let Some(rest) = r.path.strip_prefix(v) else {
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist");
    };
    if let Some(obj) = rest
        .strip_prefix("/sobjects/")
        .and_then(|x| x.strip_suffix("/describe"))
    {
        let Some(fields) = store.schema.get(obj) else {
            return sf_error(
                404,
                "NOT_FOUND",
                &format!("The requested resource does not exist: {obj}"),
            );
        };
        let fields: Vec<Value> = fields
            .iter()
            .map(|(n, t)| json!({"name": n, "type": t}))
            .collect();
        return answer(200, &[], &json!({"name": obj, "fields": fields}));
    }
    if rest == "/composite/sobjects" && (r.method == "PATCH" || r.method == "POST") {
        return collection(&mut store, &mut s, &r);
    }
    if rest == "/query" {
        let q = r.params("q").pop().unwrap_or_default();
        if let Some(a) = lookup(&store, &q) {
            return a;
        }
        let re = Regex::new(
            r"^SELECT (.+) FROM (\w+)(?: WHERE (.+))? ORDER BY SystemModstamp ASC, Id ASC$",
        )
        .unwrap();
        let Some(c) = re.captures(&q) else {
            return sf_error(400, "MALFORMED_QUERY", "unexpected token");
        };
        let obj = c[2].to_string();
        let fields: Vec<String> = c[1].split(", ").map(str::to_string).collect();
        let schema = store.schema.get(&obj).cloned().unwrap_or_default();
        for f in &fields {
            if !schema.contains_key(f) {
                return answer(
                    400,
                    &[],
                    &json!([{"message": format!("No such column '{f}' on entity '{obj}'"), "errorCode": "INVALID_FIELD", "fields": [f]}]),
                );
            }
        }
        let (after, after_id) = match c.get(3) {
            None => (i64::MIN, None),
            Some(w) => {
                let t = Regex::new(r"SystemModstamp > (\S+?)[ )]|SystemModstamp > (\S+)$").unwrap();
                let tc = t.captures(w.as_str()).unwrap();
                let ts = tc.get(1).or(tc.get(2)).unwrap().as_str();
                let id = Regex::new(r"Id > '([^']*)'")
                    .unwrap()
                    .captures(w.as_str())
                    .map(|c| c[1].to_string());
                (time_of(ts), id)
            }
        };
        let rows: Vec<Value> = store
            .objects
            .get(&obj)
            .into_iter()
            .flatten()
            .filter(|rec| {
                rec.modified > after
                    || after_id
                        .as_ref()
                        .is_some_and(|id| rec.modified == after && rec.id > *id)
            })
            .map(|rec| {
                let mut m = serde_json::Map::new();
                m.insert(
                    "attributes".into(),
                    json!({"type": obj, "url": format!("{v}/sobjects/{obj}/{}", rec.id)}),
                );
                for f in &fields {
                    let val = match f.as_str() {
                        "Id" => json!(rec.id),
                        "SystemModstamp" => json!(modstamp(rec.modified)),
                        _ => rec.fields.get(f).cloned().unwrap_or(Value::Null),
                    };
                    m.insert(f.clone(), val);
                }
                Value::Object(m)
            })
            .collect();
        *store.served.entry(obj.clone()).or_default() += rows.len().min(s.page_size);
        return page(&mut s, rows);
    }
    if let Some(id) = rest.strip_prefix("/query/") {
        let Some(rows) = s.cursors.remove(id) else {
            return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
        };
        let obj = rows
            .first()
            .and_then(|r| r.pointer("/attributes/type"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        *store.served.entry(obj).or_default() += rows.len().min(s.page_size);
        return page(&mut s, rows);
    }
    sf_error(404, "NOT_FOUND", "The requested resource does not exist")
}

fn page(s: &mut SfState, mut rows: Vec<Value>) -> warp::reply::Response {
    let total = rows.len();
    let rest = if rows.len() > s.page_size {
        rows.split_off(s.page_size)
    } else {
        Vec::new()
    };
    let mut body = json!({"totalSize": total, "done": rest.is_empty(), "records": rows});
    if !rest.is_empty() {
        s.issued += 1;
        let id = format!("01gxx0000{}-{}", s.issued, s.page_size);
        body["nextRecordsUrl"] = json!(format!("/services/data/v62.0/query/{id}"));
        s.cursors.insert(id, rest);
    }
    answer(200, &[], &body)
}

/// A SOQL lookup by email: `SELECT f, … FROM Object WHERE Email IN ('a', …)`.
fn lookup(store: &Store, q: &str) -> Option<warp::reply::Response> {
    let re = Regex::new(r"^SELECT (.+) FROM (\w+) WHERE Email IN \((.*)\)$").unwrap();
    let c = re.captures(q)?;
    let obj = c[2].to_string();
    let schema = store.schema.get(&obj).cloned().unwrap_or_default();
    let fields: Vec<&str> = c[1].split(", ").collect();
    for f in &fields {
        if !schema.contains_key(*f) {
            return Some(answer(
                400,
                &[],
                &json!([{"message": format!("No such column '{f}' on entity '{obj}'"), "errorCode": "INVALID_FIELD", "fields": [f]}]),
            ));
        }
    }
    let lit = Regex::new(r"'((?:[^'\\]|\\.)*)'").unwrap();
    let emails: Vec<String> = lit
        .captures_iter(&c[3])
        .map(|m| m[1].replace("\\'", "'").to_ascii_lowercase())
        .collect();
    let rows: Vec<Value> = store
        .objects
        .get(&obj)
        .into_iter()
        .flatten()
        .filter(|rec| {
            rec.fields
                .get("Email")
                .and_then(Value::as_str)
                .is_some_and(|e| emails.contains(&e.to_ascii_lowercase()))
        })
        .map(|rec| {
            let mut m = serde_json::Map::new();
            m.insert("attributes".into(), json!({"type": obj}));
            for f in &fields {
                let v = match *f {
                    "Id" => json!(rec.id),
                    _ => rec.fields.get(*f).cloned().unwrap_or(Value::Null),
                };
                m.insert(f.to_string(), v);
            }
            Value::Object(m)
        })
        .collect();
    Some(answer(
        200,
        &[],
        &json!({"totalSize": rows.len(), "done": true, "records": rows}),
    ))
}

fn save_error(code: &str, message: &str) -> Value {
    json!({"success": false, "errors": [{"statusCode": code, "message": message, "fields": []}]})
}

/// sObject Collections: update (`PATCH`, each record with its id) or create (`POST`).
fn collection(store: &mut Store, s: &mut SfState, r: &Req) -> warp::reply::Response {
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return sf_error(400, "JSON_PARSER_ERROR", "Unexpected character");
    };
    let Some(records) = body["records"].as_array() else {
        return sf_error(400, "INVALID_FIELD", "records is required");
    };
    if records.len() > 200 {
        return sf_error(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    store.wrote(&format!("{} {}", r.method, r.path), records.len());
    let lock = store.fault(&["lock"]).is_some();
    let now = chrono::Utc::now().timestamp_millis();
    let mut results = Vec::new();
    for (n, rec) in records.iter().enumerate() {
        let Some(obj) = rec.pointer("/attributes/type").and_then(Value::as_str) else {
            results.push(save_error(
                "INVALID_TYPE",
                "Must send a concrete entity type.",
            ));
            continue;
        };
        let Some(schema) = store.schema.get(obj).cloned() else {
            results.push(save_error(
                "INVALID_TYPE",
                &format!("sObject type '{obj}' is not supported."),
            ));
            continue;
        };
        if lock && n == 0 {
            results.push(save_error(
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records",
            ));
            continue;
        }
        let fields: serde_json::Map<String, Value> = rec
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "attributes" && *k != "id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(bad) = fields.keys().find(|k| !schema.contains_key(*k)) {
            results.push(save_error(
                "INVALID_FIELD",
                &format!("No such column '{bad}' on sobject of type {obj}"),
            ));
            continue;
        }
        if r.method == "POST" {
            if rec.get("id").is_some() {
                results.push(save_error(
                    "INVALID_FIELD",
                    "cannot specify Id in an insert call",
                ));
                continue;
            }
            let missing: Vec<&str> = match obj {
                "Lead" => vec!["LastName", "Company"],
                "Contact" => vec!["LastName"],
                _ => vec!["Name"],
            }
            .into_iter()
            .filter(|f| {
                fields
                    .get(*f)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            })
            .collect();
            if !missing.is_empty() {
                results.push(save_error(
                    "REQUIRED_FIELD_MISSING",
                    &format!("Required fields are missing: [{}]", missing.join(", ")),
                ));
                continue;
            }
            s.issued += 1;
            let prefix = match obj {
                "Lead" => "00Q",
                "Contact" => "003",
                _ => "001",
            };
            let id = format!("{prefix}xx{:012}", s.issued);
            store.put(obj, &id, now, Value::Object(fields));
            results.push(json!({"id": id, "success": true, "errors": []}));
            continue;
        }
        let id = rec["id"].as_str().unwrap_or("");
        let Some(existing) = store
            .objects
            .get(obj)
            .and_then(|v| v.iter().find(|x| x.id == id))
            .cloned()
        else {
            results.push(save_error(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
            ));
            continue;
        };
        let mut merged = existing.fields.clone();
        merged.extend(fields);
        store.put(obj, id, now, Value::Object(merged));
        results.push(json!({"id": id, "success": true, "errors": []}));
    }
    answer(200, &[], &Value::Array(results))
}
