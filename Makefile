# The commands the README gives. `make demo` and `make test` work on a fresh machine with
# Python 3.11+ and make; everything else is installed or started by the targets themselves.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
STAMP := $(VENV)/.installed

PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
HOST ?= 127.0.0.1
PORT ?= 8000
ADMIN_USER ?= admin
ADMIN_PASSWORD ?= admin
# Extra arguments for both pytest runs, e.g. `make test PYTEST_ARGS="-k sync -x"`.
PYTEST_ARGS ?= --durations=10

# Without the trained starter checkpoint (embeddings/starter/shopclip-starter.pt) and no model
# configured, the demo falls back to a random-init ViT-B-32: everything works, results are not
# meaningful. Set EMBEDDINGS_MODEL / EMBEDDINGS_PRETRAINED to use a real model.
STARTER := embeddings/starter/shopclip-starter.pt
ifeq ($(wildcard $(STARTER)),)
ifeq ($(origin EMBEDDINGS_PRETRAINED),undefined)
DEMO_MODEL_ENV := EMBEDDINGS_MODEL=$${EMBEDDINGS_MODEL:-ViT-B-32} EMBEDDINGS_PRETRAINED=
DEMO_MODEL_NOTE := No starter checkpoint at $(STARTER): using a random-init ViT-B-32 (search results are arbitrary). Set EMBEDDINGS_MODEL/EMBEDDINGS_PRETRAINED for a real model.
endif
endif

.PHONY: help install demo migrate admin-user runserver test test-setup services browser lint format bench fuzz load worker beat screenshots clean

help:
	@echo "make install   - virtualenv in $(VENV) with the project and its dev tools"
	@echo "make demo      - install, migrate, admin user, demo catalog, index, runserver on $(HOST):$(PORT)"
	@echo "make test      - install, set up Chromium/PostgreSQL/Redis, run the tests on SQLite then PostgreSQL"
	@echo "make lint      - ruff check + ruff format --check"
	@echo "make bench     - benchmark scripts (FAISS index, embedding throughput, search API)"
	@echo "make fuzz      - schemathesis against the live API (gunicorn, PostgreSQL, Redis, worker); FUZZ_EXAMPLES, FUZZ_SECONDS"
	@echo "make load      - mixed search/upload/delete load for LOAD_SECONDS, then checks every upload is indexed once"
	@echo "make worker    - a Celery worker (set CELERY_BROKER_URL=redis://...)"
	@echo "make screenshots - README screenshots (desktop + phone) of the main pages into docs/screenshots/"

# --- install -------------------------------------------------------------------------------------
install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; run make with PYTHON=python3.11 (or newer).")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)

# --- demo ----------------------------------------------------------------------------------------
demo: install
	@mkdir -p "$${DATA_DIR:-var}"
	@$(if $(DEMO_MODEL_NOTE),echo "NOTE: $(DEMO_MODEL_NOTE)",true)
	$(DEMO_MODEL_ENV) $(MANAGE) migrate --noinput
	@$(MANAGE) shell -v 0 -c "from django.contrib.auth import get_user_model; U = get_user_model(); exists = U.objects.filter(username='$(ADMIN_USER)').exists(); exists or U.objects.create_superuser('$(ADMIN_USER)', 'admin@example.com', '$(ADMIN_PASSWORD)'); print('Admin user: $(ADMIN_USER) / $(ADMIN_PASSWORD)' + (' (already there)' if exists else ' (created)'))"
	$(DEMO_MODEL_ENV) $(MANAGE) load_demo_catalog $(if $(DEMO_CATALOG),--source "$(DEMO_CATALOG)",)
	$(DEMO_MODEL_ENV) $(MANAGE) rebuild_index
	@echo
	@echo "  Shop:   http://$(HOST):$(PORT)/"
	@echo "  Admin:  http://$(HOST):$(PORT)/admin/  (login $(ADMIN_USER) / $(ADMIN_PASSWORD))"
	@echo "  API:    http://$(HOST):$(PORT)/api/v1/docs/"
	@echo
	$(DEMO_MODEL_ENV) $(MANAGE) runserver $(HOST):$(PORT)

# --- tests ---------------------------------------------------------------------------------------
# Both passes always run; the target fails if either failed.
test: install test-setup
	@status=0; \
	echo; echo "================ pytest, pass 1 of 2: SQLite (integration tests run in pass 2) ================"; \
	env -u DATABASE_URL $(PY) -m pytest -m "not integration" $(PYTEST_ARGS) || status=1; \
	echo; echo "================ pytest, pass 2 of 2: PostgreSQL ($(PG_URL)) ================"; \
	if DATABASE_URL=$(PG_URL) $(PY) -c 'import os, psycopg; psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=3).close()' 2>/dev/null; then \
		DATABASE_URL=$(PG_URL) $(PY) -m pytest $(PYTEST_ARGS) || status=1; \
	else \
		echo "FAILED: PostgreSQL is not reachable at $(PG_URL). Install and start it (apt-get install postgresql; trust auth for postgres@127.0.0.1) or set PG_URL=postgres://user:pass@host:5432/postgres."; \
		status=1; \
	fi; \
	echo; if [ $$status -eq 0 ]; then echo "All tests passed on SQLite and PostgreSQL."; else echo "Some tests FAILED (see above)."; fi; \
	exit $$status

test-setup: browser services

# Headless Chromium for the browser tests (Playwright drives the system Chromium).
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "Chromium: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Chromium (apt-get install -y chromium) for the browser tests ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "WARNING: /usr/bin/chromium is missing and this is not root with apt-get: install Chromium (e.g. sudo apt-get install chromium) or the browser tests will fail."; \
	fi

# PostgreSQL and Redis for the integration tests: started when installed but down. When they
# cannot be had, the integration tests fail and say what to install (they are never skipped).
services:
	@if $(PY) -c 'import socket; socket.create_connection(("$(REDIS_HOST)", $(REDIS_PORT)), 2)' 2>/dev/null; then \
		echo "Redis: running on $(REDIS_HOST):$(REDIS_PORT)"; \
	elif command -v redis-server >/dev/null; then \
		echo "Redis: starting redis-server on $(REDIS_HOST):$(REDIS_PORT)"; \
		mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true; \
		redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $(REDIS_PORT) --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log; \
		sleep 1; \
	else \
		echo "WARNING: Redis is not running and redis-server is not installed (apt-get install redis-server): the integration tests will fail."; \
	fi
	@if $(PY) -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 2)' 2>/dev/null; then \
		echo "PostgreSQL: running on 127.0.0.1:5432"; \
	elif command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
		echo "PostgreSQL: starting the cluster"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -1) main start || true; \
		for i in $$(seq 1 20); do $(PY) -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 1)' 2>/dev/null && break; sleep 0.5; done; \
	else \
		echo "WARNING: PostgreSQL is not running and not installed (apt-get install postgresql, trust auth for 127.0.0.1): the PostgreSQL pass will fail."; \
	fi

# --- tooling -------------------------------------------------------------------------------------
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The scale benchmarks, at 100k and 1M products (real starter-model vectors of the shared
# catalog photos plus perturbed copies, see scripts/bench_data.py), then ONE summary table
# (scripts/bench_report.py, also written to var/bench/report.md). Built indexes and loaded
# databases are cached under var/bench and in PostgreSQL (shopsearch_bench_*), so a second run
# is much shorter than the first. BENCH_SIZES="100000" for one size; BENCH_ARGS are passed to
# every script, e.g. `make bench BENCH_ARGS=--quick` (100k or smaller, fewer queries).
BENCH_ARGS ?=
BENCH_SIZES ?= 100000 1000000
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) scripts/bench_data.py --sizes $(BENCH_SIZES)
	$(PY) scripts/bench_index.py --sizes $(BENCH_SIZES) $(BENCH_ARGS)
	$(PY) scripts/bench_engine.py --sizes $(BENCH_SIZES) $(BENCH_ARGS)
	for n in $(BENCH_SIZES); do $(PY) scripts/bench_lexical.py --pg-url $(PG_URL) --products $$n $(BENCH_ARGS); done
	$(PY) scripts/bench_embedding.py $(BENCH_ARGS)
	$(PY) scripts/bench_e2e.py --pg-url $(PG_URL) --sizes $(BENCH_SIZES) $(BENCH_ARGS)
	$(PY) scripts/bench_report.py

# schemathesis against the live OpenAPI schema, anonymous then with a staff token, on a production-
# like stack it starts and stops itself (scripts/live_stack.py: gunicorn with the project's config,
# a throwaway PostgreSQL database and redis-server, a Celery worker). Fails on any 5xx or any answer
# the schema does not describe. FUZZ_EXAMPLES per operation, FUZZ_SECONDS per run (two runs).
FUZZ_EXAMPLES ?= 20
FUZZ_SECONDS ?= 120
fuzz: install services
	$(PY) scripts/fuzz_api.py --pg-url $(PG_URL) --examples $(FUZZ_EXAMPLES) --seconds $(FUZZ_SECONDS)

# LOAD_SECONDS of mixed traffic (text, image and filtered searches, product pages, staff uploads and
# deletes) on the same kind of stack with several gunicorn workers, a worker and beat; then waits
# for the queue to drain and checks every upload is indexed exactly once and the index matches the
# database. Fails on any check or any 5xx.
LOAD_SECONDS ?= 180
load: install services
	$(PY) scripts/load_test.py --pg-url $(PG_URL) --seconds $(LOAD_SECONDS)

# The README's screenshots: a throwaway server (own DATA_DIR under /tmp, demo catalog, staff user)
# driven by Playwright with the system Chromium; SCREENSHOTS_ARGS e.g. --url http://127.0.0.1:8000.
SCREENSHOTS_ARGS ?=
screenshots: install browser
	$(PY) scripts/screenshots.py $(SCREENSHOTS_ARGS)

# Production-style: CELERY_BROKER_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://... make worker
worker: install
	$(VENV)/bin/celery -A searchsite worker --loglevel=INFO --concurrency=$${CELERY_CONCURRENCY:-1} -Q $${EMBEDDINGS_QUEUE:-celery}

# Periodic index snapshots (EMBEDDINGS_SNAPSHOT_INTERVAL); run exactly one beat per deployment.
beat: install
	$(VENV)/bin/celery -A searchsite beat --loglevel=INFO --schedule "$${DATA_DIR:-var}/celerybeat-schedule"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
