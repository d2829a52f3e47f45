# Every target creates the virtual environment from requirements.lock when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export RAY_USAGE_STATS_ENABLED := 0
export DVC_NO_ANALYTICS := 1
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: venv web browser demo pipeline data train test test-fast lint format serve predict retrain bench clean cluster-up cluster-down

venv: $(STAMP) web

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

## web: ONNX Runtime Web for the page's field mode, from serve/web/package-lock.json (npm ci; again only when the lock changes)
WEB := serve/web
WEB_STAMP := $(WEB)/node_modules/.installed-$(shell sha1sum $(WEB)/package-lock.json | cut -c1-12)
web: $(WEB_STAMP)

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "error: field mode needs node and npm (apt-get install nodejs npm)" >&2; exit 2; }
	cd $(WEB) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@rm -f $(WEB)/node_modules/.installed-*; touch $@

## demo: the whole pipeline on the embedded default (dvc repro), then the evaluation table
demo: venv
	$(PY) scripts/demo.py

pipeline: venv
	$(VENV)/bin/dvc repro

data: venv
	$(PY) scripts/data.py

train: venv
	$(PY) scripts/train.py

## browser: Debian's Chromium for the browser tests (a browser download fails offline); apt-get as root
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "error: the browser tests need Debian's Chromium at $(CHROMIUM): run 'sudo apt-get install chromium'" \
	         "(or 'make test-fast', which skips them)" >&2; exit 2; \
	  fi; \
	fi

## test: the whole suite (fast and slow); CI runs exactly this
test: venv browser
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

## lint: ruff, the layer contracts of pyproject.toml (import-linter), eslint on the page's JavaScript
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	cd serve/static && ../web/node_modules/.bin/eslint --config ../web/eslint.config.mjs .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf logs outputs multirun .pytest_cache .ruff_cache

## serve: the Ray Serve app on http://127.0.0.1:8000 with conf/serve's front (PROXY=python for Serve's Python proxy)
PROXY ?=
serve: venv
	$(PY) scripts/serve.py $(if $(PROXY),serve.proxy=$(PROXY))

## predict: offline answer for an image or a folder (IMG=path), no server
predict: venv
	$(PY) scripts/predict.py path=$(IMG)

## cluster-up / cluster-down: a Ray cluster of several nodes on this machine (conf/cluster.yaml), for ray=cluster
cluster-up: venv
	$(PY) scripts/cluster.py action=up
cluster-down: venv
	$(PY) scripts/cluster.py action=down

## bench: the performance benchmarks (each prints one JSON line last)
bench: venv
	$(PY) benchmarks/compression.py
	$(PY) benchmarks/serve_throughput.py
	$(PY) benchmarks/ray_overhead.py
	$(PY) benchmarks/field_inference.py
	$(PY) benchmarks/data_throughput.py --skip-capped
	$(PY) benchmarks/serve_cluster.py

## retrain: ingest the approved claims beside the current data, retrain, promote only past both gates
# scripts/retrain.py with conf/retrain.yaml (locations, promotion gate); FEEDBACK=DIR reads another claims queue
FEEDBACK ?=
retrain: venv
	$(PY) scripts/retrain.py $(if $(FEEDBACK),retrain.feedback_dir=$(FEEDBACK))
	@echo "a running server picks up the new model with: serve deploy serve/config.yaml (or POST /admin/reload)"
