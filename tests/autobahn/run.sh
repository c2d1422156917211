#!/usr/bin/env bash
# Autobahn TestSuite conformance run against the wsreactor echo server (DESIGN.md §9).
#
# Usage: tests/autobahn/run.sh [--update]
#
#   --update            rewrite tests/autobahn/expected.txt from this run instead of
#                       comparing (still fails on FAILED / NON-STRICT / UNIMPLEMENTED).
# Environment:
#   WSREACTOR_BIN       server binary to test (default: cargo build --release, then
#                       target/release/wsreactor). Started as `BIN --listen 127.0.0.1:PORT`.
#   AUTOBAHN_CASES      case patterns, comma-separated (e.g. '1.*' or '5.*,7.1.*'); only
#                       those cases are run and compared. Default: all, 1-13.
#   AUTOBAHN_EXCLUDE    exclude patterns, comma-separated (default none; '12.*,13.*' skips the compression cases).
#   AUTOBAHN_EXPECTED   expected-results file (default tests/autobahn/expected.txt).
#   AUTOBAHN_OUT        report folder (default target/autobahn).
#   AUTOBAHN_TIMEOUT    seconds before wstest is killed (default 900).
#   AUTOBAHN_SERVER_ARGS  more options for the server, split at spaces (e.g.
#                       '--compression context-takeover'); the results must match the same file.
#   AUTOBAHN_TLS        1: serve TLS (a self-signed certificate made here with openssl) and
#                       run the cases over wss://; the results must match the same file.
#   AUTOBAHN_IO_URING   1: start the server with --io-uring, and fail unless its log says
#                       it runs on io_uring (not the epoll fallback).
#
# Exits non-zero when index.json is missing, when any case is FAILED / NON-STRICT /
# UNIMPLEMENTED, when the server died during the run, or when the results differ from
# expected.txt.
set -euo pipefail

start=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

update=0
for arg in "$@"; do
    case $arg in
        --update) update=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

log() { printf 'autobahn: %s\n' "$*"; }

# Resolve a user-given binary path before changing directory.
bin=${WSREACTOR_BIN:-}
if [[ -n $bin && $bin == */* ]]; then
    bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
fi
cd "$root"

server_pid=
wstest_pid=
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    # Only the processes this script started, by PID.
    if [[ -n $wstest_pid ]] && kill -0 "$wstest_pid" 2>/dev/null; then
        kill -TERM "$wstest_pid" 2>/dev/null || true
        wait "$wstest_pid" 2>/dev/null || true
    fi
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$server_pid" 2>/dev/null; then
            log "server (pid $server_pid) ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$server_pid" 2>/dev/null || true
        fi
        wait "$server_pid" 2>/dev/null || true
    fi
    log "elapsed $((SECONDS - start)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- wstest -------------------------------------------------------------------------------
find_wstest() {
    command -v wstest 2>/dev/null || { [[ -x /usr/local/bin/wstest ]] && echo /usr/local/bin/wstest; }
}
if ! wstest=$(find_wstest); then
    log "wstest not found; running .ci/install-autobahn.sh"
    bash "$root/.ci/install-autobahn.sh"
    wstest=$(find_wstest) || { log "wstest still not found after install"; exit 1; }
fi
log "wstest: $wstest"

# --- server binary ------------------------------------------------------------------------
if [[ -z $bin ]]; then
    log "cargo build --release -p wsreactor-server --bin wsreactor"
    cargo build --release -p wsreactor-server --bin wsreactor
    bin=${CARGO_TARGET_DIR:-$root/target}/release/wsreactor
fi
if [[ ! -x $bin ]] && ! command -v "$bin" >/dev/null 2>&1; then
    log "server binary not found or not executable: $bin"
    exit 1
fi
log "server: $bin"

# --- report folder and spec ---------------------------------------------------------------
out=${AUTOBAHN_OUT:-$root/target/autobahn}
mkdir -p "$out"
out=$(cd "$out" && pwd)
reports=$out/reports
rm -rf "$reports"
mkdir -p "$reports"
spec=$out/fuzzingclient.json
server_log=$out/server.log
wstest_log=$out/wstest.log
expected=${AUTOBAHN_EXPECTED:-$here/expected.txt}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

scheme=ws
tls_args=()
if [[ ${AUTOBAHN_TLS:-0} == 1 ]]; then
    if ! command -v openssl >/dev/null; then
        log "openssl not found; installing it"
        apt-get install -y -q openssl </dev/null >/dev/null || { apt-get update -q </dev/null >/dev/null && apt-get install -y -q openssl </dev/null >/dev/null; }
    fi
    # wstest does not verify the server's certificate: a throwaway self-signed one will do.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
    scheme=wss
    tls_args=(--tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
fi

if [[ ${AUTOBAHN_IO_URING:-0} == 1 ]]; then
    tls_args+=(--io-uring)
fi

subset=0
if [[ -n ${AUTOBAHN_CASES:-} || -n ${AUTOBAHN_EXCLUDE:-} ]]; then
    subset=1
fi
AB_CASES=${AUTOBAHN_CASES:-*} AB_EXCLUDE=${AUTOBAHN_EXCLUDE-} \
    AB_URL="$scheme://127.0.0.1:$port" AB_OUTDIR=$reports python3 - "$spec" <<'EOF'
import json, os, sys
def patterns(s):
    return [p.strip() for p in s.split(",") if p.strip()]
spec = {
    "outdir": os.environ["AB_OUTDIR"],
    "servers": [{"agent": "wsreactor", "url": os.environ["AB_URL"]}],
    "cases": patterns(os.environ["AB_CASES"]),
    "exclude-cases": patterns(os.environ["AB_EXCLUDE"]),
    "exclude-agent-cases": {},
}
with open(sys.argv[1], "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
EOF
log "spec: $spec (cases: ${AUTOBAHN_CASES:-*}; exclude: ${AUTOBAHN_EXCLUDE-})"

# A case pattern that matches nothing (or names an unknown case) makes wstest wait forever:
# resolve the patterns with wstest's own code first. Best effort: skipped if that fails.
ncases=
read -r -a wstest_py <<<"$(head -n 1 "$wstest" | sed -n 's/^#!//p')"
if ((${#wstest_py[@]})); then
    set +e
    ncases=$("${wstest_py[@]}" - "$spec" 2>/dev/null <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseSetname, CaseBasename, CaseCategories, CaseSubCategories
from autobahntestsuite.caseset import CaseSet
spec = json.load(open(sys.argv[1]))
cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
cases = cs.parseSpecCases(spec)
unknown = [c for c in cases if c not in cs.CasesById]
if unknown:
    sys.stdout.write("unknown:" + ",".join(unknown) + "\n")
else:
    sys.stdout.write("%d\n" % len(cases))
EOF
    )
    set -e
    case $ncases in
        0)
            log "no case matches AUTOBAHN_CASES='${AUTOBAHN_CASES:-*}' (minus the excluded ones)"
            exit 1
            ;;
        unknown:*)
            log "unknown case id(s) in AUTOBAHN_CASES: ${ncases#unknown:}"
            exit 1
            ;;
        '' | *[!0-9]*) log "could not count the selected cases; running anyway" ;;
        *) log "$ncases cases selected" ;;
    esac
fi

# --- start the server ---------------------------------------------------------------------
log "starting server on $scheme://127.0.0.1:$port (log: $server_log)"
read -r -a server_args <<<"${AUTOBAHN_SERVER_ARGS:-}"
"$bin" --listen "127.0.0.1:$port" "${tls_args[@]}" "${server_args[@]}" >"$server_log" 2>&1 </dev/null &
server_pid=$!

ready=0
for _ in $(seq 100); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        break
    fi
    # shellcheck disable=SC2016  # $1 expands in the inner shell
    if timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if ((!ready)); then
    if kill -0 "$server_pid" 2>/dev/null; then
        log "server (pid $server_pid) did not accept connections on port $port within 10 s"
    else
        wait "$server_pid" && src=0 || src=$?
        server_pid=
        log "server exited early (status $src)"
    fi
    log "server log:"
    tail -n 20 "$server_log" | sed 's/^/  /'
    exit 1
fi
log "server ready (pid $server_pid)"
if [[ ${AUTOBAHN_IO_URING:-0} == 1 ]] && ! grep -q ' io=io_uring ' "$server_log"; then
    log "the server does not run on io_uring:"
    sed 's/^/  /' "$server_log"
    exit 1
fi

# --- run wstest ---------------------------------------------------------------------------
wstest_timeout=${AUTOBAHN_TIMEOUT:-900}
log "running wstest -m fuzzingclient (timeout ${wstest_timeout} s, log: $wstest_log)"
t0=$SECONDS
# In the background + wait, so that INT/TERM reach the cleanup trap promptly.
(cd "$out" && exec timeout "$wstest_timeout" "$wstest" -m fuzzingclient -s "$spec") \
    >"$wstest_log" 2>&1 </dev/null &
wstest_pid=$!
wait "$wstest_pid" && wrc=0 || wrc=$?
wstest_pid=
log "wstest finished in $((SECONDS - t0)) s (status $wrc)"

status=0
if ((wrc == 124)); then
    log "wstest timed out after ${wstest_timeout} s"
    status=1
fi
if ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" && src=0 || src=$?
    server_pid=
    log "server died during the run (status $src); last lines of its log:"
    tail -n 20 "$server_log" | sed 's/^/  /'
    status=1
fi

index=$reports/index.json
if [[ ! -s $index ]]; then
    log "no $index: wstest did not finish (it exits 0 even when it cannot connect)"
    log "last lines of $wstest_log:"
    tail -n 20 "$wstest_log" | sed 's/^/  /'
    exit 1
fi

check_args=("$index" "$expected" --agent wsreactor)
[[ ${ncases:-} =~ ^[0-9]+$ ]] && check_args+=(--cases "$ncases")
((update)) && check_args+=(--update)
((subset)) && check_args+=(--subset)
python3 "$here/check.py" "${check_args[@]}" || status=$?
log "report: $reports/index.html"
exit "$status"
