#!/bin/sh
# Thread scaling and the share of the FMA peak (issue 5): ResNet-18 (examples/resnet18, 3x64x64,
# batch 64, full fine-tune, SGD momentum) on 640 random images, trained at 1 and at THREADS threads,
# alternating runs; medians of the second epoch's samples/s, their ratio, and the THREADS-thread rate
# in GFLOP/s (graft check's FLOPs per step) against the FMA peak build/bench_gemm measures on as many
# threads. Also checks that both thread counts print the same losses (they must: docs/design.md).
# usage: bench/threads.sh [RUNS] [THREADS]   (needs build/graft, build/bench_gemm and python3-numpy)
set -eu
runs=${1:-3}
threads=${2:-2}
cd "$(dirname "$0")/.."
. bench/lib.sh
[ -x build/bench_gemm ] || { echo "build bench_gemm first (make)"; exit 1; }
resnet_work
resnet_plan "$work/plan.yaml" 2
for i in $(seq "$runs"); do
  for t in 1 "$threads"; do
    build/graft train "$work/plan.yaml" --threads "$t" -q > "$work/out"
    sed -n 's/^epoch 2\/2: .*s, \([0-9.]*\) samples\/s).*/\1/p' "$work/out" >> "$work/rate.$t"
    grep '^epoch' "$work/out" | sed 's/ (.*//' > "$work/loss.$t"
  done
  cmp -s "$work/loss.1" "$work/loss.$threads" || { echo "the losses differ between 1 and $threads threads"; exit 1; }
done
r1=$(median < "$work/rate.1")
rt=$(median < "$work/rate.$threads")
mflop=$(build/graft check "$work/plan.yaml" | sed -n 's/^per step (batch \([0-9]*\)): forward \([0-9.]*\) MFLOP, backward + update \([0-9.]*\) MFLOP.*/\1 \2 \3/p')
peak=$(build/bench_gemm --peak "$threads")
echo "samples/s on 1 thread: $(tr '\n' ' ' < "$work/rate.1")-> median $r1"
echo "samples/s on $threads threads: $(tr '\n' ' ' < "$work/rate.$threads")-> median $rt"
echo "$r1 $rt $mflop $peak" | awk -v t="$threads" '{
  gflops = $2 * ($4 + $5) / $3 / 1000
  printf "scaling 1 -> %d threads: %.2fx\n", t, $2 / $1
  printf "%d threads: %.0f GFLOP/s (%.1f GFLOP per step of %d), %.0f%% of the %.0f GFLOP/s FMA peak\n", t, gflops, ($4 + $5) / 1000, $3, 100 * gflops / $6, $6
}'
echo "same losses at 1 and $threads threads in every run"
