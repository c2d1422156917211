#!/usr/bin/env bash
# A room's delivery within one server and across two through Redis (README, Several servers):
# per mode, a fresh redis-server and two fresh release servers (one reactor each) on loopback
# ports, then examples/broker_latency (publisher on A; 10 subscribers on A, or on B), then the
# broker counters of both servers. Modes: nobroker (A and B not attached), within, across.
# Traffic goes to 127.0.0.1 only; each run stops by itself.
#
# Build first: cargo build --release -p wsreactor-server --bin wsreactor -p wsreactor --example broker_latency
# Needs redis-server (Debian's package) and curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for mode in nobroker within across; do
    port=$(free) pa=$(free) pb=$(free)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!
    sleep 0.5
    broker=(--broker "redis://127.0.0.1:$port/bench")
    [ "$mode" = nobroker ] && broker=()
    target/release/wsreactor --listen "127.0.0.1:$pa" --threads 1 "${broker[@]}" --log-level warn &
    apid=$!
    target/release/wsreactor --listen "127.0.0.1:$pb" --threads 1 "${broker[@]}" --log-level warn &
    bpid=$!
    sleep 0.5
    sub=$pa
    [ "$mode" = across ] && sub=$pb
    echo "== $mode: publisher on A, 10 subscribers on $([ "$mode" = across ] && echo B || echo A)"
    timeout 120 target/release/examples/broker_latency "127.0.0.1:$pa" "127.0.0.1:$sub" 10 2000 5 200000
    curl -s "http://127.0.0.1:$pa/metrics" | grep -E '^wsreactor_broker_(sent|dropped)' | sed 's/^/A /' || true
    curl -s "http://127.0.0.1:$pb/metrics" | grep -E '^wsreactor_broker_(received|dropped)' | sed 's/^/B /' || true
    kill "$apid" "$bpid" "$rpid"
    wait "$apid" "$bpid" "$rpid" 2>/dev/null || true
done
