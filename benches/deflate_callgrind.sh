#!/usr/bin/env bash
# Instructions per echoed message in the server with and without permessage-deflate, counted
# by callgrind (repeatable where wall-clock times are not), like load/callgrind.sh but with a
# fixed number of messages instead of a fixed time, and python-websockets as the client (it
# compresses; wsrload does not yet). For each server mode and message size the server runs
# under `valgrind --tool=callgrind`, one reactor, and 10 connections echo SHORT and then LONG
# messages each; (instructions(LONG) - instructions(SHORT)) / (messages(LONG) - messages(SHORT))
# leaves out start-up, handshakes and shutdown.
#
# Usage: bash benches/deflate_callgrind.sh [SERVER_BIN]   (default target/release/wsreactor;
#        build it with `cargo build --release -p wsreactor-server`; needs python3-websockets)
# Traffic goes to 127.0.0.1 only; each run stops by itself.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${1:-target/release/wsreactor}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the instruction count of one server run: mode args $1, COUNT $2, SIZE $3, COMPRESS $4.
run() {
    local args=$1 count=$2 size=$3 compress=$4 port
    port=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2086
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" \
        --listen "127.0.0.1:$port" --threads 1 --stats-interval-ms 0 $args >/dev/null 2>"$work/err" &
    local pid=$!
    for _ in $(seq 100); do
        grep -qi "listening" "$work/err" && break
        sleep 0.2
    done
    taskset -c 1 $python benches/deflate_traffic.py "ws://127.0.0.1:$port/" 10 "$count" "$size" "$compress"
    kill -INT "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$work/out"
}

printf '%-46s %8s %14s\n' mode size 'instr/message'
for size in 300 65536; do
    if [ "$size" -gt 1000 ]; then short=20 long=60; else short=200 long=600; fi
    for mode in "off|--compression off|0" \
                "no-context-takeover|--compression no-context-takeover|1" \
                "context-takeover (live kept)|--compression context-takeover|1" \
                "context-takeover, --compression-live 0|--compression context-takeover --compression-live 0|1"; do
        IFS='|' read -r name args compress <<<"$mode"
        ir1=$(run "$args" "$short" "$size" "$compress")
        ir2=$(run "$args" "$long" "$size" "$compress")
        printf '%-46s %8s %14d\n' "$name" "$size" $(( (ir2 - ir1) / ((long - short) * 10) ))
    done
done
