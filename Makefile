# fssam2: every target installs what it needs into .venv first (torch from this machine's
# wheel cache or PyPI, then sam2 without its CUDA extension, then fssam2, its tools and its web page).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

GPUS   ?= 1
OUT    ?=
METHOD ?= fssam2

.PHONY: help install demo reproduce test test-fast lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	$(BIN)/pip install -q -e ".[dev,serve]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install fssam2 with its dependencies

demo: install ## meta-train the tiny SAM2 per class family, print held-out mIoU / FB-IoU with the controls; [METHOD=fssam2|sansa] [FAMILIES="hue shape texture"]
	$(BIN)/python experiments/demo.py --method "$(METHOD)" $(if $(FAMILIES),--families $(FAMILIES))

reproduce: install ## every fold of a method's paper, preparing the data home first; [METHOD=fssam2|sansa|gfsam] [GPUS=] [OUT=] [DATA_ROOT= SPLITS_DIR=] [SAM2_CHECKPOINT=]; SMOKE=1: generated data, tiny model
	$(BIN)/python experiments/reproduce.py --method "$(METHOD)" $(if $(OUT),--out "$(OUT)") $(if $(SMOKE),--smoke,--gpus $(GPUS) $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)" --splits-dir "$(SPLITS_DIR)") $(if $(SAM2_CHECKPOINT),--sam2-checkpoint "$(SAM2_CHECKPOINT)"))

test: install ## run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest

test-fast: install ## run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: install ## ruff (lint, format check) over the sources, tests and experiments; mypy over src/fssam2; the import layers
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments
	$(BIN)/mypy
	PYTHONPATH=src $(BIN)/lint-imports  # this checkout's src, whichever checkout .venv installed

clean: ## remove .venv and caches (runs/ is kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache src/*.egg-info
