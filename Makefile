# Thin wrapper over CMake. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# they install what is missing, configure, build, and run the flagship example or every test.
BUILD    ?= build
JOBS     ?= $(shell nproc)
CMAKEOPT ?=

.PHONY: all deps test-deps build demo test test-sanitize fuzz fuzz-build fuzz-ci clean

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

# Each fuzz harness (tests/fuzz/) as a libFuzzer target (clang-19, ASan + UBSan) for FUZZ_SECONDS
# (random inputs), or with FUZZ_RUNS=N for exactly N executions from a fixed seed (CI: the same
# inputs on every run), from its seed corpus and regression files; a crash, leak or sanitizer report
# fails the target and leaves the input in build-fuzz/findings/ (add it under
# tests/fuzz/regressions/<target>/).
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_TARGETS ?= fuzz_plan fuzz_safetensors fuzz_idx fuzz_image
fuzz-build: deps
	@scripts/install-deps.sh --fuzz
	CC=clang-19 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRAFT_FUZZ=ON -DGRAFT_SANITIZE=ON $(CMAKEOPT)
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)

fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do scripts/fuzz.sh build-fuzz $$t $(FUZZ_SECONDS) $(FUZZ_RUNS) || exit 1; done

# CI's short version: about a minute per target, a fixed number of executions from seed 1, so that a
# submission's result does not depend on luck (make fuzz explores; this guards what was explored).
fuzz-ci: fuzz-build
	scripts/fuzz.sh build-fuzz fuzz_plan 0 200000
	scripts/fuzz.sh build-fuzz fuzz_safetensors 0 150000
	scripts/fuzz.sh build-fuzz fuzz_idx 0 80000
	scripts/fuzz.sh build-fuzz fuzz_image 0 25000

clean:
	rm -rf $(BUILD) build-san build-fuzz
