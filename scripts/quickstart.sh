#!/usr/bin/env bash
# Runs the gateway on config/quickstart.yaml with a local mock upstream: no API keys, no network.
#   curl localhost:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \
#     -H 'content-type: application/json' -d '{"model":"local-mock","messages":[{"role":"user","content":"hi"}]}'
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/switchyard mock-upstream --port 4010 &
mock=$!
trap 'kill $mock 2>/dev/null || true' EXIT
exec_port="${PORT:-4000}"
./target/release/switchyard --config config/quickstart.yaml --port "$exec_port"
