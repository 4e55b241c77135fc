//! The upstream client against a raw HTTP/1.1 upstream that counts its connections: kept-alive
//! connections are reused, and a connection the upstream closed is never used for a call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{self, chat_body};

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// How the raw upstream treats a connection after each answer.
#[derive(Clone, Copy)]
enum AfterAnswer {
    KeepAlive,
    /// Close the socket without saying so (as an upstream's idle timeout does).
    Close,
    /// Answer with `Connection: close`, then close.
    SayClose,
}

/// Starts the upstream; returns its port and the count of connections it accepted.
async fn raw_upstream(after: AfterAnswer) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Some(len) = request_len(&pending) else {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    pending.drain(..len);
                    let connection = if matches!(after, AfterAnswer::SayClose) { "connection: close\r\n" } else { "" };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n",
                        ANSWER.len()
                    );
                    if socket.write_all(format!("{head}{ANSWER}").as_bytes()).await.is_err() {
                        return;
                    }
                    if !matches!(after, AfterAnswer::KeepAlive) {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

/// The length of the first complete request in `bytes` (head and `Content-Length` body).
fn request_len(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let body = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    (bytes.len() >= end + body).then_some(end + body)
}

async fn calls(after: AfterAnswer, n: usize) -> usize {
    let (port, connections) = raw_upstream(after).await;
    let gw = support::start(&format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"http://127.0.0.1:{port}/v1\", max_retries: 0}}}}\nrouter_settings: {{num_retries: 0}}\n"
    ))
    .await;
    for i in 0..n {
        let resp = gw.post("/v1/chat/completions", &chat_body("g")).await;
        assert_eq!(resp.status(), 200, "call {i}: {}", resp.text().await.unwrap());
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
    }
    gw.stop().await;
    connections.load(Ordering::SeqCst)
}

#[actix_web::test]
async fn kept_alive_connections_are_reused() {
    // The test gateway has two workers, each with its own pool.
    let used = calls(AfterAnswer::KeepAlive, 20).await;
    assert!((1..=2).contains(&used), "20 sequential calls used {used} connections");
}

#[actix_web::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    // With no retries configured, one call on a dead connection would fail.
    assert_eq!(calls(AfterAnswer::Close, 20).await, 20);
    assert_eq!(calls(AfterAnswer::SayClose, 20).await, 20);
}
