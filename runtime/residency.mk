# Plane residency and level switching (issue 5): io_uring page-in/drop
# mechanisms, the switching state machine, `nestquant switch`, and the
# switch benchmark.
#
#   make bench-switch   NestQuant level switching against separate INT8/INT6
#                       files (the paper's baseline), ResNet-18/50/101: writes
#                       docs/bench-switch.json, the "Switching" section of
#                       docs/performance.md and docs/bench-switch.png.
#
# Knobs: SWITCH_MODELS=resnet18,resnet50,resnet101  SWITCH_CYCLES=15
#        SWITCH_OUT=docs  SWITCH_LABEL="Smoke run"  SWITCH_MODES=exact,compact
LIBNQ_SRCS += runtime/residency.c runtime/switch.c
LIBNQ_LIBS += -luring
CLI_SRCS += runtime/cli/cmd_switch.c runtime/cli/cmd_switch_bench.c
SWITCH_MODELS ?= resnet18,resnet50,resnet101
SWITCH_CYCLES ?= 15
SWITCH_OUT ?= docs
SWITCH_LABEL ?=
SWITCH_MODES ?= exact,compact

.PHONY: bench-switch
bench-switch: $(NESTQUANT)
	$(Q)O=$(O) NESTQUANT=$(NESTQUANT) MAKE="$(MAKE)" SWITCH_MODELS=$(SWITCH_MODELS) \
		SWITCH_CYCLES=$(SWITCH_CYCLES) SWITCH_OUT=$(SWITCH_OUT) \
		SWITCH_LABEL="$(SWITCH_LABEL)" SWITCH_MODES=$(SWITCH_MODES) \
		scripts/switch-latency.sh

# Accuracy at each budget step (docs/accuracy.md "Graded switching").
# Knobs: GRADED_MODELS=models/resnet-small.onnx,models/mobilenet.onnx GRADED_STEPS=6 GRADED_LIMIT=0
.PHONY: graded-accuracy
graded-accuracy: $(NESTQUANT)
	$(Q)O=$(O) NESTQUANT=$(NESTQUANT) scripts/graded-accuracy.sh
