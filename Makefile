# One command per job; see README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast check format bench bench-quick bench-full bench-fairness clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)  ## Python packages into .venv

run: $(STAMP)  ## The chat on embedded defaults at http://127.0.0.1:8000/chat/
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:8000

test: $(STAMP)  ## Everything the tests need (Chromium, Redis), then every test
	scripts/system-deps
	$(PY) -m pytest

test-fast: $(STAMP)  ## Unit and consumer tests only (no browser)
	$(PY) -m pytest -m "not browser"

check: $(STAMP)  ## Format, lint and type checks
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)  ## Every scenario: project vs tutorial vs bare-ASGI ceiling, targets checked
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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test_db.sqlite3
