#!/bin/sh
# Checkpoints and resumption (plan key checkpoint, graft train --resume): a run killed with SIGKILL
# at several points — after a step, and in the middle of writing a checkpoint (its temporary file
# complete, not yet renamed) — and resumed each time from its checkpoint directory ends with weights
# bit-identical to an uninterrupted run of the same seed; a damaged newest checkpoint is skipped
# with a warning (and refused when named), and a checkpoint of another run is refused. The MLP on
# 1,000 Fashion-MNIST images, Adam, 3 epochs of 16 steps, a checkpoint every 5 steps, 1 thread; then
# gradual unfreezing of the CNN (3 phases, the feature cache in the first two, Adam), killed in its
# second phase and in its third, resumed, also bit-identical.
# usage: checkpoint_resume.sh GRAFT
set -u
. "$(dirname "$0")/lib.sh"
cd "$dir"
plan() { # plan FILE DIR [EXTRA]
  plan_head "$examples/mlp/model.yaml" "per_class: 100" > "$1"
  cat >> "$1" <<YAML
optimizer: {type: adam, learning_rate: 0.001}
batch_size: 64
epochs: 3
seed: 5
checkpoint: {dir: $2, every_steps: 5, keep: 2}
${3:-}
YAML
}
# run EXPECTED_STATUS LOG [GRAFT_FAULT] ARGS...: graft train with a crash point
run() {
  want=$1 log=$2 fault=$3
  shift 3
  if [ -n "$fault" ]; then GRAFT_FAULT=$fault "$graft" train "$@" -q --threads 1 > "$log" 2>&1; else "$graft" train "$@" -q --threads 1 > "$log" 2>&1; fi
  got=$?
  [ "$got" = "$want" ] || { bad "graft train $* (GRAFT_FAULT=$fault) exited $got, expected $want:"; sed 's/^/  | /' "$log"; }
}
plan ref.yaml ref-ckpt
run 0 ref.log "" ref.yaml --save ref.safetensors
plan run.yaml ckpt
run 137 1.log step:12 run.yaml                       # killed after step 12: checkpoints 5 and 10 on disk
[ -f ckpt/step-000000010.safetensors ] && ok "killed after step 12: the checkpoint of step 10 is there" || bad "no checkpoint of step 10"
run 137 2.log rename:2 run.yaml --resume ckpt        # resumes at 10, writes 15, killed writing 16 (epoch 1's end)
grep -q "resuming from ckpt/step-000000010.safetensors: in epoch 1, step 10" 2.log && ok "resumed in epoch 1 at step 10" || bad "no resumption line in 2.log"
if [ -f ckpt/step-000000015.safetensors ] && [ ! -f ckpt/step-000000016.safetensors ] && ls ckpt/step-000000016.safetensors.tmp.* > /dev/null 2>&1; then
  ok "killed writing the checkpoint of step 16: only its temporary file exists, 15 is intact"
else
  bad "after a crash in the middle of a checkpoint write: $(ls ckpt | tr '\n' ' ')"
fi
run 137 3.log step:17 run.yaml --resume ckpt         # resumes at 15, killed after step 32 (17 more), before its checkpoint
run 0 4.log "" run.yaml --resume ckpt --save resumed.safetensors
grep -q "resuming from ckpt/step-000000030.safetensors: in epoch 2, step 30" 4.log && ok "resumed at step 30" || bad "4.log: $(head -3 4.log)"
if cmp -s ref.safetensors resumed.safetensors; then
  ok "killed 3 times and resumed: the weights are bit-identical to the uninterrupted run's"
else
  bad "the resumed run's weights differ from the uninterrupted run's"
fi
ls ckpt/*.tmp.* > /dev/null 2>&1 && bad "a stale temporary file outlived the next checkpoint: $(ls ckpt)" || ok "stale temporary files removed"
[ "$(ls ckpt | wc -l)" = 2 ] && ok "keep: 2 checkpoints stay" || bad "keep 2, found: $(ls ckpt | tr '\n' ' ')"
# a damaged newest checkpoint: skipped in a directory, refused by name
newest=$(ls ckpt/step-*.safetensors | tail -1)
size=$(wc -c < "$newest")
printf '\377' | dd of="$newest" bs=1 seek=$((size - 100)) conv=notrunc 2> /dev/null
run 1 6.log "" run.yaml --resume "$newest"
grep -q "error: the checkpoint is damaged: its data does not match the checksum it was written with" 6.log && ok "a damaged checkpoint named on the command line is refused" || bad "6.log: $(cat 6.log)"
run 0 5.log "" run.yaml --resume ckpt --save again.safetensors
grep -q "warning: skipping this checkpoint: the checkpoint is damaged" 5.log && ok "a damaged checkpoint is skipped with a warning" || bad "5.log: $(cat 5.log)"
cmp -s ref.safetensors again.safetensors && ok "resumed from the one before it, same weights" || bad "weights after skipping differ"
# a checkpoint of another run
plan other.yaml ckpt "seed: 6"
sed -i 's/^seed: 5$//' other.yaml
good=$(ls ckpt/step-*.safetensors | head -1)
run 1 7.log "" other.yaml --resume "$good"
grep -q "error: the checkpoint is of a run with seed 5, this run's is 6" 7.log && ok "another run's checkpoint is refused" || bad "7.log: $(cat 7.log)"
run 1 8.log "" run.yaml --resume ref.safetensors
grep -q "not a graft checkpoint" 8.log && ok "saved weights are not a checkpoint" || bad "8.log: $(cat 8.log)"
# gradual unfreezing: phases, the feature cache, Adam's per-phase step counts
phased() { # phased FILE DIR
  plan_head "$examples/transfer/model.yaml" "classes: [5, 6, 7, 8, 9]" "per_class: 50" > "$1"
  cat >> "$1" <<YAML
optimizer: {type: adam, learning_rate: 0.001}
freeze: ["*"]
unfreeze: [fc2]
phases:
  - {epochs: 2}
  - {epochs: 2, unfreeze: fc1}
  - {epochs: 2, unfreeze: [conv1, conv2]}
batch_size: 25
seed: 3
checkpoint: {dir: $2, every_steps: 4}
YAML
}
phased pref.yaml pref-ckpt
run 0 p0.log "" pref.yaml --save pref.safetensors
phased prun.yaml pckpt
run 137 p1.log step:27 prun.yaml                     # in phase 2 (steps 21-40): checkpoint 24 on disk
run 137 p2.log rename:3 prun.yaml --resume pckpt     # resumes at 24, writes 28 and 30 (epoch 3's end), killed writing 32
run 137 p3.log step:15 prun.yaml --resume pckpt      # resumes after epoch 3 (step 30), killed after step 45, in phase 3
run 0 p4.log "" prun.yaml --resume pckpt --save presumed.safetensors
grep -q "resuming from pckpt/step-000000024.safetensors: in epoch 3, step 24" p2.log && grep -q "feature cache: the frozen prefix computed" p2.log &&
  grep -q "resuming from pckpt/step-000000044.safetensors: in epoch 5, step 44" p4.log && grep -q "phase 3/3" p4.log &&
  ok "phases: resumed in phase 2 (the feature cache rebuilt) and in phase 3" || bad "phases: $(cat p2.log p4.log)"
cmp -s pref.safetensors presumed.safetensors && ok "phases: killed 3 times and resumed, the weights are bit-identical" ||
  bad "phases: the resumed run's weights differ from the uninterrupted run's"
exit $fail
