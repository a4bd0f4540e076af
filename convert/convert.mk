# convert/ — ONNX import, graph normalisation, calibration, quantization, nesting.
CONVERT_SRCS +=
CONVERT_LIBS +=
include convert/onnx.mk
CONVERT_SRCS += convert/quant.c
CONVERT_SRCS += convert/nest.c
CONVERT_SRCS += convert/calib.c
include convert/accuracy.mk
