#!/usr/bin/env bash
# make test: what CI runs (.ci/run). Installs requirements-dev.lock into .venv, makes sure Debian's
# chromium is there for the browser tests, picks a PostgreSQL (scripts/with_postgres.sh), then runs the
# checks below with DATABASE_URL and DJANGO_ENV=test. Every check runs even when an earlier one failed,
# so one CI run reports everything; the exit status is non-zero if any failed.
#
# PYTEST_ARGS is passed to pytest (shell quoting honoured): PYTEST_ARGS='-x -k "ledger and not slow"'.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "${1:-}" != "--checks" ]; then
  scripts/venv.sh requirements-dev.lock
  [ -x /usr/bin/chromium ] || apt_install chromium
  command -v npm >/dev/null 2>&1 || apt_install npm
  npm_install
  designer_build
  exec scripts/with_postgres.sh "$0" --checks
fi

export DJANGO_ENV=test
export PATH="$PWD/.venv/bin:$PATH"
trap 'exit 130' INT

failed=()
# Quick checks: their output is shown only when they fail.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n%s\n' "$name" "$out"
    failed+=("$name")
  fi
}

check "ruff check" ruff check --quiet .
check "ruff format --check" ruff format --check --quiet .
check "lint-imports" lint-imports
check "manage.py check" python manage.py check
check "makemigrations --check" python manage.py makemigrations --check --dry-run

eval "pytest_args=(${PYTEST_ARGS:-})"
pytest "${pytest_args[@]}" || failed+=("pytest")

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nmake test failed:\n' >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
