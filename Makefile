# The two commands that do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seglab-installed
# Two cores: one BLAS thread per process and two pytest-xdist workers; with more threads
# per process (OMP_NUM_THREADS=2 make test) one worker, so the cores are never oversubscribed.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= $(OMP_NUM_THREADS)
PYTEST_WORKERS ?= $(if $(filter 1,$(OMP_NUM_THREADS)),2,1)
PYTEST_ARGS ?=

.PHONY: demo test test-all lint venv clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

# The documentation site (mkdocs.yml): site/ from docs/ and the docstrings, --strict (a page
# outside the nav, a broken link or anchor, an API name not found: each fails the build).
# The docs extra (mkdocs-material, mkdocstrings) goes into the same .venv, once (stamp file).
DOCS_STAMP := $(VENV)/.seglab-docs-installed
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings --strict counts
	@echo "docs: site/index.html"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

# Demo: Mask R-CNN (ResNet-18 + FPN) trained from scratch on the built-in shapes data for
# 10 CPU minutes (recipe configs/mask_rcnn_r18_fpn_shapes.yaml), then COCO box and mask AP
# on the val split and overlays of the val images (docs/benchmarks.md, "Mask R-CNN demo").
# Idempotent: the data is generated once (stamp file); `seglab train` resumes runs/demo, so a
# second `make demo` finds the run finished (or continues an interrupted one within its
# 10-minute budget), then evaluates and predicts again. `make clean` starts over.
# The val split is scored once, by the run itself: `seglab eval --reuse` writes metrics.json
# from the run's final evaluation of the same model file, and predict draws 8 overlays.
# One thread (OMP_NUM_THREADS=1 above): on 2 shared cores two OpenMP threads train fewer
# steps in the same time (docs/benchmarks.md, "CNN classifier").
DEMO_DATA := data/shapes
DEMO_RUN  := runs/demo
$(DEMO_DATA)/.generated: | $(STAMP)
	$(VENV)/bin/seglab data shapes $(DEMO_DATA) --task instance --train 1000 --val 200
	touch $@

demo: $(STAMP) $(DEMO_DATA)/.generated
	$(VENV)/bin/seglab train mask_rcnn_r18_fpn_shapes --out $(DEMO_RUN) --set data.root=$(DEMO_DATA)
	$(VENV)/bin/seglab eval $(DEMO_RUN)/model.safetensors --data $(DEMO_DATA) --split val --reuse --out $(DEMO_RUN)/metrics.json
	$(VENV)/bin/seglab predict $(DEMO_RUN)/model.safetensors $(DEMO_DATA)/val --limit 8 --gt $(DEMO_DATA)/val.json --out $(DEMO_RUN)/predictions > $(DEMO_RUN)/predictions.txt
	tail -n 4 $(DEMO_RUN)/predictions.txt
	@echo "demo: $(DEMO_RUN)/metrics.json, $(DEMO_RUN)/plots/, $(DEMO_RUN)/predictions/overlays/ (detections per image in $(DEMO_RUN)/predictions.txt)"

clean:
	rm -rf runs/demo
