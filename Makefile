# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint docs bench clean demo-weights real-weights

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned, so pip takes the CPU build that lies on this disk.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/arctic-rts demo

lint: $(STAMP)
	$(BIN)/ruff check arctic_rts tests bench
	$(BIN)/ruff format --check arctic_rts tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -p no:cacheprovider

# The docs site (mkdocs.yml, docs/) into site/; tests/test_docs.py builds it the same way.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/forward.py --compile
	$(BIN)/python bench/merge.py
	$(BIN)/python bench/loaders.py
	$(BIN)/python bench/map_memory.py
	$(BIN)/python bench/pan_arctic.py
	$(BIN)/python bench/train_methods.py

# Retrain the bundled demo weights on generated scenes from seeds other than the demo's (2021).
DEMO_TRAIN := .demo-train
ALL_DEMO_TILES := -139.5 68.5 -136.5 69.6
demo-weights: $(STAMP)
	$(BIN)/arctic-rts demo --generate-only --root $(DEMO_TRAIN)/seed7 --seed 7 --size-px 1800 --years 2021 2022
	$(BIN)/arctic-rts demo --generate-only --root $(DEMO_TRAIN)/seed8 --seed 8 --size-px 1800
	$(BIN)/arctic-rts dataset build --labels $(DEMO_TRAIN)/seed7/truth.gpkg \
	    --stac $(DEMO_TRAIN)/seed7/items --out $(DEMO_TRAIN)/labelled.zarr --stride 144
	$(BIN)/arctic-rts dataset build --labels $(DEMO_TRAIN)/seed8/truth.gpkg \
	    --stac $(DEMO_TRAIN)/seed8/items --out $(DEMO_TRAIN)/unlabelled.zarr --stride 144 \
	    --unlabelled-bbox $(ALL_DEMO_TILES) --unlabelled-year 2021
	$(BIN)/arctic-rts train --config deploy/demo_weights/train.toml
	mkdir -p arctic_rts/data
	cp $(DEMO_TRAIN)/run/weights.safetensors arctic_rts/data/demo_unet.safetensors
	cp $(DEMO_TRAIN)/run/weights.json arctic_rts/data/demo_unet.json

# Retrain the bundled real-imagery model on the real chips in ../shared/data: leave-one-site-out
# cross-validation (threshold and minimum area chosen on training sites), then all sites.
REAL_TRAIN := .real-train
real-weights: $(STAMP)
	$(BIN)/arctic-rts train --config deploy/real_weights/train.toml --cross-validate --seeds 1 2 3 --jobs 2
	mkdir -p arctic_rts/data
	cp $(REAL_TRAIN)/final/weights.safetensors arctic_rts/data/real_unet.safetensors
	cp $(REAL_TRAIN)/final/weights.json arctic_rts/data/real_unet.json
	$(BIN)/python bench/real_model.py --crossval $(REAL_TRAIN)/final-crossval/crossval.json

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache site
