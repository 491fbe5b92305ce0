#!/usr/bin/env bash
# Usage: scripts/venv.sh LOCKFILE
#
# Makes sure .venv exists (Python 3.11) and holds what LOCKFILE pins. The lock's sha256 is kept in
# .venv/.stamp-LOCKFILE, so pip runs only when the lock changed since the last install (or the venv is new).
# requirements-dev.lock is a superset of requirements.lock, so both can share one venv.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

lock=${1:?usage: scripts/venv.sh requirements.lock|requirements-dev.lock}
[ -f "$lock" ] || die "$lock not found"
venv=.venv

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

find_python() {
  local py
  for py in python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && is_py311 "$py"; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

create_venv() {
  local py
  py=$(find_python) || die "Python 3.11 not found (looked for python3.11 and python3); install it first"
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" >/dev/null 2>&1; then
    # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
    rm -rf "$venv"
    apt_install python3.11-venv
    "$py" -m venv "$venv" || die "could not create $venv with $py"
  fi
}

if ! is_py311 "$venv/bin/python"; then
  [ -e "$venv" ] && note "$venv is not a working Python 3.11 virtualenv; recreating it"
  create_venv
fi

installed() { [ "$(cat "$venv/.stamp-$(basename "$1")" 2>/dev/null)" = "$(sha256sum "$1" | cut -d' ' -f1)" ]; }

# A venv that holds the current requirements-dev.lock (make test installed it) holds requirements.lock too.
if ! installed "$lock" && ! { [ "$lock" = requirements.lock ] && [ -f requirements-dev.lock ] && installed requirements-dev.lock; }; then
  note "installing $lock into $venv (the first time takes a few minutes)"
  "$venv/bin/python" -m pip install --disable-pip-version-check --require-virtualenv --progress-bar off -r "$lock" |
    progress_lines '^Collecting ' "package" "$(grep -c '^[A-Za-z0-9]' "$lock")"
  sha256sum "$lock" | cut -d' ' -f1 >"$venv/.stamp-$(basename "$lock")"
fi
