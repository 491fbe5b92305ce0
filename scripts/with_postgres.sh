#!/usr/bin/env bash
# Usage: scripts/with_postgres.sh COMMAND [ARGS...]
#
# Runs COMMAND with DATABASE_URL pointing at a PostgreSQL server, picked in this order:
#   1. DATABASE_URL, if it is already set;
#   2. the server on 127.0.0.1:5432 (PG_PROBE_PORT overrides the port), if it answers and lets the
#      user postgres in without a password;
#   3. a throw-away cluster built from this machine's PostgreSQL binaries (installed with apt-get if
#      there are none) in a temporary directory, on a free port, trust auth. It is stopped and deleted
#      when COMMAND ends, whether it passed, failed or was interrupted.
# Exits with COMMAND's status.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ $# -gt 0 ] || die "usage: scripts/with_postgres.sh COMMAND [ARGS...]"

if [ -n "${DATABASE_URL:-}" ]; then
  exec "$@"
fi

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# True when a server on 127.0.0.1:$1 accepts the postgres user without a password.
server_usable() {
  local port=$1 bindir pg_isready psql
  bindir=$(pg_bindir)
  pg_isready=$(command -v pg_isready || echo "$bindir/pg_isready")
  psql=$(command -v psql || echo "$bindir/psql")
  [ -x "$pg_isready" ] || return 1
  "$pg_isready" -q -h 127.0.0.1 -p "$port" -t 3 || return 1
  [ -x "$psql" ] || return 0
  if ! PGCONNECT_TIMEOUT=3 "$psql" -w -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    note "a server answers on 127.0.0.1:$port but user postgres cannot log in without a password; using a throw-away cluster"
    return 1
  fi
}

probe_port=${PG_PROBE_PORT:-5432}
if server_usable "$probe_port"; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:$probe_port/postgres"
  exec "$@"
fi

# --- Throw-away cluster ---------------------------------------------------------------------------
bindir=$(pg_bindir)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  apt_install postgresql
  bindir=$(pg_bindir)
  [ -n "$bindir" ] && [ -x "$bindir/initdb" ] || die "no initdb under /usr/lib/postgresql/*/bin after installing postgresql"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgtest.XXXXXX")
data="$tmp/data"

# initdb and postgres refuse to run as root, so as root the cluster belongs to the postgres system user.
if [ "$(id -u)" -eq 0 ]; then
  as_pg() { (cd "$tmp" && runuser -u postgres -- "$@"); }
else
  as_pg() { (cd "$tmp" && "$@"); }
fi

# True while process $1 exists and is not a zombie (this machine's init does not always reap them).
running() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

cleanup() {
  if [ -f "$data/postmaster.pid" ]; then
    local pid
    pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
    # pg_ctl -w returns once the postmaster has exited; only the fallback needs a wait of its own.
    if ! as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w -t 20 stop >/dev/null 2>&1 && running "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" -eq 0 ]; then
  if ! id -u postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  fi
  chown postgres: "$tmp"
fi

python=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

if ! as_pg "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 -N >"$tmp/initdb.log" 2>&1; then
  cat "$tmp/initdb.log" >&2
  die "initdb failed"
fi
# Durability is pointless for a cluster that is deleted afterwards; turning it off makes tests faster.
if ! as_pg "$bindir/pg_ctl" -D "$data" -l "$tmp/server.log" -w -t 60 \
  -o "-p $port -k '$tmp' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null; then
  cat "$tmp/server.log" >&2
  die "could not start the throw-away PostgreSQL cluster"
fi
note "using a throw-away PostgreSQL $(basename "$(dirname "$bindir")") cluster on 127.0.0.1:$port ($tmp)"

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
status=0
"$@" || status=$?
exit "$status"
