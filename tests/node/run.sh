#!/usr/bin/env bash
# Node's `ws` client against the release wsreactor over wss:// and ws://, with and without
# permessage-deflate (clients.test.mjs). Makes a throwaway self-signed certificate for
# 127.0.0.1 with openssl; installs `ws` from npm.
#
#   bash tests/node/run.sh                 # builds target/release/wsreactor first
#   WSREACTOR_BIN=path/to/wsreactor bash tests/node/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${WSREACTOR_BIN:-}"
if [[ -n $bin && $bin == */* ]]; then
    bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" # before the cd below
fi

if ! command -v openssl >/dev/null; then
    apt-get install -y -q openssl </dev/null >/dev/null ||
        { apt-get update -q </dev/null >/dev/null && apt-get install -y -q openssl </dev/null >/dev/null; }
fi
cd "$here"
npm ci --no-audit --no-fund --loglevel=error

if [ -z "$bin" ]; then
    (cd "$repo" && cargo build --release -p wsreactor-server --bin wsreactor)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/wsreactor"
fi

certs="$(mktemp -d)"
trap 'rm -rf "$certs"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$certs/key.pem" -out "$certs/cert.pem" 2>/dev/null

WSREACTOR_BIN="$bin" TLS_CERT="$certs/cert.pem" TLS_KEY="$certs/key.pem" \
    node --test --test-timeout 60000 clients.test.mjs
