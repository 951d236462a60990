# DeFeat for Detectron2 -- developer entry points.
# `make demo` and `make test` set up the virtual environment on first use (idempotent).

PYTHON_VERSION ?= 3.10.13
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup lint format test demo demo-retinanet bench-accuracy bench-speed clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.cfg setup.py pyproject.toml
	@test -x $(PY) || { \
	  base=$$(PYENV_VERSION=$(PYTHON_VERSION) pyenv which python 2>/dev/null || command -v python3.10); \
	  test -n "$$base" || { echo "Python 3.10 not found (install it with pyenv: pyenv install $(PYTHON_VERSION))"; exit 1; }; \
	  $$base -m venv $(VENV); }
	# --no-compile: byte-compile on first import, only what is imported (a third of pip's CPU time;
	# docs/performance.md#start-up: about 5 s once for torch + Detectron2, 30 s for all of site-packages)
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# One worker per core (pytest-xdist), a test file per worker at a time (module fixtures built once),
# the files whose heavy(seconds=N) tests take longest first (tests/conftest.py orders them).
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider -n auto --dist loadfile --no-loadscope-reorder tests

# python -m defeat run on the embedded dataset (preset demo; report in output/demo)
demo: setup
	$(PY) -m defeat demo

# the same with RetinaNet (preset demo-retinanet; report in output/demo/retinanet)
demo-retinanet: setup
	$(PY) -m defeat demo --family retinanet

bench-accuracy: setup
	$(PY) benchmarks/accuracy.py

bench-speed: setup
	$(PY) benchmarks/step_time.py --overwrite

clean:
	rm -rf output
