#!/bin/sh
# Domain adaptation (plan section domain_adaptation) end to end on MNIST -> MNIST-M (made by
# scripts/get-domain-data.sh if examples/domain/data lacks it): a short DANN run of the recipe's
# network (300 source images, batches of 32 source + 32 unlabelled target rows, 3 epochs of 9 steps)
# must log, every step, the lambda and learning rate the formulas give (lambda = 2/(1+exp(-10p)) - 1,
# lr = 0.001/(1+10p)^0.75, p = (step-1)/27), evaluate the source and target test sets and the domain
# head each epoch, keep the metrics contract, and save the domain head with the model; a run killed
# mid-epoch and resumed from its checkpoint ends with weights bit-identical to an uninterrupted run
# (the target rows a step takes depend only on the seed and the step).
# usage: domain_adaptation.sh GRAFT MNISTM
set -u
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
data=$root/examples/domain/data
MNISTM=$(cd "$(dirname "$2")" && pwd)/$(basename "$2") sh "$root/scripts/get-domain-data.sh" "$data" > "$dir/data.log" 2>&1 ||
  { bad "scripts/get-domain-data.sh failed" "$dir/data.log"; exit 1; }
cd "$dir"
plan() { # plan FILE [EXTRA]
  cat > "$1" <<YAML
model: $root/examples/domain/model.yaml
data:
  train: {images: $data/mnist-train-images.idx, labels: $data/mnist-train-labels.idx}
  test: {images: $data/mnist-test-images.idx, labels: $data/mnist-test-labels.idx}
  normalize: {mean: 0.5, std: 0.5}
  per_class: 30
domain_adaptation:
  features: features
  head:
    - {name: fc1, op: linear, out_features: 100}
    - {name: relu1, op: relu}
    - {name: fc2, op: linear, out_features: 2}
  target:
    train: {images: $data/mnistm-train-images.idx}
    test: {images: $data/mnistm-test-images.idx, labels: $data/mnistm-test-labels.idx}
loss: cross_entropy
optimizer: {type: adam, learning_rate: 0.001}
schedule: {type: dann}
batch_size: 64
epochs: 3
seed: 3
log_every: 5
${2:-}
YAML
}
plan dann.yaml
if "$graft" train dann.yaml -q --threads 1 --metrics m.jsonl --save w.safetensors > train.log 2>&1; then
  ok "graft train of a DANN plan"
else
  bad "graft train of a DANN plan failed" train.log
fi
grep -q "^domain adaptation: 32 source and 32 target rows a step, 9 steps an epoch" train.log && ok "32 + 32 rows a step, 9 steps an epoch" ||
  bad "no batch-split line" train.log
grep -q "^final target test accuracy: 0\.[0-9]*" train.log && grep -q "^final domain accuracy: 0\.[0-9]*" train.log &&
  ok "final target test and domain accuracies printed" || bad "no final target/domain accuracy" train.log
/usr/bin/python3 "$root/tests/check_metrics.py" m.jsonl --epochs 3 > cm.log 2>&1 && ok "metrics follow the contract" || bad "check_metrics" cm.log
/usr/bin/python3 - m.jsonl > formulas.log 2>&1 <<'PY' && ok "lambda and lr of every step match the DANN formulas" || bad "lambda/lr per step" formulas.log
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
dom = [r for r in recs if r["split"] == "domain"]
assert [r["step"] for r in dom] == list(range(1, 28)), [r["step"] for r in dom]
for r in dom:
    p = (r["step"] - 1) / 27
    lam, lr = 2 / (1 + math.exp(-10 * p)) - 1, 0.001 / (1 + 10 * p) ** 0.75
    assert abs(r["lambda"] - lam) <= 1e-6 * max(1, lam), (r, lam)
    assert abs(r["lr"] - lr) <= 1e-8, (r, lr)
    assert r["label_loss"] > 0 and r["domain_loss"] > 0 and 0 <= r["domain_accuracy"] <= 1, r
tt = [r for r in recs if r["split"] == "target_test"]
assert [r["epoch"] for r in tt] == [1, 2, 3], tt
train = [r for r in recs if r["split"] == "train"]
# a training record's loss is the window's mean of label + domain loss
w = [r for r in dom if r["step"] <= train[0]["step"]]
assert abs(train[0]["loss"] - sum(r["label_loss"] + r["domain_loss"] for r in w) / len(w)) < 1e-5, (train[0], w)
print("lambda from %.4f to %.4f, lr from %.6f to %.6f over 27 steps" % (dom[0]["lambda"], dom[-1]["lambda"], dom[0]["lr"], dom[-1]["lr"]))
PY
cat formulas.log
acc=$(sed -n 's/^final target test accuracy: //p' train.log)
"$graft" eval dann.yaml --weights w.safetensors --split target --threads 1 > eval.log 2>&1
grep -q "^target loss [0-9.]*, target accuracy $acc (2000 samples)" eval.log && ok "graft eval --split target gives the run's target accuracy ($acc)" ||
  bad "graft eval --split target (expected accuracy $acc)" eval.log
grep -aq '"domain.fc2.weight"' w.safetensors && grep -aq '"fc3.weight"' w.safetensors && ok "the domain head is saved with the model" ||
  bad "the saved weights lack domain.fc2.weight or fc3.weight"
# killed after step 13 (checkpoint of step 10 on disk), resumed: bit-identical weights
plan ref.yaml "checkpoint: {dir: refck, every_steps: 5}"
plan run.yaml "checkpoint: {dir: ck, every_steps: 5}"
"$graft" train ref.yaml -q --threads 1 --save ref.safetensors > ref.log 2>&1 || bad "uninterrupted run" ref.log
GRAFT_FAULT=step:13 "$graft" train run.yaml -q --threads 1 > 1.log 2>&1
[ $? = 137 ] && ok "killed after step 13" || bad "the run was not killed" 1.log
"$graft" train run.yaml -q --threads 1 --resume ck --save resumed.safetensors > 2.log 2>&1 || bad "resume" 2.log
grep -q "resuming from ck/step-000000010.safetensors: in epoch 2, step 10" 2.log && ok "resumed in epoch 2 at step 10" || bad "no resumption line" 2.log
cmp -s ref.safetensors resumed.safetensors && ok "killed and resumed: weights bit-identical to the uninterrupted run's" ||
  bad "the resumed DANN run's weights differ from the uninterrupted run's"
exit $fail
