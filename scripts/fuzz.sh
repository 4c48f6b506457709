#!/bin/sh
# fuzz.sh BUILD TARGET SECONDS [RUNS] — runs one libFuzzer target of BUILD (make fuzz) for SECONDS
# on one core, or for exactly RUNS executions with a fixed seed (FUZZ_SEED, default 1: the same
# inputs every time, as CI wants), starting from its seed corpus (tests/fuzz/corpus.sh) and
# regression files; prints the executions made. Exit 1 on a crash, hang, leak or sanitizer report,
# with the input saved in BUILD/findings/.
set -eu
build=$1
target=$2
seconds=$3
runs=${4:-}
limit="-max_total_time=$seconds"
[ -n "$runs" ] && limit="-runs=$runs -seed=${FUZZ_SEED:-1}"
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
shm=$work
[ -d /dev/shm ] && [ -w /dev/shm ] && shm=$(mktemp -d /dev/shm/graft-fuzz.XXXXXX) # inputs are written per execution: memory, not disk
trap 'rm -rf "$work" "$shm"' EXIT
mkdir -p "$build/findings"
sh "$root/tests/fuzz/corpus.sh" "$target" "$work/corpus" > /dev/null
dict=
[ "$target" = fuzz_plan ] && dict=-dict=$root/tests/fuzz/yaml.dict
status=0
TMPDIR=$shm "$build/$target" "$work/corpus" "$root/tests/fuzz/regressions/$target" $dict $limit -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/findings/$target-" > "$work/log" 2>&1 || status=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
[ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$work/log" | tail -1 | tr -d '#')
if [ $status -ne 0 ]; then
  tail -40 "$work/log"
  echo "fuzz: $target FAILED after ${runs:-?} executions; the input is in $build/findings/"
  exit 1
fi
echo "fuzz: $target: ${runs:-?} executions, no crash, leak or sanitizer report"
