#!/bin/sh
# Threads change the speed, not the result: the LeNet-style CNN (convolutions, pooling, batchnorm-free
# dense layers, SGD with momentum) trained at 1, 2 and 3 threads ends with byte-identical weights
# (graft's kernels split only independent outputs; its GEMM splits by output tiles). And graft's own
# GEMM agrees with OpenBLAS's end to end: the same run with GRAFT_GEMM=blas ends at the same loss
# within float rounding. graft's AVX-512 and AVX2 kernels give the same bits: on an AVX-512 CPU the
# run with GRAFT_GEMM=avx2 ends with the same weights. On a CPU with neither (no AVX2 with FMA) every
# run uses OpenBLAS, whose results may depend on its thread count: the test says so and checks only
# the loss.
# usage: threads.sh GRAFT
set -eu
. "$(dirname "$0")/lib.sh"
cd "$dir"
plan_head "$examples/cnn/model.yaml" "per_class: 40" > plan.yaml
printf 'optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}\nbatch_size: 50\nepochs: 2\nseed: 3\n' >> plan.yaml
run() { # NAME THREADS [ENV...]: weights in NAME.safetensors, log in NAME.log
  name=$1 threads=$2
  shift 2
  env "$@" "$graft" train plan.yaml -q --no-cache --threads "$threads" --save "$name.safetensors" > "$name.log" 2>&1 ||
    bad "$name: graft train failed" "$name.log"
}
loss() { sed -n 's/^epoch 2\/2: train loss \([0-9.]*\).*/\1/p' "$1.log"; }
run t1 1
run t2 2
run t3 3
run blas 2 GRAFT_GEMM=blas
flags=$(grep -m1 '^flags' /proc/cpuinfo)
case " $flags " in
*" avx512f "* | *" avx2 "*" fma "* | *" fma "*" avx2 "*)
  cmp -s t1.safetensors t2.safetensors && cmp -s t1.safetensors t3.safetensors &&
    ok "1, 2 and 3 threads train to byte-identical weights" || bad "the weights depend on the thread count" t2.log ;;
*) echo "skip no AVX2 with FMA: OpenBLAS serves the GEMMs, whose results may depend on its thread count" ;;
esac
case " $flags " in
*" avx512f "*)
  run avx2 2 GRAFT_GEMM=avx2
  cmp -s t2.safetensors avx2.safetensors && ok "graft's AVX2 kernels train to the AVX-512 kernels' weights, byte for byte" ||
    bad "GRAFT_GEMM=avx2 changed the weights" avx2.log ;;
*) echo "skip no AVX-512: the AVX2 kernels cannot be compared with the AVX-512 ones here" ;;
esac
l1=$(loss t1) lb=$(loss blas)
[ -n "$l1" ] && [ -n "$lb" ] && awk -v a="$l1" -v b="$lb" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-3 * (a > 0 ? a : 1)) }' &&
  ok "graft's GEMM and OpenBLAS's end at the same loss ($l1, $lb)" || bad "graft's GEMM and OpenBLAS's disagree: loss $l1 against $lb" blas.log
exit $fail
