# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seglab-installed
# Two cores: one BLAS thread per process, pytest-xdist spreads the tests.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test test-all lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Foundation demo: the CNN classifier on the built-in shapes data (the Mask R-CNN issue switches it).
DEMO_DATA := data/shapes-classify
demo: $(STAMP)
	$(VENV)/bin/seglab data shapes $(DEMO_DATA) --task classify --train 1000 --val 200
	OMP_NUM_THREADS=2 $(VENV)/bin/seglab train cnn_shapes --out runs/demo --set data.root=$(DEMO_DATA)
	$(VENV)/bin/seglab eval runs/demo/model.safetensors --data $(DEMO_DATA) --split val --out runs/demo/metrics.json
	$(VENV)/bin/seglab predict runs/demo/model.safetensors $(DEMO_DATA)/val --out runs/demo/predictions

clean:
	rm -rf runs/demo
