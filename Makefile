# The two commands: `make run` (demo on http://127.0.0.1:8000) and `make test` (what CI runs).
# The logic lives in scripts/; README.md explains both.

BIN := .venv/bin

.PHONY: help run test lint format bench clean distclean dev-venv

help:
	@sed -n 's/^## /  make /p' Makefile

## run: set up (venv, npm, migrate, demo data, admin) and start web + Celery worker + beat; PORT=8000
run:
	@scripts/run.sh

## test: ruff, import rules, Django checks, migrations check and pytest on PostgreSQL; PYTEST_ARGS=...
test:
	@scripts/test.sh

## lint: ruff check, ruff format --check and the app dependency rule (import-linter)
lint: dev-venv
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/lint-imports

## format: apply ruff's fixes and formatting, then show what is left to fix by hand
format: dev-venv
	@$(BIN)/ruff check --fix-only --quiet .
	@$(BIN)/ruff format .
	@$(BIN)/ruff check .

## bench: run the benchmarks (bench/run.py); BENCH_ARGS=...
bench: dev-venv
	@$(BIN)/python bench/run.py $(BENCH_ARGS)

## clean: remove caches (keeps .venv, node_modules and var/: demo database, broker files, collected static)
clean:
	@find . \( -path ./.venv -o -path ./node_modules \) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	@rm -rf .pytest_cache .ruff_cache .import_linter_cache .hypothesis staticfiles

## distclean: clean, and also remove .venv, node_modules and var/ (demo database and broker files)
distclean: clean
	@rm -rf .venv node_modules var

dev-venv:
	@scripts/venv.sh requirements-dev.lock
