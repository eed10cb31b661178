# turboquant — `make run` and `make test` work on a fresh machine (they install what they need).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= $(if $(shell command -v nvcc),-DTQ_CUDA=ON,)

.PHONY: run test build setup model models clean

setup:
	./scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Default model and text (SPEC §4).
model: setup
	./scripts/fetch_model.sh

# The whole model set (SPEC §8): smollm2-135m, qwen2.5-coder-1.5b, gemma3-270m.
models: setup
	./scripts/fetch_model.sh all

run: build model
	./scripts/run_main.sh $(BUILD)

test: build model
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

clean:
	rm -rf $(BUILD)
