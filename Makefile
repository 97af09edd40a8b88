# Quick start: `make demo` and `make test` do all set-up on a fresh machine (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A pinned torch: on the development machines and CI this is a local CPU wheel; an unpinned torch
# would pull several GB of CUDA packages. Override on machines that already have their own torch.
TORCH_SPEC ?= torch==2.13.0
OUT := demo_out

.PHONY: all venv build test demo bench gpu-check gpu-check-dry-run sdist-check clean

all: build

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel "pybind11>=2.12"
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# Where nvcc exists, the cuSPARSELt header (its wheel; >= 0.10 needs no cusparse.h) lets CMake compile the wrapper too.
	if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then $(BIN)/pip install -q "nvidia-cusparselt-cu13>=0.10"; fi
	$(BIN)/pip install -q --no-build-isolation -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Incremental rebuild of pysparse24._C (CMake keeps its build tree under build/).
build: venv
	$(BIN)/python setup.py -q build_ext --inplace

test: build
	$(BIN)/ruff check .  # lint rules: [tool.ruff] in pyproject.toml
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests

demo: build
	mkdir -p $(OUT)
	$(BIN)/python benchmarks/demo_compress.py --out $(OUT)
	$(BIN)/python benchmarks/torch_digits_demo.py --out $(OUT)/torch
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pysparse24.bench gemm --shapes 4096x1x4096,4096x8x4096 --repeats 10 --json $(OUT)/gemm.json --plot $(OUT)/gemm_speedup.png
	$(BIN)/python benchmarks/bench_models.py --quick --models llama --dtypes fp32 --json $(OUT)/models.json  # a sparse model (to_sparse_) next to its dense twin; ~10 s
	$(BIN)/pysparse24 lut build --table $(OUT)/lut.sqlite --space demo  # all 132 demo-space layers, ~1 min on CPU; resumes
	$(BIN)/pysparse24 lut show --table $(OUT)/lut.sqlite --top 5
	$(BIN)/pysparse24 lut validate --table $(OUT)/lut.sqlite --space demo --networks 50 --calibrate 20 --remeasure --out $(OUT)/validate  # LUT vs end to end, calibration stored for nas; ~1-2 min
	$(BIN)/pysparse24 nas search --table $(OUT)/lut.sqlite --space demo --budget-ms p40 --trials 10 --out $(OUT)/nas -q  # BO in the fastest 40%; ~20 s
	OMP_NUM_THREADS=1 $(BIN)/pysparse24 advise --model benchmarks.advise_demo_models:small_lm --input-shape 1x8x2048 --table $(OUT)/advise.sqlite --out $(OUT)/advice.json --plot $(OUT)/advise_speedup.png -o threads=1 -q  # which layers 2:4 pays for, measured; ~30 s

# pytest-benchmark suites (the scripts in benchmarks/ print the tables kept in benchmarks/RESULTS.md).
bench: build
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q --benchmark-only benchmarks/bench_compress.py \
		benchmarks/bench_nas_estimate.py benchmarks/test_bench_gemm.py

# The whole GPU run (docs/cuda.md): device line, sm_90 build in place, CUDA tests, GPU benchmark,
# compute-sanitizer; results in $$OUT (or gpu_check_out/). Uses the machine's own python3 (the GPU
# image's torch), never the venv. The dry run does every step that needs no GPU.
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

gpu-check-dry-run:
	$(PYTHON) benchmarks/gpu_check.py --dry-run

# The sdist alone must build (issue 16): build it, then a wheel from it in an isolated environment
# (CMake and pybind11 come from the build requirements). A full compile: a few minutes, so not in `test`;
# tests/test_packaging.py checks the sdist's file list there.
sdist-check: venv
	rm -rf dist/sdist-check && mkdir -p dist/sdist-check
	$(BIN)/python -c "import sys, setuptools.build_meta as b; b.build_sdist(sys.argv[1])" dist/sdist-check
	PYSPARSE24_CUDA=OFF $(BIN)/pip wheel -q --no-deps -w dist/sdist-check dist/sdist-check/pysparse24-*.tar.gz
	$(BIN)/python -m zipfile -l dist/sdist-check/pysparse24-*.whl | grep -q "pysparse24/_C" && echo "sdist-check: the wheel built from the sdist has pysparse24._C"

clean:
	rm -rf build $(OUT) gpu_check_out pysparse24/_C*.so
