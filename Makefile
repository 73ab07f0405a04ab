# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create and fill .venv, install only what is missing, and are safe to re-run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# The page of `memstore serve` is tested in Debian's chromium, driven by Playwright.
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo)

.PHONY: install data browser demo test bench mutants clean

install: $(STAMP) data browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Best effort: where apt cannot run, the examples say so and fall back to scikit-learn's digits.
data:
	@test -f $(FASHION) || $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -qq >/dev/null 2>&1 && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) \
	  || echo "note: could not install Debian's dataset-fashion-mnist; the demo will use scikit-learn's digits"

# Required: tests/test_browser.py drives it (Playwright's own browser download needs the internet).
browser:
	@test -x $(CHROMIUM) || $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -qq >/dev/null 2>&1 && $(SUDO) apt-get install -y -qq chromium >/dev/null)

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest -q

# Deliberate bugs, one at a time in a scratch copy: the suite must catch each (not part of `make test`)
mutants: install
	$(PY) benchmarks/mutants.py

bench: install
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_forget.py
	$(PY) benchmarks/bench_knnlm.py
	$(PY) benchmarks/bench_lifetime.py

clean:
	rm -rf $(VENV) demo.mem fashion.mem fashion.mem.queries-*.npy fashion_neighbours.png .pytest_cache build *.egg-info
