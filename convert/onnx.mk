# convert/ — ONNX import: protobuf-c code generated at build time from the
# onnx.proto that Debian's libonnx-dev ships, the FP32 graph IR, the
# normalisation passes and the FP32 reference executor.
ONNX_PROTO ?= /usr/include/onnx/onnx.proto

CONVERT_SRCS += $(O)/gen/onnx.pb-c.c convert/graph.c convert/onnx_import.c \
	convert/shape.c convert/normalise.c convert/fp32_exec.c \
	convert/fp32_kernels.c
CONVERT_LIBS += -lprotobuf-c -lpthread -lm
GENERATED += $(O)/gen/onnx.pb-c.h

# The .proto comes with libonnx-dev, which `deps` installs on a fresh machine;
# this rule only orders it after that install, so that a plain `make` (not just
# `make check` / `make demo`) works as the first command too.
$(ONNX_PROTO): | deps ;

# protoc-c names its outputs after the .proto's base name.
$(O)/gen/onnx.pb-c.c $(O)/gen/onnx.pb-c.h &: $(ONNX_PROTO) | deps
	$(call msg,PROTOC,$<)
	$(Q)mkdir -p $(O)/gen
	$(Q)protoc-c --c_out=$(O)/gen -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

# The generated file is compiled from the build folder (objs maps it to
# $(O)/$(O)/gen/...); it is not our code, so keep its warnings quiet.
$(O)/$(O)/gen/onnx.pb-c.o: NQ_CFLAGS += -w

# The conformance table (docs/onnx-conformance.md) is written by the
# conformance suite; regenerate it with `make onnx-conformance`.
.PHONY: onnx-conformance
onnx-conformance: $(O)/tests/check_onnx_ops
	$(Q)NQ_CONFORMANCE_MD=docs/onnx-conformance.md CK_FORK=no $(O)/tests/check_onnx_ops
