#!/bin/sh
# Compiling in parts (compiler/jit.c): a graph compiled as several LLVM modules on several threads,
# linked together by the JIT, runs the same code as one module. For the LeNet-style CNN and a small
# residual network with batchnorm (whose training and evaluation kernels differ):
#  - one module (GRAFT_JIT_PARTS=1) and three parts train to byte-identical weights and evaluate to
#    identical outputs;
#  - `graft train` says how many parts it compiled on how many threads, and --threads 1 compiles
#    one module;
#  - each part is an entry of the kernel cache: a second run takes all of them and trains to the same
#    weights; one damaged entry is reported, and the run still trains to the same weights; so is one
#    that passes the cache's checks but is no object LLVM can link.
# usage: jit_parts.sh GRAFT
set -eu
. "$(dirname "$0")/lib.sh"
models=$(cd "$(dirname "$0")/models" && pwd)
cd "$dir"
for m in cnn residual; do
  model=$examples/cnn/model.yaml
  [ $m = residual ] && model=$models/residual.yaml
  plan_head "$model" "per_class: 30" > $m.plan.yaml
  printf 'optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}\nbatch_size: 50\nepochs: 2\nseed: 5\n' >> $m.plan.yaml
  for p in 1 3; do
    GRAFT_JIT_PARTS=$p "$graft" train $m.plan.yaml -q --no-cache --threads 2 --save $m.$p.safetensors > $m.$p.log 2>&1 ||
      bad "$m: training in $p part(s) failed" $m.$p.log
    GRAFT_JIT_PARTS=$p "$graft" eval $m.plan.yaml --no-cache --split train --weights $m.1.safetensors --output $m.$p.out.safetensors \
      > $m.$p.eval.log 2>&1 || bad "$m: evaluation in $p part(s) failed" $m.$p.eval.log
  done
  grep -q "^kernels: compiled in [0-9.]* s$" $m.1.log && grep -q "^kernels: compiled in [0-9.]* s (3 parts on 2 threads)$" $m.3.log &&
    ok "$m: graft train says how many parts it compiled" || bad "$m: the parts are not reported" $m.3.log
  cmp -s $m.1.safetensors $m.3.safetensors && ok "$m: one module and three parts train to byte-identical weights" ||
    bad "$m: compiling in parts changed the trained weights" $m.3.log
  cmp -s $m.1.out.safetensors $m.3.out.safetensors && ok "$m: one module and three parts evaluate to identical outputs" ||
    bad "$m: compiling in parts changed the evaluation outputs" $m.3.eval.log
done

"$graft" train cnn.plan.yaml -q --no-cache --threads 1 > one.log 2>&1 || bad "training on one thread failed" one.log
grep -q "^kernels: compiled in [0-9.]* s$" one.log && ok "--threads 1 compiles one module" || bad "--threads 1 compiled in parts" one.log

# the kernel cache: an entry per part
run() { # NAME: trains the CNN in three parts with the cache in cache/, log in NAME.log
  GRAFT_JIT_PARTS=3 "$graft" train cnn.plan.yaml -q --threads 2 --cache-dir cache --save $1.safetensors > $1.log 2>&1 ||
    bad "$1: graft train failed" $1.log
}
run cold
[ "$(ls cache | wc -l)" -eq 3 ] && grep -q "kept in the kernel cache" cold.log && ok "three parts are three cache entries" ||
  bad "the cache does not hold three entries" cold.log
run warm
grep -q "^kernels: from the kernel cache" warm.log && cmp -s cnn.1.safetensors warm.safetensors &&
  ok "a second run takes every part from the cache and trains to the same weights" || bad "the second run did not use the cache" warm.log
e=$(ls cache/*.o | sed -n 2p)
echo garbage > "$e"
run damaged
grep -q "warning: kernel cache entry is damaged (not a graft kernel cache entry): compiling the kernels again" damaged.log &&
  grep -q "^kernels: compiled in" damaged.log && cmp -s cnn.1.safetensors damaged.safetensors &&
  ok "a damaged part is reported and compiled again; the weights are the same" || bad "a damaged part was not handled" damaged.log
run again
grep -q "^kernels: from the kernel cache" again.log && ! grep -q warning again.log && [ "$(ls cache | wc -l)" -eq 3 ] &&
  ok "  ... and rewritten: the next run takes all three" || bad "the damaged part was not rewritten" again.log
# one entry missing and another whose header and checksum are right but whose payload is no object:
# the missing part is compiled, the link fails, and the run compiles the rest again and trains to the
# same weights
/usr/bin/python3 - "$(ls cache/*.o | sed -n 3p)" <<'PY'
import hashlib, sys
path = sys.argv[1]
head = open(path, "rb").read()[:40]
payload = b"not an object file" * 64
open(path, "wb").write(head + len(payload).to_bytes(8, "little") + hashlib.sha256(payload).digest() + payload)
PY
rm "$(ls cache/*.o | sed -n 1p)"
run unlinkable
grep -q "warning: kernel cache entries cannot be loaded: compiling the kernels again" unlinkable.log &&
  cmp -s cnn.1.safetensors unlinkable.safetensors && ok "an entry that passes its checks but cannot be linked is compiled again" ||
  bad "an unlinkable cache entry was not handled" unlinkable.log
run final
grep -q "^kernels: from the kernel cache" final.log && ! grep -q warning final.log &&
  ok "  ... and rewritten: the next run takes all three" || bad "the unlinkable entry was not rewritten" final.log
exit $fail
