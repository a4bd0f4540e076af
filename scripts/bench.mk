# scripts/bench.mk — benchmarks (not tests: they measure, they do not judge a build).
#
#   make bench-infer   NestQuant against ONNX Runtime (npm onnxruntime-node), side by
#                      side and interleaved, on ImageNet-shaped ResNet-18/50/101:
#                      writes the "Inference" section of docs/performance.md and
#                      docs/bench-infer.json.  Installs the peer into $(O)/ort-peer and
#                      exports the models (make bench-models) when they are missing.
#
# Knobs: BENCH_MODELS=resnet18,resnet50  BENCH_RUNS=30  BENCH_WARMUP=5
#        BENCH_THREADS=2  BENCH_GAP_MS=10  BENCH_OUT=docs  BENCH_LABEL="Smoke run"
#        BENCH_CACHE=models/cache (where NAME.onnx and NAME-int8.onnx are)
#        NQ_CONVERT_ARGS="--levels 8,6 --calib none --calib-count 16 --input-scale 1"  NQ_ISA=scalar|avx2|avx512
BENCH_RUNS ?= 30
BENCH_WARMUP ?= 5
BENCH_THREADS ?= 2
BENCH_GAP_MS ?= 10
BENCH_OUT ?= docs
BENCH_LABEL ?=
NQ_CONVERT_ARGS ?= --levels 8,6 --calib none --calib-count 16 --input-scale 1

.PHONY: bench-infer
bench-infer: $(NESTQUANT)
	$(Q)O=$(O) NESTQUANT=$(NESTQUANT) MAKE="$(MAKE)" BENCH_MODELS=$(BENCH_MODELS) \
		BENCH_RUNS=$(BENCH_RUNS) BENCH_WARMUP=$(BENCH_WARMUP) \
		BENCH_THREADS=$(BENCH_THREADS) BENCH_GAP_MS=$(BENCH_GAP_MS) \
		BENCH_OUT=$(BENCH_OUT) BENCH_LABEL="$(BENCH_LABEL)" \
		NQ_CONVERT_ARGS="$(NQ_CONVERT_ARGS)" scripts/bench-infer.sh
