#!/bin/sh
# Command-line mistakes: each is a usage error (exit status 2) with a message saying what was
# expected, on standard error; --help and --version succeed.
# usage: usage.sh GRAFT
set -u
graft=$1
plan=$(cd "$(dirname "$0")/../examples/mlp" && pwd)/plan.yaml
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail=0
# expect STATUS TEXT ARGS...
expect() {
  want=$1 text=$2
  shift 2
  "$graft" "$@" > /dev/null 2> "$out" < /dev/null
  got=$?
  if [ "$got" = "$want" ] && { [ -z "$text" ] || grep -qF -- "$text" "$out"; }; then
    echo "ok   graft $*"
  else
    echo "FAIL graft $*: status $got (expected $want), stderr:"
    sed 's/^/  | /' "$out"
    echo "  expected: $text"
    fail=1
  fi
}
expect 2 "" 
expect 2 "unknown command 'trian'; expected check, ir, train, eval, predict or compile" trian "$plan"
expect 2 "compile needs an output directory: -o DIR" compile "$plan"
expect 2 "unknown option '--target'" compile "$plan" -o out --target x86-64-v3
expect 2 "train needs a plan file" train
expect 2 "unknown option '--epoch'" train "$plan" --epoch 3
expect 2 "--epochs takes an integer from 1 to 100000, got '0'" train "$plan" --epochs 0
expect 2 "--threads takes an integer from 1 to 1024, got 'many'" train "$plan" --threads many
expect 2 "option '--save' needs a value" train "$plan" --save
expect 2 "more than one plan given ('b.yaml')" check "$plan" b.yaml
expect 2 "--split takes test, train or target, got 'val'" eval "$plan" --split val
expect 2 "--metrics writes test records; it cannot be used with --split train" eval "$plan" --metrics m.jsonl --split train
expect 2 "predict needs an input file after the plan" predict "$plan"
expect 2 "unknown pass 'parse'; expected frontend, freeze, fold, loss, autodiff, optimizer, fuse, memplan or codegen" ir "$plan" --after=parse
expect 0 "" --version
exit $fail
