# One command for the main job, one for the tests; both set up .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

## run: train the default suite (quick: every method on the embedded digits), then report
run: $(STAMP)
	$(VENV)/bin/calibench run
	$(VENV)/bin/calibench report

## test: lint and run the whole test suite
test: $(STAMP)
	$(VENV)/bin/ruff check calibench methods tests
	$(VENV)/bin/pytest -q

## bench: loss-computation time per step of every method beside the model's forward/backward
bench: $(STAMP)
	$(VENV)/bin/calibench bench

clean:
	rm -rf $(VENV) build *.egg-info
