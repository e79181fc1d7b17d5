# One command for the main job, one for the tests; both set up .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench gpu-data gpu-check gpu-check-cpu clean

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

## test: lint, type-check and run the whole test suite
test: $(STAMP)
	$(VENV)/bin/ruff check calibench methods tests
	$(VENV)/bin/mypy calibench methods
	$(VENV)/bin/pytest -q

## bench: loss-computation time per step of every method beside the model's forward/backward
bench: $(STAMP)
	$(VENV)/bin/calibench bench

## gpu-data: copy Fashion-MNIST (Debian's dataset-fashion-mnist) to .gpu-data/ for the GPU check
gpu-data:
	@test -d /usr/share/datasets/fashion-mnist || { echo "apt-get install dataset-fashion-mnist first"; exit 1; }
	mkdir -p .gpu-data/FashionMNIST/raw
	cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu-data/FashionMNIST/raw/

## gpu-check: on one CUDA GPU, offline, within 6 minutes: bench vs reference, fashion preset (docs/speed.md)
# No venv here: the GPU machine has no network, so its own python3 (with torch) runs the check.
GPU_PYTHON ?= python3
gpu-check:
	PYTHON=$(GPU_PYTHON) bash scripts/gpu_check.sh

## gpu-check-cpu: every step of gpu-check on the CPU with tiny sizes, into results/gpu-rehearsal/
gpu-check-cpu: $(STAMP)
	PYTHON=$(VENV)/bin/python bash scripts/gpu_check.sh --rehearsal

clean:
	rm -rf $(VENV) build *.egg-info
