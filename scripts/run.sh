#!/usr/bin/env bash
# make run: set up the demo and start it. Embedded defaults (SQLite and a file-system Celery broker
# under var/) unless DATABASE_URL / CELERY_BROKER_URL say otherwise. Every step is idempotent, so a
# second `make run` only starts the processes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/venv.sh requirements.lock
# The Procfile's commands (python, celery) must come from the venv.
export PATH="$PWD/.venv/bin:$PATH"

npm_install

python manage.py migrate --noinput --verbosity 0
if command -v msgfmt >/dev/null 2>&1; then
  python manage.py compilemessages --verbosity 0 --ignore .venv --ignore node_modules --ignore var
fi
python manage.py seed_demo --customers 2000
python manage.py loyalty_seed_demo
python manage.py ensure_demo_admin

# honcho gives the first process (web) $PORT and later ones PORT+100, PORT+200.
export PORT=${PORT:-8000}
exec honcho start
