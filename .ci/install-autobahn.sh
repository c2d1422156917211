#!/usr/bin/env bash
# Make the Autobahn TestSuite's `wstest` available (DESIGN.md §9).
#
# Idempotent: if `wstest` is already on PATH (or in /usr/local/bin, where pip puts it),
# it prints where it is and exits 0. Otherwise, as root on Debian bookworm:
#   1. add the bullseye suite (same mirror as the existing Debian sources) and install
#      Debian's python2.7 from it;
#   2. bootstrap pip 20.3.4 (the last pip for Python 2) from a wheel fetched with python3;
#   3. `python2.7 -m pip install autobahntestsuite==0.8.2`, which provides `wstest`.
# Non-interactive: safe under CI=true with no stdin.
set -euo pipefail

log() { printf 'install-autobahn: %s\n' "$*" >&2; }

found_wstest() {
    local w
    if w=$(command -v wstest 2>/dev/null); then
        printf '%s\n' "$w"
        return 0
    fi
    if [[ -x /usr/local/bin/wstest ]]; then
        printf '%s\n' /usr/local/bin/wstest
        return 0
    fi
    return 1
}

if w=$(found_wstest); then
    log "wstest already installed: $w"
    exit 0
fi

start=$SECONDS

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get install); aborting"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Use Debian's interpreter by absolute path: a version manager's `python2.7` shim earlier
# on PATH may shadow it (and fail when that version is not selected).
PY2=/usr/bin/python2.7

# --- 1. python2.7 from bullseye -------------------------------------------------------
if [[ ! -x $PY2 ]]; then
    list=/etc/apt/sources.list.d/bullseye-python2.list
    if [[ ! -f $list ]]; then
        # Read the mirror of the existing Debian archive source (not the security one),
        # from deb822 `URIs:` lines or one-line `deb URI suite ...` entries.
        mirror=$(
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
                /etc/apt/sources.list.d/*.list 2>/dev/null |
                awk '
                    /^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) print $i }
                    /^[[:space:]]*deb[[:space:]]/ {
                        for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break }
                    }' |
                grep -E '/debian/?$' | head -n 1 || true
        )
        if [[ -z $mirror ]]; then
            log "could not find a Debian mirror in /etc/apt/sources.list{,.d/}; aborting"
            exit 1
        fi
        mirror=${mirror%/}
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        opts=
        [[ -f $keyring ]] && opts="[signed-by=$keyring] "
        log "adding bullseye from $mirror to $list"
        printf 'deb %s%s bullseye main\n' "$opts" "$mirror" >"$list"
    fi
    log "apt-get update"
    apt-get update -q </dev/null
    log "apt-get install python2.7"
    apt-get install -y -q --no-install-recommends \
        python2.7 python2.7-dev python-setuptools </dev/null
fi
log "python2: $("$PY2" --version 2>&1)"

# --- 2. pip 20.3.4 for python2.7 ------------------------------------------------------
if ! "$PY2" -m pip --version >/dev/null 2>&1; then
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    log "downloading pip 20.3.4 wheel with python3"
    python3 -m pip download -q --no-deps -d "$wheels" pip==20.3.4 </dev/null
    whl="$wheels/pip-20.3.4-py2.py3-none-any.whl"
    log "bootstrapping pip into python2.7"
    "$PY2" "$whl/pip" install -q --no-index "$whl" </dev/null
fi
log "$("$PY2" -m pip --version 2>&1)"

# --- 3. autobahntestsuite ---------------------------------------------------------------
log "python2.7 -m pip install autobahntestsuite==0.8.2"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$PY2" -m pip install -q --no-warn-script-location autobahntestsuite==0.8.2 </dev/null

if ! w=$(found_wstest); then
    log "wstest not found after install; aborting"
    exit 1
fi
log "wstest installed: $w (took $((SECONDS - start)) s)"
