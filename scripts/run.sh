#!/usr/bin/env bash
# make run: set up the demo and start it. Embedded defaults (SQLite and a file-system Celery broker
# under var/) unless DATABASE_URL / CELERY_BROKER_URL say otherwise. Every step is idempotent, so a
# second `make run` only starts the processes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export PORT=${PORT:-8000}
# The demo's admin password is published in the README: only this machine reaches the demo unless
# HOST=0.0.0.0 (every interface) says otherwise.
export HOST=${HOST:-127.0.0.1}
# The idle worker and beat log a line per task every few seconds at "info"; warnings and errors only.
export CELERY_LOG_LEVEL=${CELERY_LOG_LEVEL:-warning}
case "$HOST" in
  0.0.0.0 | "::" | "[::]") local_host=127.0.0.1 ;;
  *) local_host=$HOST ;;
esac

started=$SECONDS
step() { printf '==> [%s/6] %s  (%ss)\n' "$1" "$2" "$((SECONDS - started))" >&2; }

step 1 "Python packages (.venv, from requirements.lock)"
scripts/venv.sh requirements.lock
# The Procfile's commands (python, celery) must come from the venv.
export PATH="$PWD/.venv/bin:$PATH"

step 2 "Front-end libraries (node_modules, from package-lock.json)"
npm_install
designer_build

step 3 "Database (migrations; the first time takes a minute)"
python manage.py migrate --noinput | progress_lines '^  Applying ' "migration"
if command -v msgfmt >/dev/null 2>&1; then
  python manage.py compilemessages --verbosity 0 --ignore .venv --ignore node_modules --ignore var
fi

step 4 "Demo data (customers, orders, events, loyalty programme, message templates, logins)"
python manage.py seed_demo --customers 2000
# The two logins are printed here and kept for the banner, which repeats them once the server answers.
logins=$(python manage.py loyalty_seed_demo && python manage.py ensure_demo_admin)
# The message templates (every channel, Chinese and English): make run can send to the console at once.
python manage.py campaigns_seed_templates
# The marketing calendar (holidays and shopping dates) campaigns can be scheduled against.
python manage.py campaigns_seed_calendar
# The ready-made journeys' templates, and draft copies of a few of them for the designer to show.
python manage.py journeys_seed_library
printf '%s\n' "$logins"
member=$(grep '^Member portal:' <<<"$logins" || true)
admin=$(grep '^Admin:' <<<"$logins" || true)

step 5 "Metrics and dashboards (the first time only)"
LOG_LEVEL=WARNING python manage.py bootstrap_analytics

step 6 "Starting the web server, a Celery worker and Celery beat"
# Said now, before the worker and beat start for nothing (and before another server on the port answers
# the readiness check in ours' place).
python -c 'import socket, sys; socket.create_server((sys.argv[1].strip("[]"), int(sys.argv[2])), family=socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET).close()' "$HOST" "$PORT" 2>/dev/null ||
  die "port $PORT on $HOST is in use (another make run?): stop what uses it, or choose another port with PORT=..."
banner=var/run-banner.txt
{
  echo "The demo answers on http://$local_host:$PORT/"
  [ -n "$admin" ] && echo "  $admin"
  [ -n "$member" ] && echo "  $member"
  if [ "$local_host" != "$HOST" ]; then
    echo "  Listening on every interface (HOST=$HOST): anyone on your network can reach it, with these logins."
  fi
  echo "Ctrl-C stops it."
} | sed "s#http://127.0.0.1:#http://$local_host:#g" >"$banner"
exec python scripts/procs.py --ready-url "http://$local_host:$PORT/healthz" --banner-file "$banner"
