# format/ — the .nq file: reader, writer, checksums.  See format/SPEC.md.
LIBNQ_SRCS += format/crc32c.c format/plane.c format/reader.c format/validate.c \
	format/writer.c
CLI_SRCS += runtime/cli/cmd_info.c

# Test tools: the sample model writer (the source of the bad-file corpus) and
# the corpus generator.
FORMAT_TOOLS := $(O)/tests/tools/write-sample-nq $(O)/tests/tools/gen-bad-nq
CHECK_EXTRA += $(FORMAT_TOOLS)

.PRECIOUS: $(O)/tests/tools/%.o
$(O)/tests/tools/%: $(O)/tests/tools/%.o $(LIBNQ_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $< $(LIBNQ_A) $(LIBNQ_LIBS)

# The main job (scripts/demo.sh, docs/demo.md): convert the reference model,
# evaluate both levels, serve it under a memory limit while a hog comes and
# goes, summary and timeline plot, in $(O)/demo.  The clock starts when make
# reads this file, so the total it prints includes the build.
# DEMO_ARGS=--quick: the short version (1,000 test images, one hog cycle).
ifneq ($(filter demo,$(MAKECMDGOALS)),)
NQ_DEMO_T0 := $(shell date +%s%N)
endif
demo: all $(O)/tests/tools/memhog
	$(Q)O=$(O) NQ_DEMO_BUILT=1 NQ_DEMO_T0=$(NQ_DEMO_T0) scripts/demo.sh $(DEMO_ARGS)

# Regenerate the committed corpus of bad files (tests/corpus/format-bad) and
# the good file it is derived from (tests/corpus/format-good).  Deterministic.
.PHONY: format-corpus
format-corpus: $(FORMAT_TOOLS)
	$(Q)mkdir -p tests/corpus/format-good tests/corpus/format-bad
	$(Q)$(O)/tests/tools/write-sample-nq tests/corpus/format-good/sample.nq
	$(Q)$(O)/tests/tools/gen-bad-nq tests/corpus/format-good/sample.nq tests/corpus/format-bad

# The libFuzzer target for the reader (tests/fuzz/fuzz_nq_reader.c) is built
# and run by tests/fuzz/fuzz.mk.
