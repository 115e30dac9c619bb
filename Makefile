# Two commands do all set-up on a fresh machine:
#   make demo   install, generate the sample company, materialize every asset, start the UI on :3000
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
SCALE ?= small
INSTALL_STAMP := $(VENV)/.install-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-16)

.PHONY: install demo test materialize ui clean-home

$(INSTALL_STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch comes from the local CPU wheel that pip finds here; uv/poetry would fetch a CUDA build.
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.install-*
	@touch $@

install: $(INSTALL_STAMP)

demo: install
	$(BIN)/agenix demo --scale $(SCALE) --port $(PORT) --chroma-port $(CHROMA_PORT)

materialize: install
	$(BIN)/agenix materialize

ui: install
	$(BIN)/agenix ui --port $(PORT)

test: install
	$(BIN)/pytest

clean-home:
	rm -rf $(AGENIX_HOME)
