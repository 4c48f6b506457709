#!/bin/sh
# Numerical guards (plan key on_nan): an absurd learning rate (1e4, SGD, the MLP on 1,000
# Fashion-MNIST images, a checkpoint every 2 steps) makes step 4's loss NaN.
#   stop      exit status 1, an error at the model file's line of the first parameter whose gradient
#             is not finite, and no checkpoint after the last good step; and a run whose rate jumps
#             from 0.01 to 1e4 in epoch 2 stops there with its epoch-1 checkpoint the newest on disk:
#             resuming from it with a sane rate trains to the end with a finite loss;
#   skip      each bad step undone with a warning, until 20 in a row: then the error;
#   rollback  back to the last checkpoint at half the learning rate, 5 times, then the error.
# usage: nan_guard.sh GRAFT
set -u
. "$(dirname "$0")/lib.sh"
cd "$dir"
plan() { # plan FILE ON_NAN LEARNING_RATE
  plan_head "$examples/mlp/model.yaml" "per_class: 100" > "$1"
  cat >> "$1" <<YAML
optimizer: {type: sgd, learning_rate: $3}
batch_size: 64
epochs: 2
seed: 5
checkpoint: {dir: ck-$2, every_steps: 2}
on_nan: $2
YAML
}
for mode in stop skip rollback; do
  plan $mode.yaml $mode 1e4
  "$graft" train $mode.yaml -q --threads 1 > $mode.log 2>&1
  rc=$?
  [ $rc = 1 ] && ok "on_nan: $mode: exit status 1" || bad "on_nan: $mode: exit status $rc" $mode.log
done
grep -q "model.yaml:6:5: error: training step 4 (epoch 1) made the loss NaN; the first tensor that is not finite is the gradient of 'fc1.weight'" stop.log &&
  ok "stop: the error names the step, the tensor and the layer's line in the model file" || bad "stop: the message" stop.log
[ "$(ls ck-stop)" = "step-000000002.safetensors" ] && ok "stop: the last checkpoint on disk is step 2's, the last good one" || bad "stop: checkpoints $(ls ck-stop)" stop.log
plan jump.yaml stop 0.01
printf 'schedule: {type: step, step_size: 1, gamma: 1e6}\n' >> jump.yaml
sed -i 's/every_steps: 2/every_epoch: true/; s/ck-stop/ck-jump/' jump.yaml
"$graft" train jump.yaml -q --threads 1 > jump.log 2>&1
[ $? = 1 ] && grep -q "error: training step 1[7-9] (epoch 2) made the loss NaN\|error: training step 2[0-9] (epoch 2) made the loss NaN" jump.log &&
  [ "$(ls ck-jump)" = "step-000000016.safetensors" ] && ok "stop: a rate jumping to 1e4 in epoch 2 stops there; the newest checkpoint is epoch 1's" ||
  bad "stop: the jumping rate: $(ls ck-jump)" jump.log
plan sane.yaml stop 0.01
if "$graft" train sane.yaml -q --threads 1 --resume ck-jump > sane.log 2>&1 && grep -q "resuming from ck-jump/step-000000016.safetensors: after epoch 1" sane.log &&
  grep -q "^epoch 2/2: train loss [0-9]" sane.log; then
  ok "stop: resumed from that checkpoint with the sane rate, the run trains to a finite loss"
else
  bad "stop: resuming from the last good checkpoint" sane.log
fi
[ "$(grep -c "the step is skipped (on_nan: skip)" skip.log)" = 20 ] && grep -q "note: on_nan: skip gives up after 20 bad steps in a row" skip.log &&
  ok "skip: 20 bad steps undone with warnings, then the error" || bad "skip" skip.log
[ "$(grep -c "^on_nan: rollback [1-5] of at most 5: back to the last checkpoint, learning rate x0.5" rollback.log)" = 5 ] &&
  grep -q "note: on_nan: rollback gives up after 5 rollbacks" rollback.log && grep -q "base now 312.5" rollback.log &&
  ok "rollback: 5 times back to the last checkpoint at half the rate, then the error" || bad "rollback" rollback.log
exit $fail
