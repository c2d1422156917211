#!/usr/bin/env bash
# The cost of being multi-threaded, measured on this machine: the release `wsreactor` with
# --threads 1 against --threads 2, paired in each round (ROUNDS, alternating which goes first),
# reporting medians and the spread (min..max). Three questions:
#   cpu    server CPU per echoed message at a fixed rate (RATE msg/s, 100 connections x 20 B),
#          server and generator unpinned, so only --threads differs;
#   max    echoes per second as fast as they come back: one thread pinned to core 0 with the
#          generator on core 1 (the `compare` set-up) against two threads with everything
#          unpinned (the server may use both cores, and shares them with the generator);
#   setup  handshakes per second opening CONNS idle connections (wsrload connections).
# Usage: load/threads.sh [ROUNDS] (build first: cargo build --release -p wsreactor-server -p load)
# Traffic goes to 127.0.0.1 only; every run stops by itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
rate=${RATE:-40000}
conns=${CONNS:-10000}
server=target/release/wsreactor
load=target/release/wsrload
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run NAME THREADS SERVER_PIN GEN_PIN WORKLOAD...: one server, one generator run, JSON saved.
run() {
    local name=$1 threads=$2 spin=$3 gpin=$4; shift 4
    local port pid
    port=$(free_port)
    if [ "$spin" = any ]; then
        "$server" --listen "127.0.0.1:$port" --threads "$threads" --max-connections 19000 \
            --max-pending-handshakes 19000 2>"$work/err" &
    else
        taskset -c "$spin" "$server" --listen "127.0.0.1:$port" --threads "$threads" \
            --max-connections 19000 --max-pending-handshakes 19000 2>"$work/err" &
    fi
    pid=$!
    for _ in $(seq 100); do grep -q "listening" "$work/err" && break; sleep 0.05; done
    local gen=("$load" "$@" "ws://127.0.0.1:$port/" --server-pid "$pid" --json -q)
    if [ "$gpin" = any ]; then "${gen[@]}"; else taskset -c "$gpin" "${gen[@]}"; fi \
        >>"$work/$name.jsonl"
    kill -TERM "$pid"
    wait "$pid" || true
}

for round in $(seq "$rounds"); do
    order=(1 2)
    [ $((round % 2)) = 0 ] && order=(2 1)
    for t in "${order[@]}"; do
        run "cpu-$t" "$t" any any echo -c 100 -s 20 --rate "$rate" --warmup 1 -d 3
    done
    for t in "${order[@]}"; do
        if [ "$t" = 1 ]; then run max-1 1 0 1 echo -c 100 -s 20 --warmup 1 -d 3
        else run max-2 2 any any echo -c 100 -s 20 --warmup 1 -d 3; fi
    done
    for t in "${order[@]}"; do
        run "setup-$t" "$t" any any connections -n "$conns"
    done
    echo "round $round done" >&2
done

python3 - "$work" "$rounds" "$rate" "$conns" <<'PY'
import json, statistics, sys, pathlib
work, rounds, rate, conns = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def load(name):
    # One JSON document per run, possibly spread over several lines.
    text, docs, at = (work / f"{name}.jsonl").read_text(), [], 0
    decoder = json.JSONDecoder()
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return docs
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
def pick(rows, *keys):
    out = []
    for r in rows:
        for k in keys:
            if k in r and r[k] is not None:
                out.append(float(r[k])); break
    return out
def fmt(xs, digits=2):
    if not xs: return "n/a"
    return f"{statistics.median(xs):,.{digits}f} ({min(xs):,.{digits}f}..{max(xs):,.{digits}f})"
print(f"{rounds} rounds, paired; median (min..max)\n")
print("| question | --threads 1 | --threads 2 | 2 / 1 (median) |")
print("|---|---|---|---|")
rows = [
    (f"server CPU µs per echo at {int(rate):,}/s", "cpu", ("server_cpu_us_per_msg",), 3),
    ("echoes per second, as fast as possible", "max", ("msgs_per_s",), 0),
    (f"handshakes per second, {int(conns):,} connections", "setup",
     ("handshakes_per_s",), 0),
    ("server CPU µs per handshake", "setup", ("server_cpu_us_per_handshake",), 1),
]
for label, name, keys, digits in rows:
    one, two = pick(load(f"{name}-1"), *keys), pick(load(f"{name}-2"), *keys)
    ratio = statistics.median(two) / statistics.median(one) if one and two else float("nan")
    print(f"| {label} | {fmt(one, digits)} | {fmt(two, digits)} | {ratio:.2f} |")
PY
