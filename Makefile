# dockvols: `make run` (the whole system on this host, local backend) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: run test unit integration lint deps venv plugin bench clean help

help:
	@echo "make run    install what is needed, start dockerd (if none), esx_service and the plugin"
	@echo "make test   lint, type-check and run the whole suite (PYTEST_ARGS='-k name' to select)"
	@echo "make unit   the fast rootless tests only"
	@echo "make plugin build the managed plugin (debootstrap rootfs) and docker plugin create"
	@echo "make bench  run the benchmarks and write bench/RESULTS.md"

deps:
	@scripts/install-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[esx,plugin,web,test]'
	@touch $@

venv: $(STAMP)

run: deps venv
	@scripts/run.sh

lint: venv
	$(VENV)/bin/ruff check esx_service plugin admin_web tests bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test: deps venv lint
	$(PY) -m pytest tests -v $(PYTEST_ARGS)

plugin: deps venv
	@scripts/build-plugin.sh

bench: deps venv
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
