# convert/ — the converter pipeline, `nestquant convert`, and the accuracy
# report.  (Included from convert/convert.mk.)
#
#   make accuracy         regenerate docs/accuracy.md (every reference model,
#                         every level / rounding / residual mode, evaluated
#                         with the integer executor via `nestquant eval` on the
#                         whole test set; cold: 15.9 min on the shared 2-core
#                         machine, reruns reuse $(ACCURACY_WORK))
#   make bench-convert    time converting ImageNet-shaped ResNet-18 (squant) into
#                         docs/bench-convert.json
CONVERT_SRCS += convert/pipeline.c convert/calibrate.c convert/write_nq.c convert/calib_data.c \
	convert/sha256.c
CONVERT_LIBS += -ljpeg -lpng
CLI_SRCS += runtime/cli/cmd_convert.c
CONVERT_TOOLS := $(O)/convert/tools/fp32-eval $(O)/convert/tools/level-digest

ACCURACY_MODELS ?= resnet-small mobilenet
ACCURACY_WORK ?= $(O)/accuracy

.PHONY: accuracy bench-convert
accuracy: all $(CONVERT_TOOLS)
	$(Q)O=$(O) WORK=$(ACCURACY_WORK) MODELS="$(ACCURACY_MODELS)" /usr/bin/python3 scripts/accuracy.py docs/accuracy.md

bench-convert: all $(CONVERT_TOOLS)
	$(Q)[ -f models/cache/resnet18.onnx ] || $(MAKE) --no-print-directory bench-models BENCH_MODELS=resnet18
	$(Q)O=$(O) scripts/bench-convert.sh

# Tools of the accuracy driver: FP32 top-1 with the reference executor, and
# a digest of what the integer executor computes with at one level.
CHECK_EXTRA += $(CONVERT_TOOLS)
.PRECIOUS: $(O)/convert/tools/%.o
$(O)/convert/tools/%: $(O)/convert/tools/%.o $(CONVERT_A) $(LIBNQ_A)
	$(call msg,LD,$@)
	$(Q)$(CC) $(NQ_LDFLAGS) -o $@ $< $(CONVERT_A) $(LIBNQ_A) $(CONVERT_LIBS) $(LIBNQ_LIBS)
