#!/usr/bin/env bash
# Latency at a fixed rate, the way a gateway in production sees it (issue 6's targets):
#   1. open loop: oha sends at a fixed rate (half of nginx's closed-loop capacity, measured
#      first, unless RATE is set), latency corrected for coordinated omission, against nginx
#      and against the gateway, each in front of the same fixed-answer nginx upstream;
#      target: gateway p99 <= nginx p99 + 0.5 ms;
#   2. streaming time to first byte: sequential streams (one connection, no queueing) straight
#      to the mock upstream and through the gateway; target: added <= 0.2 ms;
#   3. RSS over RSS_REQUESTS requests (closed loop): target flat within +-10% after warm-up.
# Results are reported, never enforced. Gateway: 1 worker, event log as in load.sh (off) unless
# GW_EVENT_LOG says otherwise.
#
# Usage: benches/latency.sh
# Needs: oha (cargo install oha --locked), nginx, wrk, curl, python3.
# Knobs: RATE (req/s) SECS=15 OHA_CONNS=64 STREAMS=300 RSS_REQUESTS=1000000 (0 skips) NO_BUILD=1
set -euo pipefail
SCRIPT_NAME=latency.sh
export UPSTREAM=nginx
# shellcheck source=benches/load.sh
source "$(dirname "$0")/load.sh"

OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found (cargo install oha --locked)"
SECS=${SECS:-15}
OHA_CONNS=${OHA_CONNS:-64}
STREAMS=${STREAMS:-300}
RSS_REQUESTS=${RSS_REQUESTS:-1000000}

# oha at $RATE for $SECS against url; prints "p50_ms p99_ms rps".
open_loop() { # name url
    "$OHA" -z "${SECS}s" -q "$RATE" -c "$OHA_CONNS" --latency-correction --no-tui --output-format json \
        -m POST -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d "$BODY" "$2" \
        >"$TMP/oha-$1.json" 2>"$TMP/oha-$1.err" || die "oha failed on $1: $(tail -3 "$TMP/oha-$1.err")"
    python3 - "$TMP/oha-$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if k != "200")
print(f'{p["p50"] * 1000:.3f} {p["p99"] * 1000:.3f} {r["summary"]["requestsPerSec"]:.0f} {bad}')
PY
}

# Time to first byte of $STREAMS sequential streams to url; prints "p50_ms p99_ms".
ttfb() { # url
    local body='{"model":"bench","stream":true,"messages":[{"role":"user","content":"hello there"}]}'
    for _ in $(seq "$STREAMS"); do
        curl -s -N -o /dev/null -w '%{time_starttransfer}\n' -X POST "$1" \
            -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d "$body"
    done | sort -g | awk '{v[NR] = $1} END {printf "%.3f %.3f\n", v[int(NR * 0.5)] * 1000, v[int(NR * 0.99)] * 1000}'
}

rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

start_mock # the fixed-answer nginx upstream
ng_port=$(pick_port)
start_nginx 1 "$ng_port"
gw_port=$(pick_port)
start_gateway 1 "$gw_port"
gw_pid=$GW_PID
ng_url="http://127.0.0.1:$ng_port/v1/chat/completions"
gw_url="http://127.0.0.1:$gw_port/v1/chat/completions"
smoke "$ng_url" nginx
smoke "$gw_url" gateway

if [[ -z ${RATE:-} ]]; then
    kv=$(wrk_run capacity "$ng_url" 32 5)
    RATE=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$kv")
    RATE=$((RATE / 2))
fi
echo "latency: open loop at $RATE req/s for ${SECS}s, $OHA_CONNS connections, $(nproc) cores" >&2
wrk_run warm-gw "$gw_url" 32 3 >/dev/null
read -r ng50 ng99 ngrps ngbad < <(open_loop nginx "$ng_url")
read -r gw50 gw99 gwrps gwbad < <(open_loop gateway "$gw_url")

# Streams: the mock upstream (it streams) straight, and a second gateway in front of it.
MOCK_PORT_FIXED=$MOCK_PORT
MOCK_PORT=$(pick_port)
"$BIN" mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" >"$TMP/stream-mock.log" 2>&1 &
PIDS+=("$!")
wait_listening "$MOCK_PORT" "$!" stream-mock
gws_port=$(pick_port)
start_gateway 1 "$gws_port" gw-streams
read -r d50 d99 < <(ttfb "http://127.0.0.1:$MOCK_PORT/v1/chat/completions")
read -r s50 s99 < <(ttfb "http://127.0.0.1:$gws_port/v1/chat/completions")
MOCK_PORT=$MOCK_PORT_FIXED

rss_line="skipped"
if ((RSS_REQUESTS > 0)); then
    rss0=$(rss_kb "$gw_pid")
    counted() {
        curl -s "http://127.0.0.1:$gw_port/metrics" |
            awk '/^litellm_proxy_total_requests_metric_total\{requested_model="bench",status_code="200"\}/{print int($2)}'
    }
    served0=$(counted)
    samples=()
    "$WRK" -t"$THREADS" -c32 -d600s --timeout 5s -s "$TMP/post.lua" "$gw_url" >"$TMP/wrk-rss.txt" 2>&1 &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    # The wrk script counts requests only at the end: sample RSS every 5 s and stop once the
    # gateway's own request counter passes RSS_REQUESTS.
    while :; do
        sleep 5
        samples+=("$(rss_kb "$gw_pid")")
        served=$(($(counted) - ${served0:-0}))
        ((served >= RSS_REQUESTS)) && break
        kill -0 "$wrk_pid" 2>/dev/null || break
    done
    stop_pid "$wrk_pid"
    first=${samples[1]:-${samples[0]}} # after the first 5 s of warm-up
    last=${samples[-1]}
    max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
    rss_line=$(awk -v i="$rss0" -v f="$first" -v l="$last" -v m="$max" -v n="$served" 'BEGIN {
        printf "%d requests: idle %.1f MB, after warm-up %.1f MB, at the end %.1f MB (%+.1f%%), peak %.1f MB",
            n, i / 1024, f / 1024, l / 1024, 100 * (l - f) / f, m / 1024 }')
fi

echo
echo "| target | p50 ms | p99 ms | achieved req/s | non-200 |"
echo "|---|---:|---:|---:|---:|"
echo "| nginx, open loop at $RATE req/s | $ng50 | $ng99 | $ngrps | $ngbad |"
echo "| gateway, open loop at $RATE req/s | $gw50 | $gw99 | $gwrps | $gwbad |"
echo
awk -v a="$gw99" -v b="$ng99" -v r="$RATE" 'BEGIN { d = a - b; printf "Added p99 at %d req/s: %+.3f ms (target <= 0.5 ms at half of nginx capacity: %s)\n", r, d, d <= 0.5 ? "MET" : "NOT MET" }'
awk -v n="$STREAMS" -v d50="$d50" -v d99="$d99" -v s50="$s50" -v s99="$s99" 'BEGIN {
    printf "Stream time to first byte (%s sequential streams): direct p50 %.3f / p99 %.3f ms, gateway p50 %.3f / p99 %.3f ms\n", n, d50, d99, s50, s99
    printf "Added TTFB p50: %+.3f ms (target <= 0.2 ms: %s)\n", s50 - d50, (s50 - d50) <= 0.2 ? "MET" : "NOT MET" }'
echo "Gateway RSS: $rss_line"
