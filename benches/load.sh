#!/usr/bin/env bash
# Load benchmark: the same wrk load against
#   direct    the mock upstream itself (the floor),
#   nginx-wN  nginx (N worker processes) reverse-proxying to the same mock (the baseline),
#   gw-wN     Switchyard (--num_workers N) in front of the same mock,
# then a summary table with the issue's targets (reported, never enforced):
#   gateway req/s >= 0.8x nginx, gateway CPU per request <= 1.5x nginx's, p99 added latency, RSS <= 64 MB,
# and the 1-vs-2-worker comparison ("the design scales with workers").
#
# Usage: benches/load.sh            (one run, about 2 minutes)
#        RUNS=3 benches/load.sh     (medians of 3 runs; what benches/RESULTS.md reports)
# The gateway runs with `event_log: {enabled: false}` (no events published, as before the event
# log existed); GW_EVENT_LOG='event_log: {...}' replaces that line of its config.
# Sourced (benches/events.sh does), it only sets up (build, temp dir, trap, wrk script, helpers)
# and returns before the runs.
# Knobs (environment): RUNS=1 DURATION=15 WARMUP=3 CONNS=32 THREADS=1 LIGHT=5 (1-connection
#   latency probe, seconds; 0 skips it) MOCK_WORKERS=1 NO_BUILD=1 (use the existing binary)
#   KEEP=1 (keep the temp dir with configs, logs and raw wrk output)
#   UPSTREAM=nginx (the upstream is an nginx answering a fixed completion instead of the mock)
#   BIN_BASE=path (also measure that build, 1 worker, as base-w1: before/after in one run).
#   VKEY=1 (also measure 1 worker with a virtual key with a budget and an rpm limit, as vkey-w1).
# Needs: wrk, nginx (nginx-light is enough), curl (optional smoke check), ss (optional).
# Everything listens on 127.0.0.1 on ports picked here; everything started is stopped on exit.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-1}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
LIGHT=${LIGHT:-5}
MOCK_WORKERS=${MOCK_WORKERS:-1}
BIN=${BIN:-$ROOT/target/release/switchyard} # BIN=... measures another binary (e.g. a copy)
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=${WRK:-$(command -v wrk || echo wrk)}
GW_EVENT_LOG=${GW_EVENT_LOG:-} # default below: off, with its (unused) directory in $TMP
BODY='{"model":"bench","messages":[{"role":"user","content":"hello there"}]}'
KEY=sk-bench
SCRIPT_NAME=${SCRIPT_NAME:-load.sh}

die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }
[[ -x $NGINX ]] || die "nginx not found (apt-get install -y nginx-light)"
command -v "$WRK" >/dev/null || die "wrk not found (apt-get install -y wrk)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-load.XXXXXX")
# Even with `enabled: false` the gateway opens its event-log directory (default ./data/events).
[[ -n $GW_EVENT_LOG ]] || GW_EVENT_LOG="event_log: {enabled: false, path: \"$TMP/events-off\"}"
PIDS=()

# Stops one process we started: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? cmd=$BASH_COMMAND pid
    # set -e exits silently: say what failed (not after die, which said it, or a signal).
    if ((rc != 0 && rc != 130)) && [[ $cmd != exit* ]]; then
        echo "$SCRIPT_NAME: exiting with status $rc; last command: $cmd" >&2
    fi
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -n ${KEEP:-} ]]; then echo "$SCRIPT_NAME: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo "$SCRIPT_NAME: stopped by a signal" >&2; exit 130' INT TERM

USED_PORTS=" "
pick_port() {
    local p i
    for i in $(seq 500); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if command -v ss >/dev/null; then
            [[ -n $(ss -Htan "sport = :$p" 2>/dev/null) ]] && continue
        elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        USED_PORTS+="$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}

wait_listening() { # port pid name
    local i
    for i in $(seq 200); do
        kill -0 "$2" 2>/dev/null || die "$3 exited at startup (log: $TMP/$3.log)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "$3 is not listening on $1 after 10 s"
}

smoke() { # url name: one request must answer 200
    command -v curl >/dev/null || return 0
    local code
    code=$(curl -s --max-time 10 -o "$TMP/smoke-$2.json" -w '%{http_code}' -X POST "$1" \
        -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d "$BODY") || true
    [[ $code == 200 ]] || die "$2 answered $code to the smoke request: $(head -c 300 "$TMP/smoke-$2.json")"
}

# CPU ticks (user + system, all threads) of the given pids, and of the whole machine.
proc_ticks() {
    local t=0 pid v
    for pid in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
machine_ticks() { awk '/^cpu /{busy=$2+$3+$4+$7+$8; print busy, busy+$5+$6; exit}' /proc/stat; }
TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------- build
if [[ -z ${NO_BUILD:-} ]]; then
    echo "building release binary (cargo build --release) ..." >&2
    (cd "$ROOT" && cargo build --release --quiet --bin switchyard)
fi
[[ -x $BIN ]] || die "$BIN missing (cargo build --release)"

# ---------------------------------------------------------------------------------- wrk script
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"

-- Each wrk thread has its own Lua state: per-thread counters, merged in done() via thread:get.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ovh = {}   -- x-litellm-overhead-duration-ms value (string, 3 decimals) -> count
  ovh_n = 0
  non200 = 0
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
  local v = headers["x-litellm-overhead-duration-ms"] or headers["X-Litellm-Overhead-Duration-Ms"]
  if v then
    ovh[v] = (ovh[v] or 0) + 1
    ovh_n = ovh_n + 1
  end
end

local function pct(sorted, counts, n, p)
  if n == 0 then return -1 end
  local want, cum = math.ceil(p / 100 * n), 0
  for _, k in ipairs(sorted) do
    cum = cum + counts[k]
    if cum >= want then return k end
  end
  return sorted[#sorted]
end

function done(summary, latency, requests)
  local counts, n, bad = {}, 0, 0
  for _, t in ipairs(threads) do
    for k, c in pairs(t:get("ovh")) do
      local x = tonumber(k)
      counts[x] = (counts[x] or 0) + c
    end
    n = n + t:get("ovh_n")
    bad = bad + t:get("non200")
  end
  local sorted = {}
  for k in pairs(counts) do table.insert(sorted, k) end
  table.sort(sorted)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d secs=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non200=%d sock_errors=%d ovh_n=%d ovh_p50_ms=%.3f ovh_p99_ms=%.3f\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, bad, e.connect + e.read + e.write + e.timeout,
    n, pct(sorted, counts, n, 50), pct(sorted, counts, n, 99)))
end
EOF

RESULTS=$TMP/results.tsv # run target key value
: >"$RESULTS"
put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# wrk run: label url conns secs -> the RESULT line's key=value pairs
wrk_run() {
    "$WRK" -t"$THREADS" -c"$3" -d"$4"s --timeout 5s -s "${WRK_SCRIPT:-$TMP/post.lua}" "$2" >"$TMP/wrk-$1.txt" 2>&1 ||
        die "wrk failed on $1: $(tail -5 "$TMP/wrk-$1.txt")"
    grep '^RESULT ' "$TMP/wrk-$1.txt" | sed 's/^RESULT //' || die "no RESULT from wrk on $1"
}

# The upstream's processes: the mock, or the fixed-answer nginx and its workers.
upstream_pids() { echo "$MOCK_PID" $(pgrep -P "$MOCK_PID" || true); }

# Measures one target: warm-up, the load (with CPU accounting), the 1-connection probe.
# run target url proxy_pids...
# Optional: AUX_PIDS (space-separated pids, e.g. a Kafka broker) adds aux_cpu_us_per_req;
# functions before_load / after_load, when defined, run just before / after the measured load
# (arguments: run target), e.g. to read counters over exactly the measured window.
measure() {
    local run=$1 target=$2 url=$3
    shift 3
    local kv m0 m1 p0 p1 k0 k1 a0 a1 kv2 pair
    wrk_run "$target-warmup-r$run" "$url" "$CONNS" "$WARMUP" >/dev/null
    if declare -F before_load >/dev/null; then before_load "$run" "$target"; fi
    read -r m0 t0 < <(machine_ticks)
    p0=$(proc_ticks "$@")
    k0=$(proc_ticks $(upstream_pids))
    a0=$(proc_ticks ${AUX_PIDS:-})
    kv=$(wrk_run "$target-r$run" "$url" "$CONNS" "$DURATION")
    read -r m1 t1 < <(machine_ticks)
    p1=$(proc_ticks "$@")
    k1=$(proc_ticks $(upstream_pids))
    a1=$(proc_ticks ${AUX_PIDS:-})
    for pair in $kv; do put "$run" "$target" "${pair%%=*}" "${pair#*=}"; done
    local reqs
    reqs=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$kv")
    put "$run" "$target" proxy_cpu_us_per_req "$(awk -v d=$((p1 - p0)) -v r="$reqs" -v h="$TCK" 'BEGIN{printf "%.1f", r ? d / h / r * 1e6 : 0}')"
    put "$run" "$target" mock_cpu_us_per_req "$(awk -v d=$((k1 - k0)) -v r="$reqs" -v h="$TCK" 'BEGIN{printf "%.1f", r ? d / h / r * 1e6 : 0}')"
    if [[ -n ${AUX_PIDS:-} ]]; then
        put "$run" "$target" aux_cpu_us_per_req "$(awk -v d=$((a1 - a0)) -v r="$reqs" -v h="$TCK" 'BEGIN{printf "%.1f", r ? d / h / r * 1e6 : 0}')"
    fi
    put "$run" "$target" machine_busy_pct "$(awk -v b=$((m1 - m0)) -v t=$((t1 - t0)) 'BEGIN{printf "%.0f", t ? 100 * b / t : 0}')"
    echo "  run $run $target: $kv" >&2
    if declare -F after_load >/dev/null; then after_load "$run" "$target"; fi
    if ((LIGHT > 0)); then
        kv2=$(wrk_run "$target-c1-r$run" "$url" 1 "$LIGHT")
        for pair in $kv2; do put "$run" "$target" "c1_${pair%%=*}" "${pair#*=}"; done
        echo "  run $run $target (1 connection): $kv2" >&2
    fi
}

# The start of an nginx config: workers, its own dir (which must exist) for pid, logs and temp
# files, and the http block opened. nginx_head dir workers
nginx_head() {
    cat <<EOF
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}

start_nginx() { # workers port -> pid in NGINX_PID
    local dir=$TMP/nginx-w$1
    mkdir -p "$dir/tmp"
    { nginx_head "$dir" "$1"; cat <<EOF
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    "$NGINX" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" >"$TMP/nginx-w$1.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_listening "$2" "$NGINX_PID" "nginx-w$1"
}

start_gateway() { # workers port [name] -> pid in GW_PID; its event_log line is $GW_EVENT_LOG
    local name=${3:-gw-w$1}
    cat >"$TMP/$name.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params: {model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: x}
general_settings: {master_key: $KEY}
$GW_EVENT_LOG
EOF
    "$BIN" --config "$TMP/$name.yaml" --host 127.0.0.1 --port "$2" --num_workers "$1" \
        --graceful-timeout 1 >"$TMP/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_listening "$2" "$GW_PID" "$name"
}

forget_pid() { # drop a stopped pid from PIDS
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# UPSTREAM=nginx: the upstream is an nginx answering a fixed chat completion, the cheapest
# upstream there is, so that what shows is the proxies' own cost (the issue's setup).
FIXED_ANSWER='{"id":"chatcmpl-fixed","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from a fixed upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":6,"total_tokens":9}}'
start_fixed_upstream() { # port -> pid in MOCK_PID
    local dir=$TMP/upstream
    mkdir -p "$dir/tmp"
    { nginx_head "$dir" 1; cat <<EOF
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        location / {
            default_type application/json;
            return 200 '$FIXED_ANSWER';
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    "$NGINX" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" >"$TMP/upstream.log" 2>&1 &
    MOCK_PID=$!
}

start_mock() { # -> MOCK_PORT, MOCK_PID
    MOCK_PORT=$(pick_port)
    if [[ ${UPSTREAM:-mock} == nginx ]]; then
        start_fixed_upstream "$MOCK_PORT"
    else
        "$BIN" mock-upstream --host 127.0.0.1 --port "$MOCK_PORT" --workers "$MOCK_WORKERS" >"$TMP/mock.log" 2>&1 &
        MOCK_PID=$!
    fi
    PIDS+=("$MOCK_PID")
    wait_listening "$MOCK_PORT" "$MOCK_PID" mock
    smoke "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" mock
}

# A tansu broker (in memory) on a loopback port: TANSU=path (benches/events.sh, consumer.sh).
start_broker() { # -> BROKER_PORT, BROKER_PID
    BROKER_PORT=$(pick_port)
    local extra=() i
    # tansu 0.6 has no Prometheus listener flag (older releases did); pass it only when known.
    if "$TANSU" broker --help 2>&1 | grep -q -- --prometheus-listener-url; then
        extra=(--prometheus-listener-url "tcp://127.0.0.1:$(pick_port)")
    fi
    "$TANSU" broker --kafka-cluster-id bench \
        --kafka-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --kafka-advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --storage-engine memory://tansu/ "${extra[@]}" >"$TMP/tansu-r${run:-1}.log" 2>&1 &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    for i in $(seq 300); do
        kill -0 "$BROKER_PID" 2>/dev/null || die "tansu exited at startup: $(tail -5 "$TMP/tansu-r${run:-1}.log")"
        if (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "tansu is not listening on $BROKER_PORT after 30 s"
}

# Median over runs of each (target, key): results.tsv -> target key median
medians() {
    sort -t$'\t' -k2,2 -k3,3 -k4,4g "$1" | awk -F'\t' '
        function flush() { if (n) { m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; print key "\t" m } n = 0 }
        { k = $2 "\t" $3; if (k != key) { flush(); key = k } v[++n] = $4 }
        END { flush() }'
}

# Sourced: setup only.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then return 0; fi

# ---------------------------------------------------------------------------------- runs
start_mock

echo "load: $CONNS connections, wrk -t$THREADS, ${DURATION}s per target after ${WARMUP}s warm-up, $RUNS run(s), $(nproc) cores" >&2
for run in $(seq "$RUNS"); do
    measure "$run" direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "$MOCK_PID"

    for w in 1 2; do
        port=$(pick_port)
        start_nginx "$w" "$port"
        smoke "http://127.0.0.1:$port/v1/chat/completions" "nginx-w$w"
        measure "$run" "nginx-w$w" "http://127.0.0.1:$port/v1/chat/completions" \
            "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true)
        stop_pid "$NGINX_PID"
        forget_pid "$NGINX_PID"
    done

    for w in 1 2; do
        port=$(pick_port)
        start_gateway "$w" "$port"
        smoke "http://127.0.0.1:$port/v1/chat/completions" "gw-w$w"
        put "$run" "gw-w$w" idle_rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$GW_PID/status")"
        measure "$run" "gw-w$w" "http://127.0.0.1:$port/v1/chat/completions" "$GW_PID"
        put "$run" "gw-w$w" hwm_kb "$(awk '/^VmHWM/{print $2}' "/proc/$GW_PID/status")"
        put "$run" "gw-w$w" rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$GW_PID/status")"
        stop_pid "$GW_PID"
        forget_pid "$GW_PID"
    done

    # VKEY=1: the same load with a virtual key (a budget and an rpm limit it never reaches) in
    # place of the master key, 1 worker: what key lookup, budgets and limits cost a request.
    if [[ -n ${VKEY:-} ]]; then
        port=$(pick_port)
        start_gateway 1 "$port" vkey-w1
        vkey=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$port/key/generate" -H "Authorization: Bearer $KEY" \
            -H 'content-type: application/json' -d "{\"key_alias\": \"bench-$run\", \"max_budget\": 1000000, \"rpm_limit\": 1000000000}" |
            sed -n 's/.*"key":"\(sk-[^"]*\)".*/\1/p')
        [[ -n $vkey ]] || die "could not generate a virtual key"
        sed "s/Bearer $KEY/Bearer $vkey/" "$TMP/post.lua" >"$TMP/post-vkey.lua"
        WRK_SCRIPT=$TMP/post-vkey.lua measure "$run" vkey-w1 "http://127.0.0.1:$port/v1/chat/completions" "$GW_PID"
        stop_pid "$GW_PID"
        forget_pid "$GW_PID"
    fi

    # BIN_BASE: the same load on another build (e.g. before a change), 1 worker, same run.
    if [[ -n ${BIN_BASE:-} ]]; then
        port=$(pick_port)
        after_bin=$BIN
        BIN=$BIN_BASE
        start_gateway 1 "$port" base-w1
        BIN=$after_bin
        smoke "http://127.0.0.1:$port/v1/chat/completions" base-w1
        measure "$run" base-w1 "http://127.0.0.1:$port/v1/chat/completions" "$GW_PID"
        stop_pid "$GW_PID"
        forget_pid "$GW_PID"
    fi
done

# ---------------------------------------------------------------------------------- summary
# Median over runs of each (target, key).
MED=$TMP/medians.tsv
medians "$RESULTS" >"$MED"

if [[ -n ${KEEP:-} ]]; then cp "$RESULTS" "$TMP/results-all.tsv"; fi
echo
awk -F'\t' -v runs="$RUNS" -v conns="$CONNS" -v light="$LIGHT" '
    { m[$1, $2] = $3 }
    function g(t, k) { return ((t SUBSEP k) in m) ? m[t, k] : -1 }
    function ms(us) { return us < 0 ? "-" : sprintf("%.2f", us / 1000) }
    function met(ok) { return ok ? "MET" : "NOT MET" }
    END {
        nt = split("direct nginx-w1 nginx-w2 gw-w1 gw-w2 base-w1 vkey-w1", T, " ")
        printf "Medians of %d run(s); %d connections; latency in ms.\n\n", runs, conns
        printf "| target | req/s | p50 | p99 | p99.9 | 1-conn p50 | 1-conn p99 | overhead hdr p50 / p99 | proxy CPU us/req | mock CPU us/req | machine busy |\n"
        printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for (i = 1; i <= nt; i++) {
            t = T[i]
            if (g(t, "rps") < 0) continue
            ovh = (g(t, "ovh_n") > 0) ? sprintf("%.3f / %.3f", g(t, "ovh_p50_ms"), g(t, "ovh_p99_ms")) : "-"
            printf "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s%% |\n", t, g(t, "rps"), ms(g(t, "p50_us")), ms(g(t, "p99_us")),
                ms(g(t, "p999_us")), ms(g(t, "c1_p50_us")), ms(g(t, "c1_p99_us")), ovh,
                (t == "direct") ? "-" : g(t, "proxy_cpu_us_per_req"), g(t, "mock_cpu_us_per_req"), g(t, "machine_busy_pct")
        }
        bad = 0
        for (i = 1; i <= 5; i++) bad += g(T[i], "non200") + g(T[i], "sock_errors")
        if (bad > 0) printf "\nWARNING: non-200 answers or socket errors seen (median sum %d); see wrk output with KEEP=1.\n", bad
        printf "\nTargets (reported, not enforced):\n"
        for (w = 1; w <= 2; w++) {
            gw = "gw-w" w; ng = "nginx-w" w
            r = g(gw, "rps") / g(ng, "rps")
            printf "  req/s gateway/nginx, %d worker(s): %.2f (target >= 0.80: %s)\n", w, r, met(r >= 0.8)
            c = g(gw, "proxy_cpu_us_per_req") / g(ng, "proxy_cpu_us_per_req")
            printf "  CPU per request gateway/nginx, %d worker(s): %.2f (target <= 1.50: %s)\n", w, c, met(c <= 1.5)
        }
        for (w = 1; w <= 2; w++) {
            gw = "gw-w" w
            a50 = g(gw, "p50_us") - g("direct", "p50_us"); a99 = g(gw, "p99_us") - g("direct", "p99_us")
            printf "  added latency vs direct, %d worker(s), %d conns: p50 %+.2f ms, p99 %+.2f ms (target p99 <= 1 ms: %s)\n", w, conns, a50 / 1000, a99 / 1000, met(a99 <= 1000)
            if (light > 0) {
                c50 = g(gw, "c1_p50_us") - g("direct", "c1_p50_us"); c99 = g(gw, "c1_p99_us") - g("direct", "c1_p99_us")
                printf "  added latency vs direct, %d worker(s), 1 conn:  p50 %+.2f ms, p99 %+.2f ms (target p99 <= 1 ms: %s)\n", w, c50 / 1000, c99 / 1000, met(c99 <= 1000)
            }
            printf "  overhead header, %d worker(s), %d conns: p50 %.3f ms, p99 %.3f ms (target p99 <= 1 ms: %s)\n", w, conns, g(gw, "ovh_p50_ms"), g(gw, "ovh_p99_ms"), met(g(gw, "ovh_p99_ms") <= 1)
        }
        for (w = 1; w <= 2; w++) {
            gw = "gw-w" w
            printf "  RSS, %d worker(s): idle %.1f MB, after load VmRSS %.1f MB, peak VmHWM %.1f MB (target <= 64 MB: %s)\n", w,
                g(gw, "idle_rss_kb") / 1024, g(gw, "rss_kb") / 1024, g(gw, "hwm_kb") / 1024, met(g(gw, "hwm_kb") <= 65536)
        }
        printf "\nScaling with workers (req/s, 2 workers / 1 worker): gateway %.2f, nginx %.2f\n",
            g("gw-w2", "rps") / g("gw-w1", "rps"), g("nginx-w2", "rps") / g("nginx-w1", "rps")
        printf "Proxy CPU per request (us): gateway %s / %s, nginx %s / %s (1 / 2 workers)\n",
            g("gw-w1", "proxy_cpu_us_per_req"), g("gw-w2", "proxy_cpu_us_per_req"), g("nginx-w1", "proxy_cpu_us_per_req"), g("nginx-w2", "proxy_cpu_us_per_req")
        if (g("base-w1", "rps") > 0)
            printf "Before (BIN_BASE) -> after, 1 worker: req/s %.0f -> %.0f (%.2fx nginx -> %.2fx), CPU per request %s -> %s us\n",
                g("base-w1", "rps"), g("gw-w1", "rps"), g("base-w1", "rps") / g("nginx-w1", "rps"), g("gw-w1", "rps") / g("nginx-w1", "rps"),
                g("base-w1", "proxy_cpu_us_per_req"), g("gw-w1", "proxy_cpu_us_per_req")
        if (g("vkey-w1", "rps") > 0)
            printf "Virtual key vs master key, 1 worker: req/s %.0f vs %.0f (%.3fx; target >= 0.95x: %s), CPU per request %s vs %s us\n",
                g("vkey-w1", "rps"), g("gw-w1", "rps"), g("vkey-w1", "rps") / g("gw-w1", "rps"), met(g("vkey-w1", "rps") >= 0.95 * g("gw-w1", "rps")),
                g("vkey-w1", "proxy_cpu_us_per_req"), g("gw-w1", "proxy_cpu_us_per_req")
    }' "$MED"
