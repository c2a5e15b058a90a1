//! Local contract servers of the CRMs' APIs, as their documentation describes them (paths,
//! auth, paging, error bodies, rate limits), with faults to inject. Each is a small warp
//! service on its own runtime thread, bound to a free loopback port.

pub mod airtable;
pub mod hubspot;
pub mod salesforce;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// One stored record.
#[derive(Clone, Debug)]
pub struct Rec {
    pub id: String,
    /// Last modified (ms).
    pub modified: i64,
    pub fields: Map<String, Value>,
}

/// Records per object, and the fields each object has (name → type).
#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<String, Vec<Rec>>,
    pub schema: BTreeMap<String, BTreeMap<String, String>>,
    /// Records returned by list/search/query calls, per object (what a sync fetched).
    pub served: BTreeMap<String, usize>,
    /// Every request's path, in order.
    pub requests: Vec<String>,
    pub faults: VecDeque<String>,
    /// Delay before every answer (a slow CRM).
    pub latency: Duration,
    /// Every call fails (a 503 in the CRM's own shape) until then: an outage.
    pub down_until: Option<Instant>,
    /// Write requests, in order: when, which path, how many records.
    pub writes: Vec<Write>,
}

/// One write request a contract server took.
#[derive(Clone, Debug)]
pub struct Write {
    pub at: Instant,
    pub path: String,
    pub records: usize,
}

impl Store {
    pub fn put(&mut self, object: &str, id: &str, modified: i64, fields: Value) {
        let fields = fields.as_object().cloned().unwrap_or_default();
        let list = self.objects.entry(object.to_string()).or_default();
        list.retain(|r| r.id != id);
        list.push(Rec {
            id: id.to_string(),
            modified,
            fields,
        });
        list.sort_by(|a, b| (a.modified, &a.id).cmp(&(b.modified, &b.id)));
    }

    /// Whether the CRM is in an outage.
    pub fn down(&self) -> bool {
        self.down_until.is_some_and(|t| Instant::now() < t)
    }

    /// Records a write request.
    pub fn wrote(&mut self, path: &str, records: usize) {
        self.writes.push(Write {
            at: Instant::now(),
            path: path.to_string(),
            records,
        });
    }

    /// A record of `object` whose `field` equals `value` (case-insensitively).
    pub fn find(&self, object: &str, field: &str, value: &str) -> Option<&Rec> {
        self.objects.get(object)?.iter().find(|r| {
            r.fields
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        })
    }

    /// The next injected fault, if its name is one of `names`.
    pub fn fault(&mut self, names: &[&str]) -> Option<String> {
        match self.faults.front() {
            Some(f) if names.contains(&f.as_str()) => self.faults.pop_front(),
            _ => None,
        }
    }
}

pub type Shared = Arc<Mutex<Store>>;

/// Requests within a sliding window, per key: `true` when one more fits under `max`.
#[derive(Default)]
pub struct Window {
    hits: BTreeMap<String, VecDeque<Instant>>,
}

impl Window {
    pub fn admit(&mut self, key: &str, max: usize, per: Duration) -> bool {
        let now = Instant::now();
        let q = self.hits.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= per) {
            q.pop_front();
        }
        if q.len() >= max {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// Serves `routes` on a free loopback port, on a runtime of its own; answers its address.
pub fn serve<F>(routes: F) -> SocketAddr
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            warp::serve(routes).incoming(listener).run().await;
        });
    });
    rx.recv().unwrap()
}

/// A JSON answer with a status and headers.
pub fn answer(status: u16, headers: &[(&str, String)], body: &Value) -> warp::reply::Response {
    let mut r = warp::http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(body.to_string().into()).unwrap()
}

pub fn bearer(auth: &Option<String>) -> Option<&str> {
    auth.as_deref()?.strip_prefix("Bearer ")
}

pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// One request as the contract servers see it.
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub auth: Option<String>,
    pub body: bytes::Bytes,
}

impl Req {
    /// The query's values of `key`, decoded.
    pub fn params(&self, key: &str) -> Vec<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

/// Serves every request through `handle`, after the store's latency.
pub fn serve_fn<H>(store: Shared, handle: H) -> SocketAddr
where
    H: Fn(&Shared, Req) -> warp::reply::Response + Clone + Send + Sync + 'static,
{
    use warp::Filter;
    let query =
        warp::query::raw().or_else(|_| async { Ok::<_, warp::Rejection>((String::new(),)) });
    let routes = warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .then(
            move |m: warp::http::Method,
                  p: warp::path::FullPath,
                  q: String,
                  a: Option<String>,
                  b: bytes::Bytes| {
                let store = store.clone();
                let handle = handle.clone();
                async move {
                    let latency = {
                        let mut s = store.lock().unwrap();
                        s.requests.push(p.as_str().to_string());
                        s.latency
                    };
                    tokio::time::sleep(latency).await;
                    handle(
                        &store,
                        Req {
                            method: m.to_string(),
                            path: p.as_str().to_string(),
                            query: q,
                            auth: a,
                            body: b,
                        },
                    )
                }
            },
        );
    serve(routes)
}

impl Store {
    /// A Salesforce org: Account, Contact and Lead with the fields the default mapping reads.
    pub fn salesforce() -> Store {
        let mut s = Store::default();
        s.schema.insert(
            "Account".into(),
            names(&[
                ("Id", "id"),
                ("SystemModstamp", "datetime"),
                ("Name", "string"),
                ("Website", "url"),
                ("Industry", "picklist"),
                ("NumberOfEmployees", "int"),
                ("BillingCountry", "string"),
            ]),
        );
        s.schema.insert(
            "Contact".into(),
            names(&[
                ("Id", "id"),
                ("SystemModstamp", "datetime"),
                ("AccountId", "reference"),
                ("Email", "email"),
                ("FirstName", "string"),
                ("LastName", "string"),
                ("Title", "string"),
            ]),
        );
        s.schema.insert(
            "Lead".into(),
            names(&[
                ("Id", "id"),
                ("SystemModstamp", "datetime"),
                ("Email", "email"),
                ("FirstName", "string"),
                ("LastName", "string"),
                ("Title", "string"),
                ("Company", "string"),
                ("Website", "url"),
                ("Industry", "picklist"),
                ("NumberOfEmployees", "int"),
                ("Country", "string"),
            ]),
        );
        s
    }

    /// A HubSpot account: companies and contacts with the properties the default mapping reads.
    pub fn hubspot() -> Store {
        let mut s = Store::default();
        s.schema.insert(
            "companies".into(),
            names(&[
                ("name", "string"),
                ("domain", "string"),
                ("industry", "enumeration"),
                ("numberofemployees", "number"),
                ("country", "string"),
                ("annualrevenue", "number"),
            ]),
        );
        s.schema.insert(
            "contacts".into(),
            names(&[
                ("email", "string"),
                ("firstname", "string"),
                ("lastname", "string"),
                ("company", "string"),
                ("jobtitle", "string"),
                ("associatedcompanyid", "number"),
            ]),
        );
        s
    }

    /// An Airtable base: a `Companies` and a `People` table with the default mapping's fields.
    pub fn airtable() -> Store {
        let mut s = Store::default();
        s.schema.insert(
            "Companies".into(),
            names(&[
                ("Name", "singleLineText"),
                ("Website", "url"),
                ("Industry", "singleSelect"),
                ("Segment", "singleSelect"),
                ("Employees", "number"),
                ("Region", "singleLineText"),
                ("Last Modified", "lastModifiedTime"),
            ]),
        );
        s.schema.insert(
            "People".into(),
            names(&[
                ("Email", "email"),
                ("First Name", "singleLineText"),
                ("Last Name", "singleLineText"),
                ("Company", "multipleRecordLinks"),
                ("Title", "singleLineText"),
                ("Last Modified", "lastModifiedTime"),
            ]),
        );
        s
    }
}

fn names(fields: &[(&str, &str)]) -> BTreeMap<String, String> {
    fields
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}
