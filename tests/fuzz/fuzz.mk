# tests/fuzz/ — libFuzzer targets (clang), one per parser of untrusted bytes.
#
#   make fuzz                 run every target for FUZZ_SECONDS (default 60)
#   make fuzz FUZZ_TARGETS=npy FUZZ_SECONDS=600     one target, a campaign
#   make fuzz-build           only build $(O)/fuzz/fuzz_<target>
#
# Each target links the sources it exercises, compiled again with
# -fsanitize=fuzzer-no-link,address,undefined into $(O)/fuzz/obj/.  Seeds come
# from the committed corpus folders (only read: libFuzzer's new inputs go to
# $(O)/fuzz/<target>/corpus, findings to $(O)/fuzz/<target>/artifacts).  Every
# crash ever found is committed to the target's corpus folder, so the smoke in
# `make check` (tests/integration/fuzz-smoke.sh) replays it.

FUZZ_SECONDS ?= 60
# A new target: tests/fuzz/fuzz_<name>.c, then FUZZ_TARGETS, FUZZ_SRCS_<name>,
# FUZZ_LIBS_<name> and FUZZ_SEEDS_<name> here (above the rules below), and
# optionally tests/fuzz/<name>.dict.
FUZZ_TARGETS += nq_reader onnx_import npy idx

FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -D_GNU_SOURCE \
	-Iruntime/include -iquote common -iquote format -iquote runtime -iquote convert \
	-iquote $(O)/gen

# The .nq reader: the format library alone.
FUZZ_SRCS_nq_reader := common/error.c format/crc32c.c format/plane.c format/reader.c \
	format/validate.c
FUZZ_LIBS_nq_reader := -lm
FUZZ_SEEDS_nq_reader := tests/corpus/format-good tests/corpus/format-bad

# The ONNX importer, shape inference, normalisation and the FP32 executor.
FUZZ_SRCS_onnx_import := common/error.c $(O)/gen/onnx.pb-c.c convert/graph.c \
	convert/onnx_import.c convert/shape.c convert/normalise.c convert/fp32_exec.c \
	convert/fp32_kernels.c
FUZZ_LIBS_onnx_import := -lprotobuf-c -lpthread -lm
FUZZ_SEEDS_onnx_import := tests/corpus/onnx_import

# The .npy and IDX readers.
FUZZ_SRCS_npy := common/error.c runtime/npy.c
FUZZ_LIBS_npy := -lm
FUZZ_SEEDS_npy := tests/corpus/npy
FUZZ_SRCS_idx := common/error.c runtime/idx.c
FUZZ_LIBS_idx := -lz
FUZZ_SEEDS_idx := tests/corpus/idx

FUZZ_BINS := $(addprefix $(O)/fuzz/fuzz_,$(FUZZ_TARGETS))

.PRECIOUS: $(O)/fuzz/obj/%.o
$(O)/fuzz/obj/%.o: %.c | deps $(GENERATED)
	$(call msg,FUZZCC,$<)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

# protoc-c's output is not our code: keep its warnings quiet.
$(O)/fuzz/obj/$(O)/gen/onnx.pb-c.o: FUZZ_CFLAGS += -w

define fuzz_target
$(O)/fuzz/fuzz_$(1): $(O)/fuzz/obj/tests/fuzz/fuzz_$(1).o $(patsubst %.c,$(O)/fuzz/obj/%.o,$(FUZZ_SRCS_$(1)))
	$$(call msg,FUZZLD,$$@)
	$(Q)$(CLANG) $(FUZZ_SAN) -fsanitize=fuzzer -o $$@ $$^ $(FUZZ_LIBS_$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_target,$(t))))

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)

# Every target runs even when one fails; the exit status says whether any did.
fuzz: $(FUZZ_BINS)
	$(Q)fail=0; \
	$(foreach t,$(FUZZ_TARGETS),tests/fuzz/run.sh $(O)/fuzz/fuzz_$(t) $(FUZZ_SECONDS) \
		$(O)/fuzz/$(t) $(FUZZ_SEEDS_$(t)) || fail=1;) \
	exit $$fail

# The smoke inside `make check`: every target briefly, from its committed
# corpus alone (every regression file is replayed first), in a fresh folder.
FUZZ_SMOKE_SECONDS ?= 5
.PHONY: fuzz-smoke
fuzz-smoke: $(FUZZ_BINS)
	$(Q)fail=0; \
	$(foreach t,$(FUZZ_TARGETS),rm -rf $(O)/fuzz/smoke/$(t); \
		tests/fuzz/run.sh $(O)/fuzz/fuzz_$(t) $(FUZZ_SMOKE_SECONDS) \
		$(O)/fuzz/smoke/$(t) $(FUZZ_SEEDS_$(t)) || fail=1;) \
	exit $$fail
