# `make demo` and `make test` work on a fresh machine with only Python 3.11: the venv is made on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
CRYPTO_STAMP := $(VENV)/.installed-crypto

.PHONY: demo test test-fast lint docs bench bench-smoke mlflow-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## the headline experiment on the embedded digits data
	$(BIN)/gavel run experiment=hiding_vs_ratelimit

test: $(STAMP)  ## every test, slow ones included (CI runs this); one worker per core, at most 4 (pytest-xdist)
	$(BIN)/python -m pytest -n auto --maxprocesses=4

lint: $(STAMP)  ## ruff: lint rules and formatting (CI runs this before the tests)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

# bench/crypto_cost.py's optional extra (ezkl, TenSEAL): only the benches need it, never the package
$(CRYPTO_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[crypto]'
	touch $(CRYPTO_STAMP)

docs: $(DOCS_STAMP)  ## the docs site (mkdocs-material) into site/; --strict: a broken link or anchor, or a page not in the nav, fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

test-fast: $(STAMP)  ## skip the slow end-to-end tests
	$(BIN)/python -m pytest -n auto --maxprocesses=4 -m "not slow"

bench: $(STAMP) $(CRYPTO_STAMP)  ## printed ratios and wall times, never asserted
	$(BIN)/python bench/oracle_overhead.py
	$(BIN)/python bench/query_engine.py
	$(BIN)/python bench/fashion_resnet.py  # needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)
	$(BIN)/python bench/foreign_judge.py   # on the ResNet-18 fashion_resnet.py saved
	$(BIN)/python bench/backend_throughput.py
	$(BIN)/python bench/attack_walltime.py
	$(BIN)/python bench/demo_walltime.py
	$(BIN)/python bench/detector_overhead.py
	$(BIN)/python bench/sweep_scaling.py
	$(BIN)/python bench/server_throughput.py  # needs Debian's PostgreSQL (apt-get install postgresql)
	$(BIN)/python bench/serve_latency.py
	$(BIN)/python bench/crypto_cost.py        # ezkl proofs and CKKS inference, 8x8 and 28x28 (about 25 minutes on 2 cores)

# every script under bench/ but its helper fixtures.py: a new bench is smoke-run without being listed
BENCHES := $(filter-out fixtures,$(basename $(notdir $(wildcard bench/*.py))))

bench-smoke: $(STAMP) $(CRYPTO_STAMP)  ## every bench at a tiny size (--smoke), to prove each still runs; one model cache in a temp folder
	@tmp=$$(mktemp -d); failed=; \
	for bench in $(BENCHES); do \
		echo "bench/$$bench.py --smoke"; start=$$(date +%s); \
		GAVEL_CACHE_DIR="$$tmp/cache" GAVEL_THREADS=1 $(BIN)/python bench/$$bench.py --smoke || failed="$$failed $$bench"; \
		echo "  ($$(( $$(date +%s) - start )) s)"; \
	done; \
	rm -rf "$$tmp"; \
	if [ -n "$$failed" ]; then echo "bench-smoke failed:$$failed"; exit 1; fi

mlflow-server: $(STAMP)  ## a shared MLflow server (PostgreSQL store in .mlflow-server/); options: ARGS="--host 0.0.0.0"
	$(BIN)/gavel tracking-server $(ARGS)

clean:
	rm -rf .gavel_cache outputs multirun mlflow.db mlruns .pytest_cache site
