#!/usr/bin/env bash
# Event-log benchmark: the load of benches/load.sh (wrk -t1 -c32, non-stream chat completions,
# the same mock upstream) against the gateway (--num_workers 1) in each event-log mode, side by
# side, with the direct and nginx targets rerun for context:
#   direct         the mock upstream itself
#   nginx-w1       nginx, 1 worker, in front of the mock
#   gw-off         event_log: {enabled: false}    nothing published (the baseline)
#   gw-embedded    event_log: {path: ...}         embedded durable log, default fsync (1 s)
#   gw-kafka       event_log: {kafka: {...}}      Kafka: a tansu broker on loopback (memory storage)
#   gw-kafka-down  the same, but the broker is stopped after the gateway has delivered its first
#                  events and before the warm-up + load: events go to the disk spool
# Reported, never enforced: with Kafka, req/s >= 0.9x gw-off and p99 <= gw-off p99 + 0.2 ms; the
# gateway process's own CPU per request (user + system from /proc/<pid>/stat over the measured
# load, all threads, / requests) with the embedded log and with Kafka <= 1.10x gw-off's in the
# same run (the broker's CPU, its own process, is reported apart and excluded); with
# the broker down, every request (warm-up, load, 1-connection probe) still answers 200. Also
# checked: the events Kafka acknowledged during the measured load = 2 x the requests wrk
# completed (a request and a response event per call; up to 2 x 32 more for calls in flight).
# Each target's run records the CPU that processes outside this script used; above FOREIGN_MAX %
# of the machine, the target is measured again (at most RETRIES times).
#
# Usage: benches/events.sh          (one run, about 3.5 minutes)
#        RUNS=5 benches/events.sh   (medians of 5 runs, about 18 minutes; benches/RESULTS.md)
# Knobs: those of benches/load.sh (DURATION=15 WARMUP=3 CONNS=32 THREADS=1 LIGHT=5 MOCK_WORKERS=1
#   NO_BUILD=1 KEEP=1 BIN=path), plus NGINX_WORKERS="1" ("" skips nginx),
#   MODES="off embedded kafka kafka-down", KEEP_EVENTS=1 (keep the event logs, ~400 MB per mode),
#   QUIET_WAIT=180 QUIET_PCT=10 (before each target, wait up to QUIET_WAIT s for the machine to be
#   at most QUIET_PCT % busy), FOREIGN_MAX=3 RETRIES=2,
#   TANSU=~/.cargo/bin/tansu (cargo install tansu --locked --features dynostore,libsql).
# Needs what load.sh needs, plus tansu, curl and jq. Everything listens on 127.0.0.1; everything
# started is stopped on exit (load.sh's trap); each wrk run and wait is bounded.
set -euo pipefail
export LC_ALL=C
SCRIPT_NAME=events.sh
HERE=$(cd "$(dirname "$0")" && pwd)
NGINX_WORKERS=${NGINX_WORKERS-1}
MODES=${MODES:-off embedded kafka kafka-down}
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "events.sh: $tool not found" >&2; exit 1; }
done
if [[ " $MODES " == *" kafka"* ]] && [[ ! -x $TANSU ]]; then
    echo "events.sh: tansu not found at $TANSU (cargo install tansu --locked --features dynostore,libsql)" >&2
    exit 1
fi

# Setup, helpers, trap: load.sh returns before its own runs when sourced.
# shellcheck source=benches/load.sh
source "$HERE/load.sh"

# ---------------------------------------------------------------------------------- helpers
GW_URL= # http://127.0.0.1:port of the gateway under test

metric() { # name -> value (0 when absent)
    curl -s --max-time 5 "$GW_URL/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { printf "%d\n", v + 0 }'
}

readiness() { # -> "state spool_pending queue_depth" of the event log ("? ? ?" if no answer)
    local body
    body=$(curl -s --max-time 5 "$GW_URL/health/readiness") || true
    if [[ -z $body ]]; then echo "? ? ?"; return 0; fi
    jq -r '.event_log | "\(.state) \(.spool_pending) \(.queue_depth)"' <<<"$body" 2>/dev/null || echo "? ? ?"
}

# Waits (at most 15 s) until the event pipeline is idle: queue empty (readiness reports the live
# depth; the gauge in /metrics is only updated when the publisher takes a batch) and the sent +
# spooled counters unchanged for 1 s.
settle() {
    local last=-1 same=0 i now q
    for i in $(seq 75); do
        now=$(( $(metric switchyard_events_sent_total) + $(metric switchyard_events_spooled_total) ))
        q=$(readiness | cut -d' ' -f3)
        if [[ $now == "$last" && $q == 0 ]]; then
            same=$((same + 1))
            ((same >= 5)) && return 0
        else
            same=0
        fi
        last=$now
        sleep 0.2
    done
    echo "  (event pipeline still busy after 15 s)" >&2
}

# CPU ticks per thread name of a process: "name ticks" lines.
thread_ticks() {
    local t comm
    for t in /proc/"$1"/task/*; do
        comm=$(tr ' ' '_' <"$t/comm" 2>/dev/null) || continue
        sed 's/^.*) //' "$t/stat" 2>/dev/null | awk -v c="$comm" '{ print c, $12 + $13 }'
    done | awk '{ s[$1] += $2 } END { for (c in s) print c, s[c] }' | sort
}

# wrk's RESULT key=value from one raw output file
wrk_key() { # file key
    sed -n "s/^RESULT .*[ ]$2=\([0-9.]*\).*/\1/p; s/^RESULT $2=\([0-9.]*\).*/\1/p" "$1" | head -1
}

# Other work on this machine (builds, tests) skews every number: before each target, wait (at most
# QUIET_WAIT s) until the machine is nearly idle (1 s samples, % of all cores), and record the CPU
# that processes outside this script's process group used during the measured load.
QUIET_WAIT=${QUIET_WAIT:-180}
QUIET_PCT=${QUIET_PCT:-10}
busy_1s() {
    local b0 t0 b1 t1
    read -r b0 t0 < <(machine_ticks)
    sleep 1
    read -r b1 t1 < <(machine_ticks)
    echo $((t1 > t0 ? 100 * (b1 - b0) / (t1 - t0) : 0))
}
wait_quiet() { # run target
    local i b
    for i in $(seq "$QUIET_WAIT"); do
        b=$(busy_1s)
        ((b <= QUIET_PCT)) && break
        ((i == 1)) && echo "  waiting for the machine to go quiet (busy $b%) ..." >&2
    done
    ((b <= QUIET_PCT)) || echo "  machine still $b% busy after ${QUIET_WAIT}s; measuring anyway" >&2
    put "$1" "$2" busy_before_pct "$b"
}

# CPU used by everything else = the machine's busy ticks (user, nice, system, irq, softirq: a
# process's system time includes the softirq work, loopback networking, done on its behalf)
# minus those of this script's process group (every process it started, with the children they
# reaped: wrk is reaped by this shell), plus steal (the hypervisor running other guests).
# Prints "machine_total_ticks others_ticks".
others_ticks() {
    local pg
    pg=$(sed 's/^.*) //' /proc/$$/stat | awk '{print $3}')
    {
        awk '/^cpu / { print "M", $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9; exit }' /proc/stat
        cat /proc/[0-9]*/stat 2>/dev/null | awk -v pg="$pg" '{ sub(/^.*\) /, "") } $3 == pg { t += $12 + $13 + $14 + $15 } END { print "P", t + 0 }'
    } | awk '$1 == "M" { us = $2; tot = $3; steal = $4 } $1 == "P" { ours = $2 } END { printf "%d %d\n", tot, us - ours + steal }'
}

before_load() {
    before_events "$@"
    read -r FT0 FF0 < <(others_ticks)
}

after_load() {
    local t1 f1
    read -r t1 f1 < <(others_ticks)
    put "$1" "$2" foreign_cpu_pct "$(awk -v f=$((f1 - FF0)) -v t=$((t1 - FT0)) 'BEGIN{printf "%.1f", t ? 100 * f / t : 0}')"
    after_events "$@"
}

before_events() {
    [[ $2 == gw-* ]] || return 0
    # The warm-up's last events are not counted in the window. (With the broker down the queue
    # does not drain while the publisher retries the broker, so there is nothing to wait for.)
    [[ $2 == gw-off || $2 == gw-kafka-down ]] || settle
    SENT0=$(metric switchyard_events_sent_total)
    SPOOLED0=$(metric switchyard_events_spooled_total)
    FAILED0=$(metric switchyard_events_failed_total)
    thread_ticks "$GW_PID" >"$TMP/threads0"
}

after_events() {
    local run=$1 target=$2
    [[ $target == gw-* ]] || return 0
    thread_ticks "$GW_PID" >"$TMP/threads1"
    local reqs
    reqs=$(wrk_key "$TMP/wrk-$target-r$run.txt" requests)
    # CPU µs per request of each gateway thread group, over the measured load.
    join -a2 -e0 -o 0,1.2,2.2 "$TMP/threads0" "$TMP/threads1" | while read -r name t0 t1; do
        name=$(sed 's/[0-9]*$//' <<<"$name")
        echo "$name $((t1 - t0))"
    done | awk '{ s[$1] += $2 } END { for (c in s) print c, s[c] }' | while read -r name d; do
        put "$run" "$target" "thr:$name" "$(awk -v d="$d" -v r="$reqs" -v h="$TCK" 'BEGIN{printf "%.1f", r ? d / h / r * 1e6 : 0}')"
    done
    [[ $target == gw-off ]] && return 0
    if [[ $target == gw-kafka-down ]]; then sleep 1; else settle; fi
    put "$run" "$target" load_events_sent $(($(metric switchyard_events_sent_total) - SENT0))
    put "$run" "$target" load_events_spooled $(($(metric switchyard_events_spooled_total) - SPOOLED0))
    put "$run" "$target" load_events_failed $(($(metric switchyard_events_failed_total) - FAILED0))
}

stop_broker() {
    [[ -n ${BROKER_PID:-} ]] || return 0
    put "$run" broker rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$BROKER_PID/status" 2>/dev/null || echo 0)"
    stop_pid "$BROKER_PID"
    forget_pid "$BROKER_PID"
    BROKER_PID=
}

# Waits (at most 30 s) until the gateway has delivered at least $1 events to Kafka.
wait_sent() {
    local i
    for i in $(seq 150); do
        (($(metric switchyard_events_sent_total) >= $1)) && return 0
        sleep 0.2
    done
    die "the gateway delivered no events to Kafka within 30 s (log: $TMP/$target.log)"
}

# One gateway mode: start, smoke, measure, checks, stop.
gateway_mode() { # run mode
    local run=$1 mode=$2 target=gw-$2 port dir
    dir=$TMP/events-$mode-r$run
    AUX_PIDS=
    case $mode in
        off) GW_EVENT_LOG="event_log: {enabled: false, path: \"$dir\"}" ;; # no directory is created
        embedded) GW_EVENT_LOG="event_log: {path: \"$dir\"}" ;;
        kafka | kafka-down)
            [[ -n ${BROKER_PID:-} ]] || start_broker
            GW_EVENT_LOG="event_log: {path: \"$dir\", kafka: {bootstrap_servers: \"127.0.0.1:$BROKER_PORT\", topic_prefix: bench, partitions: 3}}"
            ;;
        *) die "unknown mode $mode" ;;
    esac
    port=$(pick_port)
    GW_URL=http://127.0.0.1:$port
    start_gateway 1 "$port" "$target"
    smoke "$GW_URL/v1/chat/completions" "$target"
    case $mode in
        kafka)
            wait_sent 2
            AUX_PIDS=$BROKER_PID
            ;;
        kafka-down)
            wait_sent 2 # connected, topics created
            put "$run" "$target" state_before "$(readiness | cut -d' ' -f1)"
            stop_broker
            ;;
    esac
    put "$run" "$target" idle_rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$GW_PID/status")"
    wait_quiet "$run" "$target"
    measure "$run" "$target" "$GW_URL/v1/chat/completions" "$GW_PID"
    put "$run" "$target" hwm_kb "$(awk '/^VmHWM/{print $2}' "/proc/$GW_PID/status")"
    put "$run" "$target" rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$GW_PID/status")"
    [[ $mode == kafka ]] && put "$run" "$target" aux_rss_kb "$(awk '/^VmRSS/{print $2}' "/proc/$BROKER_PID/status")"

    # Every request wrk made to this gateway (warm-up, load, 1-connection probe), and its answers.
    local f all=0 bad=0 v
    for f in "$TMP/wrk-$target-warmup-r$run.txt" "$TMP/wrk-$target-r$run.txt" "$TMP/wrk-$target-c1-r$run.txt"; do
        [[ -f $f ]] || continue
        all=$((all + $(wrk_key "$f" requests)))
        bad=$((bad + $(wrk_key "$f" non200) + $(wrk_key "$f" sock_errors)))
    done
    put "$run" "$target" all_requests "$all"
    put "$run" "$target" all_bad "$bad"
    if [[ $mode != off ]]; then
        if [[ $mode != kafka-down ]]; then settle; fi
        local r
        r=$(readiness)
        put "$run" "$target" state_after "${r%% *}"
        v=${r#* }
        put "$run" "$target" spool_pending_after "${v%% *}"
        put "$run" "$target" queue_depth_after "${v#* }"
        put "$run" "$target" readiness_ms "$(curl -s --max-time 5 -o /dev/null -w '%{time_total}' "$GW_URL/health/readiness" |
            awk '{printf "%.1f", $1 * 1000}')"
        put "$run" "$target" events_sent_total "$(metric switchyard_events_sent_total)"
        put "$run" "$target" events_spooled_total "$(metric switchyard_events_spooled_total)"
        put "$run" "$target" events_failed_total "$(metric switchyard_events_failed_total)"
        put "$run" "$target" disk_kb "$(du -sk "$dir" 2>/dev/null | cut -f1)"
        kill -0 "$GW_PID" 2>/dev/null && put "$run" "$target" alive 1 || put "$run" "$target" alive 0
    fi
    stop_pid "$GW_PID"
    forget_pid "$GW_PID"
    [[ -n ${KEEP_EVENTS:-} ]] || rm -rf "$dir" # can be GBs; KEEP_EVENTS=1 keeps them
}

# ---------------------------------------------------------------------------------- runs
start_mock
echo "events: $CONNS connections, wrk -t$THREADS, ${DURATION}s per target after ${WARMUP}s warm-up, $RUNS run(s), $(nproc) cores; modes: $MODES" >&2
direct_target() { # run
    wait_quiet "$1" direct
    measure "$1" direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "$MOCK_PID"
}

nginx_target() { # run workers
    local port
    port=$(pick_port)
    start_nginx "$2" "$port"
    smoke "http://127.0.0.1:$port/v1/chat/completions" "nginx-w$2"
    wait_quiet "$1" "nginx-w$2"
    measure "$1" "nginx-w$2" "http://127.0.0.1:$port/v1/chat/completions" \
        "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true)
    stop_pid "$NGINX_PID"
    forget_pid "$NGINX_PID"
}

# Runs a target's measurement (a function call) and keeps its results, unless other processes
# used more than FOREIGN_MAX % of the machine during the load: then it is measured again (at
# most RETRIES times; the last attempt is kept, and its retry count recorded).
FOREIGN_MAX=${FOREIGN_MAX:-3}
RETRIES=${RETRIES:-2}
guarded() { # run target command args...
    local run=$1 target=$2 main=$RESULTS i f
    shift 2
    for i in $(seq 0 "$RETRIES"); do
        RESULTS=$TMP/attempt.tsv
        : >"$RESULTS"
        "$@"
        RESULTS=$main
        f=$(awk -F'\t' -v t="$target" '$2 == t && $3 == "foreign_cpu_pct" { print $4 }' "$TMP/attempt.tsv")
        if awk -v f="${f:-0}" -v m="$FOREIGN_MAX" 'BEGIN { exit !(f <= m) }' || ((i == RETRIES)); then
            cat "$TMP/attempt.tsv" >>"$RESULTS"
            put "$run" "$target" retries "$i"
            return 0
        fi
        echo "  run $run $target: other processes used ${f}% of the machine during the load; measuring again" >&2
    done
}

for run in $(seq "$RUNS"); do
    BROKER_PID=
    guarded "$run" direct direct_target "$run"
    for w in $NGINX_WORKERS; do guarded "$run" "nginx-w$w" nginx_target "$run" "$w"; done
    for mode in $MODES; do guarded "$run" "gw-$mode" gateway_mode "$run" "$mode"; done
    stop_broker
done

# ---------------------------------------------------------------------------------- summary
MED=$TMP/medians.tsv
medians "$RESULTS" >"$MED"
if [[ -n ${KEEP:-} ]]; then cp "$RESULTS" "$TMP/results-all.tsv"; fi
echo
awk -F'\t' -v ncpu="$(nproc)" -v runs="$RUNS" -v conns="$CONNS" -v nginx="$NGINX_WORKERS" -v modes="$MODES" '
    FILENAME == ARGV[1] { m[$1, $2] = $3; next }
    { r[$1, $2, $3] = $4; if (!($1 in seen)) { seen[$1]; order[++nr] = $1 } }
    function g(t, k) { return ((t SUBSEP k) in m) ? m[t, k] : -1 }
    function has(t) { return (t SUBSEP "rps") in m }
    function ms(us) { return us < 0 ? "-" : sprintf("%.2f", us / 1000) }
    function mb(kb) { return kb < 0 ? "-" : sprintf("%.1f", kb / 1024) }
    function met(ok) { return ok ? "MET" : "NOT MET" }
    function median(a, k,    i, j, x, b) {
        for (i = 1; i <= k; i++) b[i] = a[i]
        for (i = 2; i <= k; i++) { x = b[i]; for (j = i - 1; j >= 1 && b[j] > x; j--) b[j + 1] = b[j]; b[j + 1] = x }
        return k % 2 ? b[(k + 1) / 2] : (b[k / 2] + b[k / 2 + 1]) / 2
    }
    END {
        n = 0; T[++n] = "direct"
        k = split(nginx, W, " "); for (i = 1; i <= k; i++) T[++n] = "nginx-w" W[i]
        k = split(modes, M, " "); for (i = 1; i <= k; i++) T[++n] = "gw-" M[i]
        base = "gw-off"
        printf "Medians of %d run(s); %d connections; latency in ms; CPU in us per request (all threads; machine CPU:\nbusy share of all %d cores per request, wrk and mock included).\n\n", runs, conns, ncpu
        printf "| mode | req/s | p50 | p99 | req/s vs gw-off | p99 vs gw-off | overhead hdr p50 / p99 | RSS MB after / peak | proxy CPU | broker CPU | machine CPU | 1-conn p50 / p99 | machine busy / others |\n"
        printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for (i = 1; i <= n; i++) {
            t = T[i]; if (!has(t)) continue
            ratio = has(base) ? sprintf("%.2fx", g(t, "rps") / g(base, "rps")) : "-"
            d99 = has(base) ? sprintf("%+.2f", (g(t, "p99_us") - g(base, "p99_us")) / 1000) : "-"
            ovh = (g(t, "ovh_n") > 0) ? sprintf("%.3f / %.3f", g(t, "ovh_p50_ms"), g(t, "ovh_p99_ms")) : "-"
            rss = (t ~ /^gw-/) ? sprintf("%s / %s", mb(g(t, "rss_kb")), mb(g(t, "hwm_kb"))) : "-"
            c1 = (g(t, "c1_p50_us") >= 0) ? sprintf("%s / %s", ms(g(t, "c1_p50_us")), ms(g(t, "c1_p99_us"))) : "-"
            printf "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %s | %s%% / %s%% |\n", t, g(t, "rps"), ms(g(t, "p50_us")), ms(g(t, "p99_us")),
                ratio, d99, ovh, rss, (t == "direct") ? "-" : g(t, "proxy_cpu_us_per_req"),
                (g(t, "aux_cpu_us_per_req") >= 0) ? g(t, "aux_cpu_us_per_req") : "-",
                g(t, "machine_busy_pct") / 100 * ncpu * 1e6 / g(t, "rps"), c1, g(t, "machine_busy_pct"), g(t, "foreign_cpu_pct")
        }
        printf "\nreq/s per run:"
        for (i = 1; i <= n; i++) {
            t = T[i]; s = ""
            for (j = 1; j <= nr; j++) if ((order[j], t, "rps") in r) s = s (s == "" ? "" : " / ") sprintf("%.0f", r[order[j], t, "rps"])
            if (s != "") printf "  %s %s;", t, s
        }
        printf "\np99 (ms) per run:"
        for (i = 1; i <= n; i++) {
            t = T[i]; s = ""
            for (j = 1; j <= nr; j++) if ((order[j], t, "p99_us") in r) s = s (s == "" ? "" : " / ") sprintf("%.2f", r[order[j], t, "p99_us"] / 1000)
            if (s != "") printf "  %s %s;", t, s
        }
        printf "\nCPU used by other processes or stolen by the hypervisor during the load (%% of the machine) per run:"
        for (i = 1; i <= n; i++) {
            t = T[i]; s = ""
            for (j = 1; j <= nr; j++) if ((order[j], t, "foreign_cpu_pct") in r) s = s (s == "" ? "" : " / ") r[order[j], t, "foreign_cpu_pct"]
            if (s != "") printf "  %s %s;", t, s
        }
        printf "\nRe-measured because of other load (count per run):"
        for (i = 1; i <= n; i++) {
            t = T[i]; s = ""
            for (j = 1; j <= nr; j++) if ((order[j], t, "retries") in r) s = s (s == "" ? "" : " / ") r[order[j], t, "retries"]
            if (s != "") printf "  %s %s;", t, s
        }
        printf "\n\nGateway CPU per request by thread (us, medians; threads named by the runtime, digits stripped):\n"
        for (i = 1; i <= n; i++) {
            t = T[i]; if (t !~ /^gw-/ || !has(t)) continue
            s = ""
            for (key in m) { split(key, kk, SUBSEP); if (kk[1] == t && kk[2] ~ /^thr:/ && m[key] >= 0.5) s = s sprintf(" %s=%s", substr(kk[2], 5), m[key]) }
            printf "  %s:%s\n", t, s
        }
        printf "\nTargets (reported, not enforced):\n"
        if (has("gw-kafka") && has(base)) {
            rr = g("gw-kafka", "rps") / g(base, "rps"); dd = (g("gw-kafka", "p99_us") - g(base, "p99_us")) / 1000
            printf "  Kafka req/s / event-log-off req/s: %.3f (target >= 0.90: %s)\n", rr, met(rr >= 0.9)
            printf "  Kafka p99 - event-log-off p99: %+.3f ms (target <= +0.20 ms: %s)\n", dd, met(dd <= 0.2)
        }
        if (has("gw-embedded") && has(base)) {
            printf "  (embedded log: req/s %.3fx, p99 %+.3f ms vs off)\n", g("gw-embedded", "rps") / g(base, "rps"), (g("gw-embedded", "p99_us") - g(base, "p99_us")) / 1000
        }
        # CPU of the gateway process itself (user + system from /proc/<pid>/stat over the measured
        # load, all threads) per request, against the gateway with the log off in the same run;
        # the broker is a process of its own and not in it.
        printf "\nGateway process CPU per request (us), and its ratio to gw-off in the same run (target for embedded and kafka: <= 1.10):\n"
        for (i = 1; i <= n; i++) {
            t = T[i]; if (t !~ /^gw-/ || t == base || !has(t)) continue
            s = ""; k = 0
            for (j = 1; j <= nr; j++) {
                rn = order[j]
                if (!((rn, t, "proxy_cpu_us_per_req") in r) || !((rn, base, "proxy_cpu_us_per_req") in r) || r[rn, base, "proxy_cpu_us_per_req"] <= 0) continue
                q = r[rn, t, "proxy_cpu_us_per_req"] / r[rn, base, "proxy_cpu_us_per_req"]
                R[++k] = q
                s = s sprintf("%s%s %.1f / %.1f = %.3f", s == "" ? "" : "; ", "run " rn, r[rn, t, "proxy_cpu_us_per_req"], r[rn, base, "proxy_cpu_us_per_req"], q)
            }
            if (k == 0) continue
            med = median(R, k)
            printf "  %s: %s\n    median ratio %.3f", t, s, med
            if (t == "gw-embedded" || t == "gw-kafka") printf " (target <= 1.10: %s)", met(med <= 1.10)
            if (g(t, "aux_cpu_us_per_req") >= 0) printf "; broker process CPU per request (excluded): median %s us", g(t, "aux_cpu_us_per_req")
            printf "\n"
        }
        printf "\nEvents per run (measured load window; expected ~2 per request):\n"
        for (j = 1; j <= nr; j++) {
            rn = order[j]
            for (i = 1; i <= n; i++) {
                t = T[i]; if (t !~ /^gw-/ || t == base || !((rn, t, "requests") in r)) continue
                q = r[rn, t, "requests"]
                printf "  run %s %s: wrk requests %d; events sent %d (%.3f per request), spooled %d, failed %d; all wrk requests %d, non-200 + socket errors %d; after: state %s, spool_pending %s, sent_total %s, spooled_total %s, event dir %.0f MB, readiness answered in %s ms, alive %s\n",
                    rn, t, q, r[rn, t, "load_events_sent"], q ? r[rn, t, "load_events_sent"] / q : 0, r[rn, t, "load_events_spooled"], r[rn, t, "load_events_failed"],
                    r[rn, t, "all_requests"], r[rn, t, "all_bad"], r[rn, t, "state_after"], r[rn, t, "spool_pending_after"],
                    r[rn, t, "events_sent_total"], r[rn, t, "events_spooled_total"], r[rn, t, "disk_kb"] / 1024, r[rn, t, "readiness_ms"], r[rn, t, "alive"]
            }
        }
        if (has("gw-kafka")) {
            ok = 1
            for (j = 1; j <= nr; j++) { rn = order[j]; if ((rn, "gw-kafka", "requests") in r) { q = r[rn, "gw-kafka", "requests"]; e = r[rn, "gw-kafka", "load_events_sent"]; if (e < 2 * q || e > 2 * q + 4 * conns) ok = 0 } }
            printf "  Kafka: events sent during the load = 2 x wrk requests (+ at most the in-flight calls) in every run: %s\n", ok ? "yes" : "NO"
        }
        if (has("gw-kafka-down")) {
            ok = 1; sp = 1
            for (j = 1; j <= nr; j++) { rn = order[j]; t = "gw-kafka-down"; if ((rn, t, "requests") in r) { if (r[rn, t, "all_bad"] != 0 || r[rn, t, "alive"] != 1) ok = 0; if (r[rn, t, "load_events_spooled"] <= 0) sp = 0 } }
            printf "  Broker down: every request answered 200 and the gateway stayed up in every run: %s; events spooled in every run: %s\n", ok ? "MET" : "NOT MET", sp ? "yes" : "NO"
        }
        bad = 0
        for (i = 1; i <= n; i++) if (has(T[i])) bad += g(T[i], "non200") + g(T[i], "sock_errors")
        if (bad > 0) printf "\nWARNING: non-200 answers or socket errors in the measured loads (median sum %d); see wrk output with KEEP=1.\n", bad
    }' "$MED" "$RESULTS"
