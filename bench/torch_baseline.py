#!/usr/bin/python3
"""PyTorch baselines for graft's Fashion-MNIST examples, on the same data (pixels/255), model, batch
(64, the last partial batch kept, as graft does), optimizer and epochs:

  mlp  examples/mlp: 784-256-256-10, SGD lr 0.01 momentum 0.9
  cnn  examples/cnn: conv 32 3x3, relu, maxpool 2, conv 64 3x3, relu, maxpool 2, linear 128, relu,
       linear 10; Adam lr 1e-3

Prints one JSON line per epoch: the training loop's throughput (no evaluation) and the test
accuracy. PyTorch is a baseline only, never part of graft.
usage: torch_baseline.py {mlp,cnn} [--epochs E] [--threads T] [--seed S]"""
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


def images(name, shape):
    return torch.tensor(idx(D + name), dtype=torch.float32).reshape(-1, *shape) / 255


def labels(name):
    return torch.tensor(idx(D + name), dtype=torch.int64)


MODELS = {  # name: (input shape, model, optimizer)
    "mlp": ((784,), lambda: nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
            lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    "cnn": ((1, 28, 28), lambda: nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                               nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10)),
            lambda p: torch.optim.Adam(p, lr=1e-3)),
}

ap = argparse.ArgumentParser()
ap.add_argument("model", choices=MODELS)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
shape, build, make_opt = MODELS[a.model]
xtr, ytr = images("train-images-idx3-ubyte.gz", shape), labels("train-labels-idx1-ubyte.gz")
xte, yte = images("t10k-images-idx3-ubyte.gz", shape), labels("t10k-labels-idx1-ubyte.gz")
model = build()
opt = make_opt(model.parameters())
loss_fn = nn.CrossEntropyLoss()
B = 64
for epoch in range(1, a.epochs + 1):
    perm = torch.randperm(len(xtr))
    model.train()
    t0 = time.perf_counter()
    for b in range(0, len(xtr), B):
        i = perm[b:b + B]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xtr[i]), ytr[i]).backward()
        opt.step()
    dt = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum((model(xte[j:j + 1000]).argmax(1) == yte[j:j + 1000]).sum().item() for j in range(0, len(xte), 1000))
    print(json.dumps({"framework": "pytorch", "model": a.model, "epoch": epoch, "threads": a.threads,
                      "samples_per_s": len(xtr) / dt, "test_accuracy": correct / len(xte)}), flush=True)
