//! HubSpot's CRM v3 as documented: bearer tokens (401 `INVALID_AUTHENTICATION`), CRM search
//! with filter groups, one sort, `after` paging and its limit of 4 requests a second per
//! token (429 "You have reached your secondly limit."), properties per object type, and
//! error bodies `{status, message, category, correlationId}`.
//!
//! Writes: `batch/update` (by id or a unique `idProperty`) and `batch/upsert` of contacts and
//! companies, at most 100 inputs, answering `207` with `errors[]` when some inputs failed
//! (`OBJECT_NOT_FOUND` naming their ids); property values checked by type (a `date` takes
//! only UTC midnights); `POST /crm/v3/properties/{object}` (`409` when it exists). Calls other
//! than search are limited to 100 per 10 s per token (429 `TEN_SECONDLY_ROLLING`).
//!
//! Faults: `ten_secondly` (one 429 with `policyName: TEN_SECONDLY_ROLLING` and the
//! `X-HubSpot-RateLimit-*` headers), `daily` (one 429 `DAILY`); `Store::down_until` answers
//! every call 503.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{answer, bearer, Req, Shared, Store, Window};

pub struct Hubspot {
    pub url: String,
    pub store: Shared,
    /// Requests refused by the secondly search limit.
    pub throttled: Arc<Mutex<usize>>,
    pub oauth: Arc<Mutex<HsOAuth>>,
}

pub const CLIENT_ID: &str = "5f6c3b1e-hubspot-client";
pub const CLIENT_SECRET: &str = "c7d2-hubspot-client-secret";
/// The scopes the app must ask for.
pub const SCOPES: [&str; 5] = [
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.contacts.read",
];

/// OAuth: codes handed out, refresh tokens, and access tokens with their real expiry.
#[derive(Default)]
pub struct HsOAuth {
    pub codes: std::collections::BTreeMap<String, String>,
    pub refresh: std::collections::BTreeSet<String>,
    pub access: std::collections::BTreeMap<String, std::time::Instant>,
    /// How long access tokens really live (the answer says 1800 s).
    pub lifetime: Duration,
    pub refreshes: usize,
    issued: usize,
}

fn oauth_endpoints(o: &Mutex<HsOAuth>, r: &Req) -> Option<warp::reply::Response> {
    let mut o = o.lock().unwrap();
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/oauth/authorize") => {
            let one = |k: &str| r.params(k).pop().unwrap_or_default();
            if one("client_id") != CLIENT_ID {
                return Some(hs_error(400, "BAD_CLIENT_ID", "unknown client_id"));
            }
            let scope = one("scope");
            if !SCOPES.iter().all(|s| scope.split(' ').any(|x| x == *s)) {
                return Some(hs_error(
                    400,
                    "BAD_SCOPES",
                    "the app's required scopes are missing",
                ));
            }
            o.issued += 1;
            let code = format!("na1-code-{}", o.issued);
            o.codes.insert(code.clone(), one("redirect_uri"));
            let loc = format!("{}?code={code}&state={}", one("redirect_uri"), one("state"));
            Some(
                warp::http::Response::builder()
                    .status(302)
                    .header("location", loc)
                    .body(Vec::new().into())
                    .unwrap(),
            )
        }
        ("POST", "/oauth/v1/token") => {
            let f: std::collections::BTreeMap<String, String> =
                form_urlencoded::parse(&r.body).into_owned().collect();
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
                return Some(answer(
                    400,
                    &[],
                    &json!({"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"}),
                ));
            }
            let refresh = match get("grant_type").as_str() {
                "authorization_code" => match o.codes.remove(&get("code")) {
                    Some(redirect) if redirect == get("redirect_uri") => {
                        o.issued += 1;
                        let t = format!("na1-refresh-{}", o.issued);
                        o.refresh.insert(t.clone());
                        t
                    }
                    Some(_) => {
                        return Some(answer(
                            400,
                            &[],
                            &json!({"status": "BAD_REDIRECT_URI", "message": "redirect_uri does not match"}),
                        ))
                    }
                    None => {
                        return Some(answer(
                            400,
                            &[],
                            &json!({"status": "BAD_AUTH_CODE", "message": "missing or unknown auth code"}),
                        ))
                    }
                },
                "refresh_token" if o.refresh.contains(&get("refresh_token")) => {
                    o.refreshes += 1;
                    get("refresh_token")
                }
                "refresh_token" => {
                    return Some(answer(
                        400,
                        &[],
                        &json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}),
                    ))
                }
                _ => {
                    return Some(answer(
                        400,
                        &[],
                        &json!({"status": "BAD_GRANT_TYPE", "message": "unknown grant_type"}),
                    ))
                }
            };
            o.issued += 1;
            let access = format!(
                "CJSP5qf1KhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2-qYAGQsF4-oauth-{}",
                o.issued
            );
            let until = std::time::Instant::now()
                + if o.lifetime.is_zero() {
                    Duration::from_secs(1800)
                } else {
                    o.lifetime
                };
            o.access.insert(access.clone(), until);
            Some(answer(
                200,
                &[],
                &json!({"token_type": "bearer", "refresh_token": refresh, "access_token": access, "expires_in": 1800}),
            ))
        }
        _ => None,
    }
}

fn hs_error(status: u16, category: &str, message: &str) -> warp::reply::Response {
    answer(
        status,
        &[],
        &json!({"status": "error", "message": message, "category": category, "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf"}),
    )
}

fn modified(object: &str) -> &'static str {
    if object == "companies" {
        "hs_lastmodifieddate"
    } else {
        "lastmodifieddate"
    }
}

impl Hubspot {
    pub fn start(token: &str, store: Store) -> Hubspot {
        let store: Shared = Arc::new(Mutex::new(store));
        let throttled = Arc::new(Mutex::new(0));
        let window = Arc::new(Mutex::new(Window::default()));
        let oauth = Arc::new(Mutex::new(HsOAuth::default()));
        let (token, t2, o2) = (token.to_string(), throttled.clone(), oauth.clone());
        let addr = super::serve_fn(store.clone(), move |st, r| {
            if let Some(a) = oauth_endpoints(&o2, &r) {
                return a;
            }
            handle(st, &token, &o2, &window, &t2, r)
        });
        Hubspot {
            url: format!("http://{addr}"),
            store,
            throttled,
            oauth,
        }
    }
}

/// Whether a record passes one filter (dates compare as epoch ms, ids as numbers).
fn passes(rec: &super::Rec, object: &str, f: &Value) -> bool {
    let prop = f["propertyName"].as_str().unwrap_or("");
    let want = f["value"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| f["value"].to_string());
    let have: Option<i128> = match prop {
        "hs_object_id" => rec.id.parse().ok(),
        p if p == modified(object) => Some(rec.modified as i128),
        p => rec
            .fields
            .get(p)
            .and_then(|v| v.as_str().map(str::to_string).or(Some(v.to_string())))
            .and_then(|s| s.parse().ok()),
    };
    let (Some(have), Ok(want)) = (have, want.parse::<i128>()) else {
        return false;
    };
    match f["operator"].as_str() {
        Some("GT") => have > want,
        Some("GTE") => have >= want,
        Some("EQ") => have == want,
        Some("LT") => have < want,
        _ => false,
    }
}

fn handle(
    st: &Shared,
    token: &str,
    oauth: &Mutex<HsOAuth>,
    window: &Mutex<Window>,
    throttled: &Mutex<usize>,
    r: Req,
) -> warp::reply::Response {
    let presented = bearer(&r.auth).unwrap_or("");
    if presented != token {
        match oauth.lock().unwrap().access.get(presented) {
            Some(until) if std::time::Instant::now() < *until => {}
            Some(_) => {
                return hs_error(
                    401,
                    "EXPIRED_AUTHENTICATION",
                    "The OAuth token used to make this call expired 1 second(s) ago.",
                )
            }
            None => return hs_error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            ),
        }
    }
    let token = presented;
    let mut store = st.lock().unwrap();
    if store.down() {
        return hs_error(
            503,
            "SERVICE_UNAVAILABLE",
            "The service is temporarily unavailable.",
        );
    }
    let limits = [
        ("X-HubSpot-RateLimit-Max", "100".to_string()),
        ("X-HubSpot-RateLimit-Remaining", "0".to_string()),
        (
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".to_string(),
        ),
        ("X-HubSpot-RateLimit-Daily", "250000".to_string()),
        ("X-HubSpot-RateLimit-Daily-Remaining", "249000".to_string()),
    ];
    if store.fault(&["ten_secondly"]).is_some() {
        return answer(
            429,
            &limits,
            &json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "category": "RATE_LIMITS", "policyName": "TEN_SECONDLY_ROLLING", "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24"}),
        );
    }
    if store.fault(&["daily"]).is_some() {
        return answer(
            429,
            &limits,
            &json!({"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT", "category": "RATE_LIMITS", "policyName": "DAILY"}),
        );
    }
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let search = segs.last() == Some(&"search");
    if !search
        && !window
            .lock()
            .unwrap()
            .admit(&format!("{token}:calls"), 100, Duration::from_secs(10))
    {
        *throttled.lock().unwrap() += 1;
        return answer(
            429,
            &limits,
            &json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "category": "RATE_LIMITS", "policyName": "TEN_SECONDLY_ROLLING"}),
        );
    }
    match (r.method.as_str(), segs.as_slice()) {
        ("POST", ["crm", "v3", "objects", object, "batch", op])
            if *op == "update" || *op == "upsert" =>
        {
            batch_write(&mut store, object, op, &r)
        }
        ("POST", ["crm", "v3", "properties", object]) => create_property(&mut store, object, &r),
        ("GET", ["crm", "v3", "properties", object]) => {
            let Some(props) = store.schema.get(*object) else {
                return hs_error(
                    400,
                    "VALIDATION_ERROR",
                    &format!("Unable to infer object type from: {object}"),
                );
            };
            let results: Vec<Value> = props.iter().map(|(n, t)| json!({"name": n, "label": n, "type": t, "fieldType": if t == "number" {"number"} else {"text"}, "groupName": "companyinformation", "hasUniqueValue": false})).collect();
            answer(200, &[], &json!({"results": results}))
        }
        ("POST", ["crm", "v3", "objects", object, "search"]) => {
            if !window
                .lock()
                .unwrap()
                .admit(token, 4, Duration::from_secs(1))
            {
                *throttled.lock().unwrap() += 1;
                return hs_error(429, "RATE_LIMITS", "You have reached your secondly limit.");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                return hs_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1");
            };
            let limit = body["limit"].as_u64().unwrap_or(10) as usize;
            if limit > 200 {
                return hs_error(400, "VALIDATION_ERROR", "limit must be 200 or less");
            }
            let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
            if groups.len() > 5 {
                return hs_error(400, "VALIDATION_ERROR", "too many filter groups (max 5)");
            }
            let sort = &body["sorts"][0];
            if sort["propertyName"].as_str() != Some(modified(object))
                || sort["direction"] != "ASCENDING"
            {
                return hs_error(
                    400,
                    "VALIDATION_ERROR",
                    "this contract server sorts by the last-modified property, ascending",
                );
            }
            let props: Vec<String> = body["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            let matching: Vec<&super::Rec> = store
                .objects
                .get(*object)
                .into_iter()
                .flatten()
                .filter(|rec| {
                    groups.is_empty()
                        || groups.iter().any(|g| {
                            g["filters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .all(|f| passes(rec, object, f))
                        })
                })
                .collect();
            let total = matching.len();
            let after: usize = body["after"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            if after + limit > 10_000 {
                return hs_error(
                    400,
                    "VALIDATION_ERROR",
                    "paging past 10,000 results is not allowed",
                );
            }
            let results: Vec<Value> = matching.iter().skip(after).take(limit).map(|rec| {
                let mut p = serde_json::Map::new();
                for name in &props {
                    let v = if name == modified(object) { json!(super::iso(rec.modified)) } else { rec.fields.get(name).cloned().unwrap_or(Value::Null) };
                    p.insert(name.clone(), v);
                }
                p.insert("hs_object_id".into(), json!(rec.id));
                json!({"id": rec.id, "properties": p, "createdAt": super::iso(rec.modified), "updatedAt": super::iso(rec.modified), "archived": false})
            }).collect();
            let n = results.len();
            *store.served.entry(object.to_string()).or_default() += n;
            let mut out = json!({"total": total, "results": results});
            if after + n < total {
                out["paging"] = json!({"next": {"after": (after + n).to_string(), "link": ""}});
            }
            answer(200, &[], &out)
        }
        _ => hs_error(404, "OBJECT_NOT_FOUND", "resource not found"),
    }
}

/// Whether `v` is a value property type `ty` takes.
fn valid_value(ty: &str, v: &Value) -> bool {
    let Some(text) = v
        .as_str()
        .map(str::to_string)
        .or_else(|| v.as_i64().map(|n| n.to_string()))
    else {
        return v.is_null();
    };
    let ms = text.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|d| d.timestamp_millis())
    });
    match ty {
        "datetime" => ms.is_some(),
        "date" => {
            ms.is_some_and(|m| m % 86_400_000 == 0)
                || chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").is_ok()
        }
        "number" => text.parse::<f64>().is_ok(),
        _ => true,
    }
}

/// `batch/update` and `batch/upsert`.
fn batch_write(store: &mut Store, object: &str, op: &str, r: &Req) -> warp::reply::Response {
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return hs_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1");
    };
    let Some(schema) = store.schema.get(object).cloned() else {
        return hs_error(
            400,
            "VALIDATION_ERROR",
            &format!("Unable to infer object type from: {object}"),
        );
    };
    let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.is_empty() || inputs.len() > 100 {
        return hs_error(400, "VALIDATION_ERROR", "inputs must hold 1 to 100 objects");
    }
    // Property names and values are checked for the whole request first.
    let mut invalid = Vec::new();
    for input in &inputs {
        for (k, v) in input["properties"].as_object().into_iter().flatten() {
            match schema.get(k) {
                None => invalid.push(json!({"message": format!("Property \"{k}\" does not exist"), "code": "PROPERTY_DOESNT_EXIST", "name": k})),
                Some(ty) if !valid_value(ty, v) => invalid.push(json!({"message": format!("{v} is not a valid {ty} for \"{k}\""), "code": "INVALID_DATE", "name": k})),
                _ => {}
            }
        }
        if let Some(p) = input["idProperty"].as_str() {
            let unique = (object == "contacts" && p == "email") || p == "hs_object_id";
            let known = schema.contains_key(p) || p == "hs_object_id";
            if !known
                || (op == "upsert" && !unique)
                || (op == "update" && !(unique || p == "domain"))
            {
                return hs_error(
                    400,
                    "VALIDATION_ERROR",
                    &format!("{p} is not a unique property of {object}"),
                );
            }
        }
    }
    if !invalid.is_empty() {
        return answer(
            400,
            &[],
            &json!({"status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR", "errors": invalid}),
        );
    }
    store.wrote(&r.path, inputs.len());
    let now = chrono::Utc::now().timestamp_millis();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &inputs {
        let key = input["id"].as_str().unwrap_or("").to_string();
        let found = match input["idProperty"].as_str() {
            Some(p) if p != "hs_object_id" => store.find(object, p, &key).map(|r| r.id.clone()),
            _ => store
                .objects
                .get(object)
                .and_then(|v| v.iter().find(|r| r.id == key))
                .map(|r| r.id.clone()),
        };
        let mut props = input["properties"].as_object().cloned().unwrap_or_default();
        let (id, new) = match found {
            Some(id) => (id, false),
            None if op == "upsert" => {
                let n = store.objects.values().map(Vec::len).sum::<usize>() + 9001;
                if let Some(p) = input["idProperty"].as_str() {
                    props.entry(p.to_string()).or_insert(json!(key));
                }
                (n.to_string(), true)
            }
            None => {
                missing.push(key);
                continue;
            }
        };
        let mut fields = store
            .objects
            .get(object)
            .and_then(|v| v.iter().find(|r| r.id == id))
            .map(|r| r.fields.clone())
            .unwrap_or_default();
        fields.extend(props.clone());
        store.put(object, &id, now, Value::Object(fields));
        props.insert("hs_object_id".into(), json!(id));
        props.insert(modified(object).into(), json!(super::iso(now)));
        let mut out = json!({"id": id, "properties": props, "createdAt": super::iso(now),
                             "updatedAt": super::iso(now), "archived": false});
        if op == "upsert" {
            out["new"] = json!(new);
        }
        if let Some(t) = input.get("objectWriteTraceId") {
            out["objectWriteTraceId"] = t.clone();
        }
        results.push(out);
    }
    let mut body = json!({"status": "COMPLETE", "results": results,
                          "startedAt": super::iso(now), "completedAt": super::iso(now)});
    if missing.is_empty() {
        return answer(200, &[], &body);
    }
    let kind = if object == "companies" {
        "COMPANY"
    } else {
        "CONTACT"
    };
    body["numErrors"] = json!(1);
    body["errors"] = json!([{"status": "error", "category": "OBJECT_NOT_FOUND",
        "message": format!("Could not get some {kind} objects, they may be deleted or not exist. Check that ids are valid."),
        "context": {"ids": missing}, "errors": []}]);
    answer(207, &[], &body)
}

/// `POST /crm/v3/properties/{object}`.
fn create_property(store: &mut Store, object: &str, r: &Req) -> warp::reply::Response {
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return hs_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1");
    };
    let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
    for k in ["name", "label", "type", "fieldType", "groupName"] {
        if text(k).is_empty() {
            return hs_error(400, "VALIDATION_ERROR", &format!("{k} is required"));
        }
    }
    if ![
        "string",
        "number",
        "date",
        "datetime",
        "enumeration",
        "bool",
    ]
    .contains(&text("type").as_str())
    {
        return hs_error(400, "VALIDATION_ERROR", "type is invalid");
    }
    let Some(schema) = store.schema.get_mut(object) else {
        return hs_error(
            400,
            "VALIDATION_ERROR",
            &format!("Unable to infer object type from: {object}"),
        );
    };
    if schema.contains_key(&text("name")) {
        return answer(
            409,
            &[],
            &json!({"status": "error", "message": format!("Property named '{}' already exists.", text("name")), "category": "OBJECT_ALREADY_EXISTS"}),
        );
    }
    schema.insert(text("name"), text("type"));
    answer(
        201,
        &[],
        &json!({"name": text("name"), "label": text("label"), "type": text("type"), "fieldType": text("fieldType"), "groupName": text("groupName")}),
    )
}
