# Two entry points (see README): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
# localhost only by default; HOST=0.0.0.0 serves the network (Train is then off unless SMU_ALLOW_TRAIN=1)
HOST ?= localhost
STAMP := $(VENV)/.installed

.PHONY: demo test test-data bench venv clean demo-models

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned first: the CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Set up and open the app on its built-in defaults (sample_midi/ + demo models)
demo: $(STAMP)
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.address $(HOST)

## Set up and run the test suite (what CI runs)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

## Tests against the real datasets (SMU_DATA_ROOT, default ../shared/data)
test-data: $(STAMP)
	$(BIN)/python -m pytest -q -m data

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/tokenize.py
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/app_latency.py

## Re-train the two demo models shipped in models/ (see models/README.md)
demo-models: $(STAMP)
	$(BIN)/python scripts/train_demo_models.py

clean:
	rm -rf $(VENV) .pytest_cache
