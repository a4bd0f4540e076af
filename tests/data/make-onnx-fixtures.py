#!/usr/bin/python3
# Regenerates the small ONNX fixtures of tests/check_onnx_ops.c and
# tests/check_import.c.  Run with Debian's python (torch, onnx):
#     /usr/bin/python3 tests/data/make-onnx-fixtures.py
# Each model comes with a reference input and output (TensorProto .pb, as in
# ONNX's own test vectors) computed by torch / numpy.
import os
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20250601)


def save_pb(arr, name, path):
    t = numpy_helper.from_array(np.ascontiguousarray(arr), name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def tiny_cnn():
    """A PyTorch CNN with everything the normaliser folds or fuses."""
    import torch
    import torch.nn as nn

    torch.manual_seed(7)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, padding=1)
            self.b1 = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
            self.b2 = nn.BatchNorm2d(8)
            self.pw = nn.Conv2d(8, 16, 1)
            self.b3 = nn.BatchNorm2d(16)
            self.sc = nn.Conv2d(8, 16, 1, stride=2, dilation=1)
            self.pool = nn.MaxPool2d(2, ceil_mode=True)
            self.avg = nn.AvgPool2d(3, stride=1, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            a = torch.relu(self.b1(self.c1(x)))
            y = torch.clamp(self.b2(self.dw(a)), 0.0, 6.0)
            y = self.b3(self.pw(y))
            y = torch.relu(y + self.sc(a))
            y = self.avg(self.pool(y))
            y = torch.nn.functional.adaptive_avg_pool2d(y, 1)
            y = y.view(y.size(0), -1)
            return torch.softmax(self.fc(y), dim=1)

    m = Net()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for b in (m.b1, m.b2, m.b3):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.2, 0.2)
    m.eval()
    x = torch.from_numpy(rng.standard_normal((3, 1, 13, 13)).astype(np.float32))
    path = os.path.join(HERE, "tiny_cnn.onnx")
    torch.onnx.export(m, x, path, opset_version=13, input_names=["input"],
                      output_names=["prob"], dynamic_axes={"input": {0: "batch"}, "prob": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with torch.no_grad():
        y = m(x).numpy()
    save_pb(x.numpy(), "input", os.path.join(HERE, "tiny_cnn.input.pb"))
    save_pb(y, "prob", os.path.join(HERE, "tiny_cnn.output.pb"))
    print("tiny_cnn.onnx:", sorted({n.op_type for n in onnx.load(path).graph.node}))


def conv_bn_gemm():
    """Built with the onnx helper API: Conv -> BatchNormalization -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm(transB=0, alpha, beta) -> MatMul -> Clip."""
    W = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.5
    B = rng.standard_normal(4).astype(np.float32) * 0.1
    scale = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    bias = rng.uniform(-0.3, 0.3, 4).astype(np.float32)
    mean = rng.uniform(-0.5, 0.5, 4).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    G = rng.standard_normal((4, 6)).astype(np.float32)
    C = rng.standard_normal(6).astype(np.float32)
    M = rng.standard_normal((6, 5)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((W, "W"), (B, "B"), (scale, "scale"), (bias, "bias"), (mean, "mean"), (var, "var"),
              (G, "G"), (C, "C"), (M, "M"), (np.array(-0.5, np.float32), "lo"),
              (np.array(0.75, np.float32), "hi"))]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"],
                         name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["r2"], name="id"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "G", "C"], ["g"], name="gemm", alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["g", "M"], ["mm"], name="mm"),
        helper.make_node("Clip", ["mm", "lo", "hi"], ["y"], name="clip"),
    ]
    graph = helper.make_graph(nodes, "conv_bn_gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, "conv_bn_gemm.onnx"))

    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    # numpy reference
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    c = np.zeros((2, 4, 6, 6), np.float32)
    for i in range(6):
        for j in range(6):
            c[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], W) + B
    bn = (c - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3) \
        * scale[None, :, None, None] + bias[None, :, None, None]
    r = np.maximum(bn, 0)
    f = r.mean(axis=(2, 3))
    g = 0.5 * f @ G + 2.0 * C
    y = np.clip(g @ M, -0.5, 0.75).astype(np.float32)
    save_pb(x, "x", os.path.join(HERE, "conv_bn_gemm.input.pb"))
    save_pb(y, "y", os.path.join(HERE, "conv_bn_gemm.output.pb"))


if __name__ == "__main__":
    conv_bn_gemm()
    tiny_cnn()
