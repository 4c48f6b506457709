#!/bin/sh
# The fusion pass (compiler/fuse.c) changes where values live, not what they are. For the LeNet-style
# CNN, a small residual network with batchnorm and a gated dense network (sigmoid, mul, gelu, tanh):
#  - `graft ir --after=fuse` lists the fused kernels (convolution + bias + ReLU, batchnorm + ReLU,
#    batchnorm + residual add + ReLU, the max-pooling gradient + ReLU's gradient, batchnorm's three
#    gradients in one kernel, the cross-entropy loss with its gradient) and marks the values they no
#    longer store;
#  - those values get no place in the arena;
#  - training with and without fusion (GRAFT_FUSE=0) gives byte-identical weights, and evaluation the
#    same outputs: a fused epilogue runs the same arithmetic in the same order.
# usage: fusion.sh GRAFT
set -eu
. "$(dirname "$0")/lib.sh"
models=$(cd "$(dirname "$0")/models" && pwd)
cd "$dir"
# multiplies and sigmoids next to adds: fused, LLVM must still round as the unfused program does
cat > gated.yaml <<'YAML'
name: gated
input: {name: image, shape: [1, 28, 28]}
layers:
  - {name: flatten, op: flatten}
  - {name: fc1, op: linear, out_features: 64}
  - {name: gate, op: sigmoid, in: fc1}
  - {name: silu, op: mul, in: [fc1, gate]}
  - {name: fc2, op: linear, out_features: 64}
  - {name: act, op: gelu}
  - {name: sum, op: add, in: [act, silu]}
  - {name: squash, op: tanh}
  - {name: out, op: linear, out_features: 10}
YAML
for m in cnn residual gated; do
  model=$examples/cnn/model.yaml
  [ $m = residual ] && model=$models/residual.yaml
  [ $m = gated ] && model=$PWD/$m.yaml
  plan_head "$model" "per_class: 30" > $m.plan.yaml
  printf 'optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}\nbatch_size: 50\nepochs: 2\nseed: 5\n' >> $m.plan.yaml
  "$graft" ir $m.plan.yaml --after=fuse > $m.fuse.txt 2>&1 || bad "$m: graft ir --after=fuse failed" $m.fuse.txt
done
expect() { # MODEL COUNT TEXT: the training program's dump has TEXT COUNT times
  got=$(sed '/^program graft_eval/,$d' "$1.fuse.txt" | grep -cF -- "$3" || true)
  [ "$got" = "$2" ] && ok "$1: $2 x '$3'" || bad "$1: '$3' $got times in the training program, expected $2" "$1.fuse.txt"
}
expect cnn 2 "[kernel conv2d+bias_add+relu]"
expect cnn 1 "[kernel bias_add+relu]"
expect cnn 2 "[kernel maxpool2d_grad+relu_grad]"
expect cnn 7 "(not stored)"
expect cnn 1 "[kernel softmax_cross_entropy+softmax_cross_entropy_grad]"
expect residual 1 "[kernel batchnorm+relu]"
expect residual 1 "[kernel batchnorm+add+relu]"
expect residual 1 "[kernel maxpool2d_grad+relu_grad]"
expect residual 2 "[kernel batchnorm_grad_input+batchnorm_grad_gamma+bias_grad]"
expect gated 1 "[kernel gelu+add+tanh]"
expect gated 1 "[kernel mul+sigmoid_grad]"
expect gated 1 "[kernel mul+add]"
grep -q "^program graft_train: .* kernels (8 nodes fused into them)" cnn.fuse.txt &&
  ok "cnn: the header counts the fused nodes" || bad "cnn: the program header does not count 8 fused nodes" cnn.fuse.txt
# a stored value is never a fused one: every '(not stored)' value has no arena offset after memplan
"$graft" ir cnn.plan.yaml > cnn.mem.txt
if grep -F "(not stored)" cnn.mem.txt | grep -q "@arena"; then bad "cnn: a value not stored has an arena offset" cnn.mem.txt; else ok "cnn: values not stored get no arena offset"; fi
stored() { sed '/^program graft_eval/,$d' "$1" | grep -c "@arena"; } # values the training program keeps in its arena
GRAFT_FUSE=0 "$graft" ir cnn.plan.yaml > cnn.mem0.txt
a1=$(stored cnn.mem.txt) a0=$(stored cnn.mem0.txt)
[ -n "$a1" ] && [ -n "$a0" ] && [ $((a0 - a1)) -eq 7 ] && ok "cnn: fusion stores 7 fewer values in the arena ($a0 -> $a1)" ||
  bad "cnn: the arena holds $a1 values fused against $a0 unfused, expected 7 fewer" cnn.mem.txt
for m in cnn residual gated; do
  for f in 1 0; do
    GRAFT_FUSE=$f "$graft" train $m.plan.yaml -q --no-cache --threads 2 --save $m.$f.safetensors > $m.$f.log 2>&1 ||
      bad "$m: training with GRAFT_FUSE=$f failed" $m.$f.log
    GRAFT_FUSE=$f "$graft" eval $m.plan.yaml --no-cache --split train --weights $m.1.safetensors --output $m.$f.out.safetensors > $m.$f.eval.log 2>&1 ||
      bad "$m: evaluation with GRAFT_FUSE=$f failed" $m.$f.eval.log
  done
  cmp -s $m.1.safetensors $m.0.safetensors && ok "$m: fused and unfused training give byte-identical weights" ||
    bad "$m: fusion changed the trained weights" $m.1.log
  cmp -s $m.1.out.safetensors $m.0.out.safetensors && ok "$m: fused and unfused evaluation give identical outputs" ||
    bad "$m: fusion changed the evaluation outputs" $m.1.eval.log
done
exit $fail
