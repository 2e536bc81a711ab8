# unmasked: `make demo` (install + LUT on Fashion-MNIST + kNN), `make test` (install + test suite).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: install dataset demo test test-all lint bench clean

install: $(STAMP) dataset

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST, the built-in default data, from Debian.
dataset:
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y dataset-fashion-mnist || { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; \
	fi

demo: install
	$(VENV)/bin/unmasked demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks results

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
