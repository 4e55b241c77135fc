//! Relaying an upstream stream to the client: each server-sent event is forwarded the moment
//! it is complete (never buffered), usage is read on the way, the usage-only chunk is dropped
//! when the client did not ask for it, and the stream always ends with `data: [DONE]` (or an
//! error event). When the relay ends — or the client goes away — `on_end` learns what happened.
//!
//! While the upstream is quiet the relay sends an SSE comment every [`HEARTBEAT`]: clients ignore
//! it, and writing it is how a client that went away is noticed (the server only learns of a
//! closed socket when it writes), so a stalled stream cannot hold its upstream connection and
//! deployment slot after its client has gone.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream};
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::error::error_body;
use crate::failure::{FailureKind, UpstreamFailure};
use crate::openai::sse::{self, EventSplitter};
use crate::openai::{ResponseView, TokenUsage};

/// What the client received, reported once when the relay ends or is dropped.
#[derive(Debug, Default)]
pub struct StreamSummary {
    pub usage: Option<TokenUsage>,
    pub first_chunk_at: Option<Instant>,
    pub finish_reason: Option<String>,
    pub error: Option<UpstreamFailure>,
    /// The upstream finished the stream (false when the client went away first).
    pub completed: bool,
    /// Chunks that carried generated text: about one token each, the estimate when the stream
    /// ended before the upstream reported its usage.
    pub content_chunks: u64,
}

type OnEnd = Box<dyn FnOnce(StreamSummary) + Send>;

/// How long the relay stays silent before sending a keep-alive comment.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

pub struct Relay {
    upstream: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
    splitter: EventSplitter,
    out: VecDeque<Bytes>,
    strip_usage: bool,
    idle_timeout: Duration,
    /// When the upstream last sent bytes, and when the last keep-alive went out: the idle and
    /// keep-alive deadlines derive from them. One timer is armed for the nearer deadline and
    /// re-armed only when it fires, so a chunk costs a clock read, not a timer reset.
    last_upstream: Instant,
    last_keep_alive: Instant,
    timer: Pin<Box<Sleep>>,
    /// `data:` events seen; a stream that ends without any was not a stream.
    data_events: u64,
    done_seen: bool,
    ended: bool,
    summary: StreamSummary,
    on_end: Option<OnEnd>,
}

impl Relay {
    /// `strip_usage`: drop the usage-only chunk (the client did not ask for `include_usage`).
    /// `idle_timeout`: the longest wait for the next upstream bytes.
    pub fn new(
        upstream: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
        strip_usage: bool,
        idle_timeout: Duration,
        on_end: OnEnd,
    ) -> Self {
        Self {
            upstream,
            splitter: EventSplitter::default(),
            out: VecDeque::new(),
            strip_usage,
            idle_timeout,
            last_upstream: Instant::now(),
            last_keep_alive: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle_timeout.min(HEARTBEAT))),
            data_events: 0,
            done_seen: false,
            ended: false,
            summary: StreamSummary::default(),
            on_end: Some(on_end),
        }
    }

    fn on_event(&mut self, event: Bytes) {
        let Some(data) = sse::event_data(&event) else {
            // Comments (keep-alives) pass through.
            self.out.push_back(event);
            return;
        };
        self.data_events += 1;
        if data == b"[DONE]" {
            self.done_seen = true;
            self.out.push_back(event);
            self.finish_upstream();
            return;
        }
        if self.summary.first_chunk_at.is_none() {
            self.summary.first_chunk_at = Some(Instant::now());
        }
        if data.starts_with(b"{\"error\"") {
            let message = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| "upstream sent an error inside the stream".into());
            self.summary.error = Some(UpstreamFailure::new(FailureKind::Status(500), message));
            self.out.push_back(event);
            return;
        }
        if has_nonempty_string_field(&data, b"\"content\"") || has_nonempty_string_field(&data, b"\"text\"") {
            self.summary.content_chunks += 1;
        }
        if has_object_field(&data, b"\"usage\"") || has_string_field(&data, b"\"finish_reason\"") {
            if let Ok(view) = ResponseView::parse(&data) {
                if let Some(reason) = view.finish_reason() {
                    self.summary.finish_reason = Some(reason.to_string());
                }
                let usage_only = view.is_usage_only();
                if let Some(usage) = view.usage() {
                    self.summary.usage = Some(usage);
                }
                if usage_only && self.strip_usage {
                    return;
                }
            }
        }
        self.out.push_back(event);
    }

    fn finish_upstream(&mut self) {
        self.ended = true;
        self.summary.completed = self.summary.error.is_none();
    }

    /// Ends the stream with an OpenAI error event.
    fn fail(&mut self, failure: UpstreamFailure) {
        let body =
            error_body(&failure.message, crate::error::type_for_status(failure.status()), None, failure.status());
        self.out.push_back(sse::data_event(body.to_string().as_bytes()));
        self.summary.error = Some(failure);
        self.ended = true;
    }

    /// The timer fired: cut an upstream quiet for `idle_timeout`, send a keep-alive after
    /// [`HEARTBEAT`] of silence, and re-arm for whichever deadline is next.
    fn on_timer(&mut self) {
        let now = Instant::now();
        let idle_deadline = self.last_upstream + self.idle_timeout;
        if now >= idle_deadline {
            let secs = self.idle_timeout.as_secs_f64();
            self.fail(UpstreamFailure::new(
                FailureKind::Timeout,
                format!("upstream stream sent nothing for {secs:.1}s (stream_timeout)"),
            ));
            return;
        }
        if now >= self.last_upstream.max(self.last_keep_alive) + HEARTBEAT {
            self.out.push_back(Bytes::from_static(KEEP_ALIVE));
            self.last_keep_alive = now;
        }
        let keep_alive_deadline = self.last_upstream.max(self.last_keep_alive) + HEARTBEAT;
        self.timer.as_mut().reset(idle_deadline.min(keep_alive_deadline));
    }

    fn report(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(std::mem::take(&mut self.summary));
        }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.ended {
                this.report();
                return Poll::Ready(None);
            }
            if this.timer.poll_unpin(cx).is_ready() {
                this.on_timer();
                continue;
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.last_upstream = Instant::now();
                    this.splitter.push(&bytes);
                    while let Some(event) = this.splitter.next_event() {
                        this.on_event(event);
                        if this.ended {
                            break;
                        }
                    }
                }
                Poll::Ready(Some(Err(failure))) => this.fail(failure),
                Poll::Ready(None) => {
                    if let Some(rest) = this.splitter.take_rest() {
                        if sse::event_data(&rest).is_some() {
                            this.on_event(rest);
                        }
                    }
                    if this.data_events == 0 && !this.ended {
                        this.fail(UpstreamFailure::new(
                            FailureKind::Malformed,
                            "upstream answered a stream request without any server-sent event",
                        ));
                    } else if !this.done_seen && !this.ended {
                        this.out.push_back(Bytes::from_static(sse::DONE));
                        this.finish_upstream();
                    }
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client went away mid-stream: dropping `upstream` closes the upstream call, and
        // what was generated so far is still reported.
        self.report();
    }
}

/// Whether `json` has `field` with an object value (`"usage": {`), without parsing it.
fn has_object_field(json: &[u8], field: &[u8]) -> bool {
    value_starts_with(json, field, b'{')
}

/// Whether `json` has `field` with a string value (`"finish_reason": "stop"`).
fn has_string_field(json: &[u8], field: &[u8]) -> bool {
    value_starts_with(json, field, b'"')
}

/// Whether `json` has `field` with a non-empty string value (`"content": "Hi"`).
fn has_nonempty_string_field(json: &[u8], field: &[u8]) -> bool {
    value_matches(json, field, |value| value.first() == Some(&b'"') && value.get(1).is_some_and(|b| *b != b'"'))
}

fn value_starts_with(json: &[u8], field: &[u8], first: u8) -> bool {
    value_matches(json, field, |value| value.first() == Some(&first))
}

/// Whether some occurrence of `field` has a value (after the colon) that `test` accepts.
fn value_matches(json: &[u8], field: &[u8], test: impl Fn(&[u8]) -> bool) -> bool {
    let mut rest = json;
    while let Some(pos) = find(rest, field) {
        let after = &rest[pos + field.len()..];
        let colon = after.iter().position(|b| !b.is_ascii_whitespace());
        if let Some(i) = colon.filter(|i| after[*i] == b':') {
            let value = &after[i + 1..];
            let start = value.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(value.len());
            if test(&value[start..]) {
                return true;
            }
        }
        rest = after;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn upstream(parts: &[&'static str]) -> BoxStream<'static, Result<Bytes, UpstreamFailure>> {
        let parts: Vec<_> = parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect();
        futures_util::stream::iter(parts).boxed()
    }

    async fn run(parts: &[&'static str], strip_usage: bool) -> (String, StreamSummary) {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let relay = Relay::new(
            upstream(parts),
            strip_usage,
            Duration::from_secs(60),
            Box::new(move |s| *sink.lock().unwrap() = Some(s)),
        );
        let chunks: Vec<_> = relay.collect().await;
        let text: String = chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect();
        let summary = seen.lock().unwrap().take().unwrap();
        (text, summary)
    }

    const CHUNK: &str =
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}\n\n";
    const FINISH: &str = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";

    #[tokio::test]
    async fn strips_the_usage_chunk_but_still_learns_the_usage() {
        let (text, summary) = run(&[CHUNK, FINISH, USAGE, "data: [DONE]\n\n"], true).await;
        assert_eq!(text, format!("{CHUNK}{FINISH}data: [DONE]\n\n"));
        assert_eq!(summary.usage.unwrap().total_tokens, 5);
        assert_eq!(summary.finish_reason.as_deref(), Some("stop"));
        assert!(summary.completed);
    }

    #[tokio::test]
    async fn keeps_the_usage_chunk_when_the_client_asked() {
        let (text, _) = run(&[CHUNK, USAGE, "data: [DONE]\n\n"], false).await;
        assert!(text.contains("\"total_tokens\":5"));
    }

    #[tokio::test]
    async fn adds_done_when_the_upstream_forgets_it() {
        let (text, summary) = run(&[&CHUNK[..20], &CHUNK[20..]], true).await;
        assert_eq!(text, format!("{CHUNK}data: [DONE]\n\n"));
        assert!(summary.completed);
    }

    #[tokio::test]
    async fn a_dropped_relay_still_reports_what_was_sent() {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let pending = futures_util::stream::iter([Ok(Bytes::from_static(CHUNK.as_bytes()))])
            .chain(futures_util::stream::pending())
            .boxed();
        let mut relay =
            Relay::new(pending, true, Duration::from_secs(60), Box::new(move |s| *sink.lock().unwrap() = Some(s)));
        assert!(relay.next().await.is_some());
        drop(relay);
        let summary = seen.lock().unwrap().take().unwrap();
        assert!(!summary.completed);
        assert!(summary.first_chunk_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_upstream_ends_the_stream_with_a_timeout_error() {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let stalled = futures_util::stream::iter([Ok(Bytes::from_static(CHUNK.as_bytes()))])
            .chain(futures_util::stream::pending())
            .boxed();
        let relay =
            Relay::new(stalled, true, Duration::from_secs(12), Box::new(move |s| *sink.lock().unwrap() = Some(s)));
        let chunks: Vec<_> = relay.collect().await;
        let texts: Vec<String> =
            chunks.iter().map(|c| String::from_utf8(c.as_ref().unwrap().to_vec()).unwrap()).collect();
        let last = texts.last().unwrap();
        assert!(last.contains("\"code\":\"408\""), "{last}");
        // Quiet for 12 s: a keep-alive comment at 5 s and at 10 s, then the timeout.
        assert_eq!(texts.iter().filter(|t| t.as_str() == ": keep-alive\n\n").count(), 2, "{texts:?}");
        assert_eq!(seen.lock().unwrap().take().unwrap().error.unwrap().kind, FailureKind::Timeout);
    }

    #[tokio::test]
    async fn a_body_without_events_is_a_failure_not_a_success() {
        let (text, summary) = run(&["{\"id\":\"chatcmpl-1\",\"choices\":[]}"], true).await;
        assert!(text.contains("without any server-sent event"), "{text}");
        assert!(!text.contains("chatcmpl-1"), "the non-SSE body is not relayed: {text}");
        assert_eq!(summary.error.unwrap().kind, FailureKind::Malformed);
        assert!(!summary.completed);
    }

    #[test]
    fn finds_fields_by_value_type() {
        assert!(has_object_field(br#"{"usage": {"a":1}}"#, b"\"usage\""));
        assert!(!has_object_field(br#"{"usage":null}"#, b"\"usage\""));
        assert!(has_string_field(br#"{"x":{"finish_reason":"stop"}}"#, b"\"finish_reason\""));
        assert!(!has_string_field(br#"{"finish_reason":null}"#, b"\"finish_reason\""));
        assert!(has_nonempty_string_field(br#"{"delta":{"content": "Hi"}}"#, b"\"content\""));
        assert!(!has_nonempty_string_field(br#"{"delta":{"role":"assistant","content":""}}"#, b"\"content\""));
    }
}
