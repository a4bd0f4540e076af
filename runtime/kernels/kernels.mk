# runtime/kernels/ — SIMD kernel tables.  Each ISA's translation unit gets
# its own flags; the rest of the library stays baseline, and select.c picks a
# table once at load from cpuid (one binary for every x86-64 CPU).
LIBNQ_SRCS += runtime/threadpool.c runtime/kernels/pack.c runtime/kernels/cpu.c
KERNELS_ARCH := $(shell $(CC) -dumpmachine)
ifneq ($(filter x86_64%,$(KERNELS_ARCH)),)
LIBNQ_SRCS += runtime/kernels/avx2.c runtime/kernels/avx512.c
$(O)/runtime/kernels/avx2.o: NQ_CFLAGS += -mavx2 -mfma
$(O)/runtime/kernels/avx512.o: NQ_CFLAGS += -mavx2 -mfma -mavx512f -mavx512bw -mavx512vl \
	-mavx512dq -mavx512vnni
$(O)/runtime/kernels/select.o: NQ_CFLAGS += -DNQ_HAVE_AVX2 -DNQ_HAVE_AVX512
endif
ifneq ($(filter aarch64%,$(KERNELS_ARCH)),)
LIBNQ_SRCS += runtime/kernels/neon.c
$(O)/runtime/kernels/select.o: NQ_CFLAGS += -DNQ_HAVE_NEON
endif

# Kernel micro-benchmark: VNNI peak and conv GEMM throughput (not a test).
.PHONY: bench-kernels
$(O)/bench/bench_kernels: $(O)/runtime/bench/bench_kernels.o $(O)/libnestquant.a
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $< $(O)/libnestquant.a $(LIBNQ_LIBS)
bench-kernels: $(O)/bench/bench_kernels
	$(Q)$(O)/bench/bench_kernels $(BENCH_ARGS)

# arm64: the NEON table and its unit tests, cross-compiled (static, with the
# Check subset in tests/minicheck/) and run under qemu-user by
# tests/integration/kernels-arm64.sh.  Built by `make check` when the cross
# compiler is installed (scripts/setup-deps.sh group "cross").
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_KERNEL_TEST := $(O)/arm64/check_kernels
ARM64_KERNEL_SRCS := common/error.c format/plane.c runtime/requant.c runtime/threadpool.c \
	runtime/kernels/scalar.c runtime/kernels/select.c runtime/kernels/pack.c \
	runtime/kernels/cpu.c runtime/kernels/neon.c \
	tests/check_kernels.c tests/nq_test.c tests/minicheck/minicheck.c
$(ARM64_KERNEL_TEST): $(ARM64_KERNEL_SRCS) $(wildcard runtime/kernels/*.h runtime/*.h format/*.h common/*.h) \
		tests/minicheck/check.h tests/nq_test.h
	$(call msg,CC-ARM64,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(ARM64_CC) -std=gnu11 -O2 -g -Wall -Wextra -Wno-missing-field-initializers \
		-ffp-contract=off -D_GNU_SOURCE -DNQ_HAVE_NEON -static -Itests/minicheck -Icommon \
		-Iformat -Iruntime/include -Iruntime -o $@ $(ARM64_KERNEL_SRCS) -lpthread -lm
ifneq ($(shell command -v $(ARM64_CC) 2>/dev/null),)
CHECK_EXTRA += $(ARM64_KERNEL_TEST)
endif
