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

.PHONY: venv demo pipeline data train test test-fast lint format serve predict retrain bench clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

## demo: the whole pipeline on the embedded default (dvc repro), then the evaluation table
demo: venv
	$(PY) scripts/demo.py

pipeline: venv
	$(VENV)/bin/dvc repro

data: venv
	$(PY) scripts/data.py

train: venv
	$(PY) scripts/train.py

## test: the whole suite (fast and slow); CI runs exactly this
test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
