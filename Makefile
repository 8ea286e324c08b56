# One command per job: `make help` lists them; README.md tells more.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two installs: what running needs (requirements.txt), and the test, lint and benchmark tools
# on top (requirements-dev.txt), so that `make run` on a fresh clone installs no dev tool.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help install install-dev run test test-fast check format hooks bench bench-quick bench-full bench-fairness clean

help:  ## This list (what `make` alone prints)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:.*## / {printf "  %-16s %s\n", $$1, $$2}' \
		$(firstword $(MAKEFILE_LIST))

$(RUN_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(RUN_STAMP)  ## What running needs, into .venv (no test or lint tools)

install-dev: $(STAMP)  ## Also the test, lint and benchmark tools

run: $(RUN_STAMP)  ## The chat on embedded defaults at http://127.0.0.1:8000/chat/
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:8000

test: $(STAMP)  ## Everything the tests need (Chromium, Redis, PostgreSQL), then every test
	scripts/system-deps
	$(PY) -m pytest

test-fast: $(STAMP)  ## Unit and consumer tests only (no browser)
	$(PY) -m pytest -m "not browser"

check: $(STAMP)  ## Format, lint and type checks
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## Reformat, and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

hooks: $(STAMP)  ## Run `make check`'s tools on every git commit (pre-commit)
	$(VENV)/bin/pre-commit install

bench: $(STAMP)  ## Every scenario: project vs tutorial vs bare-ASGI ceiling vs picows limit, targets checked
	scripts/system-deps
	$(PY) -m bench.run

bench-quick: $(STAMP)  ## The two blasts on the project and the ceiling
	scripts/system-deps
	$(PY) -m bench.run --quick

bench-full: $(STAMP)  ## Also the tutorial on RedisChannelLayer (which loses messages)
	scripts/system-deps
	$(PY) -m bench.run --full

bench-fairness: $(STAMP)  ## Fair catch-up alone: a quiet user's acks while 4 clients loop ?after=0
	scripts/system-deps
	$(PY) -m bench.fairness

clean:  ## Remove .venv, the tool caches and the test database
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test_db.sqlite3
