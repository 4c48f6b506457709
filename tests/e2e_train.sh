#!/bin/sh
# End-to-end acceptance: an example trains on Fashion-MNIST for 2 epochs, reaches at least MIN_ACCURACY
# on the test set, and writes metrics that follow the contract. usage: e2e_train.sh GRAFT PLAN MIN_ACCURACY
set -eu
graft=$1
plan=$2
min=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$graft" train "$plan" --epochs 2 --metrics "$dir/m.jsonl" | tee "$dir/out.txt"
grep -q "^final test accuracy: " "$dir/out.txt"
python3 "$(dirname "$0")/check_metrics.py" "$dir/m.jsonl" --epochs 2 --min-accuracy "$min"
