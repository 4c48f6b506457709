#!/bin/sh
# Accuracy spread of the CNN example's recipe (Adam lr 1e-3, batch 64, pixels/255, 2 epochs) over
# seeds, graft and PyTorch side by side: one training run of each per seed (the seed sets the
# initial weights and the shuffling, in each framework's own generator), the final test accuracy of
# each, and the medians. Accuracy, not speed: runs may share the machine.
# usage: bench/cnn_seeds.sh [SEEDS] [THREADS]   (seeds 1..SEEDS; needs build/graft and python3-torch)
set -eu
seeds=${1:-6}
threads=${2:-1}
cd "$(dirname "$0")/.."
. bench/lib.sh
needs_graft_and_torch
g=$(mktemp) t=$(mktemp)
trap 'rm -f "$g" "$t"' EXIT
for s in $(seq "$seeds"); do
  build/graft train examples/cnn/plan.yaml --seed "$s" --threads "$threads" -q | sed -n 's/^final test accuracy: //p' >> "$g"
  /usr/bin/python3 bench/torch_baseline.py cnn --seed "$s" --threads "$threads" | tail -1 |
    /usr/bin/python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["test_accuracy"])' >> "$t"
done
echo "CNN example recipe, Fashion-MNIST test accuracy after 2 epochs, seeds 1..$seeds, $threads thread(s)"
echo "graft:   $(tr '\n' ' ' < "$g")  median $(median < "$g")  min $(sort -n "$g" | head -1)"
echo "pytorch: $(tr '\n' ' ' < "$t")  median $(median < "$t")  min $(sort -n "$t" | head -1)"
