# One-command entry points; each sets up .venv itself on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# `make mlflow-server`: where the server listens and keeps its runs and artifacts.
PORT ?= 5000
SERVER_DIR ?= mlflow-server
# `make serve`: the model it serves (a run's, else any MLflow model URI) and its port.
RUN_ID ?=
MODEL_URI ?= runs:/$(RUN_ID)/model
SERVE_PORT ?= 5001

.PHONY: help install train test test-fast lint mlflow-server serve clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $(STAMP)

# The tests and the cluster launchers they cover (Ray, SLURM) come with the test extras.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(TEST_STAMP)

install: $(STAMP)  ## create .venv and install what running rps needs

train: $(STAMP)  ## train the default config (ARGS="head=deep aug=strong" to override)
	$(BIN)/python run.py $(ARGS)

# Two workers: many tests wait on a fresh process importing TensorFlow, which one core does.
test: $(TEST_STAMP)  ## run every test, the real-data ones included when ../shared/data/rps exists
	$(BIN)/python -m pytest -n 2 --dist loadfile $(ARGS)

test-fast: $(TEST_STAMP)  ## skip the slow tests (real-data training, parallel sweeps, servers)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" $(ARGS)

lint: $(TEST_STAMP)  ## ruff check, ruff format --check and mypy: what CI checks besides the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

mlflow-server: $(STAMP)  ## MLflow tracking server on http://127.0.0.1:5000 (PORT=5001 moves it)
	mkdir -p $(SERVER_DIR)/artifacts
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 2 \
		--backend-store-uri sqlite:///$(abspath $(SERVER_DIR))/mlflow.db \
		--artifacts-destination $(abspath $(SERVER_DIR))/artifacts

# MLflow starts its scoring server as `uvicorn` through the shell, so the venv's bin/ goes
# on PATH here: the user's PATH needs nothing.
serve:  ## serve a run's model over HTTP on 127.0.0.1:5001 (RUN_ID=<id>, SERVE_PORT=5002)
	@test -n "$(RUN_ID)$(filter-out runs:/$(RUN_ID)/model,$(MODEL_URI))" || { echo "make serve needs RUN_ID=<run id> (see mlflow ui) or MODEL_URI=models:/<name>/<version>" >&2; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL_URI)" \
		--env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

clean:  ## remove generated outputs (keeps .venv and mlruns)
	rm -rf outputs .pytest_cache
