#!/usr/bin/python3
"""PyTorch baseline for the MLP example (examples/mlp): the same model (784-256-256-10), data
(Fashion-MNIST, pixels/255), optimizer (SGD lr 0.01, momentum 0.9), batch 64 and epochs, with the
last partial batch kept, as graft does. Prints one line of JSON per epoch with the training
throughput (the training loop only, no evaluation) and the test accuracy.

PyTorch is a baseline here, never part of graft. usage: mlp_torch.py [--epochs E] [--threads T]"""
import argparse
import gzip
import json
import time

import numpy as np
import torch

D = "/usr/share/datasets/fashion-mnist/"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

xtr = torch.tensor(idx(D + "train-images-idx3-ubyte.gz"), dtype=torch.float32).reshape(-1, 784) / 255
ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
xte = torch.tensor(idx(D + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).reshape(-1, 784) / 255
yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)

model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                            torch.nn.ReLU(), torch.nn.Linear(256, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = torch.nn.CrossEntropyLoss()
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
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    print(json.dumps({"framework": "pytorch", "epoch": epoch, "threads": a.threads,
                      "samples_per_s": len(xtr) / dt, "test_accuracy": acc}), flush=True)
