#!/usr/bin/env bash
# Runs the gateway on config/quickstart.yaml with a local mock upstream: no API keys, no network.
#   curl localhost:4000/v1/chat/completions -H 'Authorization: Bearer sk-1234' \
#     -H 'content-type: application/json' -d '{"model":"local-mock","messages":[{"role":"user","content":"hi"}]}'
# It listens on 127.0.0.1 (the quickstart's master key is the well-known sk-1234); HOST=0.0.0.0
# exposes it. Ctrl-C or SIGTERM stops the gateway and the mock.
set -euo pipefail
cd "$(dirname "$0")/.."
host="${HOST:-127.0.0.1}"
port="${PORT:-4000}"
echo "quickstart: building switchyard in release mode (the first build compiles every dependency and takes several minutes)" >&2
cargo build --release --bins
./target/release/switchyard mock-upstream --port 4010 &
mock=$!
./target/release/switchyard --config config/quickstart.yaml --host "$host" --port "$port" &
gateway=$!
stop() {
  kill -TERM "$gateway" "$mock" 2>/dev/null || true
  wait "$gateway" "$mock" 2>/dev/null || true
}
trap 'stop; exit 143' TERM INT
trap stop EXIT
echo "quickstart: gateway on http://$host:$port (master key sk-1234), mock upstream on 127.0.0.1:4010" >&2
wait "$gateway"
