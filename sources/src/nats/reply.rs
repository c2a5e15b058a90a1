//! The NATS source's core-NATS half: a request on `trailspark.ingest.<org>.<source>` is
//! answered like the webhook once its signal is durable: the same 202 body, or the error
//! body, with the HTTP status in `Trailspark-Status`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use trailspark_core::subjects::REQUEST_PREFIX;
use trailspark_core::LogEntry;

use super::{credentials, is_batch, parse_subject, records};
use crate::ingest::{accepted_body, cold_storage, submit_items, ItemResults};
use crate::{Ingest, IngestError};

/// The header of a reply that holds its HTTP status.
pub const STATUS_HEADER: &str = "Trailspark-Status";

/// Answers core-NATS requests on `trailspark.ingest.<org>.<source>` until the process ends.
pub async fn run_requests(ingest: Arc<dyn Ingest>, client: async_nats::Client) {
    loop {
        let mut sub = match client
            .queue_subscribe(format!("{REQUEST_PREFIX}.>"), "trailspark".into())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Subscribing to NATS requests failed; retrying.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = sub.next().await {
            let ingest = ingest.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let (status, body) = answer(&*ingest, &msg).await;
                if let Some(reply) = msg.reply {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(STATUS_HEADER, status.to_string().as_str());
                    let body = serde_json::to_vec(&body).expect("JSON values serialize");
                    if let Err(e) = client
                        .publish_with_headers(reply, headers, body.into())
                        .await
                    {
                        tracing::debug!(error = %e, "Could not send a NATS reply.");
                    }
                }
            });
        }
    }
}

/// The status and body a request gets: the webhook's, for one object or an array.
async fn answer(ingest: &dyn Ingest, msg: &async_nats::Message) -> (u16, serde_json::Value) {
    let received_at = chrono::Utc::now().timestamp_millis();
    let items = match parse_subject(REQUEST_PREFIX, &msg.subject).and_then(|t| {
        records(
            ingest,
            &t,
            &credentials(msg.headers.as_ref()),
            &msg.payload,
            received_at,
        )
    }) {
        Ok(items) => items,
        Err(e) => return error_answer(&e),
    };
    if !is_batch(&msg.payload) {
        let Some(item) = items.into_iter().next() else {
            return error_answer(&IngestError::Internal("no item".into()));
        };
        let record = match item.record {
            Ok(r) => r,
            Err(e) => return error_answer(&e),
        };
        let cold = cold_storage(ingest, &record);
        let result = ingest.submit(vec![LogEntry::Signal(record.clone())]).await;
        return match result.map(|mut v| v.pop()) {
            Ok(Some(Ok(receipt))) => {
                let mut body = accepted_body(&record, receipt, cold);
                body["status"] = json!(202);
                (202, body)
            }
            Ok(Some(Err(e))) | Err(e) => error_answer(&e),
            Ok(None) => error_answer(&IngestError::Internal("missing receipt".into())),
        };
    }
    let mut results = ItemResults::new();
    if let Err(e) = submit_items(ingest, items, &mut results).await {
        return error_answer(&e);
    }
    let status = results.status(warp::http::StatusCode::ACCEPTED).as_u16();
    let mut body = results.to_json();
    body["status"] = json!(status);
    (status, body)
}

fn error_answer(e: &IngestError) -> (u16, serde_json::Value) {
    let status = e.status().as_u16();
    let mut body = e.body();
    body["status"] = json!(status);
    if let Some(s) = e.retry_after() {
        body["retry_after"] = json!(s);
    }
    (status, body)
}
