PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint setup clean

STUDY ?= configs/default.toml
OUT ?= runs/default

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints.txt pins every package to the version the tests passed with (refresh it with
# `$(BIN)/pip freeze --exclude-editable`, torch written as torch==2.13.0)
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# set up, run the default study (resumes if interrupted), write OUT/report.html
run: $(STAMP)
	$(BIN)/fmlab study run $(STUDY) --out $(OUT)
	@echo "report: $(OUT)/report.html"

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/time_to_accuracy.py
	$(BIN)/python benchmarks/study_walltime.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
