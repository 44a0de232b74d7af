# Two entry points: `make demo` and `make test`. Both build the virtualenv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv lint bench clean coverage-shells

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q --durations=30

# How much of the shells the unit tests (fake homeserver, no Synapse) cover; the issue's goal is 85 %.
coverage-shells: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_sync_on_fake.py tests/test_moderation_memory.py tests/test_app_on_fake.py \
	  tests/test_planner.py tests/test_homeserver_contract.py -k "not synapse" --cov=bridge.reconcile.executor \
	  --cov=bridge.reconcile.observer --cov=bridge.reconcile.sync --cov=bridge.moderation --cov=bridge.app \
	  --cov-report=term

demo: $(STAMP)
	$(BIN)/python -m bridge.demo

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
