# patchctl — the README names these targets. Each creates .venv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.patchctl-installed

DEMO_STAMP := $(VENV)/.patchctl-demo-installed

.PHONY: venv demo demo-pico bench-portllm test test-fast lint typecheck check bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV) dev
	@touch $(STAMP)

venv: $(STAMP)

$(DEMO_STAMP): $(STAMP)
	bash scripts/bootstrap.sh $(VENV) dev,demo
	@touch $(DEMO_STAMP)

## demo: the main job end to end on a real model (SmolLM2-135M) on the embedded default (SQLite, local files)
demo: $(DEMO_STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/realmodel/demo.sh

## demo-pico: the same walk-through on generated pico models (seconds; no download)
demo-pico: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

## test: the whole suite (slow tests included); PostgreSQL tests run when PATCHCTL_TEST_POSTGRES_URL is set
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check patchctl tests benchmarks examples
	$(VENV)/bin/ruff format --check patchctl tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) benchmarks/merge/bench_merge.py

## bench-portllm: PortLLM at small scale on SmolLM2-135M (long: see benchmarks/portllm/README.md)
bench-portllm: $(DEMO_STAMP)
	nice -n 10 $(PY) benchmarks/portllm/run.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
