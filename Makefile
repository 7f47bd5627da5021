# One entry point each: `make demo`, `make test`, `make lint`, `make typecheck`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# The daily DAG on embedded defaults: a throwaway Airflow home, runs and warehouse beside the demo output,
# and the embedding cache `pss run` filled, so the DAG's embed tasks are cache hits.
AIRFLOW_ENV := AIRFLOW_HOME=$(abspath $(OUT))/airflow-home \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	PSS_EXECUTOR=local \
	PSS_RUNS_URI=$(abspath $(OUT))/airflow-runs \
	PSS_CACHE_URI=$(abspath $(OUT))/cache/embeddings.sqlite
DEMO_DATE ?= $(shell date -u -d yesterday +%F)

.PHONY: chromium venv demo demo-run demo-dag airflow-standalone test lint typecheck clean

# torch first and alone: the local CPU wheel; any other version would pull GBs of CUDA.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.3.1"
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet --constraint requirements.lock --editable ".[dev,airflow,bench]"
	touch $(STAMP)

venv: $(STAMP)

demo: demo-run demo-dag
	@echo "run report: $(abspath $(OUT))/report.html  (label pairs: $(BIN)/pss review --run $(OUT))"

# Then match decisions, as a user gets them: label half the items' candidate pairs (here from the known
# matches), train a matcher (its id is the one line it prints), paste it into the config, run again, and
# evaluate the other half's pairs.
demo-run: $(STAMP)
	$(BIN)/pss run --config examples/near_identical.yaml --catalog data/amazon_google/catalog.csv --out $(OUT)
	$(BIN)/pss evaluate --pairs $(OUT)/similar_items.parquet --truth data/amazon_google/matches.csv
	$(BIN)/python examples/labels_from_truth.py --pairs $(OUT)/similar_items.parquet \
		--truth data/amazon_google/matches.csv --out-dir $(OUT)/labels
	$(BIN)/pss train-matcher --config examples/near_identical.yaml --catalog data/amazon_google/catalog.csv \
		--pairs $(OUT)/labels/train_pairs.csv --registry $(OUT)/matchers --out $(OUT) > $(OUT)/labels/matcher_id
	{ cat examples/near_identical.yaml; printf 'matcher:\n  registry_uri: %s\n  model_id: %s\n' \
		"$(abspath $(OUT))/matchers" "$$(cat $(OUT)/labels/matcher_id)"; } > $(OUT)/near_identical_matched.yaml
	$(BIN)/pss run --config $(OUT)/near_identical_matched.yaml --catalog data/amazon_google/catalog.csv --out $(OUT)
	$(BIN)/pss evaluate --pairs $(OUT)/similar_items.parquet --truth $(OUT)/labels/test_truth.csv \
		--items $(OUT)/labels/test_items.csv

demo-dag: $(STAMP)
	@mkdir -p $(OUT)/airflow-home
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate > $(OUT)/airflow-home/db-migrate.log 2>&1
	@echo "airflow dags test pss_near_identical $(DEMO_DATE)  (log: $(OUT)/airflow-home/dags-test.log)"
	@$(AIRFLOW_ENV) $(BIN)/airflow dags test pss_near_identical $(DEMO_DATE) > $(OUT)/airflow-home/dags-test.log 2>&1 \
		|| (tail -40 $(OUT)/airflow-home/dags-test.log; exit 1)
	@$(BIN)/python -m pss_ops.cli summary --runs $(OUT)/airflow-runs/near_identical/$(DEMO_DATE)

# standalone starts its components as `airflow` from PATH: the helper puts this venv's on it, runs everything in a
# session of its own, and on Ctrl-C stops every process in it (tasks run in process groups of their own).
airflow-standalone: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/python scripts/airflow_standalone.py

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# The browser tests drive Debian's chromium (Playwright can't download its own here); installed when missing.
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium >/dev/null; } \
		|| { echo "the browser tests need chromium: sudo apt-get install -y chromium"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check pss_ops tests dags plugins bench
	$(BIN)/ruff format --check pss_ops tests dags plugins bench

typecheck: $(STAMP)
	$(BIN)/mypy pss_ops

clean:
	rm -rf $(VENV) out
