# Two commands do all set-up on a fresh machine:
#   make demo   install, then `agenix up`: Chroma, llama.cpp (Gemma), every asset materialized, the AI gateway on
#               :8080 and the UI on :3000
#   make test   install, run the whole test suite
# Both are idempotent: the install step is skipped while requirements.lock and pyproject.toml are unchanged.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AGENIX_HOME ?= $(CURDIR)/.agenix
export AGENIX_HOME
export DAGSTER_HOME := $(AGENIX_HOME)/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export DAGSTER_DISABLE_TELEMETRY := 1
PORT ?= 3000
CHROMA_PORT ?= 8000
GATEWAY_PORT ?= 8080
LLM_PORT ?= 8090
SCALE ?= small
INSTALL_STAMP := $(VENV)/.install-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-16)
# Loading the code location reads dbt's manifest and never parses the project itself: prepare it here, again
# whenever a file under dbt_project/ changes (`agenix prepare` re-parses only if their content hash changed).
DBT_MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -type f -not -path 'dbt_project/target/*' -not -path 'dbt_project/logs/*' -not -path 'dbt_project/dbt_packages/*' -not -name .user.yml)

.PHONY: install system-deps demo test materialize ui clean-home

$(INSTALL_STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch comes from the local CPU wheel that pip finds here; uv/poetry would fetch a CUDA build.
	# llama-cpp-python compiles llama.cpp once (pip keeps the wheel in its cache): use every core.
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.install-*
	@touch $@

$(DBT_MANIFEST): $(INSTALL_STAMP) $(DBT_SOURCES)
	$(BIN)/python -m agenix_assets.cli prepare
	@touch $@

install: $(INSTALL_STAMP) $(DBT_MANIFEST)

demo: install
	$(BIN)/agenix up --scale $(SCALE) --port $(PORT) --gateway-port $(GATEWAY_PORT) --llm-port $(LLM_PORT) --chroma-port $(CHROMA_PORT)

materialize: install
	$(BIN)/agenix materialize

ui: install
	$(BIN)/agenix ui --port $(PORT)

# System tools the tests drive: wrk (the gateway benchmark's load generator), from Debian's packages.
system-deps:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; \
	  else echo "install wrk (apt-get install wrk): the gateway benchmark test needs it" >&2; exit 1; fi; }

test: install system-deps
	$(BIN)/pytest

clean-home:
	rm -rf $(AGENIX_HOME)
