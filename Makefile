# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create and fill .venv, install only what is missing, and are safe to re-run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_store.py

clean:
	rm -rf $(VENV) demo.mem .pytest_cache build *.egg-info
