# Two commands for a newcomer: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast up down status bench bench-accuracy policies clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)            ## start the local stack and run the whole chain once
	$(BIN)/freshet demo

# Two pytest workers: one runs the end-to-end tests (which mostly wait), the other the rest
# beside them (tests/conftest.py; README, "Tests").
TEST_WORKERS ?= 2

test: $(STAMP)            ## the whole test suite, end-to-end included
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP)       ## everything but the slow and end-to-end tests
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow and not e2e"

up: $(STAMP)
	$(BIN)/freshet up

down: $(STAMP)
	$(BIN)/freshet down

status: $(STAMP)
	$(BIN)/freshet status

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet --no-deps 'ISLP==0.6.0'  # only its Bikeshare.csv (its deps include torch)
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)   ## every benchmark on the local stack: table + benchmarks/results/latest.json (ARGS=--quick: smoke run)
	$(BIN)/python benchmarks/run.py $(ARGS)

bench-accuracy: $(STAMP) $(BENCH_STAMP)   ## accuracy vs mlforecast and statsforecast on 4 real sets, final windows (~15 min; ARGS="--split dev")
	nice -n 10 $(BIN)/python benchmarks/accuracy.py $(ARGS)

policies: $(STAMP)        ## compare retraining x forecasting policies on 3 weeks of generated arrivals: table, .freshet/policies/{report.json,chart.png}
	$(BIN)/freshet policies --days 21

clean:
	-$(BIN)/freshet down
	rm -rf $(VENV) .freshet
