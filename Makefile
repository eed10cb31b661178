# turboquant — `make run` and `make test` work on a fresh machine (they install what they need).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= $(if $(shell command -v nvcc),-DTQ_CUDA=ON,)

VENV ?= $(BUILD)/venv
# The Python package: scikit-build-core's own build folder, linking the library `build` made.
PY_BUILD_FLAGS = -Cbuild-dir=$(BUILD)/py -Ccmake.define.TQ_PREBUILT_LIB=$(abspath $(BUILD))/libtq.a

.PHONY: run test build setup model clean python python-test

setup:
	./scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Default model and text (SPEC §4).
model: setup
	./scripts/fetch_model.sh

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

clean:
	rm -rf $(BUILD)
