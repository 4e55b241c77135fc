//! The upstream HTTP client: one per thread.
//!
//! A hyper connection's I/O runs as a task on the runtime that opened it. With one client
//! shared by every worker, a request on worker A often drives a connection opened by worker B,
//! and every read and write wakes the other thread. Each thread (each actix worker, the router's
//! health checks) therefore has its own client and pool, so a call stays on its worker's thread.

use std::cell::OnceCell;
use std::time::Duration;

const PROXY_VARIABLES: &[&str] = &["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

thread_local! {
    static CLIENT: OnceCell<reqwest::Client> = const { OnceCell::new() };
}

/// A pooled client: keep-alive connections reused across requests, HTTP/2 where the upstream
/// offers it (ALPN), no global timeout (each call sets its own), no redirects.
pub fn build() -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    // The standard proxy variables are honoured (as LiteLLM's HTTP client does); without any,
    // the client skips proxy matching on every request.
    if !PROXY_VARIABLES.iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty())) {
        builder = builder.no_proxy();
    }
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        // An API call that redirects is an error to show, not to follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// This thread's client (cheap: a reference count). [`build`] is checked once at startup, so
/// building it again here succeeds.
pub fn for_this_thread() -> reqwest::Client {
    CLIENT.with(|cell| cell.get_or_init(|| build().unwrap_or_default()).clone())
}
