#!/usr/bin/python3
"""PyTorch reference for examples/transfer (a baseline only, never part of graft): the same recipe,
the same model, data subsets, optimizer and steps.

  pre-train  LeNet-style CNN (examples/transfer/model.yaml) on Fashion-MNIST classes 0-4, 2 epochs,
             SGD lr 0.01 momentum 0.9, batch 64
  transfer   classes 5-9 (relabelled 0-4), the first 100 training images of each class, 30 epochs of
             batch 50 (300 steps), SGD lr 0.01 momentum 0.9, shuffled; four ways:
               scratch         random initialisation
               features        pre-trained conv1/conv2 frozen, new fc1 + fc2
               finetune        pre-trained everything but a new fc2, all trained
               gradual         as finetune, but in three phases of 10 epochs: fc2 alone, then fc1 too,
                               then the convolutions; conv1, conv2 and fc1 at 0.1x the learning rate
With --resnet, the small ResNet of examples/transfer/resnet.model.yaml instead (three BasicBlock
stages with batchnorm; features freezes everything but a new fc, frozen batchnorm layers in eval
mode; gradual trains fc, then layer3 too, then everything, the pre-trained layers at 0.1x the rate).
Prints one JSON line per way and seed with the test accuracy on the classes 5-9 test set.
usage: transfer_torch.py [--seeds K] [--threads T] [--resnet]"""
import argparse
import gzip
import json

import numpy as np
import torch
from torch import nn

D = "/usr/share/datasets/fashion-mnist/"


def idx(path):
    with gzip.open(D + path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def subset(x, y, classes, per_class=0):
    keep, count = [], {c: 0 for c in classes}
    for i, label in enumerate(y):
        if label in count and (not per_class or count[label] < per_class):
            count[label] += 1
            keep.append(i)
    xs = torch.tensor(x[keep], dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
    ys = torch.tensor([classes.index(int(y[i])) for i in keep])
    return xs, ys


def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 5))


class Basic(nn.Module):
    """torchvision's BasicBlock, as the block `basic` of examples/transfer/resnet.model.yaml."""

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                           if stride != 1 or cin != planes else None)

    def forward(self, x):
        h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(h + (self.downsample(x) if self.downsample is not None else x))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.layer1, self.layer2, self.layer3 = Basic(16, 16), Basic(16, 32, 2), Basic(32, 64, 2)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        h = self.layer3(self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def train(model, groups, x, y, epochs, batch, opt=None):
    opt = opt or torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        model.train()
        for m in model.modules():  # a batchnorm whose weight is frozen runs on its running statistics
            if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
        for b in range(0, len(x), batch):
            i = perm[b:b + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return sum((model(x[j:j + 1000]).argmax(1) == y[j:j + 1000]).sum().item() for j in range(0, len(x), 1000)) / len(x)


ap = argparse.ArgumentParser()
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--resnet", action="store_true")
a = ap.parse_args()
net = SmallResNet if a.resnet else cnn
torch.set_num_threads(a.threads)
xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
torch.manual_seed(1)
pre = net()
px, py = subset(xtr, ytr, [0, 1, 2, 3, 4])
train(pre, pre.parameters(), px, py, 2, 64)
print(json.dumps({"way": "pretrain", "test_accuracy": accuracy(pre, *subset(xte, yte, [0, 1, 2, 3, 4]))}), flush=True)
tx, ty = subset(xtr, ytr, [5, 6, 7, 8, 9], 100)
ex, ey = subset(xte, yte, [5, 6, 7, 8, 9])
for way in ("scratch", "features", "finetune", "gradual"):
    for seed in range(1, a.seeds + 1):
        torch.manual_seed(seed)
        model = net()
        head = ("fc.",) if a.resnet else ("9.",)  # the new classifier
        fresh = head if a.resnet or way != "features" else ("7.", "9.")  # the CNN's features way also renews fc1
        if way != "scratch":
            model.load_state_dict({k: v for k, v in pre.state_dict().items() if not k.startswith(fresh)}, strict=False)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if way == "features":
            for k, p in model.named_parameters():
                p.requires_grad = k.startswith(fresh)
            groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if way == "gradual":  # one optimizer; requires_grad switched on phase by phase
            slow = [p for k, p in model.named_parameters() if not k.startswith(head)]
            fast = [p for k, p in model.named_parameters() if k.startswith(head)]
            opt = torch.optim.SGD([{"params": slow, "lr": 0.001}, {"params": fast}], lr=0.01, momentum=0.9)
            stages = ((head, head + ("layer3.",), ("",)) if a.resnet else (("9.",), ("9.", "7."), ("9.", "7.", "0.", "3.")))
            for trained in stages:
                for k, p in model.named_parameters():
                    p.requires_grad = k.startswith(trained)
                train(model, None, tx, ty, 10, 50, opt)
        else:
            train(model, groups, tx, ty, 30, 50)
        print(json.dumps({"way": way, "seed": seed, "test_accuracy": accuracy(model, ex, ey)}), flush=True)
