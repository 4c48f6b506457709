#!/bin/sh
# What freezing saves on ResNet-18 (examples/resnet18, 3x64x64, batch 64, SGD momentum): training
# throughput and peak memory of a full fine-tune step against a feature-extraction step (everything
# but fc frozen, feature cache off), alternating runs, medians; then feature extraction with the
# feature cache: its second epoch against its first (which computes the cache). Throughput: an
# epoch's training loop over 640 random images (10 steps); peak memory: the process's maximum
# resident set size (/usr/bin/time). Feature extraction also runs with fold_batchnorm: false, to show
# what folding the frozen batchnorms into their convolutions gains.
# usage: bench/resnet_freeze.sh [RUNS] [THREADS]   (needs build/graft and python3-numpy)
set -eu
runs=${1:-3}
threads=${2:-2}
cd "$(dirname "$0")/.."
. bench/lib.sh
resnet_work
for mode in full features unfolded cached; do
  resnet_plan "$work/$mode.yaml" 2
done
printf 'freeze: ["*"]\nunfreeze: [fc]\nfeature_cache: off\n' >> "$work/features.yaml"
printf 'freeze: ["*"]\nunfreeze: [fc]\nfeature_cache: off\nfold_batchnorm: false\n' >> "$work/unfolded.yaml"
printf 'freeze: ["*"]\nunfreeze: [fc]\n' >> "$work/cached.yaml"
for i in $(seq "$runs"); do
  for mode in full features unfolded cached; do
    /usr/bin/time -f "%M" -o "$work/rss" build/graft train "$work/$mode.yaml" --threads "$threads" -q > "$work/out"
    sps=$(sed -n 's/^epoch 2\/2: .*s, \([0-9.]*\) samples\/s).*/\1/p' "$work/out")
    first=$(sed -n 's/^epoch 1\/2: .*s, \([0-9.]*\) samples\/s).*/\1/p' "$work/out")
    echo "$sps $(cat "$work/rss") $first" >> "$work/$mode.runs"
  done
done
fs=$(cut -d' ' -f1 "$work/full.runs" | median); fm=$(cut -d' ' -f2 "$work/full.runs" | median)
es=$(cut -d' ' -f1 "$work/features.runs" | median); em=$(cut -d' ' -f2 "$work/features.runs" | median)
echo "ResNet-18 3x64x64, batch 64, $threads thread(s), $runs runs each (medians)"
echo "full fine-tune:      $fs samples/s, peak RSS $((fm / 1024)) MiB   (runs: $(tr '\n' ';' < "$work/full.runs"))"
echo "feature extraction:  $es samples/s, peak RSS $((em / 1024)) MiB   (runs: $(tr '\n' ';' < "$work/features.runs"))"
us=$(cut -d' ' -f1 "$work/unfolded.runs" | median); um=$(cut -d' ' -f2 "$work/unfolded.runs" | median)
echo "  without batchnorm folding: $us samples/s, peak RSS $((um / 1024)) MiB   (runs: $(tr '\n' ';' < "$work/unfolded.runs"))"
cs=$(cut -d' ' -f1 "$work/cached.runs" | median); c1=$(cut -d' ' -f3 "$work/cached.runs" | median)
echo "feature extraction with the feature cache: epoch 1 (computes the cache) $c1 samples/s, epoch 2 $cs samples/s   (runs: $(tr '\n' ';' < "$work/cached.runs"))"
awk -v a="$es" -v b="$fs" -v c="$em" -v d="$fm" 'BEGIN { printf "feature extraction: %.2fx the throughput of a full fine-tune, %.0f%% less peak memory\n", a / b, 100 * (1 - c / d) }'
awk -v a="$es" -v b="$us" 'BEGIN { printf "batchnorm folding: feature extraction %.2fx as fast as without it\n", a / b }'
awk -v a="$cs" -v b="$c1" 'BEGIN { printf "feature cache: a later epoch %.1fx as fast as the first\n", a / b }'
