# Thin wrapper over CMake. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# they install what is missing, configure, build, and run the flagship example or every test.
BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKEOPT ?=

.PHONY: all deps test-deps build demo test test-sanitize clean

all: build

deps:
	@scripts/install-deps.sh

test-deps:
	@scripts/install-deps.sh --test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKEOPT)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/graft train examples/mlp/plan.yaml --metrics $(BUILD)/mlp-metrics.jsonl

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite again, built with AddressSanitizer + UBSan in a second tree.
test-sanitize: test-deps
	cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DGRAFT_SANITIZE=ON $(CMAKEOPT)
	cmake --build build-san -j $(JOBS)
	cd build-san && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) build-san
