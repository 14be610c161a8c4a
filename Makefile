# One-command entry points; each sets up .venv itself on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install train test test-fast clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install rps with its test extras

train: $(STAMP)  ## train the default config (ARGS="head=deep aug=strong" to override)
	$(BIN)/python run.py $(ARGS)

test: $(STAMP)  ## run every test, the real-data ones included when ../shared/data/rps exists
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## skip the slow real-data training tests
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

clean:  ## remove generated outputs (keeps .venv and mlruns)
	rm -rf outputs .pytest_cache
