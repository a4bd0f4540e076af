# runtime/ — libnestquant (public header runtime/include/nestquant.h) and the CLI.
LIBNQ_SRCS +=
LIBNQ_LIBS +=
CLI_SRCS += runtime/cli/main.c
