#!/bin/sh
# The feature cache over its memory budget (feature_cache_mb: 0): with feature_cache: auto it goes to
# a file in feature_cache_dir and training ends with weights bit-identical to the in-memory cache's;
# with feature_cache: memory, or a directory it cannot use, training goes on without it, saying so.
# Frozen convolutions of examples/transfer/model.yaml, Fashion-MNIST classes 5-9, 50 per class.
# usage: feature_cache_spill.sh GRAFT
set -eu
. "$(dirname "$0")/lib.sh"
model=$examples/transfer/model.yaml
mkdir "$dir/spill"
# run NAME EXTRA_PLAN_KEYS EXPECTED_LOG_TEXT
run() {
  plan_head "$model" "classes: [5, 6, 7, 8, 9]" "per_class: 50" > "$dir/$1.yaml"
  cat >> "$dir/$1.yaml" <<YAML
freeze: [conv1, conv2]
optimizer: {type: sgd, learning_rate: 0.01, momentum: 0.9}
batch_size: 25
epochs: 3
seed: 4
$2
YAML
  if "$graft" train "$dir/$1.yaml" -q --threads 1 --save "$dir/$1.safetensors" > "$dir/$1.log" 2>&1 && grep -qF "$3" "$dir/$1.log"; then
    echo "ok   $1: $3"
  else
    echo "FAIL $1: expected \"$3\" in:"
    sed 's/^/  | /' "$dir/$1.log"
    fail=1
  fi
}
run memory "" "values each, 1.5 MiB in memory)"
run spilled "feature_cache_mb: 0
feature_cache_dir: $dir/spill" "1.5 MiB in a file in $dir/spill)"
run memory_only "feature_cache_mb: 0
feature_cache: memory" "is over its memory budget of 0 MiB (feature_cache_mb); training without it (feature_cache: memory)"
run nowhere "feature_cache_mb: 0
feature_cache_dir: $dir/missing" "it cannot go to a file in $dir/missing either (cannot create a file there: No such file or directory; feature_cache_dir): training without it"
if cmp -s "$dir/memory.safetensors" "$dir/spilled.safetensors"; then
  echo "ok   the cache in a file trains the same weights, bit for bit, as the cache in memory"
else
  echo "FAIL the weights trained from the cache in a file differ from those of the cache in memory"
  fail=1
fi
if [ -n "$(ls -A "$dir/spill")" ]; then
  echo "FAIL the cache file outlived the run: $(ls "$dir/spill")"
  fail=1
fi
exit $fail
