//! ClickHouse: the connection (`analytics.clickhouse`), the schema migrations, and the rows
//! the consumers write.
//!
//! Over the HTTP interface with the `clickhouse` crate, RowBinary without the crate's schema
//! validation (ClickHouse 18.16, Debian's package that the tests run, predates the
//! RowBinaryWithNamesAndTypes format it validates with). The DDL under `schemas/clickhouse/`
//! runs on 18.16 and on current releases: no LowCardinality, Map, DateTime64, TTL or CODEC.

pub mod migrate;
pub mod queries;
pub mod rows;

use secrecy::ExposeSecret;

use crate::config::ClickHouseConfig;

/// A client of the configured server, not bound to a database.
pub fn server(config: &ClickHouseConfig) -> clickhouse::Client {
    let client = clickhouse::Client::default().with_url(&config.url).with_user(&config.user).with_validation(false);
    match &config.password {
        Some(p) => client.with_password(p.expose_secret()),
        None => client,
    }
}

/// A client of the configured database.
pub fn client(config: &ClickHouseConfig) -> clickhouse::Client {
    server(config).with_database(&config.database)
}
