#!/bin/sh
# corpus.sh TARGET OUT — the seed corpus of a fuzz target, from the repository's own files: for
# fuzz_plan every model and plan YAML under examples/ and tests/ (a leading byte 0 marks a model, 1 a
# plan, as the harness reads it); for fuzz_safetensors, fuzz_idx and fuzz_image the test fixtures of
# those formats, and tests/fuzz/seeds/<kind>/. Regression files (tests/fuzz/regressions/TARGET) are
# not copied: the replay test and make fuzz pass that directory as well.
set -eu
target=$1
out=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
n=0
add() { # add FILE [PREFIX_BYTE]
  n=$((n + 1))
  if [ $# -gt 1 ]; then { printf "\\$2"; cat "$1"; } > "$out/seed$n"; else cp "$1" "$out/seed$n"; fi
}
case $target in
fuzz_plan)
  for f in $(find "$root/examples" "$root/tests" -name '*.yaml' | sort); do
    if grep -q '^layers:' "$f"; then add "$f" 000; else add "$f" 001; fi
  done ;;
fuzz_safetensors) for f in $(find "$root/tests" -name '*.safetensors' | sort); do add "$f"; done ;;
fuzz_idx) for f in $(find "$root/tests" -name '*.idx' -o -name '*.idx.gz' | sort); do add "$f"; done ;;
fuzz_image) for f in $(find "$root/tests" -name '*.png' -o -name '*.jpg' | sort); do add "$f"; done ;;
*) echo "corpus.sh: unknown target $target" >&2; exit 2 ;;
esac
echo "$target: $n seed files in $out"
