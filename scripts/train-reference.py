#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Train and export NestQuant's reference models.

  scripts/train-reference.py --model resnet-small [--epochs 4]
  scripts/train-reference.py --model mobilenet [--epochs 3]
  scripts/train-reference.py --verify models/resnet-small.onnx
  scripts/train-reference.py --bench-models [--bench-list resnet18,resnet50,resnet101]

Fashion-MNIST is read straight from the IDX files of Debian's
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, or --data-dir, or
$NQ_FASHION_MNIST_DIR); nothing is downloaded.

The exported graphs take float32 NCHW [N,1,28,28] images scaled to [0,1] and
return [N,10] logits.  They contain no normalisation step at all: the first
Conv+BatchNormalization learns whatever scale and shift the data needs, so any
ONNX consumer runs the file with no side information.  BatchNormalization is
kept in the graph (the converter folds it): torch folds BN into Conv when it
exports in EVAL mode, so we export in PRESERVE mode with the model in eval(),
which keeps BN as an inference-mode BatchNormalization node.

Torch 1.13 / onnx 1.12 have no ONNX reference evaluator (onnx.reference came
in 1.13), so --verify runs the exported file through a small numpy interpreter
in this script that reads only the ONNX protobuf (no torch), and reports its
top-1 on the full test set plus the largest logit difference against torch.

--bench-models writes ImageNet-shaped torchvision ResNets with random weights
(BN statistics refreshed on random data first, otherwise the logits explode)
to models/cache/, as FP32 ONNX and as INT8 ONNX from torch FX post-training
quantization with the onednn engine (Debian's torch has no fbgemm).
"""
import argparse
import gzip
import json
import os
import platform
import struct
import sys
import time

import numpy as np

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.environ.get("NQ_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------
# IDX reader (gzip or plain)

def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad IDX magic")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX dtype 0x{data[2]:02x} is not u8")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} data bytes, dims say {int(np.prod(dims))}")
    return body.reshape(dims)


def load_split(data_dir, split):
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    x = images.astype(np.float32)[:, None, :, :] / 255.0
    return x, labels.astype(np.int64)


# --------------------------------------------------------------------------
# Models

def build_model(name):
    import torch.nn as nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=None):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        return nn.Sequential(*layers)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride, act=nn.ReLU),
                                      conv_bn(cout, cout, 3))
            self.short = None
            if stride != 1 or cin != cout:
                self.short = conv_bn(cin, cout, 1, stride)
            self.relu = nn.ReLU()

        def forward(self, x):
            s = x if self.short is None else self.short(x)
            return self.relu(self.body(x) + s)

    class ResNetSmall(nn.Module):
        # stem 24 @28x28, stages 24 @28, 48 @14, 96 @7; ~0.34 M parameters
        def __init__(self, widths=(24, 48, 96), blocks=(1, 1, 2), classes=10):
            super().__init__()
            layers = [conv_bn(1, widths[0], 3, act=nn.ReLU)]
            cin = widths[0]
            for i, (w, n) in enumerate(zip(widths, blocks)):
                for j in range(n):
                    layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                    cin = w
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            return self.fc(self.flatten(self.pool(self.features(x))))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = []
            if expand != 1:
                layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                       conv_bn(hidden, cout, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class MobileNet(nn.Module):
        # MobileNetV2 layout scaled to 28x28: a stride-2 stem (28 -> 14),
        # then 14 -> 7 -> 4.  Depthwise convolutions at 28x28 made an epoch
        # take ~8 min on 2 cores; at 14x14 it is ~4 min.
        # (expand, channels, repeats, stride)
        CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 3, 1),
               (6, 96, 2, 1), (6, 160, 2, 2))

        def __init__(self, classes=10, stem=32, last=1280):
            super().__init__()
            layers = [conv_bn(1, stem, 3, 2, act=nn.ReLU6)]
            cin = stem
            for t, c, n, s in self.CFG:
                for j in range(n):
                    layers.append(InvertedResidual(cin, c, s if j == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, last, 1, act=nn.ReLU6))
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten(1)
            self.fc = nn.Linear(last, classes)

        def forward(self, x):
            return self.fc(self.flatten(self.pool(self.features(x))))

    if name == "resnet-small":
        return ResNetSmall(), "ResNet: 3x3 conv stem (24), BasicBlocks 1x24@28², 1x48@14², 2x96@7², GAP, Gemm"
    if name == "mobilenet":
        return MobileNet(), ("MobileNetV2-style: 3x3/2 stem (32), 13 inverted residuals (expand 1 then 6, "
                             "depthwise 3x3, ReLU6, 7 residual Adds), 14²→7²→4², 1x1 conv to 1280, "
                             "GAP, Gemm")
    raise SystemExit(f"unknown model '{name}'")


DEFAULTS = {  # epochs, batch, peak lr
    "resnet-small": (4, 128, 4e-3),
    "mobilenet": (3, 128, 4e-3),
}


# --------------------------------------------------------------------------
# Training and evaluation in torch

def set_determinism(seed, threads):
    import torch
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def torch_eval(model, x, y, batch=500):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(torch.from_numpy(x[i:i + batch]))
            correct += int((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def train(args):
    import torch
    import torch.nn.functional as F

    set_determinism(args.seed, args.threads)
    epochs, batch, lr = DEFAULTS[args.model]
    epochs = args.epochs or epochs
    batch = args.batch_size or batch
    lr = args.lr or lr

    xtr, ytr = load_split(args.data_dir, "train")
    if args.train_limit:
        xtr, ytr = xtr[:args.train_limit], ytr[:args.train_limit]
    xte, yte = load_split(args.data_dir, "t10k")
    model, arch = build_model(args.model)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {params} parameters; {epochs} epochs, batch {batch}, lr {lr}, "
          f"{torch.get_num_threads()} threads", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.25)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    t0 = time.time()
    epoch_times = []
    for ep in range(epochs):
        model.train()
        te = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum, seen = 0.0, 0
        for k, i in enumerate(range(0, len(xtr), batch)):
            idx = perm[i:i + batch]
            xb, yb = xtr_t[idx], ytr_t[idx]
            # horizontal flip of half the batch (deterministic via gen)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(idx)
            seen += len(idx)
            if k % 50 == 0:
                print(f"  epoch {ep + 1} step {k}: loss {loss_sum / seen:.4f} "
                      f"({time.time() - te:.0f} s)", flush=True)
        epoch_times.append(time.time() - te)
        acc = torch_eval(model, xte, yte)
        print(f"epoch {ep + 1}/{epochs}: train loss {loss_sum / seen:.4f}, "
              f"test top-1 {acc * 100:.2f} %, {epoch_times[-1]:.0f} s", flush=True)
    train_s = time.time() - t0
    acc = torch_eval(model, xte, yte)

    path = os.path.join(args.out_dir, f"{args.model}.onnx")
    export_onnx(model, path, (1, 28, 28))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", flush=True)
    check_bn_kept(path)

    ver = verify_onnx(path, xte, yte, model=model, limit=args.verify_limit)
    record = {
        "file": f"models/{args.model}.onnx",
        "architecture": arch,
        "parameters": params,
        "epochs": epochs,
        "batch_size": batch,
        "optimizer": f"AdamW (wd 5e-4), OneCycle peak lr {lr}, horizontal flips",
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "command": " ".join(["scripts/train-reference.py"] + sys.argv[1:]),
        "train_seconds": round(train_s, 1),
        "epoch_seconds": [round(t, 1) for t in epoch_times],
        "test_images": int(len(xte)),
        "fp32_top1_torch": round(acc, 4),
        "fp32_top1_onnx": ver["top1"],
        "onnx_images_checked": ver["images"],
        "onnx_vs_torch_max_abs_logit_diff": ver["max_abs_diff"],
        "onnx_vs_torch_argmax_agreement": ver["agreement"],
        "onnx_checker": "numpy interpreter in scripts/train-reference.py (onnx 1.12 has no reference evaluator)",
        "input": "float32 NCHW [N,1,28,28], pixels/255, no normalisation",
        "opset": 13,
        "torch": torch.__version__,
        "host": platform.machine(),
    }
    update_json(os.path.join(args.out_dir, "reference-accuracy.json"), args.model, record)
    print(json.dumps(record, indent=2), flush=True)


def export_onnx(model, path, shape, opset=13):
    import torch
    model.eval()
    dummy = torch.zeros((2,) + tuple(shape))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.onnx.export(model, dummy, tmp, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False)
    os.replace(tmp, path)


def check_bn_kept(path):
    import onnx
    m = onnx.load(path)
    onnx.checker.check_model(m)
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"{path}: opset {m.opset_import[0].version}, ops {dict(sorted(ops.items()))}", flush=True)
    if not ops.get("BatchNormalization"):
        raise SystemExit(f"{path}: BatchNormalization was folded away")
    for n in m.graph.node:
        if n.op_type == "BatchNormalization" and len(n.output) != 1:
            raise SystemExit(f"{path}: BatchNormalization exported in training form")
    return ops


def update_json(path, key, record):
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data[key] = record
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# A numpy ONNX interpreter for the ops our reference graphs use.  It reads the
# protobuf with onnx only, so it checks the exported file independently of
# the torch code that wrote it.

def _attrs(node):
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, a):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    group = a.get("group", 1)
    sh, sw = a.get("strides", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    if a.get("dilations", [1, 1]) != [1, 1]:
        raise NotImplementedError("Conv dilation")
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    xp = np.ascontiguousarray(xp.transpose(0, 2, 3, 1))        # NHWC
    ho = (h + pads[0] + pads[2] - kh) // sh + 1
    wo = (wd + pads[1] + pads[3] - kw) // sw + 1
    out = np.zeros((n, ho, wo, o), dtype=np.float32)
    depthwise = group == c and cg == 1 and o == c
    for i in range(kh):
        for j in range(kw):
            xs = xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            if depthwise:
                out += xs * w[:, 0, i, j]
            elif group == 1:
                out += xs @ w[:, :, i, j].T
            else:
                og = o // group
                for g in range(group):
                    out[..., g * og:(g + 1) * og] += \
                        xs[..., g * cg:(g + 1) * cg] @ w[g * og:(g + 1) * og, :, i, j].T
    if b is not None:
        out += b
    return out.transpose(0, 3, 1, 2)


def run_onnx(model, x):
    from onnx import numpy_helper
    g = model.graph
    env = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    env[g.input[0].name] = x
    for node in g.node:
        a = _attrs(node)
        inp = [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Conv":
            y = _conv(inp[0], inp[1], inp[2] if len(inp) > 2 else None, a)
        elif op == "BatchNormalization":
            xx, sc, bi, mu, var = inp
            k = sc / np.sqrt(var + a.get("epsilon", 1e-5))
            y = (xx - mu[:, None, None]) * k[:, None, None] + bi[:, None, None]
        elif op == "Relu":
            y = np.maximum(inp[0], 0)
        elif op == "Clip":
            lo = inp[1] if len(inp) > 1 and inp[1] is not None else -np.inf
            hi = inp[2] if len(inp) > 2 and inp[2] is not None else np.inf
            y = np.clip(inp[0], lo, hi)
        elif op == "Add":
            y = inp[0] + inp[1]
        elif op == "GlobalAveragePool":
            y = inp[0].mean(axis=(2, 3), keepdims=True)
        elif op == "Flatten":
            ax = a.get("axis", 1)
            y = inp[0].reshape(int(np.prod(inp[0].shape[:ax])), -1)
        elif op == "Gemm":
            A = inp[0].T if a.get("transA", 0) else inp[0]
            B = inp[1].T if a.get("transB", 0) else inp[1]
            y = a.get("alpha", 1.0) * (A @ B)
            if len(inp) > 2 and inp[2] is not None:
                y = y + a.get("beta", 1.0) * inp[2]
        elif op == "Identity":
            y = inp[0]
        elif op == "Constant":
            y = numpy_helper.to_array(a["value"])
        else:
            raise NotImplementedError(f"numpy interpreter: op {op}")
        env[node.output[0]] = np.asarray(y, dtype=np.float32) if y.dtype == np.float64 else y
    return env[g.output[0].name]


def verify_onnx(path, x, y, model=None, limit=0, batch=250):
    import onnx
    m = onnx.load(path)
    if limit:
        x, y = x[:limit], y[:limit]
    t0 = time.time()
    correct = agree = 0
    max_diff = 0.0
    for i in range(0, len(x), batch):
        out = run_onnx(m, x[i:i + batch])
        pred = out.argmax(1)
        correct += int((pred == y[i:i + batch]).sum())
        if model is not None:
            import torch
            with torch.no_grad():
                ref = model(torch.from_numpy(x[i:i + batch])).numpy()
            max_diff = max(max_diff, float(np.abs(ref - out).max()))
            agree += int((ref.argmax(1) == pred).sum())
    res = {"top1": round(correct / len(x), 4), "images": int(len(x)),
           "max_abs_diff": max_diff if model is not None else None,
           "agreement": (agree / len(x)) if model is not None else None}
    print(f"{path}: numpy ONNX interpreter top-1 {res['top1'] * 100:.2f} % on {len(x)} images "
          f"({time.time() - t0:.0f} s); torch max |logit diff| {res['max_abs_diff']}, "
          f"argmax agreement {res['agreement']}", flush=True)
    return res


# --------------------------------------------------------------------------
# Benchmark models: ImageNet-shaped torchvision ResNets, random weights

def bench_models(args):
    import torch
    import torchvision
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    set_determinism(args.seed, args.threads)
    torch.use_deterministic_algorithms(False)   # quantized kernels have no deterministic flag
    torch.backends.quantized.engine = "onednn"
    os.makedirs(args.cache_dir, exist_ok=True)
    shape = (3, 224, 224)
    gen = torch.Generator().manual_seed(args.seed)
    for name in args.bench_list.split(","):
        t0 = time.time()
        model = getattr(torchvision.models, name)(weights=None)
        # Random weights and default BN statistics (mean 0, var 1) let the
        # activations grow block after block; a few training-mode passes with
        # a cumulative average (momentum=None) give BN real statistics.
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(args.bn_passes):
                model(torch.rand((8,) + shape, generator=gen))
        model.eval()
        probe = torch.rand((4,) + shape, generator=gen)
        with torch.no_grad():
            ref = model(probe)
        fp32 = os.path.join(args.cache_dir, f"{name}.onnx")
        export_onnx(model, fp32, shape)
        print(f"{name}: fp32 {fp32} ({os.path.getsize(fp32) >> 20} MiB), "
              f"logit range [{float(ref.min()):.2f}, {float(ref.max()):.2f}]", flush=True)

        qmodel = prepare_fx(model, get_default_qconfig_mapping("onednn"),
                            example_inputs=(probe,))
        with torch.no_grad():
            for _ in range(args.calib_passes):
                qmodel(torch.rand((8,) + shape, generator=gen))
        qmodel = convert_fx(qmodel)
        with torch.no_grad():
            qref = qmodel(probe)
        int8 = os.path.join(args.cache_dir, f"{name}-int8.onnx")
        tmp = int8 + ".tmp"
        torch.onnx.export(qmodel, probe[:1], tmp, opset_version=13,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        os.replace(tmp, int8)
        # Random weights give near-tied logits, so argmax agreement says
        # little; the cosine between the logit vectors is the useful check.
        rel = float((qref - ref).abs().max() / ref.abs().max())
        cos = float(torch.nn.functional.cosine_similarity(qref.flatten(), ref.flatten(), 0))
        print(f"{name}: int8 {int8} ({os.path.getsize(int8) >> 20} MiB), "
              f"max |int8-fp32| / max|fp32| = {rel:.3f}, logit cosine {cos:.4f}, "
              f"{time.time() - t0:.0f} s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULTS))
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=DEFAULT_DATA)
    p.add_argument("--out-dir", default=os.path.join(TOP, "models"))
    p.add_argument("--train-limit", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--verify", metavar="ONNX", help="run an exported file on the test set")
    p.add_argument("--verify-limit", type=int, default=0, help="images for the check (0: all)")
    p.add_argument("--bench-models", action="store_true")
    p.add_argument("--bench-list", default="resnet18,resnet50,resnet101")
    p.add_argument("--cache-dir", default=os.path.join(TOP, "models", "cache"))
    p.add_argument("--bn-passes", type=int, default=4)
    p.add_argument("--calib-passes", type=int, default=4)
    args = p.parse_args()

    if args.bench_models:
        bench_models(args)
    elif args.verify:
        x, y = load_split(args.data_dir, "t10k")
        check_bn_kept(args.verify)
        verify_onnx(args.verify, x, y, limit=args.verify_limit)
    elif args.model:
        train(args)
    else:
        p.error("give --model, --verify or --bench-models")


if __name__ == "__main__":
    main()
