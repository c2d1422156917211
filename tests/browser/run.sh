#!/usr/bin/env bash
# Browser test of the demo page: headless Debian Chromium, driven by playwright-core, against
# the release server on a free 127.0.0.1 port. Saves the screenshot to docs/page.png.
#
#   bash tests/browser/run.sh              # builds target/release/wsreactor first
#   WSREACTOR_BIN=path/to/wsreactor bash tests/browser/run.sh
#
# Installs what it needs: the `chromium` Debian package (as root) and playwright-core from npm.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    echo "browser: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

cd "$here"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi

bin="${WSREACTOR_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release -p wsreactor-server --bin wsreactor)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/wsreactor"
fi

log="$(mktemp -t wsreactor-browser-XXXXXX.log)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# Port 0: the kernel picks a free port and the server prints the address it bound.
"$bin" --listen 127.0.0.1:0 2>"$log" &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(sed -n 's/^wsreactor: listening on //p' "$log" | head -n 1)"
    [ -n "$addr" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "browser: the server exited early:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "browser: the server did not report its address within 10 s" >&2
    cat "$log" >&2
    exit 1
fi
echo "browser: server $bin on $addr (pid $server_pid)"

WSREACTOR_URL="http://$addr" WSREACTOR_BIN="$bin" SCREENSHOT="$repo/docs/page.png" \
    timeout 120 node --test --test-reporter=spec page.test.mjs
