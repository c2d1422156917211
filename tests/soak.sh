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
# One `wsrload echo` process carries the whole mix: each message draws its size and kind by
# weight (sizes weighted by their share of messages per second, half text, half binary).
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
    (cd "$root" && cargo build --release -q -p wsreactor-server -p load --bin wsreactor --bin wsrload)
fi
server_bin=$target/release/wsreactor
load_bin=$target/release/wsrload

load_pid=
server_pid=
cleanup() {
    if [[ -n $load_pid ]]; then
        kill "$load_pid" 2>/dev/null || true
    fi
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

# The mix: sizes weighted by messages per second (they sum to the rate), half text, half
# binary. 1 MiB messages are 20 of the 10,420 per second.
sizes=0:4000,125:4000,4KiB:2000,64KiB:400,1MiB:20
kinds=text:50,binary:50
rate=10420
# Warm-up covers connecting (wsrload opens up to 10,000 connections per second).
warmup=$((3 + connections / 2000))
"$load_bin" echo "ws://127.0.0.1:$port/" -c "$connections" --sizes "$sizes" --kinds "$kinds" \
    --rate "$rate" --warmup "$warmup" -d "$seconds" --json -q >"$out/load.json" 2>"$out/load.err" &
load_pid=$!
log "$connections connections, sizes $sizes, kinds $kinds, $rate msg/s"

# Sample the server's RSS once a second while the loads run.
: >"$out/rss"
start=$SECONDS
while kill -0 "$load_pid" 2>/dev/null; do
    echo "$((SECONDS - start)) $(rss_kib)" >>"$out/rss"
    sleep 1
done

failed=0
if ! wait "$load_pid"; then
    log "wsrload exited with an error: $(cat "$out/load.err")"
    failed=1
fi
load_pid=

f=$out/load.json
total_messages=0
total_errors=0
total_connected=0
if [[ -s $f ]]; then
    total_messages=$(jq '.messages' "$f")
    total_errors=$(jq '.error_total' "$f")
    total_connected=$(jq '.connected' "$f")
    log "errors: $(jq -c '.errors' "$f")"
    jq -r '.mix[] | "  \(.size) B \(.kind): \(.messages) echoes checked"' "$f" >&2
    # Every shape of the mix must have been sent and echoed intact.
    unseen=$(jq '[.mix[] | select(.messages == 0)] | length' "$f")
    if ((unseen != 0)); then
        log "$unseen shape(s) of the mix saw no echo"
        failed=1
    fi
    if ((total_errors != 0 || total_connected != connections)); then failed=1; fi
else
    log "wsrload wrote no report"
    failed=1
fi

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
