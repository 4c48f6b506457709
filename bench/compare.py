#!/usr/bin/python3
"""graft against tuned PyTorch, side by side (issue 5's harness): the same model, batch, optimizer
(SGD, momentum 0.9), threads and in-memory random data; alternating runs; medians.

For every case it reports:
  - training throughput (samples/s of the second epoch's training loop, no evaluation) and the ratio;
  - peak RSS of the whole process (through /usr/bin/time, Debian's `time`) and the ratio;
  - time from process start to the end of the first training step: graft cold (empty kernel cache)
    and warm, PyTorch from `python3` starting (import torch included).

Cases (data: random N(0, 1) inputs, uniform labels; sizes chosen so an epoch is 10-200 steps):
  mlp           784-256-256-10 (examples/mlp), batch 64
  lenet         the LeNet-style CNN (examples/cnn), batch 64
  r18-64-full   ResNet-18 (examples/resnet18, torchvision.models.resnet18) 3x64x64, batch 64, all trained
  r18-64-last   the same, only layer4 and fc trained (the frozen batchnorms in evaluation mode)
  r18-64-fe     the same, only fc trained (feature extraction; graft's feature cache off)
  r18-224-full  ResNet-18 3x224x224, batch 16, all trained
  r18-224-fe    the same, only fc trained
For mlp and lenet each side runs at 1 and 2 threads and takes its better (framework overhead
dominates there); the others run at --threads.

PyTorch runs tuned: GLIBC_TUNABLES keeps glibc's allocator from returning memory every step
(docs/benchmarks.md). PyTorch is a baseline only, never part of graft.

usage: bench/compare.py [--runs R] [--threads T] [--cases mlp,lenet,...] [--markdown]"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAFT = os.path.join(ROOT, "build", "graft")
TUNED = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"

# name: (model, input shape, samples, batch, trained layers (None: all))
CASES = {
    "mlp": ("mlp", (1, 28, 28), 12800, 64, None),
    "lenet": ("cnn", (1, 28, 28), 6400, 64, None),
    "r18-64-full": ("resnet18", (3, 64, 64), 640, 64, None),
    "r18-64-last": ("resnet18", (3, 64, 64), 640, 64, ["layer4", "fc"]),
    "r18-64-fe": ("resnet18", (3, 64, 64), 640, 64, ["fc"]),
    "r18-224-full": ("resnet18", (3, 224, 224), 160, 16, None),
    "r18-224-fe": ("resnet18", (3, 224, 224), 160, 16, ["fc"]),
}
CLASSES = {"mlp": 10, "cnn": 10, "resnet18": 1000}


# ---- the PyTorch side (run as a child: python3 compare.py --torch-worker ...) ----

def torch_model(name):
    import torch
    from torch import nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    import torchvision
    return torchvision.models.resnet18(num_classes=1000)


def torch_worker(a):
    import numpy as np
    import torch
    from torch import nn
    torch.set_num_threads(a.threads)
    model_name, shape, n, batch, trained = CASES[a.case]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((n,) + shape, dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, CLASSES[model_name], n).astype(np.int64))
    torch.manual_seed(1)
    m = torch_model(model_name)
    m.train()
    if trained:  # freeze the rest; its batchnorm layers use their running statistics, as graft's frozen ones do
        for pname, p in m.named_parameters():
            p.requires_grad = pname.split(".")[0] in trained
        for mname, mod in m.named_modules():
            if isinstance(mod, nn.BatchNorm2d) and mname.split(".")[0] not in trained:
                mod.eval()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rate = 0.0
    for epoch in range(2):
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for b in range(0, n, batch):
            idx = perm[b:b + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if a.first_step:
                sys.stdout.flush()
                os._exit(0)
        rate = n / (time.perf_counter() - t0)
    print(json.dumps({"samples_per_s": rate}))


# ---- the driver ----

def run(cmd, env=None):
    """Runs cmd; returns (wall seconds, peak RSS in MiB, stdout, exit status).

    The peak RSS comes from /usr/bin/time (Debian's `time`), which forks the command from its own small
    process: the child of a fork keeps the larger of its RSS before and after exec, so a command forked
    straight from this script would be charged this Python's memory (about 50 MiB with numpy)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapped = ["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name] + cmd if os.access("/usr/bin/time", os.X_OK) else cmd
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        out = p.stdout.read().decode()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        text = rss.read().strip().splitlines()
        kib = int(text[-1]) if wrapped is not cmd and text and text[-1].isdigit() else ru.ru_maxrss
    return wall, kib / 1024, out, rc


def write_data(path, shape, n, classes):
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "tests", "torch"))
    from safetensors_io import write_safetensors
    rng = np.random.default_rng(0)
    write_safetensors(path, {"x": rng.standard_normal((n,) + shape, dtype=np.float32),
                             "y": rng.integers(0, classes, n).astype(np.int64)})


def write_plan(work, case):
    model_name, shape, n, batch, trained = CASES[case]
    src = os.path.join(ROOT, "examples", model_name, "model.yaml")
    model = os.path.join(work, f"{case}.model.yaml")
    with open(src) as f:
        text = f.read()
    if model_name == "resnet18":
        text = text.replace("shape: [3, 64, 64]", "shape: [%d, %d, %d]" % shape)
    with open(model, "w") as f:
        f.write(text)
    data = os.path.join(work, f"{case}.safetensors")
    write_data(data, shape, n, CLASSES[model_name])
    plan = os.path.join(work, f"{case}.yaml")
    with open(plan, "w") as f:
        f.write(f"model: {model}\ndata: {{format: tensors, train: {{file: {data}}}}}\nloss: cross_entropy\n"
                f"optimizer: {{type: sgd, learning_rate: 0.01, momentum: 0.9}}\nbatch_size: {batch}\nepochs: 2\nseed: 1\n")
        if trained:
            f.write('freeze: ["*"]\nunfreeze: [%s]\nfeature_cache: off\n' % ", ".join(trained))
    return plan


def rate(v):
    """samples/s as printed: whole samples, or one decimal below 100 (ResNet-18 at 224x224)."""
    return round(v) if v >= 100 else round(v, 1)


def graft_rate(plan, threads, cache):
    """The second epoch's samples/s from graft's --metrics file (full precision: the progress line
    rounds to whole samples, too coarse for ResNet-18 at 224x224's 10 or so)."""
    metrics = os.path.join(cache, "metrics.jsonl")
    wall, rss, out, rc = run([GRAFT, "train", plan, "--threads", str(threads), "-q", "--cache-dir", cache, "--metrics", metrics])
    rates = []
    if not rc and os.path.exists(metrics):
        with open(metrics) as f:
            rates = [r["samples_per_s"] for r in map(json.loads, f) if r.get("split") == "train" and r.get("epoch") == 2]
    if rc or not rates:
        sys.exit(f"graft failed on {plan}:\n{out}")
    return float(rates[-1]), rss


def torch_rate(case, threads):
    env = dict(os.environ, GLIBC_TUNABLES=TUNED, OMP_NUM_THREADS=str(threads))
    wall, rss, out, rc = run([sys.executable, __file__, "--torch-worker", case, "--threads", str(threads)], env)
    if rc:
        sys.exit(f"the PyTorch worker failed on {case}")
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"], rss


def first_step(case, plan, threads, cache):
    """Seconds from process start to the end of the first training step: graft (cold: an emptied
    cache; warm: the cache that run filled) and PyTorch."""
    subprocess.run(["rm", "-rf", cache])
    env = dict(os.environ, GRAFT_FAULT="step:1")
    cold = run([GRAFT, "train", plan, "--threads", str(threads), "-q", "--cache-dir", cache], env)[0]
    warm = run([GRAFT, "train", plan, "--threads", str(threads), "-q", "--cache-dir", cache], env)[0]
    tenv = dict(os.environ, GLIBC_TUNABLES=TUNED, OMP_NUM_THREADS=str(threads))
    torch_t = run([sys.executable, __file__, "--torch-worker", case, "--threads", str(threads), "--first-step"], tenv)[0]
    return cold, warm, torch_t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--markdown", action="store_true", help="print a table for docs/benchmarks.md")
    ap.add_argument("--torch-worker")
    ap.add_argument("--first-step", action="store_true")
    a = ap.parse_args()
    if a.torch_worker:
        a.case = a.torch_worker
        torch_worker(a)
        return
    if not os.access(GRAFT, os.X_OK):
        sys.exit("build graft first (make)")
    cases = a.cases.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        cache = os.path.join(work, "kernel-cache")
        for case in cases:
            plan = write_plan(work, case)
            threads = (1, 2) if case in ("mlp", "lenet") else (a.threads,)
            g = {t: [] for t in threads}
            p = {t: [] for t in threads}
            graft_rate(plan, threads[0], cache)  # compiles into the cache once, outside the measurements
            for _ in range(a.runs):
                for t in threads:  # alternating
                    g[t].append(graft_rate(plan, t, cache))
                    p[t].append(torch_rate(case, t))
            med = lambda runs, k: statistics.median(r[k] for r in runs)
            gt = max(threads, key=lambda t: med(g[t], 0))
            pt = max(threads, key=lambda t: med(p[t], 0))
            starts = [first_step(case, plan, a.threads, cache) for _ in range(a.runs)]
            row = dict(case=case, graft=med(g[gt], 0), graft_threads=gt, torch=med(p[pt], 0), torch_threads=pt,
                       graft_rss=med(g[gt], 1), torch_rss=med(p[pt], 1),
                       cold=statistics.median(s[0] for s in starts), warm=statistics.median(s[1] for s in starts),
                       torch_start=statistics.median(s[2] for s in starts),
                       graft_runs=[rate(r[0]) for r in g[gt]], torch_runs=[rate(r[0]) for r in p[pt]])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    if a.markdown:
        print("| case | graft samples/s | PyTorch samples/s | ratio | graft peak RSS | PyTorch peak RSS | RSS ratio |"
              " first step: graft cold / warm | PyTorch |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {rate(r['graft'])} ({r['graft_threads']} thr) | {rate(r['torch'])} ({r['torch_threads']} thr) | "
                  f"**{r['graft'] / r['torch']:.2f}×** | {r['graft_rss']:.0f} MiB | {r['torch_rss']:.0f} MiB | "
                  f"{r['graft_rss'] / r['torch_rss']:.2f} | {r['cold']:.2f} s / {r['warm']:.2f} s | {r['torch_start']:.2f} s |")
    else:
        print(f"{'case':14} {'graft/s':>9} {'torch/s':>9} {'ratio':>6} {'gRSS':>7} {'tRSS':>7} {'RSS':>5}  first step cold/warm/torch")
        for r in rows:
            print(f"{r['case']:14} {r['graft']:9.0f} {r['torch']:9.0f} {r['graft'] / r['torch']:6.2f} {r['graft_rss']:6.0f}M "
                  f"{r['torch_rss']:6.0f}M {r['graft_rss'] / r['torch_rss']:5.2f}  {r['cold']:.2f}/{r['warm']:.2f}/{r['torch_start']:.2f} s")


if __name__ == "__main__":
    main()
