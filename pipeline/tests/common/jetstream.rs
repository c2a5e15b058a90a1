//! Reading JetStream streams back in tests: every message of a stream, and the change events
//! with their subjects and ids checked.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::Value;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A stored stream message: subject, headers, payload.
pub struct Stored {
    pub subject: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Every message of `stream` (on `filter`), read with an ordered consumer up to its end.
pub async fn read_stream(url: &str, stream: &str, filter: &str) -> Vec<Stored> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut st = js.get_stream(stream).await.unwrap();
    if st.info().await.unwrap().state.messages == 0 {
        return Vec::new();
    }
    let consumer = st
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await {
        let m = m.unwrap();
        let pending = m.info().unwrap().pending;
        let headers = m
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| (k.to_string(), v[0].to_string()))
            .collect();
        out.push(Stored {
            subject: m.subject.to_string(),
            headers,
            payload: m.payload.to_vec(),
        });
        if pending == 0 {
            break;
        }
    }
    out
}

pub fn change_events(url: &str) -> Vec<Value> {
    rt().block_on(read_stream(url, "TRAILSPARK_EVENTS", "trailspark.events.>"))
        .into_iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(
                m.headers.get("Nats-Msg-Id").map(String::as_str),
                v["id"].as_str()
            );
            assert_eq!(
                m.subject,
                format!(
                    "trailspark.events.{}.{}",
                    v["org_id"],
                    v["type"].as_str().unwrap().replace('.', "_")
                )
            );
            v
        })
        .collect()
}
