# dockvols: `make run` (the whole system on this host, local backend) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: run test unit integration lint deps venv plugin bench soak clean help

help:
	@echo "make run    install what is needed, start dockerd (if none), esx_service and the plugin"
	@echo "make test   lint, type-check and run the whole suite (PYTEST_ARGS='-k name' to select)"
	@echo "make unit   the fast rootless tests only"
	@echo "make plugin build the managed plugin (debootstrap rootfs) and docker plugin create"
	@echo "make bench  run the benchmarks and write bench/RESULTS.md (QUICK=1: fewer runs)"
	@echo "make soak   long runs that print their figures: random kills (SOAK_CHAOS_KILLS), multi-host (SOAK_ROUNDS, SOAK_KILLS)"

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
	$(VENV)/bin/ruff check dockvols_common esx_service plugin admin_web tests bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test: deps venv lint
	$(PY) -m pytest tests -v $(PYTEST_ARGS)

plugin: deps venv
	@scripts/build-plugin.sh

bench: deps venv
	$(PY) -m bench.run_all $(if $(QUICK),--quick)

# Soak, part 1: the seeded randomized fault test of `make test` at length, SOAK_CHAOS_KILLS
# kill -9 (three per burst) of esx_service, the plugin or its worker; DOCKVOLS_CHAOS_SEED=N
# replays a run. Part 2, multi-host: three esx_service processes on one datastore,
# SOAK_ROUNDS rounds of every race with two and with three hosts, SOAK_KILLS kill -9 of a
# lease holder per fault point.
SOAK_CHAOS_KILLS ?= 400
SOAK_ROUNDS ?= 300
SOAK_KILLS ?= 10
soak: deps venv
	DOCKVOLS_CHAOS_KILLS=$(SOAK_CHAOS_KILLS) DOCKVOLS_CHAOS_KILLS_PER_ROUND=3 \
	  DOCKVOLS_TEST_DRIVER=$${DOCKVOLS_TEST_DRIVER:-soak} \
	  $(PY) -m pytest tests/integration/test_random_faults.py -q -s -p no:cacheprovider $(PYTEST_ARGS)
	DOCKVOLS_MULTIHOST_ROUNDS=$(SOAK_ROUNDS) DOCKVOLS_MULTIHOST_KILLS=$(SOAK_KILLS) \
	  DOCKVOLS_TEST_DRIVER=$${DOCKVOLS_TEST_DRIVER:-soak} \
	  $(PY) -m pytest tests/integration/test_multi_host.py -q -s -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
