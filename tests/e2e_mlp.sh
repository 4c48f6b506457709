#!/bin/sh
# End-to-end acceptance: the MLP example trains on Fashion-MNIST for 2 epochs, reaches test accuracy
# >= 0.83, and writes metrics that follow the contract. usage: e2e_mlp.sh GRAFT PLAN
set -eu
graft=$1
plan=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$graft" train "$plan" --epochs 2 --metrics "$dir/m.jsonl" | tee "$dir/out.txt"
grep -q "^final test accuracy: " "$dir/out.txt"
python3 "$(dirname "$0")/check_metrics.py" "$dir/m.jsonl" --epochs 2 --min-accuracy 0.83
