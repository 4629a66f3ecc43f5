# Thin wrapper over CMake so that a newcomer needs two commands:
#   make demo   install packages, build, run the main job
#   make test   install packages, build with sanitizers, run every test
# Plain builds go to build/ (gcc, -Werror); the test build goes to build-san/
# (clang, ASan+UBSan, libFuzzer targets).

BUILD      ?= build
SAN_BUILD  ?= build-san
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=

.PHONY: all deps build build-san test demo fuzz soak lint format bench clean docker-test cross cross-test deb deb-test

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

build-san: deps
	CC=clang cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DUPK_SANITIZE=ON
	cmake --build $(SAN_BUILD) -j $(JOBS)

# The gcc build is compiled too, so that -Werror holds for both compilers.
test: build build-san
	cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	@bash scripts/demo.sh $(BUILD)

fuzz: build-san
	cmake -S . -B $(SAN_BUILD) -DUPK_FUZZ_SECONDS=120
	cd $(SAN_BUILD) && ctest --output-on-failure -L fuzz

soak: build-san
	@if [ -x scripts/soak.sh ]; then bash scripts/soak.sh $(SAN_BUILD); else echo "soak: no soak suite yet"; fi

lint: deps build
	@bash scripts/lint.sh $(BUILD)

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

bench: build
	@bash bench/run.sh $(BUILD)

docker-test:
	@bash docker/test.sh

# The agent for an ARM board: make cross ARCH=arm64|armhf [STATIC=1] [TLS=0]
# (docs/agent.md, "Building for your board").
ARCH ?= arm64
cross:
	@ARCH=$(ARCH) STATIC=$(STATIC) TLS=$(TLS) PAGE_SIZE=$(PAGE_SIZE) JOBS=$(JOBS) bash scripts/cross.sh

# The arm64 agent under qemu-user against the native broker, plugin and
# controller of $(BUILD): full, delta and a rolled-back release
# (tests/e2e/cross/arm64_qemu.sh). .ci/run runs it after make test.
cross-test: build
	@ARCH=arm64 STATIC= TLS=1 PAGE_SIZE= JOBS=$(JOBS) CROSS_BUILD=build-cross-arm64 bash scripts/cross.sh
	bash tests/e2e/cross/arm64_qemu.sh $(BUILD) build-cross-arm64/bin/upkeep-agent

clean:
	rm -rf $(BUILD) $(SAN_BUILD)

# Debian packages upkeep-agent, upkeep-broker-plugin, upkeep (debian/), built
# with dpkg-buildpackage into build-deb/ and checked with lintian.
deb:
	@JOBS=$(JOBS) bash scripts/deb.sh

# The packages installed in a clean bookworm container, their units checked
# with systemd-analyze verify (tests/deb/install.sh).
deb-test: deb
	@bash tests/deb/install.sh build-deb
