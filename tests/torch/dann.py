#!/usr/bin/python3
"""PyTorch reference for graft's domain-adaptation recipe (a test oracle only, never part of graft):
DANN, Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation", MNIST -> MNIST-M.

Data (--data DIR, default examples/domain/data of this repository): uncompressed IDX files
(magic 0,0,0x08,ndim; big-endian uint32 dims; unsigned bytes), images [n,3,28,28], labels [n]:
  mnist-{train,test}-{images,labels}.idx   mnistm-{train,test}-{images,labels}.idx
Input x = (pixel/255 - 0.5)/0.5.

Model (the paper's MNIST architecture, PyTorch default initialisation):
  features      conv 5x5 3->32, relu, maxpool 2; conv 5x5 32->48, relu, maxpool 2; flatten (768)
  label head    linear 768->100, relu, linear 100->100, relu, linear 100->10
  domain head   gradient reversal (identity forward, gradient * -lambda backward),
                linear 768->100, relu, linear 100->2               (dann mode only)
torch.manual_seed(seed) right before building the features then the label head (then, in dann
mode, the domain head), so a seed gives the same features and label head in every mode.

Modes:
  source  features + label head on labelled MNIST train; batch of B source samples per step
  target  the same on labelled MNIST-M train (the upper bound); batch of B target samples
  dann    each step: B/2 source samples then B/2 target samples (MNIST-M train, labels unused) in
          one batch of B through the features; label loss = mean cross-entropy on the source half;
          domain loss = mean cross-entropy over all B (domain 0 source rows, 1 target rows);
          loss = label loss + domain loss
B is --batch in every mode (default 128): so dann sees 64 source + 64 target images a step and
source/target modes 128 labelled images a step. An epoch is one pass over the training set of the
mode (over the source set in dann mode): floor(n/B) steps (floor(n_source/(B/2)) in dann mode), the
last partial batch dropped.
Shuffling: numpy RandomState(seed) shuffles the training set of source/target mode, and the source
set of dann mode, at the start of every epoch. In dann mode the target set has its own generator,
RandomState(seed + 1000) (not RandomState(seed): MNIST and MNIST-M have the same size and MNIST-M is
made from MNIST, so equal permutations would pair every digit with its own colour version); it is
shuffled first at step 0 and consumed in order, and when fewer than B/2 samples are left it is
reshuffled and restarted (the rest dropped), independently of the source epochs.
Schedules, p = step / total_steps (step 0-based, before the step; total = epochs * steps/epoch):
  lambda = lambda_max * (2/(1+exp(-gamma p)) - 1)   learning rate = lr / (1 + 10 p)^0.75  (all modes)
  (--lambda-max, default 1, and --gamma, default 10, the paper's values; dann mode only)
Adam (torch.optim.Adam's defaults but the rate: lr 0.0005 annealed as above), as examples/domain's
plans; --optimizer sgd: SGD with momentum 0.9 instead. No weight decay.

After every epoch, one JSON line on stderr: source_acc (MNIST test), target_acc (MNIST-M test) and,
in dann mode, domain_acc (domain classifier on the union of both test sets: 0 MNIST, 1 MNIST-M).
At the end of each (mode, seed), one JSON line on stdout:
  {"mode", "seed", "source_acc", "target_acc", "domain_acc" (null but in dann mode), "seconds",
   "epochs": per-epoch [source_acc, target_acc, domain_acc]}
(the accuracies after the last epoch; seconds: wall time of training and evaluation).
--table adds a markdown table of mean ± std (sample std, 0 with one seed) over seeds per mode, next
to the paper's MNIST -> MNIST-M target accuracies (source only .5225, DANN .7666, target .9596).
--log-steps FILE writes one JSON line per step {"mode","seed","step","lambda","lr","loss",
"label_loss","domain_loss"} (lambda and domain_loss null outside dann mode) to compare with graft's
metrics file.

usage: dann.py [--data DIR] [--mode source|dann|target[,...]]... [--seeds 1,2,3] [--epochs 15]
               [--batch 128] [--lr 0.0005] [--optimizer adam|sgd] [--lambda-max 1] [--gamma 10] [--threads 2]
               [--log-steps FILE] [--table]"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

MODES = ("source", "dann", "target")
PAPER = {"source": 0.5225, "dann": 0.7666, "target": 0.9596}  # MNIST -> MNIST-M, Table 1
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def idx(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"dann: {e}")
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        sys.exit(f"dann: {path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(d, domain, split):
    x = idx(os.path.join(d, f"{domain}-{split}-images.idx"))
    y = idx(os.path.join(d, f"{domain}-{split}-labels.idx"))
    if x.ndim != 4 or x.shape[1:] != (3, 28, 28) or y.shape != (x.shape[0],):
        sys.exit(f"dann: {domain}-{split}: images {x.shape}, labels {y.shape}; want [n,3,28,28] and [n]")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def norm(xb):
    """uint8 [b,3,28,28] -> float32, (pixel/255 - 0.5)/0.5."""
    return (xb.float() / 255 - 0.5) / 0.5


class Reverse(torch.autograd.Function):
    """Gradient reversal: identity forward, gradient * -lambda backward."""

    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


def build(dann):
    features = nn.Sequential(nn.Conv2d(3, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 48, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    label = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    domain = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 2)) if dann else None
    return features, label, domain


@torch.no_grad()
def evaluate(features, label, domain, sets, chunk=1000):
    """Label accuracy on each (x, y) of sets and, with a domain head, domain accuracy on their union
    (set i has domain label i)."""
    accs, dom_correct, dom_total = [], 0, 0
    for d, (x, y) in enumerate(sets):
        correct = 0
        for i in range(0, len(x), chunk):
            f = features(norm(x[i:i + chunk]))
            correct += (label(f).argmax(1) == y[i:i + chunk]).sum().item()
            if domain is not None:
                dom_correct += (domain(f).argmax(1) == d).sum().item()
        accs.append(correct / len(x))
        dom_total += len(x)
    return accs, (dom_correct / dom_total if domain is not None else None)


def run(mode, seed, data, a, log):
    src, tgt, src_test, tgt_test = data
    B = a.batch
    torch.manual_seed(seed)
    features, label, domain = build(mode == "dann")
    params = [p for m in (features, label, domain) if m is not None for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9) if a.optimizer == "sgd" else torch.optim.Adam(params, lr=a.lr)
    ce = nn.CrossEntropyLoss()
    train = tgt if mode == "target" else src
    half = B // 2 if mode == "dann" else B
    steps_per_epoch = len(train[0]) // half
    total = a.epochs * steps_per_epoch
    if total == 0:
        sys.exit(f"dann: {mode}: {len(train[0])} training samples make no batch of {half}")
    rng = np.random.RandomState(seed)
    trng = np.random.RandomState(seed + 1000)
    tperm, tpos = None, 0
    dlabel = torch.cat([torch.zeros(half, dtype=torch.int64), torch.ones(half, dtype=torch.int64)])
    history, step, t0 = [], 0, time.time()
    for epoch in range(a.epochs):
        te = time.time()
        perm = torch.from_numpy(rng.permutation(len(train[0])))
        for s in range(steps_per_epoch):
            p = step / total
            lam = a.lambda_max * (2 / (1 + math.exp(-a.gamma * p)) - 1)
            lr = a.lr / (1 + 10 * p) ** 0.75
            for g in opt.param_groups:
                g["lr"] = lr
            ib = perm[s * half:(s + 1) * half]
            xb, yb = train[0][ib], train[1][ib]
            if mode == "dann":
                if tperm is None or tpos + half > len(tperm):
                    tperm, tpos = torch.from_numpy(trng.permutation(len(tgt[0]))), 0
                xb = torch.cat([xb, tgt[0][tperm[tpos:tpos + half]]])
                tpos += half
            f = features(norm(xb))
            label_loss = ce(label(f[:half]), yb)
            domain_loss = ce(domain(Reverse.apply(f, lam)), dlabel) if mode == "dann" else None
            loss = label_loss + domain_loss if mode == "dann" else label_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log:
                log.write(json.dumps({"mode": mode, "seed": seed, "step": step,
                                      "lambda": lam if mode == "dann" else None, "lr": lr,
                                      "loss": loss.item(), "label_loss": label_loss.item(),
                                      "domain_loss": domain_loss.item() if mode == "dann" else None}) + "\n")
            step += 1
        (sa, ta), da = evaluate(features, label, domain, [src_test, tgt_test])
        history.append([round(sa, 4), round(ta, 4), None if da is None else round(da, 4)])
        print(json.dumps({"mode": mode, "seed": seed, "epoch": epoch + 1, "source_acc": round(sa, 4),
                          "target_acc": round(ta, 4), "domain_acc": None if da is None else round(da, 4),
                          "loss": round(loss.item(), 4), "seconds": round(time.time() - te, 1)}),
              file=sys.stderr, flush=True)
    sa, ta, da = history[-1] if history else [None, None, None]
    return {"mode": mode, "seed": seed, "source_acc": sa, "target_acc": ta, "domain_acc": da,
            "seconds": round(time.time() - t0, 1), "epochs": history}


def table(results, modes):
    def ms(v):
        v = [x for x in v if x is not None]
        if not v:
            return "-"
        return f"{np.mean(v):.4f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.4f}"

    rows = ["| mode | seeds | source acc (MNIST test) | target acc (MNIST-M test) | domain acc | paper target acc |",
            "|---|---|---|---|---|---|"]
    for m in modes:
        r = [x for x in results if x["mode"] == m]
        rows.append(f"| {m} | {len(r)} | {ms([x['source_acc'] for x in r])} | {ms([x['target_acc'] for x in r])} "
                    f"| {ms([x['domain_acc'] for x in r])} | {PAPER[m]:.4f} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description="PyTorch DANN reference (MNIST -> MNIST-M)")
    ap.add_argument("--data", default=os.path.join(ROOT, "examples", "domain", "data"))
    ap.add_argument("--mode", action="append", help="source, dann, target (repeatable or comma list; default all)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--lambda-max", type=float, default=1.0, help="scale of the lambda schedule (dann mode; default 1)")
    ap.add_argument("--gamma", type=float, default=10.0, help="lambda = lambda_max*(2/(1+exp(-gamma p))-1) (default 10)")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="adam", help="adam (default: the recipe's) or sgd (momentum 0.9)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-steps", metavar="FILE")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    modes = [m for arg in (a.mode or [",".join(MODES)]) for m in arg.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r} (source, dann, target)")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    if "dann" in modes and (a.batch < 2 or a.batch % 2):
        ap.error("--batch must be even in dann mode")
    torch.set_num_threads(a.threads)
    data = (load(a.data, "mnist", "train"), load(a.data, "mnistm", "train"),
            load(a.data, "mnist", "test"), load(a.data, "mnistm", "test"))
    log = open(a.log_steps, "w") if a.log_steps else None
    results = []
    for m in modes:
        for seed in seeds:
            r = run(m, seed, data, a, log)
            results.append(r)
            print(json.dumps(r), flush=True)
    if log:
        log.close()
    if a.table:
        print(table(results, list(dict.fromkeys(modes))))


if __name__ == "__main__":
    main()
