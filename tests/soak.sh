#!/usr/bin/env bash
# Soak: many open connections for a bounded time with mixed message sizes (0 B to 1 MiB) and
# mixed text/binary, against the release server. Passes when every echo came back intact
# (the load generator checks every byte), no connection was closed or lost unexpectedly, the
# server is still up, and its RSS is flat at the end (the baseline does not grow).
#
#   tests/soak.sh                                   # CI size: 1,000 connections, 20 s
#   SOAK_CONNECTIONS=10000 SOAK_SECONDS=300 tests/soak.sh   # the full soak
#
# Environment: SOAK_CONNECTIONS (default 1000), SOAK_SECONDS (measured window, default 20),
# SOAK_PORT (default 19301), SOAK_RSS_SLACK_KIB (allowed growth, default 8192),
# CARGO_TARGET_DIR (as for cargo), SOAK_NO_BUILD=1 to use existing binaries.
#
# The load generator sends one size and one kind per process, so the mix is made of five
# concurrent `load echo` processes, each with its share of the connections and a fixed rate.
# Only processes started here are signalled, by PID.
set -euo pipefail

connections=${SOAK_CONNECTIONS:-1000}
seconds=${SOAK_SECONDS:-20}
port=${SOAK_PORT:-19301}
rss_slack_kib=${SOAK_RSS_SLACK_KIB:-8192}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=$(mktemp -d "${TMPDIR:-/tmp}/wsreactor-soak.XXXXXX")

log() { printf 'soak: %s\n' "$*" >&2; }

if [[ ${SOAK_NO_BUILD:-0} != 1 ]]; then
    log "building release binaries"
    (cd "$root" && cargo build --release -q -p wsreactor-server -p load)
fi
server_bin=$target/release/wsreactor
load_bin=$target/release/load

pids=()
server_pid=
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$server_bin" --listen "127.0.0.1:$port" --max-connections 19000 \
    --max-pending-handshakes 2048 2>"$out/server.log" &
server_pid=$!
for _ in $(seq 100); do
    if grep -q listening "$out/server.log" 2>/dev/null; then break; fi
    sleep 0.05
done
kill -0 "$server_pid"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }

# Groups: share of connections (per mille), size, kind, total messages per second.
groups=(
    "400 0 text 4000"
    "300 125 binary 4000"
    "190 4KiB text 2000"
    "100 64KiB binary 400"
    "10 1MiB binary 20"
)
# Warm-up covers connecting (load opens up to 10,000 connections per second).
warmup=$((3 + connections / 2000))
i=0
for g in "${groups[@]}"; do
    read -r share size kind rate <<<"$g"
    n=$((connections * share / 1000))
    ((n > 0)) || n=1
    "$load_bin" echo "ws://127.0.0.1:$port/" -c "$n" -s "$size" -k "$kind" --rate "$rate" \
        --warmup "$warmup" -d "$seconds" --json -q >"$out/load-$i.json" 2>"$out/load-$i.err" &
    pids+=($!)
    log "group $i: $n connections, $size $kind, $rate msg/s"
    i=$((i + 1))
done

# Sample the server's RSS once a second while the loads run.
: >"$out/rss"
start=$SECONDS
while true; do
    running=0
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then running=1; fi
    done
    ((running)) || break
    echo "$((SECONDS - start)) $(rss_kib)" >>"$out/rss"
    sleep 1
done

failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        log "load group $i exited with an error: $(cat "$out/load-$i.err")"
        failed=1
    fi
done
pids=()

total_messages=0
total_errors=0
total_connected=0
for i in "${!groups[@]}"; do
    f=$out/load-$i.json
    if [[ ! -s $f ]]; then
        log "group $i wrote no report"
        failed=1
        continue
    fi
    m=$(jq '.messages' "$f")
    e=$(jq '.error_total' "$f")
    c=$(jq '.connected' "$f")
    want=$(jq '.connections' "$f")
    total_messages=$((total_messages + m))
    total_errors=$((total_errors + e))
    total_connected=$((total_connected + c))
    log "group $i: $(jq -r '"\(.connected)/\(.connections) connected, \(.size) B \(.kind), \(.messages) messages, errors \(.errors)"' "$f")"
    if ((e != 0 || c != want)); then failed=1; fi
done

# RSS: after connecting (first sample past the warm-up), the baseline (lowest sample) of the
# second quarter and of the last quarter of the run, and the peak. In-flight 1 MiB messages
# make single samples jump by a few MiB, so "flat" compares baselines: the last quarter's
# may exceed the second quarter's by at most the slack.
rss_connected=$(awk -v t="$warmup" '$1 >= t + 1 { print $2; exit }' "$out/rss")
samples=$(wc -l <"$out/rss")
quarter_min() { # FROM TO (sample numbers, 1-based, inclusive)
    awk -v a="$1" -v b="$2" 'NR >= a && NR <= b && (m == "" || $2 < m) { m = $2 } END { print m + 0 }' "$out/rss"
}
rss_q2=$(quarter_min $((samples / 4 + 1)) $((samples / 2)))
rss_q4=$(quarter_min $((samples * 3 / 4 + 1)) "$samples")
rss_end=$(tail -n 1 "$out/rss" | awk '{ print $2 }')
rss_max=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$out/rss")
kill -0 "$server_pid" || { log "the server died"; failed=1; }
sleep 1
rss_idle=$(rss_kib)

log "connections: $total_connected of $connections, window ${seconds}s, messages: $total_messages, errors: $total_errors"
log "server RSS (KiB): connected $rss_connected, baseline 2nd quarter $rss_q2, baseline last quarter $rss_q4, end $rss_end, peak $rss_max, after clients left $rss_idle"
if ((rss_q4 > rss_q2 + rss_slack_kib)); then
    log "RSS baseline grew by $((rss_q4 - rss_q2)) KiB (allowed $rss_slack_kib)"
    failed=1
fi

kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=
log "server: $(tail -n 1 "$out/server.log")"
log "reports and RSS samples in $out"
if ((failed)); then
    log "FAILED"
    exit 1
fi
log "PASSED"
