# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, run the main job on its built-in default (mnist_lt)
#   make test   - create .venv, install, run the tests
# The virtual environment is made once; it is refreshed only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test smoke install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m augment output.dir=outputs/demo output.overwrite=true

smoke: $(STAMP)
	$(PY) -m augment experiment=smoke output.dir=outputs/smoke output.overwrite=true

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf outputs build *.egg-info
