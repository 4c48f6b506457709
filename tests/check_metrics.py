#!/usr/bin/env python3
"""Checks a graft metrics file against the contract (docs/format.md, "Metrics file"):
every line is one JSON object; training records carry split "train", epoch, step, loss, samples_per_s;
evaluation records carry split "test" or "val", epoch, loss, accuracy. Optionally requires the last
evaluation's accuracy to reach a minimum and a given number of evaluation records.

usage: check_metrics.py FILE [--min-accuracy A] [--epochs E]"""
import argparse
import json
import math
import sys


def fail(msg):
    print(f"check_metrics: FAIL: {msg}")
    sys.exit(1)


ap = argparse.ArgumentParser()
ap.add_argument("file")
ap.add_argument("--min-accuracy", type=float)
ap.add_argument("--epochs", type=int)
a = ap.parse_args()

train, evals = [], []
with open(a.file) as f:
    for n, line in enumerate(f, 1):
        try:
            r = json.loads(line)
        except ValueError as e:
            fail(f"{a.file}:{n}: not JSON: {e}")
        if not isinstance(r, dict):
            fail(f"{a.file}:{n}: not a JSON object")
        split = r.get("split")
        if split == "train":
            need = {"epoch": int, "step": int, "loss": float, "samples_per_s": float}
            train.append(r)
        elif split in ("test", "val"):
            need = {"epoch": int, "loss": float, "accuracy": float}
            evals.append(r)
        elif split == "domain":  # domain adaptation, every step
            need = {"epoch": int, "step": int, "lr": float, "lambda": float, "label_loss": float, "domain_loss": float,
                    "domain_accuracy": float}
        elif split == "target_test":
            need = {"epoch": int, "step": int, "loss": float, "accuracy": float, "domain_accuracy": float}
        else:
            fail(f"{a.file}:{n}: unknown split {split!r}")
        for k, t in need.items():
            v = r.get(k)
            if t is int and not isinstance(v, int):
                fail(f"{a.file}:{n}: {split} record needs integer {k!r}, got {v!r}")
            if t is float and (not isinstance(v, (int, float)) or not math.isfinite(v)):
                fail(f"{a.file}:{n}: {split} record needs a finite number {k!r}, got {v!r}")
        for k in ("accuracy", "domain_accuracy"):
            if k in r and r[k] is not None and not 0 <= r[k] <= 1:
                fail(f"{a.file}:{n}: {k} out of [0, 1]: {r[k]}")

if not train:
    fail("no training records")
steps = [r["step"] for r in train]
if steps != sorted(steps) or len(set(steps)) != len(steps):
    fail("training steps are not increasing")
if a.epochs is not None and [r["epoch"] for r in evals] != list(range(1, a.epochs + 1)):
    fail(f"expected one evaluation per epoch 1..{a.epochs}, got epochs {[r['epoch'] for r in evals]}")
if a.min_accuracy is not None:
    if not evals:
        fail("no evaluation records")
    acc = evals[-1]["accuracy"]
    if acc < a.min_accuracy:
        fail(f"final test accuracy {acc:.4f} < {a.min_accuracy}")
    print(f"check_metrics: final test accuracy {acc:.4f} >= {a.min_accuracy}")
print(f"check_metrics: {len(train)} training and {len(evals)} evaluation records follow the contract")
