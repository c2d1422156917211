#!/usr/bin/env bash
# Instructions per delivered published message in the reactor threads, with 1 and 2 threads,
# counted by callgrind (repeatable where times are not). benches/cross_thread.rs publishes
# SHORT and then LONG messages to SUBSCRIBERS subscribers; callgrind counts each thread apart
# (--separate-threads=yes) and only the reactor threads (2 and up) are summed; the difference
# of the two runs over the difference in deliveries leaves out start-up, handshakes and
# shutdown. With 2 threads the bench places half the subscribers on each reactor and the
# publisher on thread 0, so half of the deliveries cross to the other thread.
# Usage: load/cross-thread.sh   (builds the bench binary; traffic to 127.0.0.1 only)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
subscribers=${SUBSCRIBERS:-100}
short=${SHORT:-500}
long=${LONG:-1500}
cargo build --release --bench cross_thread >/dev/null 2>&1
bin=$(ls -t target/release/deps/cross_thread-* | grep -v '\.d$' | head -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions in the reactor threads for one run: THREADS MESSAGES.
reactors() {
    local threads=$1 messages=$2 out="$work/out-$1-$2"
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
        "$bin" "$threads" "$subscribers" "$messages" >/dev/null 2>"$work/err"
    local sum=0
    for t in $(seq 2 $((threads + 1))); do
        local file
        file=$(printf '%s-%02d' "$out" "$t")
        sum=$((sum + $(sed -n 's/^totals: \([0-9]*\).*/\1/p; s/^summary: \([0-9]*\).*/\1/p' "$file" | head -n 1)))
    done
    echo "$sum"
}

# The batching of reads under valgrind (which runs one thread at a time) moves from run to
# run, so each figure is taken REPEAT times, the two thread counts alternating.
repeat=${REPEAT:-3}
declare -A per
for r in $(seq "$repeat"); do
    for threads in 1 2; do
        a=$(reactors "$threads" "$short")
        b=$(reactors "$threads" "$long")
        per[$threads]+="$(python3 -c "print(f'{($b - $a) / (($long - $short) * $subscribers):.1f}')") "
    done
done
echo "| reactor threads | instructions per delivered message, median (each run) | $subscribers subscribers, runs of $short and $long messages |"
echo "|---:|---:|---|"
for threads in 1 2; do
    python3 -c "import statistics,sys; xs=[float(x) for x in sys.argv[2:]]; print(f'| {sys.argv[1]} | {statistics.median(xs):.1f} ({\", \".join(sys.argv[2:])}) | |')" "$threads" ${per[$threads]}
done
