# One entry point each: `make demo`, `make test`, `make lint`, `make typecheck`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv demo test lint typecheck clean

# torch first and alone: the local CPU wheel; any other version would pull GBs of CUDA.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet --constraint requirements.lock --editable ".[dev,airflow]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/pss run --config examples/near_identical.yaml --catalog data/amazon_google/catalog.csv --out $(OUT)
	$(BIN)/pss evaluate --pairs $(OUT)/similar_items.parquet --truth data/amazon_google/matches.csv

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check pss_ops tests dags plugins bench
	$(BIN)/ruff format --check pss_ops tests dags plugins bench

typecheck: $(STAMP)
	$(BIN)/mypy pss_ops

clean:
	rm -rf $(VENV) out
