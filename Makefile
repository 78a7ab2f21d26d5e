# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-latest install benchmark clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	# triton only serves torch.compile on GPUs; loaded after TensorFlow it segfaults (LLVM symbol clash),
	# which kills any process that imports tensorflow and then torchvision. Not needed on CPU.
	$(PY) -m pip uninstall -y -q triton
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m agnostic_cam.demo --out out/demo

# One seeded random-order run (pytest-random-order: modules shuffled, and the tests inside each);
# a failure that depends on order replays with the same seed. SEED=... tries another order.
# JOBS pytest-xdist workers (--dist loadfile: a module runs whole in one worker, see tests/conftest.py;
# every worker collects the same seeded order); JOBS=0 runs in this process alone.
SEED ?= 29
JOBS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadfile) \
		--random-order-bucket=module --random-order-seed=$(SEED) tests

# The suite against the NEWEST release of every dependency, ignoring the upper bounds of pyproject.toml,
# in a separate venv (.venv-latest); not part of `make test`. A failure here names what a new release broke.
LATEST := .venv-latest
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade $$(grep -v '^#' requirements-dev.txt | sed 's/[<>=!~; #].*//' | grep -v '^$$')
	$(LATEST)/bin/python -m pip install -q --no-deps -e .
	$(LATEST)/bin/python -m pip uninstall -y -q triton
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|tensorflow-cpu|keras|tf2onnx|onnx|onnxruntime|onnx2torch) '
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider tests

# Full side-by-side benchmark (writes out/benchmark/ and docs/benchmarks.md); QUICK=1 for a 2-minute check.
benchmark: $(STAMP)
	$(PY) scripts/benchmark.py $(if $(QUICK),--quick,--update-docs)

clean:
	rm -rf $(VENV) $(LATEST) out build *.egg-info
