# examples/ — programs a user copies; each uses only <nestquant.h>.
#
#   make examples      $(O)/examples/classify, linked against libnestquant.a
#
# Compiled with the public include folder alone, so an example that reached
# for an internal header would not build.
EXAMPLES := $(O)/examples/classify
EXAMPLE_CFLAGS := -std=c11 $(OPT) -Wall -Wextra -D_POSIX_C_SOURCE=200809L -Iruntime/include

.PHONY: examples
examples: $(EXAMPLES)

$(O)/examples/%: examples/%.c runtime/include/nestquant.h $(LIBNQ_A)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(EXAMPLE_CFLAGS) $(NQ_LDFLAGS) -o $@ $< $(LIBNQ_A) $(LIBNQ_LIBS)

# `make check` builds them too, so an API change that breaks them shows.
check-build: $(EXAMPLES)
