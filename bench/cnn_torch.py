#!/usr/bin/python3
"""PyTorch baseline for the CNN example (examples/cnn): conv 32 3x3, relu, maxpool 2, conv 64 3x3, relu,
maxpool 2, linear 128, relu, linear 10 on Fashion-MNIST (pixels/255), Adam lr 1e-3, batch 64, the last
partial batch kept, as graft does. Prints one JSON line per epoch: training throughput (training loop
only) and test accuracy. A baseline only, never part of graft. usage: cnn_torch.py [--epochs E] [--threads T] [--seed S]"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn

D = "/usr/share/datasets/fashion-mnist/"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
xtr = torch.tensor(idx(D + "train-images-idx3-ubyte.gz"), dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
xte = torch.tensor(idx(D + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
B = 64
for epoch in range(1, a.epochs + 1):
    perm = torch.randperm(len(xtr))
    model.train()
    t0 = time.perf_counter()
    for b in range(0, len(xtr), B):
        i = perm[b:b + B]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xtr[i]), ytr[i])
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = sum((model(xte[j:j + 1000]).argmax(1) == yte[j:j + 1000]).sum().item() for j in range(0, len(xte), 1000)) / len(xte)
    print(json.dumps({"framework": "pytorch", "epoch": epoch, "threads": a.threads, "samples_per_s": len(xtr) / dt,
                      "test_accuracy": acc}), flush=True)
