# Two entry points for a fresh machine (Python 3.11, no GPU, package registries only):
#   make demo   installs everything into .venv and runs the main job on the embedded data set
#   make test   installs everything into .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATTRI ?= dattri

.PHONY: setup demo test lint test-slow test-all bench bench-trak bench-traker bench-ray browser clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/stratalab demo

test: setup
	$(PY) -m pytest -q

# ruff (pyflakes, pycodestyle, import order, complexity, bugbear) over the code, mypy over src/;
# the layer contract (imports run down the layers, no cycle) is tests/test_architecture.py in `make test`
lint: setup
	$(PY) -m pip install --quiet -c constraints.txt -e '.[lint]'
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

# minutes-long runs (paper-scale acceptance checks, long property runs); CI runs them after `make test`
test-slow: setup
	$(PY) -m pytest -q -m slow
	STRATALAB_PROPERTY_EXAMPLES=1000 $(PY) -m pytest -q tests/property

test-all: setup
	$(PY) -m pytest -q -m ''

bench: setup
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/metrics_speed.py

# The TRAK benchmark against the reference libraries: traker and dattri each live only in their own environment.
bench-trak: setup
	test -x .venv-traker/bin/python || $(PYTHON) -m venv .venv-traker
	.venv-traker/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
	.venv-traker/bin/python -m pip install --quiet -c constraints.txt -e . traker
	test -x .venv-dattri/bin/python || $(PYTHON) -m venv .venv-dattri
	.venv-dattri/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
	.venv-dattri/bin/python -m pip install --quiet -c constraints.txt -e . $(DATTRI)
	$(PY) benchmarks/trak_vs_traker.py --lds-models 20 --threads 1 --name trak_three_tools

bench-traker: bench-trak

# Debian's Chromium for the HTML report's browser test (tests/report/test_html_browser.py skips,
# saying why, without it). Needs root or sudo; CI runs it before `make test`.
browser:
	command -v chromium >/dev/null || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); $$S apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq --no-install-recommends chromium; }

# 12-task grid: --backend ray with 2 workers against the local backend (needs ../shared/data)
bench-ray: setup
	$(PY) benchmarks/ray_speedup.py --write

clean:
	rm -rf $(VENV) .venv-traker .venv-dattri .pytest_cache
