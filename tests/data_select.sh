#!/bin/sh
# Class subsets of a data set (plan keys data.classes and data.per_class): on 6 images labelled
# 1 1 1 2 2 3, each plan must train on the expected number of samples.
# usage: data_select.sh GRAFT
set -eu
graft=$1
data=$(cd "$(dirname "$0")/bad/data" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
# case: per-sample output classes, data keys, the expected "training on N samples"
check() {
  cat > "$dir/model.yaml" <<YAML
input: {shape: [1, 28, 28]}
layers: [flatten, {name: fc, op: linear, out_features: $1}]
YAML
  cat > "$dir/plan.yaml" <<YAML
model: model.yaml
data:
  train: {images: $data/images-6.idx, labels: $data/labels-6.idx}
  shuffle: false
$2
loss: cross_entropy
optimizer: {type: sgd, learning_rate: 0.1}
batch_size: 4
epochs: 1
YAML
  if "$graft" train "$dir/plan.yaml" -q > "$dir/out" 2>&1 && grep -q "^training on $3 samples" "$dir/out"; then
    echo "ok   $2 -> $3 samples"
  else
    echo "FAIL $2: expected $3 samples"; cat "$dir/out"; fail=1
  fi
}
check 10 "" 6
check 10 "  per_class: 2" 5
check 10 "  per_class: 1" 3
check 2 "  classes: [1, 2]" 5
check 2 "  classes: [2, 1]
  per_class: 1" 2
check 1 "  classes: [3]" 1
exit $fail
