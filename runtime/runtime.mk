# runtime/ — libnestquant (public header runtime/include/nestquant.h) and the CLI.
LIBNQ_SRCS +=
LIBNQ_SRCS += runtime/dataset.c runtime/idx.c runtime/npy.c
LIBNQ_SRCS += runtime/kmod_region.c runtime/kmod_backing.c
LIBNQ_LIBS +=
LIBNQ_LIBS += -lz
CLI_SRCS += runtime/cli/main.c
# Runtime core: model, executor, arena, integer semantics, kernel table.
LIBNQ_SRCS += runtime/model.c runtime/session.c runtime/arena.c runtime/requant.c \
	runtime/kernels/select.c runtime/kernels/scalar.c
CLI_SRCS += runtime/cli/cmd_run.c runtime/cli/cmd_eval.c
# The float edges of the executor are specified as separate f32 operations.
$(O)/runtime/session.o $(O)/runtime/requant.o $(O)/runtime/kernels/scalar.o: NQ_CFLAGS += -ffp-contract=off
CLI_SRCS += runtime/cli/cmd_bench.c
include runtime/kernels/kernels.mk
# Pressure-driven switching: signal sources, policy, controller, memory cgroups; `nestquant launch`.
LIBNQ_SRCS += runtime/signal.c runtime/signal_bpf.c runtime/signal_psi.c runtime/policy.c \
	runtime/controller.c runtime/cgroup.c
CLI_SRCS += runtime/cli/cmd_launch.c runtime/cli/cmd_pressure.c
include runtime/residency.mk
include runtime/serve.mk
