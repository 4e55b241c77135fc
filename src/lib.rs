//! Switchyard: an OpenAI-compatible LLM gateway, a drop-in replacement for the LiteLLM Proxy
//! (same `config.yaml`, endpoints, error bodies and `x-litellm-*` headers).
//!
//! # Layout
//!
//! - [`config`]: LiteLLM's `config.yaml` → a validated [`config::Config`], one file per section;
//!   every problem is reported at once, each naming its field. The provider catalog (prefixes,
//!   default bases, key variables) is configuration too (`config::providers`).
//! - [`auth`]: who is calling — the master key and virtual keys resolved into a `Caller`,
//!   LiteLLM's checks in its order, and the key table (keys, teams, users, end users),
//!   event-sourced on the compacted topic `<prefix>.keys`.
//! - [`budget`]: spend per key, team, user, team member and end user per calendar-aligned
//!   budget window, reservations at admission, the spend snapshots a gateway starts from, and
//!   the follower of `<prefix>.events` that counts other instances' calls.
//! - [`consumers`]: consumers of the event log under their own names; `budgets` publishes
//!   spend per account and window to the compacted `<prefix>.spend`, where gateways start;
//!   `spend` writes ClickHouse; `alerts` raises LiteLLM's alerts on `<prefix>.alerts` and
//!   delivers them to Slack and webhooks.
//! - [`limits`]: rpm/tpm/parallel limits per key, user, team, member, end user and model.
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
//!   or to the embedded durable log, with a disk spool in front of Kafka; named, keyed,
//!   compacted topics with consumer offsets over either (`events::topics`).
//! - [`cost`]: the price map (LiteLLM's format) and per-call cost.
//! - [`metrics`]: Prometheus metrics under LiteLLM's names.
//! - [`error`]: the one error type clients see, rendered as OpenAI's error body.
//! - [`server`]: wiring: the upstream client, the actors, the HTTP server.
//! - [`mock`]: a mock OpenAI upstream with fault injection (tests, benchmarks, quickstart).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod auth;
pub mod budget;
pub mod clickhouse;
pub mod config;
pub mod consumers;
pub mod cost;
pub mod deployment;
pub mod error;
pub mod events;
pub mod failure;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod mock;
pub mod openai;
pub mod providers;
pub mod router;
pub mod server;
