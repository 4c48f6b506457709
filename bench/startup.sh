#!/bin/sh
# Time to the first training step, cold and with a warm kernel cache: ResNet-18 (examples/resnet18,
# 3x64x64, batch 64, full fine-tune, SGD momentum) on 640 random images in a tensors file. "To the
# first step" is from process start until the first training step's kernels are about to run (the
# hook GRAFT_FAULT=before_step:1 kills the process there): parsing, the compiler's passes, LLVM (cold)
# or the kernel cache (warm), allocating, initialising and loading the data. "Through the first step"
# also runs that step (GRAFT_FAULT=step:1), which on this machine costs about a second of its own.
# Cold runs use an emptied cache directory; warm runs the one a cold run filled. Alternating runs,
# medians. usage: bench/startup.sh [RUNS] [THREADS]   (needs build/graft and python3-numpy)
set -eu
runs=${1:-5}
threads=${2:-2}
cd "$(dirname "$0")/.."
. bench/lib.sh
resnet_work
resnet_plan "$work/plan.yaml" 1
# seconds POINT CACHE-ARGS...: wall time of graft train until it is killed at POINT
seconds() {
  point=$1
  shift
  /usr/bin/time -f "%e" -o "$work/t" env GRAFT_FAULT="$point:1" build/graft train "$work/plan.yaml" --threads "$threads" -q "$@" \
    > /dev/null 2>&1 || true
  cat "$work/t" | tail -1
}
for i in $(seq "$runs"); do
  for point in before_step step; do
    rm -rf "$work/cache"
    seconds "$point" --cache-dir "$work/cache" >> "$work/cold.$point"
    seconds "$point" --cache-dir "$work/cache" >> "$work/warm.$point"
  done
done
echo "ResNet-18 3x64x64, batch 64, full fine-tune, $threads thread(s), $runs alternating runs each (medians, seconds)"
for point in before_step step; do
  c=$(median < "$work/cold.$point")
  w=$(median < "$work/warm.$point")
  what="to the first step"
  [ "$point" = step ] && what="through the first step"
  awk -v c="$c" -v w="$w" -v what="$what" 'BEGIN { printf "%-24s cold %.2f s, warm kernel cache %.2f s: %.1fx faster\n", what, c, w, c / w }'
  echo "  runs: cold $(tr '\n' ' ' < "$work/cold.$point")| warm $(tr '\n' ' ' < "$work/warm.$point")"
done
