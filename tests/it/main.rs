//! Integration tests: the real gateway on 127.0.0.1:0 in front of the mock upstream (OpenAI's
//! wire format with fault injection), asserting what a client sees.

mod alerts;
mod cli;
mod clickhouse;
mod cluster;
mod endpoints;
mod events;
mod fuzz;
mod groups;
mod hardening;
mod kafka;
mod keys;
mod routing;
mod spend;
mod streaming;
mod support;
mod topics;
mod upstream;
