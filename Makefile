# Every target sets itself up: a virtualenv in .venv with the package and its test tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ijepa-installed
EXTRAS ?= dev,hf,timm,slurm,umap,datasets,faiss,webdataset,tensorboard,wandb

.PHONY: install demo test test-fast lint bench quality clean

# The demo needs only the package's own dependencies: installing the test and interop extras
# (transformers, datasets, umap-learn, ...) took most of a fresh machine's `make demo` set-up.
BASE_STAMP := $(VENV)/.ijepa-base-installed

$(BASE_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@$(BIN)/python -c "import ijepa, torch, torchvision"
	@touch $(BASE_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@$(BIN)/python -c "import ijepa, torch, torchvision"
	@touch $(STAMP) $(BASE_STAMP)

install: $(STAMP)

demo: $(BASE_STAMP)
	$(BIN)/ijepa demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not distributed and not browser"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py --data fashion-mnist --minutes 30

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
