#!/usr/bin/python3
"""PyTorch parity harness: graft against PyTorch (Debian's python3-torch, a test oracle only) on the
same weights and data.

For each model below, PyTorch builds the same network (parameter names as graft's), draws random
weights and data, and writes them as safetensors. Then:
  forward   `graft eval --output` gives the model's outputs for every sample; they must match
            PyTorch's model(x);
  training  for each optimizer, `graft train` (init: those weights, 3 steps of a fixed batch order,
            --save) must end with the parameters PyTorch has after the same 3 steps, and log the
            same loss at every step.
Agreement: max |graft - torch| <= 1e-4 * max(1, max |torch|) per tensor (float32 throughout; sums
are ordered differently, so bit equality is not expected).

usage: parity.py GRAFT WORKDIR [CASE...]   exit 0 all agree, 1 a mismatch, 77 no torch (skipped)
(with CASE names, only those cases run)"""
import collections
import json
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
    from torch import nn
except ImportError:
    print("parity: python3-torch is not installed; skipping")
    sys.exit(77)

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

GRAFT, WORK, ONLY = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(WORK, exist_ok=True)
TOL = 1e-4
B = 4            # batch
STEPS = 3        # optimizer steps
failures = []
passed = 0


def compare(what, got, want, tol=TOL, relative=False):
    """max |got - want| <= tol * scale, scale = max(1, max |want|), or max |want| if relative."""
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        failures.append(f"{what}: shape {got.shape}, expected {want.shape}")
        return
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    top = float(np.max(np.abs(want))) if want.size else 0.0
    scale = max(top, 1e-30) if relative else max(1.0, top)
    status = "ok  " if err <= tol * scale else "FAIL"
    print(f"  {status} {what}: max abs diff {err:.3g} (scale {scale:.3g})")
    if err > tol * scale:
        failures.append(what)
    else:
        global passed
        passed += 1


def graft(*args):
    r = subprocess.run([GRAFT, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        failures.append(f"graft {' '.join(args)} exited with {r.returncode}")
    return r


# Each case: graft model YAML, the same network in PyTorch, input shape (per sample), classes.
CASES = {
    "mlp": ("""
name: mlp
input: {shape: [3, 4]}
layers:
  - {name: flat, op: flatten}
  - {name: fc1, op: linear, out_features: 16}
  - {name: act1, op: tanh}
  - {name: fc2, op: linear, out_features: 12}
  - {name: act2, op: relu}
  - {name: fc3, op: linear, out_features: 8, bias: false}
  - {name: act3, op: sigmoid}
  - {name: fc4, op: linear, out_features: 5}
""", lambda: nn.Sequential(collections.OrderedDict([
        ("flat", nn.Flatten()), ("fc1", nn.Linear(12, 16)), ("act1", nn.Tanh()), ("fc2", nn.Linear(16, 12)),
        ("act2", nn.ReLU()), ("fc3", nn.Linear(12, 8, bias=False)), ("act3", nn.Sigmoid()), ("fc4", nn.Linear(8, 5))])),
        (3, 4), 5),
    "cnn": ("""
name: cnn
input: {shape: [3, 12, 11]}
layers:
  - {name: conv1, op: conv2d, out_channels: 6, kernel_size: 3, padding: 1}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool2d, kernel_size: 3, stride: 2, padding: 1}
  - {name: conv2, op: conv2d, out_channels: 6, kernel_size: [3, 2], stride: 2, groups: 3, bias: false}
  - {name: relu2, op: relu}
  - {name: conv3, op: conv2d, out_channels: 4, kernel_size: 2, dilation: 2, padding: 1}
  - {name: pool2, op: maxpool2d, kernel_size: 2}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out_features: 7}
""", lambda: nn.Sequential(collections.OrderedDict([
        ("conv1", nn.Conv2d(3, 6, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2, padding=1)),
        ("conv2", nn.Conv2d(6, 6, (3, 2), stride=2, groups=3, bias=False)), ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(6, 4, 2, dilation=2, padding=1)), ("pool2", nn.MaxPool2d(2)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(4, 7))])),
        (3, 12, 11), 7),
}

class Dag(nn.Module):
    """A residual sum and a channel concat, as the 'dag' model below."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(54, 3)

    def forward(self, x):
        r2 = torch.relu(x + self.c2(torch.relu(self.c1(x))))
        cat = torch.cat([r2, self.c3(r2)], dim=1)
        return self.fc(torch.flatten(nn.functional.max_pool2d(cat, 2), 1))


CASES["dag"] = ("""
name: dag
input: {name: x, shape: [4, 6, 6]}
layers:
  - {name: c1, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: r1, op: relu}
  - {name: c2, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: sum, op: add, in: [x, c2]}
  - {name: r2, op: relu}
  - {name: c3, op: conv2d, out_channels: 2, kernel_size: 1}
  - {name: cat, op: concat, in: [r2, c3]}
  - {name: pool, op: maxpool2d, kernel_size: 2}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out_features: 3}
""", Dag, (4, 6, 6), 3)

CASES["bn"] = ("""
name: bn
input: {shape: [3, 8, 8]}
layers:
  - {name: conv, op: conv2d, out_channels: 4, kernel_size: 3, padding: 1, bias: false}
  - {name: bn1, op: batchnorm}
  - {name: relu, op: relu}
  - {name: pool, op: avgpool2d, kernel_size: 3, stride: 2, padding: 1}
  - {name: gap, op: global_avgpool}
  - {name: flat, op: flatten}
  - {name: fc1, op: linear, out_features: 10, bias: false}   # a bias before batchnorm has a zero gradient
  - {name: bn2, op: batchnorm, momentum: 0.2, eps: 0.001}
  - {name: fc2, op: linear, out_features: 4}
""", lambda: nn.Sequential(collections.OrderedDict([
        ("conv", nn.Conv2d(3, 4, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(4)), ("relu", nn.ReLU()),
        ("pool", nn.AvgPool2d(3, 2, padding=1)), ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
        ("fc1", nn.Linear(4, 10, bias=False)),
        ("bn2", nn.BatchNorm1d(10, momentum=0.2, eps=0.001)), ("fc2", nn.Linear(10, 4))])),
        (3, 8, 8), 4)

class Ops(nn.Module):
    """gelu, an elementwise product of two branches (mul), softmax and log_softmax."""

    def __init__(self):
        super().__init__()
        self.fc1, self.a, self.b, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 5)

    def forward(self, x):
        h = nn.functional.gelu(self.fc1(x))
        return torch.log_softmax(self.fc3(torch.softmax(self.a(h) * self.b(h), dim=-1)), dim=-1)


CASES["ops"] = ("""
name: ops
input: {shape: [6]}
layers:
  - {name: fc1, op: linear, out_features: 8}
  - {name: act, op: gelu}
  - {name: a, op: linear, out_features: 8}
  - {name: b, op: linear, in: act, out_features: 8}
  - {name: prod, op: mul, in: [a, b]}
  - {name: sm, op: softmax}
  - {name: fc3, op: linear, out_features: 5}
  - {name: out, op: log_softmax}
""", Ops, (6,), 5)

class Text(nn.Module):
    """A bag-of-embeddings text classifier: token embeddings (padding row 0), layernorm per token,
    the mean over the sequence, layernorm, linear."""

    def __init__(self):
        super().__init__()
        self.emb, self.ln1 = nn.Embedding(20, 8, padding_idx=0), nn.LayerNorm(8)
        self.ln2, self.fc = nn.LayerNorm(8, eps=1e-3), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.ln2(self.ln1(self.emb(x)).mean(1)))


CASES["text"] = ("""
name: text
input: {name: tokens, shape: [6], dtype: int32}
layers:
  - {name: emb, op: embedding, num_embeddings: 20, embedding_dim: 8, padding_idx: 0}
  - {name: ln1, op: layernorm}
  - {name: pool, op: mean, dim: 1}
  - {name: ln2, op: layernorm, normalized_shape: 8, eps: 0.001}
  - {name: fc, op: linear, out_features: 3}
""", Text, (6,), 3)


class Multilabel(nn.Module):
    """reshape, layernorm over two trailing dimensions, 4 independent binary outputs."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 12), nn.LayerNorm([3, 4]), nn.Linear(12, 4)

    def forward(self, x):
        h = nn.functional.gelu(self.norm(self.fc1(x).view(-1, 3, 4)))
        return self.fc2(torch.flatten(h, 1))


CASES["multilabel"] = ("""
name: multilabel
input: {shape: [6]}
layers:
  - {name: fc1, op: linear, out_features: 12}
  - {name: grid, op: reshape, shape: [3, -1]}
  - {name: norm, op: layernorm, normalized_shape: [3, 4]}
  - {name: act, op: gelu}
  - {name: flat, op: flatten}
  - {name: fc2, op: linear, out_features: 4}
""", Multilabel, (6,), 4)

CASES["regression"] = ("""
name: regression
input: {shape: [5]}
layers:
  - {name: fc1, op: linear, out_features: 8}
  - {name: act, op: tanh}
  - {name: fc2, op: linear, out_features: 2}
""", lambda: nn.Sequential(collections.OrderedDict([("fc1", nn.Linear(5, 8)), ("act", nn.Tanh()), ("fc2", nn.Linear(8, 2))])),
    (5,), 2)

# Losses other than cross-entropy (on class labels), per case: binary cross-entropy on logits against
# 0/1 targets, mean squared error against float targets; and cases whose input is token indices.
LOSS = {"multilabel": "bce_with_logits", "regression": "mse"}
PREDICT = {"mlp", "text", "multilabel", "regression"}  # cases that also check graft predict
TOKENS = {"text": 20}


def make_data(name, shape, classes, n):
    x = torch.randint(0, TOKENS[name], (n, *shape)) if name in TOKENS else torch.randn(n, *shape)
    loss = LOSS.get(name, "cross_entropy")
    if loss == "bce_with_logits":
        y = torch.randint(0, 2, (n, classes)).float()
    elif loss == "mse":
        y = torch.randn(n, classes)
    else:
        y = torch.randint(0, classes, (n,))
    return x, y


def torch_loss(name, out, y):
    loss = LOSS.get(name, "cross_entropy")
    if loss == "bce_with_logits":
        return nn.functional.binary_cross_entropy_with_logits(out, y)
    if loss == "mse":
        return nn.functional.mse_loss(out, y)
    return nn.functional.cross_entropy(out, y, label_smoothing=SMOOTHING.get(name, 0.0))


def plan_loss(name):
    loss = LOSS.get(name, "cross_entropy")
    return f"{{type: cross_entropy, label_smoothing: {SMOOTHING.get(name, 0.0)}}}" if loss == "cross_entropy" else loss


# ResNet-18: the shipped example against torchvision's, name for name (3x64x64, 1000 classes).
try:
    import torchvision
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../examples/resnet18/model.yaml")) as f:
        CASES["resnet18"] = (f.read(), lambda: torchvision.models.resnet18(), (3, 64, 64), 1000)
except ImportError:
    print("parity: python3-torchvision is not installed; the ResNet-18 case is skipped")

# Each optimizer at learning-rate scale f (1 for the small models; deep networks need smaller steps
# to stay out of the divergent regime, where any rounding difference grows exponentially).
def optimizers(f):
    return {
        "sgd": (f"{{type: sgd, learning_rate: {0.1 * f}, momentum: 0.9, weight_decay: 0.001, nesterov: true}}",
                lambda p: torch.optim.SGD(p, lr=0.1 * f, momentum=0.9, weight_decay=0.001, nesterov=True)),
        "adamw": (f"{{type: adamw, learning_rate: {0.01 * f}, weight_decay: 0.05, betas: [0.8, 0.99], eps: 1.0e-6}}",
                  lambda p: torch.optim.AdamW(p, lr=0.01 * f, weight_decay=0.05, betas=(0.8, 0.99), eps=1e-6)),
        "adam": (f"{{type: adam, learning_rate: {0.01 * f}, weight_decay: 0.01}}",
                 lambda p: torch.optim.Adam(p, lr=0.01 * f, weight_decay=0.01)),
        "sgd_plain": (f"{{type: sgd, learning_rate: {0.1 * f}, weight_decay: 0.01}}",  # no momentum: another update op
                      lambda p: torch.optim.SGD(p, lr=0.1 * f, weight_decay=0.01)),
    }


LR_SCALE = {"resnet18": 0.1}
SMOOTHING = {"ops": 0.1}  # label smoothing of the cross-entropy loss, per case

# Deep networks: after a few steps, float32 rounding differences (sums in another order) grow, so the
# parameters are compared through their gradients at the first step instead, and the losses of 3
# steps relatively: 1e-4 for SGD; 1e-3 for Adam/AdamW, whose per-element normalisation moves every
# parameter by about the learning rate however small its gradient, so elements whose gradients are at
# the rounding level (about 1e-5 of a tensor's largest, as the gradient comparison shows) move
# differently in the two frameworks.
DEEP = {"resnet18"}


def gradient_check(name, d, model, w0, x, y):
    write_safetensors(f"{d}/one.safetensors", {"x": x.numpy(), "y": y.numpy()})
    with open(f"{d}/grad.plan.yaml", "w") as f:
        f.write(f"""model: model.yaml
init: w0.safetensors
data: {{format: tensors, train: {{file: one.safetensors}}, shuffle: false}}
loss: cross_entropy
optimizer: {{type: sgd, learning_rate: 1.0}}
batch_size: {len(x)}
epochs: 1
""")
    if graft("train", f"{d}/grad.plan.yaml", "-q", "--save", f"{d}/grad.w1.safetensors").returncode != 0:
        return
    w1 = read_safetensors(f"{d}/grad.w1.safetensors")
    model.load_state_dict({k: torch.tensor(v) for k, v in w0.items()})
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for k, p in model.named_parameters():
        compare(f"{name} gradient of {k}", w0[k].astype(np.float64) - w1[k], p.grad.numpy(), relative=True)

def setup_case(name, d, w0_file="w0.safetensors", rename=""):
    """Writes the case's model YAML, its PyTorch model's weights (batchnorm parameters and statistics
    made non-trivial; ResNet-18 keeps torchvision's initialisation) and a batch of data into d."""
    yaml, build, shape, classes = CASES[name]
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/model.yaml", "w") as f:
        f.write(yaml)
    model = build()
    with torch.no_grad():
        for k, v in (model.state_dict().items() if name != "resnet18" else []):
            if k.endswith("running_mean") or (".weight" in k and v.dim() == 1) or (".bias" in k and "bn" in k):
                v.copy_(torch.randn_like(v) * 0.5 + (1.0 if ".weight" in k else 0.0))
            if k.endswith("running_var"):
                v.copy_(torch.rand_like(v) + 0.5)
    w0 = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    write_safetensors(f"{d}/{w0_file}", {rename + k: v for k, v in w0.items()})
    x, y = make_data(name, shape, classes, B * STEPS)
    write_safetensors(f"{d}/data.safetensors", {"x": x.numpy(), "y": y.numpy()})
    return model, w0, x, y


def torch_steps(name, model, opt, x, y, frozen_bn=()):
    """STEPS optimizer steps of batch B in PyTorch; the batchnorm modules in frozen_bn run on their
    running statistics. Returns the loss of each step."""
    losses = []
    for st in range(STEPS):
        model.train()
        for bn in frozen_bn:
            bn.eval()
        opt.zero_grad(set_to_none=True)
        loss = torch_loss(name, model(x[st * B:(st + 1) * B]), y[st * B:(st + 1) * B])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def graft_train(d, plan_name):
    """graft train d/PLAN.plan.yaml, saving d/PLAN.w1.safetensors; its result and training records
    (None if it failed)."""
    metrics = f"{d}/{plan_name}.jsonl"
    r = graft("train", f"{d}/{plan_name}.plan.yaml", "-q", "--metrics", metrics, "--save", f"{d}/{plan_name}.w1.safetensors")
    recs = [json.loads(l) for l in open(metrics) if '"train"' in l] if r.returncode == 0 else None
    return r, recs


torch.manual_seed(0)
for name, (yaml, build, shape, classes) in CASES.items():
    if ONLY and name not in ONLY:
        continue
    print(f"{name}:")
    d = os.path.join(WORK, name)
    model, w0, x, y = setup_case(name, d)

    # forward
    OPTIMIZERS = optimizers(LR_SCALE.get(name, 1.0))
    if name in DEEP:  # the update ops are covered by the small cases; ResNet-18 runs are the slow ones
        del OPTIMIZERS["sgd_plain"]
    for opt_name, (opt_yaml, make_opt) in OPTIMIZERS.items():
        plan = f"{d}/{opt_name}.plan.yaml"
        with open(plan, "w") as f:
            f.write(f"""model: model.yaml
init: w0.safetensors
data: {{format: tensors, train: {{file: data.safetensors}}, test: {{file: data.safetensors}}, shuffle: false}}
loss: {plan_loss(name)}
optimizer: {opt_yaml}
batch_size: {B}
epochs: 1
log_every: 1
""")
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    model.train()
    if graft("eval", f"{d}/sgd.plan.yaml", "--output", f"{d}/out.safetensors").returncode == 0:
        compare(f"{name} forward output", read_safetensors(f"{d}/out.safetensors")["output"], want)
    if name in PREDICT:  # graft predict on the same inputs: top classes and probabilities, or values
        r = graft("predict", f"{d}/sgd.plan.yaml", f"{d}/data.safetensors", "--top", "2")
        rows = [l.split(": ", 1)[1] for l in r.stdout.splitlines()]
        if LOSS.get(name) == "mse":
            got = [[float(v) for v in row.split()] for row in rows]
            compare(f"{name} predict values", got, want)
        else:
            probs = torch.sigmoid(torch.tensor(want)) if LOSS.get(name) == "bce_with_logits" else torch.softmax(torch.tensor(want), 1)
            top = torch.topk(probs, 2, dim=1)
            got = [[(int(c), float(p)) for c, p in (e.strip().rstrip(")").split(" (") for e in row.split(","))] for row in rows]
            same = len(got) == len(want) and all([c for c, _ in g] == t.tolist() for g, t in zip(got, top.indices))
            print(f"  {'ok  ' if same else 'FAIL'} {name} predict: the top-2 classes of every sample")
            if not same:
                failures.append(f"{name} predict classes")
            compare(f"{name} predict probabilities", [[p for _, p in g] for g in got], top.values.numpy(), tol=2e-4)

    if name in DEEP:  # every parameter's gradient: one SGD step at learning rate 1 gives w0 - w1 = g
        gradient_check(name, d, model, w0, x[:B], y[:B])

    # training
    for opt_name, (opt_yaml, make_opt) in OPTIMIZERS.items():
        model.load_state_dict({k: torch.tensor(v) for k, v in w0.items()})
        opt = make_opt(model.parameters())
        losses = torch_steps(name, model, opt, x, y)
        r, recs = graft_train(d, opt_name)
        if recs is None:
            continue
        if name in DEEP:  # the loss after each step, relative; parameters were compared through their gradients
            tol = 1e-4 if opt_name == "sgd" else 1e-3
            compare(f"{name} {opt_name} loss per step (relative {tol:g})", [r["loss"] for r in recs], losses, tol=tol, relative=True)
            continue
        compare(f"{name} {opt_name} loss per step", [r["loss"] for r in recs], losses)
        w1 = read_safetensors(f"{d}/{opt_name}.w1.safetensors")
        for k, v in model.state_dict().items():
            compare(f"{name} {opt_name} {k} after {STEPS} steps", w1[k], v.numpy())

# Transfer learning on the batchnorm model: the backbone frozen (conv, bn1: auto -> running
# statistics), bn2 in adapt mode (batch statistics and running-statistics updates, weight and bias
# frozen), fc1 in a parameter group at a tenth of the learning rate without weight decay; weights
# loaded through an init mapping that renames "backbone." away. PyTorch does the same with
# requires_grad, bn1.eval() and optimizer parameter groups. Frozen parameters and buffers must come
# out bit-for-bit unchanged (they also get no optimizer state: none is allocated for them).
TRANSFER_PLAN = """model: model.yaml
init: {{file: w0.renamed.safetensors, rename: {{"backbone.": ""}}}}
data: {{format: tensors, train: {{file: data.safetensors}}, shuffle: false}}
loss: cross_entropy
optimizer: {opt}
freeze: [conv, bn1]
batchnorm: [{{match: bn2, mode: adapt}}]
param_groups: [{{match: fc1, lr_mult: 0.1, weight_decay_mult: 0}}]
batch_size: {B}
epochs: 1
log_every: 1
"""
FROZEN = ("conv.", "bn1.", "bn2.weight", "bn2.bias")


def transfer_case():
    name = "bn"
    d = os.path.join(WORK, "transfer")
    torch.manual_seed(1)
    model, w0, x, y = setup_case(name, d, "w0.renamed.safetensors", "backbone.")
    print("transfer:")
    for opt_name in ("sgd", "adamw"):
        opt_yaml, _ = optimizers(1.0)[opt_name]
        with open(f"{d}/{opt_name}.plan.yaml", "w") as f:
            f.write(TRANSFER_PLAN.format(opt=opt_yaml, B=B))
        model.load_state_dict({k: torch.tensor(v) for k, v in w0.items()})
        for k, prm in model.named_parameters():
            prm.requires_grad = not k.startswith(FROZEN)
        fc1 = [model.fc1.weight]
        rest = [prm for k, prm in model.named_parameters() if prm.requires_grad and not k.startswith("fc1.")]
        lr, wd = (0.1, 0.001) if opt_name == "sgd" else (0.01, 0.05)
        if opt_name == "sgd":
            opt = torch.optim.SGD([{"params": fc1, "lr": lr * 0.1, "weight_decay": 0}, {"params": rest}], lr=lr, momentum=0.9,
                                  weight_decay=wd, nesterov=True)
        else:
            opt = torch.optim.AdamW([{"params": fc1, "lr": lr * 0.1, "weight_decay": 0}, {"params": rest}], lr=lr, weight_decay=wd,
                                    betas=(0.8, 0.99), eps=1e-6)
        losses = torch_steps(name, model, opt, x, y, [model.bn1])  # bn1 frozen: running statistics, no update
        r, recs = graft_train(d, opt_name)
        if recs is None:
            continue
        if "init: 14 tensors loaded from" not in r.stdout:
            failures.append(f"transfer {opt_name}: no init report line in: {r.stdout!r}")
        # the frozen prefix (conv, bn1 on running statistics, relu, pools) is computed once per sample
        if "feature cache: the frozen prefix computed once for 12 samples" not in r.stdout:
            failures.append(f"transfer {opt_name}: the feature cache was not used: {r.stdout!r}")
        compare(f"transfer {opt_name} loss per step", [q["loss"] for q in recs], losses)
        w1 = read_safetensors(f"{d}/{opt_name}.w1.safetensors")
        for k, v in model.state_dict().items():
            if k.startswith(FROZEN):
                same = np.array_equal(w1[k], w0[k].astype(np.float32))
                print(f"  {'ok  ' if same else 'FAIL'} transfer {opt_name} {k} frozen: bit-for-bit unchanged")
                if not same:
                    failures.append(f"transfer {opt_name} {k} changed")
            else:
                compare(f"transfer {opt_name} {k} after {STEPS} steps", w1[k], v.numpy())
        # the same run without the cache: the same numbers (up to float rounding)
        with open(f"{d}/{opt_name}.nocache.plan.yaml", "w") as f:
            f.write(TRANSFER_PLAN.format(opt=opt_yaml, B=B) + "feature_cache: off\n")
        r = graft("train", f"{d}/{opt_name}.nocache.plan.yaml", "-q", "--save", f"{d}/{opt_name}.nocache.safetensors")
        if r.returncode == 0:
            if "feature cache" in r.stdout:
                failures.append(f"transfer {opt_name}: feature_cache: off still used the cache")
            w2 = read_safetensors(f"{d}/{opt_name}.nocache.safetensors")
            compare(f"transfer {opt_name} with and without the feature cache", np.concatenate([w2[k].ravel() for k in sorted(w2)]),
                    np.concatenate([w1[k].ravel() for k in sorted(w1)]), tol=1e-6)

    # Head surgery: the file's fc2 is a 7-class head; the model's has 4 classes. Without `exclude` the
    # load fails naming the shapes; with it, fc2 starts fresh, the file's fc2 is ignored, and (all
    # else frozen) every other tensor ends exactly as loaded.
    w7 = dict(w0, **{"fc2.weight": np.zeros((7, 10), np.float32), "fc2.bias": np.zeros(7, np.float32)})
    write_safetensors(f"{d}/w7.safetensors", w7)
    for exclude in (False, True):
        with open(f"{d}/head.plan.yaml", "w") as f:
            f.write(f"""model: model.yaml
init: {{file: w7.safetensors{", exclude: [fc2]" if exclude else ""}}}
data: {{format: tensors, train: {{file: data.safetensors}}}}
loss: cross_entropy
optimizer: {{type: sgd, learning_rate: 0.1}}
freeze: ["*"]
unfreeze: [fc2]
batch_size: {B}
epochs: 1
""")
        r = subprocess.run([GRAFT, "train", f"{d}/head.plan.yaml", "-q", "--save", f"{d}/head.w1.safetensors"], capture_output=True, text=True)
        if not exclude:
            want = "error: tensor 'fc2.weight' has shape [7, 10], the model's parameter has [4, 10]"
            ok = r.returncode == 1 and want in r.stderr
        else:
            w1 = read_safetensors(f"{d}/head.w1.safetensors") if r.returncode == 0 else {}
            ok = (r.returncode == 0 and "init: 12 tensors loaded" in r.stdout and "2 parameters start fresh" in r.stdout and
                  all(np.array_equal(w1[k], w0[k].astype(np.float32)) for k in w0 if not k.startswith("fc2.")) and
                  w1["fc2.weight"].shape == (4, 10) and np.abs(w1["fc2.weight"]).max() > 0)
        print(f"  {'ok  ' if ok else 'FAIL'} transfer head surgery {'with' if exclude else 'without'} exclude")
        if not ok:
            print(r.stdout, r.stderr)
            failures.append(f"transfer head surgery {'with' if exclude else 'without'} exclude")


# Gradual unfreezing on the batchnorm model: phase 1 trains fc2 (every batchnorm on its running
# statistics), phase 2 adds fc1 and bn2 (bn2 back to batch statistics), phase 3 everything at half
# the rate. PyTorch: one optimizer over all parameters, requires_grad switched per phase (a parameter
# gets optimizer state, and Adam its step count, when it is first trained), group lr scaled.
PHASES_PLAN = """model: model.yaml
init: w0.safetensors
data: {{format: tensors, train: {{file: data.safetensors}}, shuffle: false}}
loss: cross_entropy
optimizer: {opt}
freeze: ["*"]
unfreeze: [{first}]
phases:
{phases}
batch_size: {B}
log_every: 1
"""
# per model: the parameter prefixes trained in each phase and its learning-rate multiplier
PHASES = {
    "bn": [(("fc2.",), 1.0), (("fc2.", "fc1.", "bn2."), 1.0), (("fc2.", "fc1.", "bn2.", "conv.", "bn1."), 0.5)],
    "resnet18": [(("fc.",), 1.0), (("fc.", "layer4."), 1.0), (("",), 0.5)],
}


def phases_case(name):
    spec = PHASES[name]
    d = os.path.join(WORK, f"phases-{name}")
    torch.manual_seed(2)
    model, w0, x, y = setup_case(name, d)
    bn_layers = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    lines = []
    for i, (trained, mult) in enumerate(spec):
        new = [t.rstrip(".") or "*" for t in trained if i == 0 or t not in spec[i - 1][0]]
        pats = ", ".join(f'"{p}"' for p in new)
        lines.append(f"  - {{epochs: 1{', unfreeze: [' + pats + ']' if i else ''}, lr_mult: {mult}}}")
    print(f"phases ({name}):")
    lr_scale = LR_SCALE.get(name, 1.0)
    for opt_name in ("sgd", "adam"):
        opt_yaml, make_opt = optimizers(lr_scale)[opt_name]
        with open(f"{d}/{opt_name}.plan.yaml", "w") as f:
            f.write(PHASES_PLAN.format(opt=opt_yaml, B=B, first=spec[0][0][0].rstrip("."), phases="\n".join(lines)))
        model.load_state_dict({k: torch.tensor(v) for k, v in w0.items()})
        opt = make_opt(model.parameters())
        base_lr = opt.param_groups[0]["lr"]
        losses = []
        for trained, mult in spec:
            for k, prm in model.named_parameters():
                prm.requires_grad = k.startswith(trained)
            for g in opt.param_groups:
                g["lr"] = base_lr * mult
            # batchnorm: running statistics while its weight is frozen
            losses += torch_steps(name, model, opt, x, y, [bn for bn in bn_layers if not bn.weight.requires_grad])
        r, recs = graft_train(d, opt_name)
        if recs is None:
            continue
        if "phase 3/3: epochs 3-3" not in r.stdout:
            failures.append(f"phases {name} {opt_name}: no phase lines in {r.stdout!r}")
        if name in DEEP:  # as for the other deep cases: the losses, relatively
            tol = 1e-4 if opt_name == "sgd" else 1e-3
            compare(f"phases {name} {opt_name} loss per step ({len(losses)} steps, relative {tol:g})", [q["loss"] for q in recs],
                    losses, tol=tol, relative=True)
            continue
        compare(f"phases {name} {opt_name} loss per step ({len(losses)} steps)", [q["loss"] for q in recs], losses)
        w1 = read_safetensors(f"{d}/{opt_name}.w1.safetensors")
        for k, v in model.state_dict().items():
            compare(f"phases {name} {opt_name} {k} after 3 phases", w1[k], v.numpy())


def images_case():
    """Image folders (format: images) against torchvision's transforms on PIL images: PNG and JPEG
    files, grey and colour, of several sizes, each decoded, converted to the model's channels, resized
    (shorter side, or [h, w]), centre-cropped and normalised per channel. graft's preprocessed input is
    read back through a model whose output is its input (flatten, then a linear layer with identity
    weights) with `graft eval --output`. Agreement: the same pixels (graft resizes in PIL's fixed point),
    so within 0.01 of an 8-bit level, float rounding of the normalisation."""
    global passed
    try:
        from PIL import Image
        from torchvision import transforms
    except ImportError:
        print("parity: python3-torchvision (PIL) is not installed; the images case is skipped")
        return
    rng = np.random.default_rng(7)
    for channels, resize, size in ((3, 20, 16), (1, [18, 24], 12), (3, None, 10)):
        d = os.path.join(WORK, f"images_c{channels}")
        os.makedirs(d, exist_ok=True)
        files = []  # (class, path): smooth random pictures, so JPEG's loss stays small
        for k, cls in enumerate(("ant", "bee")):
            os.makedirs(f"{d}/test/{cls}", exist_ok=True)
            for i, (w, h, mode, ext) in enumerate(((23, 17, "RGB", "png"), (40, 33, "L", "png"), (10, 10, "RGB", "jpg"),
                                                     (31, 45, "RGBA", "png"), (16, 12, "L", "jpg"))):
                if resize is None and (w < size or h < size):
                    continue
                base = rng.integers(0, 256, size=(h // 4 + 2, w // 4 + 2, 4), dtype=np.uint8)
                pic = Image.fromarray(base, "RGBA").resize((w, h), Image.BICUBIC).convert(mode)
                path = f"{d}/test/{cls}/{i}.{ext}"
                pic.save(path, quality=95) if ext == "jpg" else pic.save(path)
                files.append((k, path))
        mean, std = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) if channels == 3 else ([0.5], [0.25])
        tf = [transforms.Resize(resize)] if resize else []
        tf += [transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(mean, std)]
        tf = transforms.Compose(tf)
        want = np.stack([tf(Image.open(p).convert("RGB" if channels == 3 else "L")).numpy().reshape(-1) for _, p in files])
        n = channels * size * size
        write_safetensors(f"{d}/w.safetensors", {"id.weight": np.eye(n, dtype=np.float32), "id.bias": np.zeros(n, np.float32)})
        with open(f"{d}/model.yaml", "w") as f:
            f.write(f"""name: identity
input: {{name: image, shape: [{channels}, {size}, {size}]}}
layers:
  - {{name: flat, op: flatten}}
  - {{name: id, op: linear, out_features: {n}}}
""")
        with open(f"{d}/plan.yaml", "w") as f:
            f.write(f"""model: model.yaml
init: w.safetensors
data:
  format: images
  train: {{dir: test}}
  test: {{dir: test}}
  {"resize: " + json.dumps(resize) if resize else ""}
  normalize: {{mean: {mean}, std: {std}}}
loss: cross_entropy
optimizer: {{type: sgd, learning_rate: 0.1}}
batch_size: 3
epochs: 1
""")
        r = graft("eval", f"{d}/plan.yaml", "--output", f"{d}/out.safetensors")
        if r.returncode != 0:
            failures.append(f"images c{channels}: graft eval failed: {r.stderr.strip()}")
            continue
        got = read_safetensors(f"{d}/out.safetensors")["output"]
        level = np.array(std * (n // len(std)) if len(std) == 1 else np.repeat(std, size * size)) * 255  # one 8-bit level
        diff = np.abs(got - want) * level
        if got.shape != want.shape or diff.max() > 0.01:
            failures.append(f"images c{channels} resize {resize}: graft's input differs from torchvision's by {diff.max():.3f} levels")
        else:
            passed += 1
            print(f"images c{channels} resize {resize} crop {size}: {len(files)} files agree with torchvision, "
                  f"max diff {diff.max():.4f} of an 8-bit level")


def clip_case():
    """Gradient clipping: the CNN trained 3 steps with `clip_grad_norm` (SGD with momentum, and Adam),
    against torch.nn.utils.clip_grad_norm_ before each optimizer step; the limit is below the
    gradients' norm, so every step clips."""
    for opt_name, max_norm in (("sgd", 0.05), ("adam", 0.2)):
        d = os.path.join(WORK, f"clip-{opt_name}")
        torch.manual_seed(3)
        model, w0, x, y = setup_case("cnn", d)
        opt_yaml, make_opt = optimizers(1.0)[opt_name]
        with open(f"{d}/clip.plan.yaml", "w") as f:
            f.write(f"""model: model.yaml
init: w0.safetensors
data: {{format: tensors, train: {{file: data.safetensors}}, shuffle: false}}
loss: cross_entropy
optimizer: {opt_yaml[:-1]}, clip_grad_norm: {max_norm}}}
batch_size: {B}
epochs: 1
log_every: 1
""")
        model.load_state_dict({k: torch.tensor(v) for k, v in w0.items()})
        opt = make_opt(model.parameters())
        losses, norms = [], []
        for st in range(STEPS):
            opt.zero_grad(set_to_none=True)
            loss = torch_loss("cnn", model(x[st * B:(st + 1) * B]), y[st * B:(st + 1) * B])
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
            opt.step()
            losses.append(loss.item())
        if min(norms) <= max_norm:
            failures.append(f"clip {opt_name}: a step's gradient norm {min(norms):.3g} is under the limit {max_norm}: nothing clipped")
        r, recs = graft_train(d, "clip")
        if recs is None:
            failures.append(f"clip {opt_name}: graft train failed: {r.stderr.strip()}")
            continue
        compare(f"clip {opt_name} loss per step (gradient norms {', '.join(f'{v:.3g}' for v in norms)} clipped to {max_norm})",
                [q["loss"] for q in recs], losses)
        w1 = read_safetensors(f"{d}/clip.w1.safetensors")
        for k, v in model.state_dict().items():
            compare(f"clip {opt_name} {k} after {STEPS} steps", w1[k], v.numpy())


DANN_MODEL = """name: dannp
input: {shape: [1, 8, 8]}
layers:
  - {name: conv, op: conv2d, out_channels: 3, kernel_size: 3}
  - {name: relu, op: relu}
  - {name: features, op: flatten}
  - {name: fc, op: linear, out_features: 5}
"""


from dann import Reverse  # noqa: E402 (the recipe's reference: identity forward, gradient * -lambda)


class DannNet(nn.Module):
    """The parity case's DANN network, with graft's parameter names: a label path (conv, fc) and a
    domain head (domain.fc1, domain.fc2) on the flattened conv features behind a gradient reversal."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(108, 5)
        self.domain = nn.Module()
        self.domain.fc1 = nn.Linear(108, 6)
        self.domain.fc2 = nn.Linear(6, 2)

    def forward(self, x, lam):
        f = torch.relu(self.conv(x)).flatten(1)
        h = self.domain.fc2(torch.relu(self.domain.fc1(Reverse.apply(f, lam))))
        return self.fc(f), h


def dann_case():
    """Domain adaptation: 3 steps of batches of 4 source and 4 target rows (file order), the label
    loss on the source rows (or on both), the domain loss on all, through the gradient reversal at
    a constant lambda, and at the DANN schedules of lambda and the learning rate (p = step / 3)."""
    variants = {"constant": ("lambda: 0.7", "", "source", lambda p: 0.7, lambda p: 1.0),
                "schedule": ("lambda: {schedule: dann, gamma: 10, max: 0.9}", "schedule: {type: dann, alpha: 10, beta: 0.75}", "both",
                             lambda p: 0.9 * (2 / (1 + np.exp(-10 * p)) - 1), lambda p: 1 / (1 + 10 * p) ** 0.75)}
    for vname, (lam_yaml, sched_yaml, label_on, lam_of, lr_of) in variants.items():
        d = os.path.join(WORK, f"dann-{vname}")
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(5)
        model = DannNet()
        w0 = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        write_safetensors(f"{d}/w0.safetensors", w0)
        with open(f"{d}/model.yaml", "w") as f:
            f.write(DANN_MODEL)
        xs, ys = torch.randn(4 * STEPS, 1, 8, 8), torch.randint(0, 5, (4 * STEPS,))
        xt, yt = torch.randn(4 * STEPS, 1, 8, 8) * 2 + 0.5, torch.randint(0, 5, (4 * STEPS,))
        write_safetensors(f"{d}/source.safetensors", {"x": xs.numpy(), "y": ys.numpy()})
        write_safetensors(f"{d}/target.safetensors", {"x": xt.numpy(), "y": yt.numpy()})
        with open(f"{d}/dann.plan.yaml", "w") as f:
            f.write(f"""model: model.yaml
init: w0.safetensors
data: {{format: tensors, train: {{file: source.safetensors}}, shuffle: false}}
domain_adaptation:
  features: features
  head:
    - {{name: fc1, op: linear, out_features: 6}}
    - {{name: relu, op: relu}}
    - {{name: fc2, op: linear, out_features: 2}}
  target: {{train: {{file: target.safetensors}}}}
  {lam_yaml}
  losses: {{label: {label_on}}}
loss: cross_entropy
optimizer: {{type: sgd, learning_rate: 0.1, momentum: 0.9}}
{sched_yaml}
batch_size: 8
epochs: 1
log_every: 1
""")
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses, lams, lrs = [], [], []
        dom = torch.tensor([0] * 4 + [1] * 4)
        for st in range(STEPS):
            p = st / STEPS
            for g in opt.param_groups:
                g["lr"] = 0.1 * lr_of(p)
            opt.zero_grad(set_to_none=True)
            x = torch.cat([xs[st * 4:(st + 1) * 4], xt[st * 4:(st + 1) * 4]])
            out, h = model(x, float(lam_of(p)))
            ysb = ys[st * 4:(st + 1) * 4]
            lab = nn.functional.cross_entropy(out[:4], ysb) if label_on == "source" else \
                nn.functional.cross_entropy(out, torch.cat([ysb, yt[st * 4:(st + 1) * 4]]))
            loss = lab + nn.functional.cross_entropy(h, dom)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            lams.append(float(lam_of(p)))
            lrs.append(0.1 * lr_of(p))
        metrics = f"{d}/dann.jsonl"
        r = graft("train", f"{d}/dann.plan.yaml", "-q", "--metrics", metrics, "--save", f"{d}/dann.w1.safetensors")
        if r.returncode != 0:
            failures.append(f"dann {vname}: graft train failed: {r.stderr.strip()}")
            continue
        recs = [json.loads(l) for l in open(metrics)]
        steps = [q for q in recs if q["split"] == "domain"]
        compare(f"dann {vname} loss per step", [q["loss"] for q in recs if q["split"] == "train"], losses)
        compare(f"dann {vname} lambda per step", [q["lambda"] for q in steps], lams)
        compare(f"dann {vname} learning rate per step", [q["lr"] for q in steps], lrs)
        w1 = read_safetensors(f"{d}/dann.w1.safetensors")
        for k, v in model.state_dict().items():
            compare(f"dann {vname} {k} after {STEPS} steps", w1[k], v.numpy())


if not ONLY or "dann" in ONLY:
    dann_case()
if not ONLY or "clip" in ONLY:
    clip_case()
if not ONLY or "images" in ONLY:
    images_case()
if not ONLY or "transfer" in ONLY:
    transfer_case()
for case in PHASES:
    if case in CASES and (not ONLY or "phases" in ONLY):
        phases_case(case)

# Op coverage: every op of ir/ops.def must appear in the compiled programs of the cases above (each
# compared with PyTorch), except leaves and dropout, whose masks cannot match PyTorch's generator (it
# is checked statistically and by finite differences in test_gradcheck). A new op without a parity
# case fails here.
EXEMPT = {"input", "param", "state", "dropout"}
if not ONLY:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../ir/ops.def")) as f:
        table = [l.split('"')[1] for l in f if l.startswith("OP(")]
    seen = set()
    plans = [os.path.join(WORK, name, f"{opt_name}.plan.yaml") for opt_name in optimizers(1.0)
             for name in list(CASES) + ["transfer"] + [f"phases-{c}" for c in PHASES]]  # transfer: conv2d_bn (a frozen batchnorm folded)
    plans += [os.path.join(WORK, f"clip-{o}", "clip.plan.yaml") for o in ("sgd", "adam")]  # sum_squares, clip_coef, scale
    plans += [os.path.join(WORK, f"dann-{v}", "dann.plan.yaml") for v in ("constant", "schedule")]  # grad_reverse
    for plan in plans:
        if os.path.exists(plan):
            r = graft("ir", plan, "--after=optimizer")
            for line in r.stdout.splitlines():  # "  %3 = op ...", "~ %9 = op ..." or "  update_op ..."
                line = line.lstrip("~ ")
                if line:
                    seen.add(line.split(" = ", 1)[1].split()[0] if line.startswith("%") else line.split()[0])
    missing = [op for op in table if op not in seen and op not in EXEMPT]
    print(f"op coverage: {len(table) - len(EXEMPT) - len(missing)} of {len(table) - len(EXEMPT)} ops compared with PyTorch")
    if missing:
        failures.append("ops without a parity case: " + ", ".join(missing))

print(f"{passed} passed, {len(failures)} failed")
if failures:
    print("parity: FAILED:", *failures, sep="\n  ")
    sys.exit(1)
print("parity: graft agrees with PyTorch")
