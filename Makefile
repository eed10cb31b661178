# turboquant — `make run` and `make test` work on a fresh machine (they install what they need).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= $(if $(shell command -v nvcc),-DTQ_CUDA=ON,)

VENV ?= $(BUILD)/venv
# The Python package: scikit-build-core's own build folder, linking the library `build` made.
PY_BUILD_FLAGS = -Cbuild-dir=$(BUILD)/py -Ccmake.define.TQ_PREBUILT_LIB=$(abspath $(BUILD))/libtq.a

.PHONY: run test test-sanitize build setup model models clean python python-test

setup:
	./scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Default model and text (DESIGN.md §4).
model: setup
	./scripts/fetch_model.sh

# The whole model set (DESIGN.md §8): smollm2-135m, qwen2.5-coder-1.5b, gemma3-270m.
models: setup
	./scripts/fetch_model.sh all

run: build model
	./scripts/run_main.sh $(BUILD)

# The C++ tests first (they need no Python), then the Python package and its tests.
test: build model
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900
	$(MAKE) --no-print-directory python-test

# build/venv (scripts/setup_python.sh) + `pip install .` of the package into it.
python: build
	VENV=$(VENV) ./scripts/setup_python.sh
	$(VENV)/bin/python -m pip install -q --no-build-isolation --disable-pip-version-check \
	  $(PY_BUILD_FLAGS) .

python-test: python model
	TQ_BUILD_DIR=$(abspath $(BUILD)) $(VENV)/bin/python -m pytest -q tests/python

# The sanitizer job of CI (issue 17): clang with ASan + UBSan (undefined behaviour aborts) and the
# libFuzzer targets; runs the suite but the slow end-to-end tests (the normal `make test` runs
# those), then each fuzz target for FUZZ_SECONDS on its committed corpus (fuzz/README.md).
SAN_BUILD ?= build-sanitize
FUZZ_SECONDS ?= 45
SAN_SLOW ?= LlamaE2E|CalibrateCli|CompareCli\.TinyRunJson|TqTypes|CliFlags\.ChunksAndDecode|CliFlags\.CodebooksDirectory
test-sanitize: setup model
	CC=clang CXX=clang++ cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DTQ_SANITIZE=ON -DTQ_FUZZ=ON -DTQ_BUILD_BENCH=OFF -DTQ_CUDA=OFF \
	  -DTQ_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900 -LE fuzz -E '$(SAN_SLOW)'
	cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L fuzz

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
