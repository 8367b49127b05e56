# autotimm developer commands: `make train` and `make test` set everything up on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test-data train test test-py313 test-slow test-engines test-all lint format clean

# The venv is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Debian's Fashion-MNIST, read by the tests (apt-get as root; otherwise says the command)
test-data:
	bash scripts/test-data.sh

train: $(STAMP)
	$(PY) train.py $(ARGS)

# the default suite in TEST_WORKERS processes (pytest-xdist; 0: in this one). Tests that
# share a fixture stay in one worker and those that start several processes at once run one
# after another (tests/conftest.py), so two workers suit a 2-core machine.
TEST_WORKERS ?= 2
test: $(STAMP) test-data
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

# the default suite again under Python 3.13, in its own venv (.venv313). PY313 is how to
# start that interpreter (pyenv's shim refuses a bare python3.13 while another is global).
PY313 ?= env PYENV_VERSION=3.13.0 python3.13
VENV313 := .venv313
$(VENV313)/.installed: pyproject.toml
	test -x $(VENV313)/bin/python || $(PY313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install --quiet --upgrade pip
	$(VENV313)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

test-py313: $(VENV313)/.installed test-data
	$(VENV313)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# the long tests (e.g. the full default digits run), kept in CI
test-slow: $(STAMP) test-data
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# real engines: a one-node SLURM cluster, PostgreSQL and Ray, installed when missing
# (root), started for the tests marked `engines` and stopped (scripts/engines/run.sh)
test-engines: $(STAMP)
	PY=$(PY) bash scripts/engines/run.sh

test-all: $(STAMP) test-data
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(VENV313) .pytest_cache .ruff_cache
