# The commands a newcomer runs: `make render` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.feverdream-installed
STORYBOARD ?= storyboards/anxiety.yaml

.PHONY: setup test lint browser render demo demo-tiny bench clean studio

setup: $(STAMP)

# Re-runs only when the project's requirements change. taming-transformers is installed
# without its declared dependencies: the engine uses only its torch modules, and its
# Lightning requirement would pull a large, unused stack (see DEPENDENCIES.md).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,cluster,studio]'
	$(PY) -m pip install -q --no-deps taming-transformers-rom1504==0.0.6
	$(PY) -m pipeline.audio --warm
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check pipeline tests bench audio tools
	$(VENV)/bin/lint-imports --no-cache

test: setup lint browser
	$(VENV)/bin/pytest -q

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
