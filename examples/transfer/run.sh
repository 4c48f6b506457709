#!/bin/sh
# The transfer-learning recipe, end to end: pre-train the CNN on Fashion-MNIST classes 0-4, then
# learn classes 5-9 from 100 labelled images per class in four ways (from scratch, feature
# extraction, full fine-tune, gradual unfreezing with discriminative learning rates), 3 seeds each;
# prints a results table
# (test accuracy on the classes 5-9 test set, mean ± sd over the seeds; wall time per run).
# usage: examples/transfer/run.sh [--check] [--resnet] [GRAFT] [SEEDS]   (default build/graft, 3 seeds)
#   --check   exit 1 unless feature extraction and full fine-tuning beat training from scratch by at
#             least one point of mean test accuracy (the ctest transfer_recipe)
#   --resnet  the same with a small ResNet (resnet.model.yaml, batchnorm) instead of the CNN
set -eu
check=0
net=
while [ $# -gt 0 ]; do
  case $1 in
  --check) check=1 ;;
  --resnet) net=resnet_ ;;
  *) break ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd)
graft=$(cd "$(dirname "${1:-build/graft}")" && pwd)/$(basename "${1:-build/graft}")
seeds=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.yaml "$work"/
cd "$work"
now() { date +%s.%N; }
t0=$(now)
"$graft" train "${net}pretrain.yaml" -q --save "${net}pretrained.safetensors" > pretrain.log
pre=$(sed -n 's/^final test accuracy: //p' pretrain.log)
pre_t=$(echo "$(now) $t0" | awk '{printf "%.1f", $1 - $2}')
echo "pre-training on classes 0-4: test accuracy $pre ($pre_t s)"
echo
echo "| classes 5-9, 100 images per class, 300 steps | test accuracy (mean ± sd, $seeds seeds) | seconds per run |"
echo "|---|---|---|"
for way in scratch features finetune gradual; do
  : > "$way.acc"
  : > "$way.time"
  for s in $(seq "$seeds"); do
    t0=$(now)
    "$graft" train "$net$way.yaml" -q --seed "$s" > "$way.$s.log"
    echo "$(now) $t0" | awk '{print $1 - $2}' >> "$way.time"
    sed -n 's/^final test accuracy: //p' "$way.$s.log" >> "$way.acc"
  done
  case $way in
  scratch) what="from scratch" ;;
  features) what=${net:+"feature extraction (all frozen, new fc)"} ;;
  finetune) what=${net:+"full fine-tune (new fc)"} ;;
  gradual) what=${net:+"gradual unfreezing (fc, +layer3, +all; pre-trained layers at 0.1x the rate)"} ;;
  esac
  case $net$way in
  features) what="feature extraction (convolutions frozen, new fc1 + fc2)" ;;
  finetune) what="full fine-tune (new fc2)" ;;
  gradual) what="gradual unfreezing (fc2, +fc1, +convolutions; pre-trained layers at 0.1x the rate)" ;;
  esac
  acc=$(awk '{s += $1; q += $1 * $1; n++} END {m = s / n; v = n > 1 ? (q - n * m * m) / (n - 1) : 0; if (v < 0) v = 0;
             printf "%.1f%% ± %.1f", 100 * m, 100 * sqrt(v)}' "$way.acc")
  sec=$(awk '{s += $1; n++} END {printf "%.1f", s / n}' "$way.time")
  echo "| $what | $acc | $sec |"
done
if [ $check = 1 ]; then
  mean() { awk '{s += $1; n++} END {print s / n}' "$1"; }
  awk -v s="$(mean scratch.acc)" -v f="$(mean features.acc)" -v t="$(mean finetune.acc)" 'BEGIN {
    ok = f >= s + 0.01 && t >= s + 0.01
    printf "check: feature extraction %.4f, fine-tune %.4f vs from scratch %.4f: %s\n", f, t, s, ok ? "transfer wins" : "FAILED"
    exit !ok }'
fi
