# Every target says what it does: `make help`.
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	python3 -m venv $(VENV)

install: $(BIN)/python ## Install the engine and its dev tools into .venv
	$(BIN)/python -m pip install -q -e '.[dev]'

up: $(BIN)/python ## Install and run everything on the embedded default (SQLite + embedded Redis)
	$(BIN)/python -m pip install -q -e .
	$(BIN)/tracker-jobs up

services: install ## Start the Redis and PostgreSQL the tests use, if they are not running
	scripts/start-services

test: ## Run the test suite (installs, starts services)
	scripts/test

lint: install ## ruff, mypy (strict on tracker_jobs/) and the layering contracts (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

ci: ## What CI runs: install, services, lint, layers, the wheel check, tests
	bash .ci/run

bench-quick: install ## Every benchmark in its --quick mode
	for b in bench/*.py; do $(BIN)/python $$b --quick; done

.PHONY: help install up services test lint format ci bench-quick
