//! The upstream HTTP client: HTTP/1.1 driven with hyper's connection API, one pool per thread.
//!
//! A call costs what HTTP/1.1 needs and little more: the upstream URL was split once, when the
//! config loaded ([`UpstreamUrl`]), the headers go straight into the request, and the connection
//! comes from this thread's [`pool`]. Each actix worker runs a current-thread runtime, so the
//! task driving a connection (spawned by the worker that opened it) runs on that worker's thread
//! and a call never wakes another thread. reqwest, used before, re-parsed the URL on every call
//! and wrapped hyper in layers (retry, connector clones, a pooled-client task) that cost ~9% of
//! the gateway's CPU.
//!
//! With a proxy in the environment (`HTTPS_PROXY`, …, as LiteLLM's HTTP client honours) calls go
//! through reqwest instead, which implements proxies (CONNECT tunnels, `NO_PROXY` matching);
//! that is the only use of reqwest left.

mod connect;
mod pool;

use std::cell::OnceCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream};
use futures_util::StreamExt;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::SendRequest;

use crate::config::providers::UpstreamUrl;
use crate::failure::{FailureKind, UpstreamFailure};

pub use connect::CONNECT_TIMEOUT;

const PROXY_VARIABLES: &[&str] = &["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
const USER_AGENT_VALUE: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

type Sender = SendRequest<Full<Bytes>>;

thread_local! {
    static CLIENT: OnceCell<Client> = const { OnceCell::new() };
}

/// How this process reaches its upstreams.
#[derive(Clone)]
pub enum Client {
    /// hyper, on this thread's connection pool.
    Direct,
    /// Through the proxy named by the environment (reqwest, one client per thread).
    Proxied(reqwest::Client),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Proxied(#[from] reqwest::Error),
}

/// The client for this process's environment. Also builds the TLS setup, so that startup
/// reports a broken one.
pub fn build() -> Result<Client, BuildError> {
    if !PROXY_VARIABLES.iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty())) {
        connect::tls_connector()?;
        return Ok(Client::Direct);
    }
    let client = reqwest::Client::builder()
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(pool::MAX_IDLE_PER_ORIGIN)
        .tcp_nodelay(true)
        .tcp_keepalive(connect::TCP_KEEPALIVE)
        .connect_timeout(CONNECT_TIMEOUT)
        // An API call that redirects is an error to show, not to follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT_VALUE)
        .build()?;
    Ok(Client::Proxied(client))
}

/// This thread's client (cheap to clone). [`build`] is checked once at startup, so building it
/// again here succeeds.
pub fn for_this_thread() -> Client {
    CLIENT.with(|cell| cell.get_or_init(|| build().unwrap_or(Client::Direct)).clone())
}

/// An upstream's answer; its body is read separately.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Body,
}

/// An answer's body, still on the wire.
pub enum Body {
    Direct(DirectBody),
    Proxied(reqwest::Response),
}

impl Client {
    /// POSTs `body` to `url` with `headers` (the client adds `Host`, `User-Agent`, `Accept` and
    /// `Content-Length`). Fails with [`FailureKind::Connection`], or [`FailureKind::Timeout`]
    /// when the connection could not be opened within [`CONNECT_TIMEOUT`].
    pub async fn post(&self, url: &UpstreamUrl, headers: HeaderMap, body: Bytes) -> Result<Response, UpstreamFailure> {
        match self {
            Self::Direct => post_direct(url, headers, body).await,
            Self::Proxied(client) => {
                let response =
                    client.post(url.url.clone()).headers(headers).body(body).send().await.map_err(transport_failure)?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                Ok(Response { status, headers, body: Body::Proxied(response) })
            }
        }
    }
}

async fn post_direct(url: &UpstreamUrl, mut headers: HeaderMap, body: Bytes) -> Result<Response, UpstreamFailure> {
    headers.insert(HOST, url.authority.clone());
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.target.clone();
    *request.headers_mut() = headers;
    // A pooled connection first; those the upstream closed meanwhile are dropped unused. A
    // request that a pooled connection did not send (it closed as the request was handed over)
    // goes once more, on a fresh connection; a request that was sent is never repeated here.
    while let Some(mut sender) = pool::take(&url.origin) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok(answer(response, Lease { sender, origin: url.origin.clone() })),
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    request = unsent;
                    break;
                }
                None => return Err(broken(url, &e.into_error())),
            },
        }
    }
    let mut sender = connect::open(url).await?;
    sender.ready().await.map_err(|e| broken(url, &e))?;
    let response = sender.send_request(request).await.map_err(|e| broken(url, &e))?;
    Ok(answer(response, Lease { sender, origin: url.origin.clone() }))
}

fn answer(response: http::Response<Incoming>, lease: Lease) -> Response {
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Body::Direct(DirectBody { body, lease: Some(lease) }),
    }
}

/// The connection broke during the call.
fn broken(url: &UpstreamUrl, e: &hyper::Error) -> UpstreamFailure {
    UpstreamFailure::new(FailureKind::Connection, format!("upstream connection to {} failed: {}", url.origin, chain(e)))
}

fn body_failure(e: &hyper::Error) -> UpstreamFailure {
    UpstreamFailure::new(FailureKind::Connection, format!("upstream body could not be read: {}", chain(e)))
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// A reqwest failure (the proxied client) in the same classes as the direct client's.
fn transport_failure(e: reqwest::Error) -> UpstreamFailure {
    let kind = if e.is_timeout() { FailureKind::Timeout } else { FailureKind::Connection };
    UpstreamFailure::new(kind, chain(&e))
}

/// A connection lent to one call: back to this thread's pool when the answer was read to its
/// end, closed when the call is dropped before.
struct Lease {
    sender: Sender,
    origin: Arc<str>,
}

impl Lease {
    fn release(self) {
        pool::put(&self.origin, self.sender);
    }
}

/// The body of an answer on a pooled connection.
pub struct DirectBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl Stream for DirectBody {
    type Item = Result<Bytes, UpstreamFailure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers (rare in HTTP/1.1) carry nothing to relay.
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(e)) => {
                    self.lease = None;
                    return Poll::Ready(Some(Err(body_failure(&e))));
                }
                None => {
                    if let Some(lease) = self.lease.take() {
                        lease.release();
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Body {
    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, UpstreamFailure> {
        match self {
            Self::Direct(DirectBody { body, lease }) => {
                let bytes = body.collect().await.map_err(|e| body_failure(&e))?.to_bytes();
                if let Some(lease) = lease {
                    lease.release();
                }
                Ok(bytes)
            }
            Self::Proxied(response) => response.bytes().await.map_err(transport_failure),
        }
    }

    /// The body as it arrives.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, UpstreamFailure>> {
        match self {
            Self::Direct(body) => body.boxed(),
            Self::Proxied(response) => response.bytes_stream().map(|r| r.map_err(transport_failure)).boxed(),
        }
    }
}
