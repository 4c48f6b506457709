#!/bin/sh
# The kernel cache: a second run of a plan takes its machine code from the cache and trains to the
# same weights, bit for bit; a damaged entry (a flipped byte, truncated, not an entry at all) is
# reported, compiled again and rewritten; --no-cache neither reads nor writes; GRAFT_CACHE_DIR names
# the default place; a cache that cannot be written is a warning, not an error.
# usage: kernel_cache.sh GRAFT
set -eu
. "$(dirname "$0")/lib.sh"
cd "$dir"
plan_head "$examples/mlp/model.yaml" "per_class: 40" > plan.yaml
printf 'optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}\nbatch_size: 50\nepochs: 2\nseed: 4\n' >> plan.yaml
# run NAME ARGS...: trains, log in NAME.log (stdout and stderr), weights in NAME.safetensors
run() {
  name=$1
  shift
  "$graft" train plan.yaml -q --save "$name.safetensors" "$@" > "$name.log" 2>&1 || bad "$name: graft train failed" "$name.log"
}
entry() { ls cache/*.o; }

run cold --cache-dir cache
grep -q "^kernels: compiled in .*, kept in the kernel cache" cold.log && [ "$(ls cache | wc -l)" -eq 1 ] &&
  ok "a first run compiles and stores one entry" || bad "the first run did not store one cache entry" cold.log
run warm --cache-dir cache
grep -q "^kernels: from the kernel cache" warm.log && cmp -s cold.safetensors warm.safetensors &&
  ok "a second run takes the cache's code and trains to the same weights" || bad "the second run did not use the cache, or its weights differ" warm.log

# damage KIND COMMAND: the entry damaged by COMMAND is reported with KIND, compiled again and rewritten
damage() {
  sh -c "$2"
  run damaged --cache-dir cache
  grep -q "warning: kernel cache entry is damaged ($1): compiling the kernels again" damaged.log &&
    grep -q "^kernels: compiled in" damaged.log && cmp -s cold.safetensors damaged.safetensors &&
    ok "a damaged entry ($1) is reported and compiled again" || bad "a damaged entry ($1) was not handled" damaged.log
  run again --cache-dir cache
  grep -q "^kernels: from the kernel cache" again.log && ! grep -q warning again.log &&
    ok "  ... and rewritten: the next run takes it" || bad "the damaged entry ($1) was not rewritten" again.log
}
e=$(entry)
size=$(wc -c < "$e")
damage "its contents do not match their checksum" "printf 'X' | dd of=$e bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null"
damage "truncated or extended" "head -c $((size - 100)) $e > t && mv t $e"
damage "not a graft kernel cache entry" "echo garbage > $e"
# another key's entry renamed to this one's name: the key in its header does not match
mkdir -p other
printf 'optimizer: {type: sgd, learning_rate: 0.05, momentum: 0.9}\nbatch_size: 25\nepochs: 1\nseed: 4\n' > other.tail
head -n -4 plan.yaml > other.yaml
cat other.tail >> other.yaml
"$graft" train other.yaml -q --cache-dir other > other.log 2>&1 || bad "the other plan failed" other.log
damage "its key is not its name" "cp other/*.o $e"

# machine code is run from the cache, so only the user's own, private cache is trusted
mkdir shared && chmod 777 shared
run shared --cache-dir shared
grep -q "warning: the kernel cache directory is writable by other users: not used" shared.log && [ -z "$(ls shared)" ] &&
  cmp -s cold.safetensors shared.safetensors && ok "a cache directory others can write is not used" || bad "a shared cache directory was used" shared.log
mv "$e" real.o && ln -s "$dir/real.o" "$e"
run link --cache-dir cache
grep -q "warning: kernel cache entry is a symbolic link: not trusted" link.log && [ ! -L "$e" ] &&
  ok "an entry that is a symbolic link is not followed, and is replaced" || bad "a symbolic link in the cache was trusted" link.log

# GRAFT_PERF=1 links through RTDyld with LLVM's perf listener (jitdump files for perf inject): the same weights
mkdir jitdump
JITDUMPDIR=$dir/jitdump GRAFT_PERF=1 run perf --cache-dir cache
cmp -s cold.safetensors perf.safetensors && [ -n "$(find jitdump -name 'jit-*.dump')" ] &&
  ok "GRAFT_PERF=1 trains to the same weights and writes a jitdump for perf" || bad "GRAFT_PERF=1 failed" perf.log

rm -rf nocache
mkdir nocache
run off --cache-dir nocache --no-cache
grep -q "^kernels: compiled in [0-9.]* s$" off.log && [ -z "$(ls nocache)" ] && cmp -s cold.safetensors off.safetensors &&
  ok "--no-cache compiles and writes nothing" || bad "--no-cache used or wrote the cache" off.log
GRAFT_CACHE_DIR=$dir/envcache run env
[ "$(ls envcache | wc -l)" -eq 1 ] && ok "GRAFT_CACHE_DIR names the default cache" || bad "GRAFT_CACHE_DIR was not used" env.log
touch afile
run unwritable --cache-dir afile/cache
grep -q "warning: cannot write to the kernel cache" unwritable.log && cmp -s cold.safetensors unwritable.safetensors &&
  ok "a cache that cannot be written is a warning; the run goes on" || bad "an unwritable cache was not handled" unwritable.log
exit $fail
