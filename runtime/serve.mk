# The inference server (`nestquant serve`), its protocol (runtime/serve.c,
# fuzzed by tests/fuzz/fuzz_serve_request.c), its client (`nestquant query`)
# and pressure-driven switching in any program (runtime/autoswitch.c).
#
#   make soak               >= 200 pressure cycles of serve under a memory hog
#                           (not in CI): zero OOM kills, zero wrong answers
#   make bench-pressure     scripts/pressure-latency.sh (root): pressure onset ->
#                           switch done, BPF vs PSI, switching on vs off; writes
#                           docs/pressure.json, the "Pressure → switch" section
#                           of docs/performance.md and docs/pressure-*.png
LIBNQ_SRCS += runtime/serve.c runtime/autoswitch.c
CLI_SRCS += runtime/cli/cmd_serve.c runtime/cli/cmd_query.c
SERVE_TOOLS := $(O)/tests/tools/memhog $(O)/tests/tools/write-mlp-nq
CHECK_EXTRA += $(SERVE_TOOLS)
CHECK_SUITES += check_serve
INTEGRATION_TESTS += tests/integration/serve-protocol.sh tests/integration/serve-pressure.sh

SOAK_CYCLES ?= 200
.PHONY: soak bench-pressure
soak: all $(SERVE_TOOLS)
	$(Q)O=$(O) SOAK_CYCLES=$(SOAK_CYCLES) tests/integration/serve-pressure.sh --soak

PRESSURE_MODELS ?= resnet-small,mobilenet,mlp
PRESSURE_CYCLES ?= 20
bench-pressure: all $(SERVE_TOOLS)
	$(Q)O=$(O) PRESSURE_MODELS=$(PRESSURE_MODELS) PRESSURE_CYCLES=$(PRESSURE_CYCLES) \
		scripts/pressure-latency.sh

# libFuzzer target for the protocol (built and run by tests/fuzz/fuzz.mk).
FUZZ_TARGETS += serve_request
FUZZ_SRCS_serve_request := common/error.c runtime/serve.c runtime/npy.c
FUZZ_LIBS_serve_request := -lm
FUZZ_SEEDS_serve_request := tests/corpus/serve_request
