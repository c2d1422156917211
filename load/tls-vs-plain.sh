#!/usr/bin/env bash
# TLS against plain, paired: wsreactor and tokio-tungstenite (peer-tungstenite /
# peer-tungstenite-tls) each run plain and over TLS at once, pinned to CPU 0 (the generator
# to CPU 1), and every round runs each shape against each server plain and TLS back to back
# (order alternating), so a ratio compares runs seconds apart. Prints per shape and server the
# medians of msg/s and server CPU µs/msg, and the medians (min-max) of the per-round TLS/plain
# ratios: of msg/s, and of plain CPU over TLS CPU (the throughput share TLS would leave a
# CPU-bound server). The certificate is made with openssl for the run and removed after.
#
# Usage: [REPEATS=5] [DURATION=4] bash load/tls-vs-plain.sh
#        (build first: cargo build --release -p wsreactor-server -p load -p peers)
# Traffic goes to 127.0.0.1 only; each run stops by itself; only the servers started here are
# stopped, by PID.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rel=target/release
repeats=${REPEATS:-5}
duration=${DURATION:-4}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")

# start NAME BIN ARGS...: starts a server on a free port, pinned to CPU 0; sets $port.
start() {
    local name=$1 bin=$2
    shift 2
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    taskset -c 0 "$bin" --listen "127.0.0.1:$port" "$@" >/dev/null 2>"$work/$name.err" &
    pids+=($!)
    eval "pid_$name=$!"
    for _ in $(seq 100); do
        grep -qi "listening" "$work/$name.err" && return 0
        sleep 0.1
    done
    echo "$name did not start: $(cat "$work/$name.err")" >&2
    exit 1
}
start wsr_plain $rel/wsreactor --threads 1; port_wsr_plain=$port
start wsr_tls $rel/wsreactor --threads 1 "${tls_args[@]}"; port_wsr_tls=$port
start tung_plain $rel/peer-tungstenite; port_tung_plain=$port
start tung_tls $rel/peer-tungstenite-tls "${tls_args[@]}"; port_tung_tls=$port

# one SERVER MODE CONNS SIZE: one echo run, its JSON report appended to $work/runs.
one() {
    local server=$1 mode=$2 conns=$3 size=$4 port pid scheme=ws extra=()
    port=$(eval echo "\$port_${server}_$mode")
    pid=$(eval echo "\$pid_${server}_$mode")
    if [ "$mode" = tls ]; then scheme=wss; extra=(--tls-ca "$work/cert.pem"); fi
    taskset -c 1 $rel/wsrload echo "$scheme://127.0.0.1:$port/" -c "$conns" -s "$size" \
        -d "$duration" --warmup 1 --server-pid "$pid" "${extra[@]}" --json --quiet \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"round":int(sys.argv[1]),"server":sys.argv[2],"mode":sys.argv[3],"shape":sys.argv[4],"msgs":r["msgs_per_s"],"cpu":r["server_cpu_us_per_msg"],"errors":r["error_total"],"others":r["other_cpu_pct"]}))' \
            "$round" "$server" "$mode" "$conns x $size" >>"$work/runs"
}

for round in $(seq "$repeats"); do
    for shape in "100 20" "1 1MiB"; do
        for server in wsr tung; do
            if [ $((round % 2)) -eq 1 ]; then order="plain tls"; else order="tls plain"; fi
            for mode in $order; do
                # shellcheck disable=SC2086
                one "$server" "$mode" $shape
            done
        done
    done
    echo "round $round/$repeats done" >&2
done

python3 - "$work/runs" <<'PY'
import json, statistics as st, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
names = {"wsr": "wsreactor", "tung": "tokio-tungstenite"}
print("| shape | server | plain msg/s | TLS msg/s | TLS/plain msg/s | plain µs/msg | TLS µs/msg | plain/TLS CPU | errors | others |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
for shape in dict.fromkeys(r["shape"] for r in runs):
    for s in ["wsr", "tung"]:
        get = lambda m: {r["round"]: r for r in runs if r["shape"] == shape and r["server"] == s and r["mode"] == m}
        p, t = get("plain"), get("tls")
        rounds = sorted(set(p) & set(t))
        med = lambda xs: st.median(xs)
        rng = lambda xs: f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
        mr = [t[k]["msgs"] / p[k]["msgs"] for k in rounds]
        cr = [p[k]["cpu"] / t[k]["cpu"] for k in rounds]
        errs = sum(r["errors"] for r in list(p.values()) + list(t.values()))
        oth = med([r["others"] or 0 for r in list(p.values()) + list(t.values())])
        print(f"| {shape} | {names[s]} | {med([p[k]['msgs'] for k in rounds]):,.0f} | {med([t[k]['msgs'] for k in rounds]):,.0f} | {rng(mr)} | {med([p[k]['cpu'] for k in rounds]):.2f} | {med([t[k]['cpu'] for k in rounds]):.2f} | {rng(cr)} | {errs} | {oth:.0f}% |")
PY
