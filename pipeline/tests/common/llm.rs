//! A local contract server for OpenAI's chat-completions API, as its documentation describes
//! it, for the LLM scorer's tests: bearer-key auth (401 `invalid_api_key`), a known model
//! (404 `model_not_found`), a well-formed request (400 `invalid_request_error`, including
//! `response_format: json_object` without the word "json" in the messages), a request rate
//! limit (429 `rate_limit_exceeded` with `retry-after` and `x-ratelimit-*` headers), and
//! faults injected per request: malformed answers, answers of the wrong shape, 500s and delays.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What the server does with one request that passes its checks.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Content that is not JSON.
    Malformed,
    /// JSON of the wrong shape (a confidence out of range).
    WrongShape,
    /// 429 with `retry-after` seconds.
    RateLimited(u64),
    /// 500 `server_error`.
    ServerError,
    /// Answer normally after this long.
    Delay(Duration),
}

pub struct LlmState {
    pub key: String,
    pub model: String,
    /// The answer's content for requests without a fault.
    pub answer: Value,
    pub faults: VecDeque<Fault>,
    /// Every request's delay before answering (a slow model).
    pub latency: Duration,
    /// Requests allowed per window; more are 429.
    pub rate: Option<(usize, Duration)>,
    window: (Instant, usize),
    pub bodies: Vec<Value>,
}

pub struct LlmServer {
    pub url: String,
    pub state: Arc<Mutex<LlmState>>,
    /// Requests that reached the model (passed auth and validation).
    pub calls: Arc<AtomicUsize>,
}

fn error(
    status: u16,
    kind: &str,
    code: &str,
    message: &str,
) -> (u16, Vec<(String, String)>, Value) {
    (
        status,
        vec![],
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

impl LlmServer {
    pub fn start(key: &str, model: &str) -> LlmServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(LlmState {
            key: key.into(),
            model: model.into(),
            answer: json!({"score": "warm", "confidence": 82,
                           "reasoning": "Fits the ICP; steady product use.", "propensity": "medium"}),
            faults: VecDeque::new(),
            latency: Duration::ZERO,
            rate: None,
            window: (Instant::now(), 0),
            bodies: Vec::new(),
        }));
        let calls = Arc::new(AtomicUsize::new(0));
        let (st, c) = (state.clone(), calls.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (st, c) = (st.clone(), c.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &c);
                });
            }
        });
        LlmServer {
            url: format!("http://127.0.0.1:{port}/v1"),
            state,
            calls,
        }
    }

    pub fn push(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }
}

fn serve(conn: TcpStream, st: &Mutex<LlmState>, calls: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (status, extra, value) = answer(method, path, &header, &body, st, calls);
    let text = value.to_string();
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        text.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn answer(
    method: &str,
    path: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    st: &Mutex<LlmState>,
    calls: &AtomicUsize,
) -> (u16, Vec<(String, String)>, Value) {
    if method != "POST" || path != "/v1/chat/completions" {
        return error(
            404,
            "invalid_request_error",
            "unknown_url",
            &format!("Unknown request URL: {method} {path}."),
        );
    }
    let (key, model) = {
        let s = st.lock().unwrap();
        (s.key.clone(), s.model.clone())
    };
    if header("authorization") != Some(format!("Bearer {key}")) {
        return error(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(
            400,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body of your request.",
        );
    };
    if req["model"] != json!(model) {
        return error(
            404,
            "invalid_request_error",
            "model_not_found",
            "The model does not exist or you do not have access to it.",
        );
    }
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(
            400,
            "invalid_request_error",
            "missing_required_parameter",
            "'messages' is a required property.",
        );
    };
    let valid = messages.iter().all(|m| {
        matches!(
            m["role"].as_str(),
            Some("system" | "user" | "assistant" | "developer")
        ) && m["content"].is_string()
    });
    if !valid {
        return error(
            400,
            "invalid_request_error",
            "invalid_value",
            "Invalid 'messages': each needs a role and content.",
        );
    }
    if req["response_format"]["type"] == "json_object"
        && !messages.iter().any(|m| {
            m["content"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("json")
        })
    {
        return error(400, "invalid_request_error", "invalid_request_error", "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.");
    }
    let (fault, latency, content) = {
        let mut s = st.lock().unwrap();
        if let Some((limit, window)) = s.rate {
            if s.window.0.elapsed() > window {
                s.window = (Instant::now(), 0);
            }
            if s.window.1 >= limit {
                let retry = (window.saturating_sub(s.window.0.elapsed()).as_secs() + 1).to_string();
                let (st, _, v) = error(
                    429,
                    "requests",
                    "rate_limit_exceeded",
                    "Rate limit reached for requests.",
                );
                return (
                    st,
                    vec![
                        ("retry-after".into(), retry),
                        ("x-ratelimit-limit-requests".into(), limit.to_string()),
                        ("x-ratelimit-remaining-requests".into(), "0".into()),
                    ],
                    v,
                );
            }
            s.window.1 += 1;
        }
        s.bodies.push(req.clone());
        (s.faults.pop_front(), s.latency, s.answer.clone())
    };
    std::thread::sleep(latency);
    let content = match fault {
        Some(Fault::RateLimited(secs)) => {
            let (st, _, v) = error(
                429,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            );
            return (st, vec![("retry-after".into(), secs.to_string())], v);
        }
        Some(Fault::ServerError) => {
            return error(
                500,
                "server_error",
                "server_error",
                "The server had an error while processing your request.",
            );
        }
        Some(Fault::Malformed) => json!("Sure! I think this lead is warm."),
        Some(Fault::WrongShape) => json!(
            json!({"score": "warm", "confidence": 150, "reasoning": "x", "propensity": "medium"})
                .to_string()
        ),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            json!(content.to_string())
        }
        None => json!(content.to_string()),
    };
    calls.fetch_add(1, Ordering::SeqCst);
    (
        200,
        vec![],
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }),
    )
}
