# Every target sets itself up: a virtualenv in .venv with the package and its test tools.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ijepa-installed
EXTRAS ?= dev,hf,timm,slurm,umap,datasets,faiss,webdataset,tensorboard,wandb

.PHONY: install demo test test-fast lint bench quality clean browser

# The demo needs only the package's own dependencies: installing the test and interop extras
# (transformers, datasets, umap-learn, ...) took most of a fresh machine's `make demo` set-up.
BASE_STAMP := $(VENV)/.ijepa-base-installed

$(BASE_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -e .
	@$(BIN)/python -c "import ijepa, torch, torchvision"
	@touch $(BASE_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --disable-pip-version-check -e '.[$(EXTRAS)]'
	@$(BIN)/python -c "import ijepa, torch, torchvision"
	@touch $(STAMP) $(BASE_STAMP)

install: $(STAMP)

demo: $(BASE_STAMP)
	$(BIN)/ijepa demo

# The report's browser test drives headless Chromium: installed here where it is missing (Debian's
# package, as root: what CI runs as); elsewhere install it yourself, or the test is skipped (it
# fails instead under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing chromium for the browser test (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -qq --no-install-recommends chromium; }; \
	  else \
	    echo "make: chromium is missing and cannot be installed here (needs root and apt-get);" \
	         "the browser test will be skipped (it fails under CI=true)"; \
	  fi; }

test: $(STAMP) browser
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
