# The commands a newcomer runs: `make render` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.feverdream-installed
STORYBOARD ?= storyboards/anxiety.yaml

.PHONY: setup test lint browser render demo demo-tiny bench clean studio constraints test-floor shapes

setup: $(STAMP)

# Re-runs only when the project's requirements change. pyproject.toml holds the ranges users
# install from; constraints.txt the exact versions these machines use. taming-transformers is
# installed without its declared dependencies: the engine uses only its torch modules, and its
# Lightning requirement would pull a large, unused stack (see DEPENDENCIES.md). --no-compile:
# Python compiles what is imported when it is first imported, not all of torch now.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[test,cluster,studio]'
	$(PY) -m pip install -q --no-compile -c constraints.txt --no-deps taming-transformers-rom1504
	$(PY) -m pipeline.audio --warm
	touch $(STAMP)

# After changing a dependency in pyproject.toml: pin what a fresh venv installs from its ranges
# now (the newest releases they admit; torch as this machine's pip allows), then `make setup`.
constraints:
	d=$$(mktemp -d) && $(PYTHON) -m venv $$d && \
	$$d/bin/pip install -q --no-compile -e '.[test,cluster,studio]' && \
	$$d/bin/pip install -q --no-compile --no-deps "$$(grep -i '^taming-transformers' constraints.txt)" && \
	{ sed -n '/^#/p' constraints.txt; $$d/bin/pip freeze --exclude-editable | grep -iv '^feverdream'; } > constraints.txt.new && \
	rm -rf $$d && mv constraints.txt.new constraints.txt

# The oldest releases pyproject.toml admits, installed from PyPI into a fresh venv outside the
# checkout (CUDA builds of torch: several GB) and used: see tools/test_floor.sh.
test-floor:
	tools/test_floor.sh

lint: setup
	$(VENV)/bin/ruff check pipeline tests bench audio tools
	$(VENV)/bin/lint-imports --no-cache

# One pytest worker per core, each computing on one thread (tests/conftest.py): on two cores the
# suite took 0.73x the time of one process on two threads. `pytest -n 0` runs it in one process.
test: setup lint browser
	$(VENV)/bin/pytest -q -n auto --dist worksteal

# The studio's browser tests drive Debian's chromium through its chromedriver; as root (CI)
# this installs them, otherwise it says what to install.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium chromium-driver >/dev/null; \
	  else \
	    echo "the studio's browser tests need chromium and chromium-driver:" \
	      "sudo apt-get install chromium chromium-driver"; exit 1; \
	  fi; \
	fi

render: setup
	$(VENV)/bin/feverdream render $(STORYBOARD)

# The shapes world, with the models feverdream trained itself (they ship with the package).
demo: setup
	$(VENV)/bin/feverdream render storyboards/demo-shapes.yaml

# Train the shapes models again from their recipe (tools/shapes/, about 30 min on two cores)
# into OUT, and say how far they are from the ones the package ships.
OUT ?= outputs/shapes-build
shapes: setup
	$(PY) -m tools.shapes.build $(OUT)

# The browser studio for the storyboards/ folder (it prints its URL and opens it).
studio: setup
	$(VENV)/bin/feverdream studio storyboards

# The whole path of a real storyboard in minutes, with random-weight `tiny` models (noise).
demo-tiny: setup
	$(VENV)/bin/feverdream render storyboards/anxiety.yaml --models tiny

bench: setup
	$(VENV)/bin/feverdream bench

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
