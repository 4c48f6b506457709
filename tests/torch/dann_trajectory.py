#!/usr/bin/python3
"""DANN in graft and in PyTorch from the same start: the recipe's network (examples/domain/model.yaml
with a 100-2 domain head) gets PyTorch's initial weights (init:), and both take the same batches —
64 MNIST rows then 64 MNIST-M rows, in file order (data.shuffle: false) — for one epoch of 125 steps
at the DANN schedules of lambda and the learning rate (SGD, momentum 0.9). The runs must stay
together: every step's label and domain losses within 1e-3 (relative) over the first 50 steps,
where float32 rounding has not yet grown, within 5% to the end, and the MNIST-M test accuracy
within 0.03. So the recipe's differences between graft and PyTorch (examples/domain/README.md) are
those of initial weights and shuffles, not of arithmetic.

usage: dann_trajectory.py GRAFT MNISTM WORKDIR   exit 0 agree, 1 not, 77 no torch (skipped)"""
import json
import math
import os
import subprocess
import sys

try:
    import torch
    from torch import nn
except ImportError:
    print("dann_trajectory: python3-torch is not installed; skipping")
    sys.exit(77)

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from dann import Reverse, build, load, norm  # noqa: E402
from safetensors_io import write_safetensors  # noqa: E402

GRAFT, MNISTM, WORK = sys.argv[1:4]
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "examples", "domain", "data")
os.makedirs(WORK, exist_ok=True)
subprocess.run(["sh", os.path.join(ROOT, "scripts", "get-domain-data.sh"), DATA], env=dict(os.environ, MNISTM=MNISTM), check=True,
               stdout=subprocess.DEVNULL)
torch.set_num_threads(1)


xs, ys = load(DATA, "mnist", "train")
xt, _ = load(DATA, "mnistm", "train")
xtt, ytt = load(DATA, "mnistm", "test")

torch.manual_seed(1)
F, L, Dm = build(True)
modules = {"conv1": F[0], "conv2": F[3], "fc1": L[0], "fc2": L[2], "fc3": L[4], "domain.fc1": Dm[0], "domain.fc2": Dm[2]}
write_safetensors(f"{WORK}/w0.safetensors",
                  {f"{name}.{kind}": getattr(m, kind).detach().numpy() for name, m in modules.items() for kind in ("weight", "bias")})
with open(f"{WORK}/dann.yaml", "w") as f:
    f.write(f"""model: {ROOT}/examples/domain/model.yaml
init: w0.safetensors
data:
  train: {{images: {DATA}/mnist-train-images.idx, labels: {DATA}/mnist-train-labels.idx}}
  normalize: {{mean: 0.5, std: 0.5}}
  shuffle: false
domain_adaptation:
  features: features
  head:
    - {{name: fc1, op: linear, out_features: 100}}
    - {{name: relu1, op: relu}}
    - {{name: fc2, op: linear, out_features: 2}}
  target:
    train: {{images: {DATA}/mnistm-train-images.idx}}
    test: {{images: {DATA}/mnistm-test-images.idx, labels: {DATA}/mnistm-test-labels.idx}}
loss: cross_entropy
optimizer: {{type: sgd, learning_rate: 0.02, momentum: 0.9}}
schedule: {{type: dann}}
batch_size: 128
epochs: 1
""")
r = subprocess.run([GRAFT, "train", f"{WORK}/dann.yaml", "-q", "--threads", "1", "--metrics", f"{WORK}/m.jsonl"], capture_output=True,
                   text=True)
if r.returncode != 0:
    print(f"dann_trajectory: graft train failed:\n{r.stderr}")
    sys.exit(1)
steps = [json.loads(l) for l in open(f"{WORK}/m.jsonl") if '"split": "domain"' in l]
graft_acc = float([l for l in r.stdout.splitlines() if l.startswith("final target test accuracy:")][0].split()[-1])

params = [p for m in (F, L, Dm) for p in m.parameters()]
opt = torch.optim.SGD(params, lr=0.02, momentum=0.9)
ce = nn.CrossEntropyLoss()
domains = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
total, worst_early, worst = 125, 0.0, 0.0
for step in range(total):
    p = step / total
    lam = 2 / (1 + math.exp(-10 * p)) - 1
    for g in opt.param_groups:
        g["lr"] = 0.02 / (1 + 10 * p) ** 0.75
    xb = torch.cat([xs[step * 64:(step + 1) * 64], xt[step * 64:(step + 1) * 64]])
    f = F(norm(xb))
    label_loss = ce(L(f[:64]), ys[step * 64:(step + 1) * 64])
    domain_loss = ce(Dm(Reverse.apply(f, lam)), domains)
    opt.zero_grad()
    (label_loss + domain_loss).backward()
    opt.step()
    q = steps[step]
    for got, want in ((q["label_loss"], label_loss.item()), (q["domain_loss"], domain_loss.item())):
        rel = abs(got - want) / max(abs(want), 1e-6)
        worst = max(worst, rel)
        if step < 50:
            worst_early = max(worst_early, rel)
with torch.no_grad():
    torch_acc = (L(F(norm(xtt))).argmax(1) == ytt).float().mean().item()
ok = len(steps) == total and worst_early <= 1e-3 and worst <= 0.05 and abs(graft_acc - torch_acc) <= 0.03
print(f"dann_trajectory: {len(steps)} steps; losses differ by at most {worst_early:.2e} (relative) in the first 50, {worst:.2e} "
      f"in all; MNIST-M test accuracy graft {graft_acc:.4f}, PyTorch {torch_acc:.4f}: {'agree' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
