#!/bin/sh
# Side-by-side training throughput of graft and PyTorch on the MLP example (same model, data, batch
# 64, optimizer, threads), alternating runs; reports the median of RUNS runs each and the ratio.
# Throughput is that of the last epoch's training loop (excluding evaluation and start-up).
# PyTorch runs tuned as the design asks: glibc malloc with a high mmap/trim threshold and huge pages,
# so its allocator does not return memory to the kernel every step.
# usage: bench/mlp.sh [RUNS] [THREADS]   (needs build/graft and Debian's python3-torch)
set -eu
runs=${1:-5}
threads=${2:-1}
cd "$(dirname "$0")/.."
. bench/lib.sh
needs_graft_and_torch
tune="glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"
g=$(mktemp) t=$(mktemp)
trap 'rm -f "$g" "$t"' EXIT
for i in $(seq "$runs"); do
  OPENBLAS_NUM_THREADS=$threads build/graft train examples/mlp/plan.yaml --threads "$threads" -q |
    sed -n 's/^epoch 2\/2: .*s, \([0-9.]*\) samples\/s).*test accuracy \([0-9.]*\)$/\1 \2/p' >> "$g"
  GLIBC_TUNABLES=$tune /usr/bin/python3 bench/torch_baseline.py mlp --epochs 2 --threads "$threads" |
    tail -1 | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.4f" % (r["samples_per_s"], r["test_accuracy"]))' >> "$t"
done
gm=$(cut -d' ' -f1 "$g" | median)
tm=$(cut -d' ' -f1 "$t" | median)
echo "MLP 784-256-256-10, Fashion-MNIST, batch 64, SGD momentum, $threads thread(s), $runs runs each, epoch 2"
echo "graft:   median $gm samples/s   (runs: $(cut -d' ' -f1 "$g" | tr '\n' ' '))  test accuracy: $(cut -d' ' -f2 "$g" | tr '\n' ' ')"
echo "pytorch: median $tm samples/s   (runs: $(cut -d' ' -f1 "$t" | tr '\n' ' '))  test accuracy: $(cut -d' ' -f2 "$t" | tr '\n' ' ')"
awk -v a="$gm" -v b="$tm" 'BEGIN { printf "graft / pytorch = %.2f\n", a / b }'
