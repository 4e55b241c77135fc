//! Switchyard: an OpenAI-compatible LLM gateway, a drop-in replacement for the LiteLLM Proxy
//! (same `config.yaml`, endpoints, error bodies and `x-litellm-*` headers).
//!
//! # Layout
//!
//! - [`config`]: LiteLLM's `config.yaml` → a validated [`config::Config`], one file per section;
//!   every problem is reported at once, each naming its field. The provider catalog (prefixes,
//!   default bases, key variables) is configuration too (`config::providers`).
//! - [`http`]: thin actix-web handlers, one file per endpoint family, CORS, and the stream relay.
//! - [`router`]: the routing table (owned by the `Router` actor, read through `ArcSwap`), pure
//!   strategies, retry/fallback planning, dispatch of one request, and the `Attempt` guard that
//!   holds a deployment slot until its outcome is settled.
//! - [`deployment`]: one actor per deployment owning its health (cooldown, rolling outcomes,
//!   latency), with a pure state machine in `deployment::health`.
//! - [`providers`]: one adapter per upstream wire format (OpenAI and its compatible family), and
//!   the upstream HTTP client (`providers::client`: hyper's HTTP/1.1 connection API, TLS by
//!   rustls, one connection pool per thread).
//! - [`openai`]: the OpenAI wire types the gateway reads, request bodies kept as the client's
//!   bytes (`openai::request`), SSE splitting, mock answers.
//! - [`failure`]: upstream failures and LiteLLM's error classes.
//! - [`events`]: request/response/deployment events, published off the request path to Kafka
//!   or to the embedded durable log, with a disk spool in front of Kafka.
//! - [`cost`]: the price map (LiteLLM's format) and per-call cost.
//! - [`metrics`]: Prometheus metrics under LiteLLM's names.
//! - [`error`]: the one error type clients see, rendered as OpenAI's error body.
//! - [`server`]: wiring: the upstream client, the actors, the HTTP server.
//! - [`mock`]: a mock OpenAI upstream with fault injection (tests, benchmarks, quickstart).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod cost;
pub mod deployment;
pub mod error;
pub mod events;
pub mod failure;
pub mod http;
pub mod metrics;
pub mod mock;
pub mod openai;
pub mod providers;
pub mod router;
pub mod server;
