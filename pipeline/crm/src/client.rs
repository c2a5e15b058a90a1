//! The HTTP client every CRM connector shares: pacing under a documented request rate per
//! scope (a HubSpot token, an Airtable base), bounded retries of transient failures with
//! backoff, and one token refresh per request when the CRM says the session expired.
//!
//! Pacing is shared by every integration on the same scope, so two syncs of one Airtable
//! base stay under its 5 requests/s together, and a 429's penalty holds the whole scope.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::CrmError;

/// Attempts per request, counting the first: rate-limit waits and transient failures both
/// use them up, so nothing retries forever.
pub const MAX_ATTEMPTS: u32 = 6;

/// An answer as the connectors classify it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Result<serde_json::Value, CrmError> {
        serde_json::from_slice(&self.body).map_err(|e| CrmError::Refused {
            status: self.status,
            message: format!("the answer is not JSON: {e}"),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What to do with an answer.
pub enum Verdict {
    Done,
    /// Try again after this long (rate limits, transient server errors).
    Retry(Duration),
    /// The session expired: refresh the token and try once more.
    Refresh,
    Fail(CrmError),
}

#[derive(Clone)]
pub struct CrmHttp {
    client: reqwest::Client,
    /// Per scope: the earliest time its next request may start.
    slots: Arc<Mutex<HashMap<String, Instant>>>,
    /// The first retry's wait after a transient failure (doubles per attempt).
    pub backoff: Duration,
}

impl CrmHttp {
    pub fn new(timeout: Duration) -> CrmHttp {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        CrmHttp {
            client,
            slots: Arc::new(Mutex::new(HashMap::new())),
            backoff: Duration::from_millis(200),
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits for `scope`'s next slot at `per_sec` requests a second, and takes it.
    pub async fn pace(&self, scope: &str, per_sec: f64) {
        let gap = Duration::from_secs_f64(1.0 / per_sec);
        let start = {
            let mut slots = self.slots.lock().unwrap();
            let now = Instant::now();
            let slot = slots.entry(scope.to_string()).or_insert(now);
            let start = (*slot).max(now);
            *slot = start + gap;
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// Holds every request of `scope` for `wait` (a 429's penalty).
    pub fn hold(&self, scope: &str, wait: Duration) {
        let mut slots = self.slots.lock().unwrap();
        let until = Instant::now() + wait;
        let slot = slots.entry(scope.to_string()).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// Sends one request; a failure to reach the CRM is `Unreachable`.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer, CrmError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CrmError::Unreachable(without_url(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CrmError::Unreachable(without_url(&e)))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Runs `attempt` until `classify` accepts its answer, under `pace` (scope and rate):
    /// waits what the CRM asks between tries, refreshes once when told to (`attempt` gets
    /// `true` then), and gives up after [`MAX_ATTEMPTS`].
    pub async fn call<F, Fut, C>(
        &self,
        pace: Option<(&str, f64)>,
        mut attempt: F,
        classify: C,
    ) -> Result<Answer, CrmError>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<Answer, CrmError>>,
        C: Fn(&Answer) -> Verdict,
    {
        let mut refreshed = false;
        let mut refresh = false;
        let mut last = String::new();
        for n in 0..MAX_ATTEMPTS {
            if let Some((scope, rate)) = pace {
                self.pace(scope, rate).await;
            }
            let wait = match attempt(refresh).await {
                Err(CrmError::Unreachable(e)) => {
                    last = e;
                    self.backoff * 2u32.pow(n)
                }
                Err(e) => return Err(e),
                Ok(a) => match classify(&a) {
                    Verdict::Done => return Ok(a),
                    Verdict::Fail(e) => return Err(e),
                    Verdict::Refresh if !refreshed => {
                        refreshed = true;
                        refresh = true;
                        continue;
                    }
                    Verdict::Refresh => {
                        return Err(CrmError::Disconnected(
                            "the CRM refused a freshly refreshed token".into(),
                        ))
                    }
                    Verdict::Retry(d) => {
                        last = format!("HTTP {}", a.status);
                        if let Some((scope, _)) = pace {
                            self.hold(scope, d);
                        }
                        d
                    }
                },
            };
            refresh = false;
            tracing::debug!(
                attempt = n + 1,
                wait_ms = wait.as_millis() as u64,
                "CRM call retried"
            );
            tokio::time::sleep(wait).await;
        }
        Err(CrmError::Unreachable(format!(
            "gave up after {MAX_ATTEMPTS} attempts ({last})"
        )))
    }
}

/// A transport error as text, without the URL (a query may carry record data).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the answer's body failed"
    } else {
        "request failed"
    }
    .to_string()
}
