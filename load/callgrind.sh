#!/usr/bin/env bash
# Instructions per echoed message in a server process, counted by callgrind (repeatable where
# wall-clock times are not). The server runs under `valgrind --tool=callgrind` and receives
# fixed-rate traffic (10 connections x 20 B text, 2,000 msg/s) for SHORT and then LONG seconds;
# the difference of the two totals over the difference of the message counts leaves out
# start-up, handshakes and shutdown: what remains is the steady-state cost of one message.
#
# Usage: [SERVER_CPUS=0,1] load/callgrind.sh [SERVER_BIN...]   (default: target/release/wsreactor and
#        target/release/peer-fastwebsockets; build them, and target/release/wsrload, with
#        `cargo build --release -p wsreactor-server -p load -p peers`)
# Traffic goes to 127.0.0.1 only; each run stops by itself.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
load=target/release/wsrload
short=4
long=8
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints "instructions messages" for one run of $2 seconds against server binary $1.
run() {
    local bin=$1 seconds=$2 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Pinned (SERVER_CPUS, default core 0): wsreactor runs one reactor per CPU it may use, so
    # this counts the one-thread server unless SERVER_CPUS=0,1 asks for two.
    taskset -c "${SERVER_CPUS:-0}" \
        valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" --listen "127.0.0.1:$port" \
        >/dev/null 2>"$work/err" &
    local pid=$!
    for _ in $(seq 100); do
        grep -qi "listening" "$work/err" && break
        sleep 0.2
    done
    # --ms-pacing: sends batched per millisecond poll, as every earlier count here was taken
    # (the send timer spreads them out, one wake-up each: 1,054 instructions per message for
    # wsreactor on 2026-12-01 against 914-944 with --ms-pacing).
    "$load" echo "ws://127.0.0.1:$port/" -c 10 -s 20 -k text --rate 2000 --ms-pacing --warmup 0 \
        -d "$seconds" --json --quiet >"$work/json"
    kill -INT "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local ir msgs
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/out")
    msgs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$work/json")
    echo "$ir $msgs"
}

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/wsreactor target/release/peer-fastwebsockets)
printf '%-40s %14s\n' server 'instr/message'
for bin in "${bins[@]}"; do
    read -r ir1 n1 < <(run "$bin" "$short")
    read -r ir2 n2 < <(run "$bin" "$long")
    printf '%-40s %14d\n' "$(basename "$bin")" $(( (ir2 - ir1) / (n2 - n1) ))
done
