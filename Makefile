# Two entry points for a fresh machine (Python 3.11, no GPU, package registries only):
#   make demo   installs everything into .venv and runs the main job on the embedded data set
#   make test   installs everything into .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow test-all bench bench-traker clean

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

# minutes-long runs (paper-scale acceptance checks, long property runs); CI runs them after `make test`
test-slow: setup
	$(PY) -m pytest -q -m slow
	STRATALAB_PROPERTY_EXAMPLES=1000 $(PY) -m pytest -q tests/property

test-all: setup
	$(PY) -m pytest -q -m ''

bench: setup
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/metrics_speed.py

# The TRAK benchmark against the reference library: traker lives only in its own environment.
bench-traker:
	$(PYTHON) -m venv .venv-traker
	.venv-traker/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
	.venv-traker/bin/python -m pip install --quiet -c constraints.txt -e . traker
	.venv-traker/bin/python benchmarks/trak_vs_traker.py

clean:
	rm -rf $(VENV) .venv-traker .pytest_cache
