# convert/ — ONNX import, graph normalisation, calibration, quantization, nesting.
CONVERT_SRCS +=
CONVERT_LIBS +=
