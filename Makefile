# The README's two commands: `make train` (main job) and `make test` (whole suite).
# Both do every set-up step themselves and skip what is already there.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_STAMP := $(VENV)/.requirements.sha256
FASHION_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/quick

.PHONY: setup venv data test test-all train clean

setup: venv data

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@want=$$(cat requirements.txt requirements-dev.txt setup.py | sha256sum | cut -d' ' -f1); \
	have=$$(cat $(REQ_STAMP) 2>/dev/null); \
	if [ "$$want" != "$$have" ]; then \
	  echo "== installing requirements into $(VENV)"; \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -r requirements-dev.txt && \
	  $(PY) -m pip install -q --no-deps -e . && \
	  $(PY) -m pip check && echo "$$want" > $(REQ_STAMP); \
	else echo "== $(VENV) is up to date"; fi

data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "== Fashion-MNIST present in $(FASHION_DIR)"; \
	else \
	  echo "== installing dataset-fashion-mnist (Debian)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get install -y -q dataset-fashion-mnist || \
	    ( $$SUDO apt-get update -q && $$SUDO apt-get install -y -q dataset-fashion-mnist ) ) >/dev/null; \
	fi

# Whole suite; slow-marked tests are excluded here (see BUILD_NOTES.md: `make test-all`).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow" tests

test-all: setup
	VAPNEV_TEST_COMPILED=1 $(PY) -m pytest -q -n auto --dist loadfile tests

train: setup
	$(PY) -m vapnev_tf.train --flagfile=configs/quick.flags --workdir=$(WORKDIR)

clean:
	rm -rf $(VENV) .pytest_cache
