#!/usr/bin/env bash
# Spend endpoints on a large ClickHouse: ROWS synthetic calls (10M by default) over 30 days in
# spend_logs, their daily_spend rollups derived from them by SQL (the shape the spend consumer
# writes: one row per day x entity x key x model group x provider), then each endpoint timed
# through the gateway (a release build), RUNS times, median and slowest reported.
# Target (issue 8): /global/spend/report and /user/daily/activity over 30 days <= 300 ms.
#
# Usage: benches/spend_queries.sh            (about 3 minutes: the data takes most of it)
# Knobs: ROWS=10000000 RUNS=11 KEYS=1000 PORT=4300 CH_PORT=18300 NO_BUILD=1 BIN=path KEEP=1
# Needs: curl, clickhouse-server (scripts/clickhouse.sh installs Debian's when missing, as root).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=${ROWS:-10000000}
RUNS=${RUNS:-11}
KEYS=${KEYS:-1000}
PORT=${PORT:-4300}
CH_PORT=${CH_PORT:-18300}
BIN=${BIN:-$ROOT/target/release/switchyard}
WORK=$(mktemp -d /tmp/switchyard-spend-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

CH=http://127.0.0.1:$CH_PORT
sql() { curl -sS --fail-with-body "$CH/?database=bench" --data-binary "$1"; }
wait_for() { # url
    for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "spend_queries.sh: $1 did not answer" >&2; exit 1
}

"$ROOT/scripts/clickhouse.sh" "$WORK/ch" "$CH_PORT" >"$WORK/ch.out" 2>&1 &
PIDS+=($!)
wait_for "$CH/ping"
cat >"$WORK/config.yaml" <<YAML
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9", api_key: none}
general_settings: {master_key: sk-bench}
event_log: {enabled: false}
analytics: {clickhouse: {url: "$CH", database: bench}}
YAML
"$BIN" migrate --config "$WORK/config.yaml" >/dev/null

echo "generating $ROWS calls over 30 days ($KEYS keys)..." >&2
started=$(date +%s)
sql "INSERT INTO spend_logs SELECT
    toString(number) AS event_id, concat('req-', toString(number)) AS request_id, 'acompletion',
    concat('key', toString(number % $KEYS)) AS api_key, '' AS key_alias,
    concat('team', toString(number % $KEYS % 50)) AS team_id,
    concat('user', toString(number % $KEYS % 200)) AS user,
    concat('cust', toString(number % 5000)) AS end_user,
    arrayElement(['gpt-4o', 'gpt-4o-mini', 'claude', 'gemini', 'llama'], number % 5 + 1) AS model,
    model AS model_group, 'd1' AS deployment,
    arrayElement(['openai', 'openai', 'anthropic', 'gemini', 'ollama'], number % 5 + 1) AS provider,
    '' AS api_base, if(number % 50 = 0, 'failure', 'success') AS status, if(number % 50 = 0, 500, 200),
    '' AS error_type, number % 1000 AS prompt_tokens, number % 500 AS completion_tokens,
    prompt_tokens + completion_tokens, 0, 0, 0, toInt64(1000 + number % 100000) AS spend_nanos,
    toDateTime(toUInt32(now()) - number % (30 * 86400)) AS start_time, start_time,
    toUInt64(start_time) * 1000, 700.0, NULL, 0, [concat('tag', toString(number % 20))], '', 'gw'
    FROM system.numbers LIMIT $ROWS"
for kind in key team user end_user model provider tag; do
    case $kind in
        key) entity=api_key; join= ;;
        team) entity=team_id; join= ;;
        user) entity=user; join= ;;
        end_user) entity=end_user; join= ;;
        model) entity=model_group; join= ;;
        provider) entity=provider; join= ;;
        tag) entity=tag; join="ARRAY JOIN tags AS tag" ;;
    esac
    sql "INSERT INTO daily_spend SELECT toDate(start_time) AS date, '$kind', $entity AS entity, api_key,
        model_group, provider, sum(spend_nanos), sum(prompt_tokens), sum(completion_tokens),
        sum(total_tokens), sum(cache_read_input_tokens), sum(cache_creation_input_tokens), count(),
        countIf(status = 'success'), countIf(status != 'success'), 0, 0, 1
        FROM spend_logs $join GROUP BY date, entity, api_key, model_group, provider"
done
sql "OPTIMIZE TABLE daily_spend FINAL" || true
rollups=$(sql "SELECT count() FROM daily_spend")
echo "data ready in $(( $(date +%s) - started )) s: $(sql "SELECT count() FROM spend_logs") spend_logs rows, $rollups daily_spend rows" >&2

"$BIN" --config "$WORK/config.yaml" --port "$PORT" --host 127.0.0.1 >"$WORK/gw.out" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PORT/health/liveliness"

start=$(date -u -d '29 days ago' +%F)
end=$(date -u +%F)
echo
echo "| endpoint (30 days, $ROWS calls, $rollups rollup rows) | median ms | slowest ms | answer bytes |"
echo "|---|---:|---:|---:|"
for path in \
    "/global/spend/report?start_date=$start&end_date=$end&group_by=team" \
    "/global/spend/report?start_date=$start&end_date=$end&group_by=api_key" \
    "/user/daily/activity?start_date=$start&end_date=$end" \
    "/team/daily/activity?start_date=$start&end_date=$end" \
    "/global/spend" \
    "/spend/logs?start_date=$start&end_date=$end"; do
    times=()
    for _ in $(seq 1 "$RUNS"); do
        out=$(curl -s -o "$WORK/answer" -w '%{http_code} %{time_total}' -H "Authorization: Bearer sk-bench" "http://127.0.0.1:$PORT$path")
        [ "${out%% *}" = 200 ] || { echo "spend_queries.sh: $path answered ${out%% *}: $(head -c 300 "$WORK/answer")" >&2; exit 1; }
        times+=("${out#* }")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -g)
    median=$(echo "$sorted" | awk -v n="$RUNS" 'NR == int((n + 1) / 2) { printf "%.0f", $1 * 1000 }')
    slowest=$(echo "$sorted" | tail -1 | awk '{ printf "%.0f", $1 * 1000 }')
    label=$(echo "$path" | sed -E 's/[?&](start|end)_date=[0-9-]+//g; s/^([^?&]*)&/\1?/')
    echo "| \`$label\` | $median | $slowest | $(wc -c <"$WORK/answer") |"
done
