#!/bin/sh
# replay.sh BINARY TARGET — runs a fuzz harness built as a replay program over its seed corpus
# (corpus.sh) and its regression files: the ctest fuzz_replay_<target>, in every build (the
# sanitizer build turns a memory error into a failure).
set -eu
bin=$1
target=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sh "$here/corpus.sh" "$target" "$dir/corpus"
TMPDIR=$dir "$bin" "$dir/corpus" "$here/regressions/$target"
