# models/ — reference models and benchmark models (scripts/train-reference.py).
# See models/README.md.  Both targets need torch: they install the "train"
# dependency group first.
#
#   make bench-models      ImageNet-shaped torchvision ResNets, random weights,
#                          FP32 + INT8 ONNX into models/cache/ (git-ignored)
#   make reference-models  retrain models/resnet-small.onnx and mobilenet.onnx
BENCH_MODELS ?= resnet18,resnet50,resnet101
TRAIN_PY := /usr/bin/python3 scripts/train-reference.py

.PHONY: bench-models reference-models
bench-models:
	$(Q)scripts/setup-deps.sh train
	$(Q)$(TRAIN_PY) --bench-models --bench-list $(BENCH_MODELS)

reference-models:
	$(Q)scripts/setup-deps.sh train
	$(Q)$(TRAIN_PY) --model resnet-small --threads 1
	$(Q)$(TRAIN_PY) --model mobilenet --threads 1
