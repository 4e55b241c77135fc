#!/usr/bin/env bash
# Consumer benchmark: the spend consumer (`switchyard consume spend`, one process) reading
# <prefix>.events from Kafka (a tansu broker) into ClickHouse (Debian's server), on this machine.
#   1. under load: the gateway (1 worker, Kafka) takes wrk's load for DURATION seconds while the
#      consumer runs; every second, the calls the gateway has published (its response events)
#      against the rows in spend_logs: the consumer's lag, in calls and in seconds of traffic;
#      after the load, how long the consumer takes to hold every call.
#   2. replay: the first consumer stopped, a second process on a fresh database reads the whole
#      topic from the beginning with nothing else running: its throughput in events per second
#      (request and response events both count: it reads both), and its CPU per event.
# Target (issue 8): one consumer process keeps up with the gateway's peak req/s.
#
# Usage: benches/consumer.sh         (about 2 minutes)
# Knobs: those of benches/load.sh (DURATION=15 CONNS=32 UPSTREAM=nginx NO_BUILD=1 BIN=path KEEP=1),
#   TANSU=~/.cargo/bin/tansu, PARTITIONS=3.
# Needs what load.sh needs, plus tansu, curl, and clickhouse-server (scripts/clickhouse.sh
# installs Debian's when missing, as root).
set -euo pipefail
export LC_ALL=C
SCRIPT_NAME=consumer.sh
HERE=$(cd "$(dirname "$0")" && pwd)
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
PARTITIONS=${PARTITIONS:-3}
[[ -x $TANSU ]] || { echo "consumer.sh: tansu not found at $TANSU" >&2; exit 1; }
LIGHT=0
# shellcheck source=benches/load.sh
source "$HERE/load.sh"
chmod 755 "$TMP" # the clickhouse user reads its directory below it

CH_PORT=$(pick_port)
"$ROOT/scripts/clickhouse.sh" "$TMP/ch" "$CH_PORT" >"$TMP/clickhouse.log" 2>&1 &
PIDS+=($!)
CH=http://127.0.0.1:$CH_PORT
for _ in $(seq 300); do curl -s -o /dev/null "$CH/ping" && break; sleep 0.1; done
sql() { curl -sS --fail-with-body "$CH/?database=$1" --data-binary "$2"; }
rows() { sql "$1" "SELECT count() FROM spend_logs FINAL"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

start_mock
start_broker
GW_EVENT_LOG="event_log: {path: \"$TMP/spool\", kafka: {bootstrap_servers: \"127.0.0.1:$BROKER_PORT\", topic_prefix: bench, partitions: $PARTITIONS}}
analytics: {clickhouse: {url: \"$CH\", database: live}}"
port=$(pick_port)
GW_URL=http://127.0.0.1:$port
start_gateway 1 "$port" gw
CONFIG=$TMP/gw.yaml
"$BIN" migrate --config "$CONFIG" >/dev/null
SWITCHYARD_CLICKHOUSE_DATABASE=replay "$BIN" migrate --config "$CONFIG" >/dev/null
smoke "$GW_URL/v1/chat/completions" gw

"$BIN" consume spend --config "$CONFIG" >"$TMP/consume-live.log" 2>&1 &
LIVE=$!
PIDS+=("$LIVE")
published() { # calls the gateway has published (response events delivered)
    curl -s "$GW_URL/metrics" | awk '$1 == "switchyard_events_sent_total" { printf "%d\n", $2 / 2 }'
}

echo "load: wrk -c$CONNS for ${DURATION}s on the gateway, the consumer following" >&2
"$WRK" -t"$THREADS" -c"$CONNS" -d"$DURATION"s --timeout 5s -s "$TMP/post.lua" "$GW_URL/v1/chat/completions" >"$TMP/wrk.txt" 2>&1 &
WRK_PID=$!
max_lag=0
samples=()
while kill -0 "$WRK_PID" 2>/dev/null; do
    sleep 1
    p=$(published)
    r=$(rows live)
    lag=$((p > r ? p - r : 0))
    ((lag > max_lag)) && max_lag=$lag
    samples+=("$lag")
done
wait "$WRK_PID" || true
rps=$(sed -n 's/.*requests=\([0-9]*\).*secs=\([0-9.]*\).*/\1 \2/p' "$TMP/wrk.txt" | awk '{printf "%.0f", $1 / $2}')
calls=$(published)
t0=$(date +%s.%N)
for _ in $(seq 600); do
    (($(rows live) >= calls)) && break
    sleep 0.1
done
caught=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
held=$(rows live)
median_lag=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{v[NR] = $1} END {print NR ? v[int((NR + 1) / 2)] : 0}')

echo "replay: a second consumer on a fresh database, from the beginning of the topic" >&2
# The live one leaves the group first (SIGTERM): the same group would share the partitions out.
stop_pid "$LIVE"
forget_pid "$LIVE"
SWITCHYARD_CLICKHOUSE_DATABASE=replay "$BIN" consume spend --config "$CONFIG" >"$TMP/consume-replay.log" 2>&1 &
REPLAY=$!
PIDS+=("$REPLAY")
t0=$(date +%s.%N)
for _ in $(seq 3000); do
    (($(rows replay) >= held)) && break
    sleep 0.1
done
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')
cpu=$(cpu_ticks "$REPLAY")
events=$((2 * held))

echo
echo "| measure | value |"
echo "|---|---:|"
echo "| gateway req/s under wrk (1 worker, Kafka, consumer running) | $rps |"
echo "| consumer lag during the load, median / max (calls) | $median_lag / $max_lag |"
echo "| consumer lag, median, in seconds of traffic | $(awk -v l="$median_lag" -v r="$rps" 'BEGIN{printf "%.2f", r ? l / r : 0}') |"
echo "| after the load: every call in spend_logs within (s) | $caught ($held of $calls calls) |"
echo "| replay: events read and written per second (one process) | $(awk -v e="$events" -v s="$secs" 'BEGIN{printf "%.0f", e / s}') |"
echo "| replay: consumer CPU per event (us) | $(awk -v c="$cpu" -v h="$TCK" -v e="$events" 'BEGIN{printf "%.1f", c / h / e * 1e6}') |"
echo "| replay: the topic's $events events ($held calls) in (s) | $secs |"
