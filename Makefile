# The two commands a new user needs: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: run test deps db lint typecheck pytest lock fake-upstream llama clean

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> installing Python requirements into $(VENV)"
	@$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# pip warns about every optional local index this machine lists; keep the output readable.
	@$(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

deps: $(STAMP)

# Local services (Postgres with pgvector, Redis, RabbitMQ) and the database.
db: deps
	@bash scripts/services.sh

run: db
	@bash scripts/run.sh

test: db
	@bash scripts/test.sh

lint: deps
	$(VENV)/bin/ruff check .

typecheck: deps
	$(VENV)/bin/mypy .

pytest: deps
	$(VENV)/bin/pytest

fake-upstream: deps
	$(PY) manage.py fake_upstream --port 9100

lock:
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install -q -r requirements.in
	(echo "# Generated from requirements.in by 'make lock' (pip freeze in a clean venv). Python 3.11."; \
	 /tmp/lock-venv/bin/pip freeze) > requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
