# format/ — the .nq file: reader, writer, checksums.  See format/SPEC.md.
LIBNQ_SRCS += format/crc32c.c format/plane.c format/reader.c format/validate.c \
	format/writer.c
CLI_SRCS += runtime/cli/cmd_info.c

# Test tools: the sample model writer (used by `make demo` and as the source
# of the bad-file corpus) and the corpus generator.
FORMAT_TOOLS := $(O)/tests/tools/write-sample-nq $(O)/tests/tools/gen-bad-nq
CHECK_EXTRA += $(FORMAT_TOOLS)

.PRECIOUS: $(O)/tests/tools/%.o
$(O)/tests/tools/%: $(O)/tests/tools/%.o $(LIBNQ_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $< $(LIBNQ_A) $(LIBNQ_LIBS)

# The main job, for now: write a real .nq file with the format library and
# show it.  Later issues replace the sample with a converted model.
DEMO_DIR := $(O)/demo
demo: all $(O)/tests/tools/write-sample-nq
	$(Q)mkdir -p $(DEMO_DIR)
	$(Q)$(O)/tests/tools/write-sample-nq $(DEMO_DIR)/sample.nq
	$(Q)$(NESTQUANT) info $(DEMO_DIR)/sample.nq

# Regenerate the committed corpus of bad files (tests/corpus/format-bad) and
# the good file it is derived from (tests/corpus/format-good).  Deterministic.
.PHONY: format-corpus
format-corpus: $(FORMAT_TOOLS)
	$(Q)mkdir -p tests/corpus/format-good tests/corpus/format-bad
	$(Q)$(O)/tests/tools/write-sample-nq tests/corpus/format-good/sample.nq
	$(Q)$(O)/tests/tools/gen-bad-nq tests/corpus/format-good/sample.nq tests/corpus/format-bad

# The libFuzzer target for the reader (tests/fuzz/fuzz_nq_reader.c) is built
# and run by tests/fuzz/fuzz.mk.
