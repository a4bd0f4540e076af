# NestQuant — top-level build.
#
#   make            library (static + shared), the nestquant CLI, BPF objects
#   make check      every test this machine can run; one summary line per suite
#   make demo       the main job (see README.md)
#   make kmod       the kernel module (KVER=... or KDIR=...)
#   make fuzz       libFuzzer campaigns (clang)
#   V=1             show full commands;  SAN=address,undefined  sanitizer build
#
# Each component adds its sources and tests in its own fragment (*/*.mk); this
# file holds only what they share.  Everything built goes under $(O)/.

.DELETE_ON_ERROR:
.SUFFIXES:
# Keep intermediate objects (test objects would otherwise be rebuilt each run).
.SECONDARY:
.DEFAULT_GOAL := all

V ?= 0
ifeq ($(V),1)
Q :=
msg =
else
Q := @
msg = @printf '  %-9s %s\n' '$(1)' '$(2)';
endif

SAN ?=
ifeq ($(SAN),)
O ?= build
else
O ?= build/san-$(subst $(comma),-,$(SAN))
endif
comma := ,

CC ?= cc
CLANG ?= clang
AR ?= ar
OPT ?= -O2 -g
# Project folders are quote-only include paths (-iquote), so a project header
# can never shadow a system one (<signal.h> vs runtime/signal.h).
NQ_CFLAGS := -std=gnu11 $(OPT) -Wall -Wextra -Wshadow -Wno-missing-field-initializers \
	-fPIC -fvisibility=hidden -D_GNU_SOURCE -MMD -MP \
	-Iruntime/include -iquote common -iquote format -iquote runtime -iquote convert \
	-iquote $(O) -iquote $(O)/gen
NQ_LDFLAGS :=
ifneq ($(SAN),)
NQ_CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
NQ_LDFLAGS += -fsanitize=$(SAN)
endif
NQ_CFLAGS += $(CFLAGS) $(CPPFLAGS)
NQ_LDFLAGS += $(LDFLAGS)

# Filled in by the fragments.
LIBNQ_SRCS :=		# libnestquant: common, format, runtime
LIBNQ_LIBS := -lpthread -lm
CONVERT_SRCS :=		# the converter (linked into the CLI, not the device library)
CONVERT_LIBS :=
CLI_SRCS :=		# the nestquant command
CHECK_SUITES :=		# Check unit-test programs: tests/check_<name>.c -> $(O)/tests/check_<name>
INTEGRATION_TESTS :=	# scripts under tests/integration/, exit 0 pass / 77 skip
GENERATED :=		# headers that must exist before any object is compiled
ALL_TARGETS :=

LIBNQ_SRCS += common/error.c

include format/format.mk
include runtime/runtime.mk
include convert/convert.mk
include bpf/bpf.mk
include kmod/kmod.mk
include models/models.mk
include tests/tests.mk

objs = $(patsubst %.c,$(O)/%.o,$(1))

LIBNQ_OBJS := $(call objs,$(LIBNQ_SRCS))
CONVERT_OBJS := $(call objs,$(CONVERT_SRCS))
CLI_OBJS := $(call objs,$(CLI_SRCS))

LIBNQ_A := $(O)/libnestquant.a
LIBNQ_SO := $(O)/libnestquant.so
CONVERT_A := $(O)/libnqconvert.a
NESTQUANT := $(O)/nestquant

.PHONY: all deps check demo kmod fuzz clean
all: $(LIBNQ_A) $(LIBNQ_SO) $(NESTQUANT) $(ALL_TARGETS)

# Installing missing Debian packages is part of the build, so `make check` and
# `make demo` work as the first command on a fresh machine.  The script is a
# no-op (a few dpkg-query calls) when everything is present.
deps:
	$(Q)scripts/setup-deps.sh build

$(O)/%.o: %.c | deps $(GENERATED)
	$(call msg,CC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(NQ_CFLAGS) -c $< -o $@

$(LIBNQ_A): $(LIBNQ_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIBNQ_SO): $(LIBNQ_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,libnestquant.so.0 $(NQ_LDFLAGS) -o $@ $^ $(LIBNQ_LIBS)

$(CONVERT_A): $(CONVERT_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(NESTQUANT): $(CLI_OBJS) $(CONVERT_A) $(LIBNQ_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $(CLI_OBJS) $(CONVERT_A) $(LIBNQ_A) $(CONVERT_LIBS) $(LIBNQ_LIBS)

CHECK_BINS := $(addprefix $(O)/tests/,$(CHECK_SUITES))
$(O)/tests/check_%: $(O)/tests/check_%.o $(O)/tests/nq_test.o $(CONVERT_A) $(LIBNQ_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $< $(O)/tests/nq_test.o $(CONVERT_A) $(LIBNQ_A) \
		$(CONVERT_LIBS) $(LIBNQ_LIBS) $$(pkg-config --libs check)

# The test packages (Check, ONNX test vectors, the dataset, a kernel for qemu,
# the arm64 cross compiler) are installed first, then everything is built,
# then tests/run-suites.sh runs each suite and prints one line per suite.
check:
	$(Q)scripts/setup-deps.sh build test kmod cross
	$(Q)$(MAKE) --no-print-directory all check-build
	$(Q)O=$(O) tests/run-suites.sh $(CHECK_BINS) -- $(INTEGRATION_TESTS)

.PHONY: check-build
check-build: $(CHECK_BINS) $(CHECK_EXTRA)

# Kernel module: default to the newest kernel tree under /lib/modules, since
# the running kernel may have no build tree (or no module support at all).
KVER ?= $(shell ls -1 /lib/modules 2>/dev/null | while read v; do [ -d /lib/modules/$$v/build ] && echo $$v; done | sort -V | tail -n 1)
KDIR ?= /lib/modules/$(KVER)/build
kmod:
	@[ -d "$(KDIR)" ] || { echo "make kmod: no kernel build tree at '$(KDIR)' (install linux-headers-amd64, or set KVER=/KDIR=)" >&2; exit 1; }
	$(Q)$(MAKE) -C $(KDIR) M=$(CURDIR) O= modules

clean:
	$(call msg,CLEAN,$(O))
	$(Q)rm -rf build
	$(Q)[ ! -d "$(KDIR)" ] || $(MAKE) -s -C $(KDIR) M=$(CURDIR) clean >/dev/null 2>&1 || true

-include $(shell find $(O) -name '*.d' 2>/dev/null)
include scripts/bench.mk
include tests/fuzz/fuzz.mk
include examples/examples.mk
include dist/install.mk
