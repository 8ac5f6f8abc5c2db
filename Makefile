# notifyd: `make run` starts everything embedded; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

BENCH_ARGS ?=

.PHONY: bench setup run test test-unit test-integration test-e2e test-faults gen gen-check lint buf-lint ci clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## start notifyd with embedded Postgres and Redis on 127.0.0.1:50051
	$(BIN)/notifyd dev

test: setup  ## every test: unit, integration (real Postgres/Redis/HTTP), e2e, faults
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest tests/unit

test-integration: setup
	$(BIN)/pytest tests/integration

test-e2e: setup
	$(BIN)/pytest tests/e2e

test-faults: setup  ## crash, stall and restart scenarios (part of make test too)
	$(BIN)/pytest tests/faults -s

bench: setup  ## benchmarks on the embedded stack: prints a table, writes bench-results/latest.json
	$(BIN)/python -m bench $(BENCH_ARGS)

gen: setup  ## regenerate Python code from proto/
	$(BIN)/python scripts/generate_protos.py

gen-check: gen  ## fail if the committed generated code differs from what proto/ produces
	@if [ -n "$$(git status --porcelain -- src/interfaces/grpc/gen)" ]; then \
		git status --porcelain -- src/interfaces/grpc/gen; \
		echo "generated code drifted from proto/: run 'make gen' and commit the result"; exit 1; \
	fi

$(BUF):
	npm install --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

buf-lint: $(BUF)
	$(BUF) lint

lint: setup buf-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

ci: gen-check lint test

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
