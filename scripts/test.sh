#!/usr/bin/env bash
# The whole test suite on a fresh machine: Rust unit and integration tests (real gateway, mock
# upstream, a real Kafka-protocol broker (tansu) and a real ClickHouse server, on loopback), then
# the official OpenAI Python SDK and Python's confluent-kafka against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

# tansu, the Kafka-compatible broker the event-log tests start (installed once, then reused).
if [ -z "${TANSU_BIN:-}" ]; then
  TANSU_BIN="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
fi
if [ ! -x "$TANSU_BIN" ]; then
  echo "installing tansu (a Kafka-compatible broker for the tests; takes a while the first time)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
  TANSU_BIN="$HOME/.cargo/bin/tansu"
fi
export TANSU_BIN

# ClickHouse for the spend tests: Debian's clickhouse-server (18.16), which the tests start on
# loopback ports through scripts/clickhouse.sh as the clickhouse user.
if ! command -v clickhouse-server >/dev/null && [ ! -x /usr/sbin/clickhouse-server ]; then
  echo "installing clickhouse-server (Debian's package) for the ClickHouse tests"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
  fi
fi

cargo build --bins
cargo test --all-targets

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
SWITCHYARD_BIN="$PWD/target/debug/switchyard" .venv/bin/python -m pytest tests/python -q -p no:cacheprovider
