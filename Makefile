# jobplane — the two commands a newcomer types are `make run` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh), then build with
# Meson + Ninja into build/.

BUILD      ?= build
ASAN_BUILD ?= build-asan
BENCH_BUILD ?= build-bench
LISTEN     ?= 127.0.0.1:8080
DATABASE   ?= sqlite://./jobplane.db
MESON_OPTS ?= -Dwerror=true

.PHONY: all build deps run test test-unit test-integration test-asan bench clean \
        stack stack-demo release

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The embedded job system: HTTP API, SQLite and the engine in one process.
run: build
	./$(BUILD)/jobplane-server --listen $(LISTEN) --database $(DATABASE)

$(ASAN_BUILD)/build.ninja: | deps
	CC=clang meson setup $(ASAN_BUILD) $(MESON_OPTS) -Db_sanitize=address,undefined \
	    -Db_lundef=false -Dbuildtype=debug

# Every test, twice: a normal gcc build, then a clang AddressSanitizer + UBSan build.
test: build $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

test-unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

test-integration: build
	meson test -C $(BUILD) --suite integration --print-errorlogs

test-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	./scripts/run-tests.sh $(ASAN_BUILD)

# The docker-compose topology as local processes (Redis, PostgreSQL, the control
# plane, two workers), until Ctrl-C; stack-demo runs a mixed batch through it.
stack: build
	./scripts/stack.sh run $(BUILD)

stack-demo: build
	./scripts/stack.sh demo $(BUILD)

# The binaries as the container images build them (scripts/build-release.sh):
# the control plane without the engine, the worker, the CLI.
RELEASE ?= build-release
release: deps
	./scripts/build-release.sh server $(RELEASE)/server
	./scripts/build-release.sh worker $(RELEASE)/worker
	./scripts/build-release.sh cli $(RELEASE)/cli

# The benchmark (bench/run.py, about 6 minutes; BENCH_ARGS=--quick for a short
# run). An optimised build of its own (build-bench/), so the others stay as they are.
$(BENCH_BUILD)/build.ninja: | deps
	meson setup $(BENCH_BUILD) $(MESON_OPTS) -Dbuildtype=release -Db_ndebug=true

bench: deps $(BENCH_BUILD)/build.ninja
	ninja -C $(BENCH_BUILD) jobplane-server jobplane-worker jobplane bench/loadgen
	/usr/bin/python3 bench/run.py --build $(BENCH_BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD)
