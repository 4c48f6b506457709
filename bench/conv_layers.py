#!/usr/bin/python3
"""One convolution geometry at a time: graft builds side by side (an A/B of a change to the
convolution kernels), alternating runs, medians.

Each case is a small model of one ResNet-18 convolution shape: three identical 3x3 convolutions
(stride 1, padding 1, no bias) or one strided one, then global average pooling and a 10-way linear
layer, on random N(0, 1) data. "fe" trains the linear layer only (the convolutions frozen: their
forward kernels alone); "full" trains everything (forward, input and weight gradients).

  a56 a28 a14 a7   64, 128, 256, 512 channels at 56x56 .. 7x7 (ResNet-18 at 224x224), batch 16
  b16 b8 b4 b2     the same channels at 16x16 .. 2x2 (ResNet-18 at 64x64), batch 64
  c1               the stem: 3 -> 64 channels, 7x7 stride 2 padding 3, 224x224, batch 16
  d28              64 -> 128 channels, 3x3 stride 2, 56x56 -> 28x28, batch 16

usage: bench/conv_layers.py [--runs R] [--threads T] [--cases a56-fe,...] GRAFT [GRAFT ...]
It prints samples/s (the third epoch's) of every build, and each build's ratio to the first."""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from compare import write_data  # noqa: E402

# name: (input channels, size, output channels, kernel, stride, padding, convolutions, batch)
GEOMS = {
    "a56": (64, 56, 64, 3, 1, 1, 3, 16), "a28": (128, 28, 128, 3, 1, 1, 3, 16),
    "a14": (256, 14, 256, 3, 1, 1, 3, 16), "a7": (512, 7, 512, 3, 1, 1, 3, 16),
    "b16": (64, 16, 64, 3, 1, 1, 3, 64), "b8": (128, 8, 128, 3, 1, 1, 3, 64),
    "b4": (256, 4, 256, 3, 1, 1, 3, 64), "b2": (512, 2, 512, 3, 1, 1, 3, 64),
    "c1": (3, 224, 64, 7, 2, 3, 1, 16), "d28": (64, 56, 128, 3, 2, 1, 1, 16),
}


def write_case(work, name, mode):
    cin, size, cout, k, stride, pad, convs, batch = GEOMS[name]
    model = os.path.join(work, f"{name}.model.yaml")
    data = os.path.join(work, f"{name}.safetensors")
    if not os.path.exists(model):
        with open(model, "w") as f:
            f.write(f"name: {name}\ninput: {{name: image, shape: [{cin}, {size}, {size}]}}\nlayers:\n")
            for i in range(convs):
                f.write(f"  - {{name: c{i}, op: conv2d, out_channels: {cout}, kernel_size: {k}, stride: {stride}, "
                        f"padding: {pad}, bias: false}}\n")
            f.write("  - {name: avgpool, op: global_avgpool}\n  - {name: flatten, op: flatten}\n"
                    "  - {name: fc, op: linear, out_features: 10}\n")
        write_data(data, (cin, size, size), 4 * batch, 10)
    plan = os.path.join(work, f"{name}-{mode}.yaml")
    with open(plan, "w") as f:
        f.write(f"model: {model}\ndata: {{format: tensors, train: {{file: {data}}}}}\nloss: cross_entropy\n"
                f"optimizer: {{type: sgd, learning_rate: 0.001}}\nbatch_size: {batch}\nepochs: 3\nseed: 1\n")
        if mode == "fe":
            f.write('freeze: ["*"]\nunfreeze: [fc]\nfeature_cache: off\n')
    return plan


def rate(graft, plan, threads, cache):
    out = subprocess.run([graft, "train", plan, "--threads", str(threads), "-q", "--cache-dir", cache],
                         capture_output=True, text=True)
    m = re.search(r"^epoch 3/3: .*s, ([0-9.]+) samples/s\)", out.stdout, re.M)
    if out.returncode or not m:
        sys.exit(f"{graft} failed on {plan}:\n{out.stdout}{out.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(f"{g}-{m}" for m in ("fe", "full") for g in GEOMS))
    ap.add_argument("grafts", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        print("| case | " + " | ".join(f"build {i + 1}" for i in range(len(a.grafts))) + " | " +
              " | ".join(f"{i + 1}/1" for i in range(1, len(a.grafts))) + " |")
        print("|---" * (2 * len(a.grafts)) + "|")
        for case in a.cases.split(","):
            name, mode = case.rsplit("-", 1)
            plan = write_case(work, name, mode)
            caches = [os.path.join(work, f"cache{i}") for i in range(len(a.grafts))]
            for g, c in zip(a.grafts, caches):  # compile once, outside the timed runs
                rate(g, plan, a.threads, c)
            runs = [[] for _ in a.grafts]
            for _ in range(a.runs):
                for i, (g, c) in enumerate(zip(a.grafts, caches)):
                    runs[i].append(rate(g, plan, a.threads, c))
            med = [statistics.median(r) for r in runs]
            cells = [f"{m:.0f} ({', '.join(f'{x:.0f}' for x in r)})" for m, r in zip(med, runs)]
            print(f"| {case} | " + " | ".join(cells) + " | " + " | ".join(f"{m / med[0]:.2f}×" for m in med[1:]) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
