#!/bin/sh
# The ahead-of-time example, end to end: pre-train the CNN on Fashion-MNIST classes 0-4 (graft train),
# compile the gradual-unfreezing plan for classes 5-9 ahead of time (graft compile), install graft into
# a scratch prefix, build main.c against it with CMake's find_package(graft), and run it: it loads the
# data itself, fine-tunes through graft.h and prints the test accuracy. Then it checks what the example
# is for:
#   - the program links graft's runtime only: ldd lists no LLVM and no libyaml;
#   - `graft train` of the same plan (JIT) gives the same weights, bit for bit;
#   - with --target-cpu x86-64-v3 the code has no AVX-512 instructions, and still trains (built this
#     time with pkg-config and a plain cc command);
#   - the generated header compiles as C11 and C++17.
# usage: examples/aot/run.sh [--check] [GRAFT]   (default build/graft; its build tree is installed)
#   --check   exit 1 unless all of the above hold and the test accuracy is at least 0.88 (ctest aot_example)
set -eu
check=0
[ "${1:-}" = --check ] && { check=1; shift; }
here=$(cd "$(dirname "$0")" && pwd)
graft=$(cd "$(dirname "${1:-build/graft}")" && pwd)/$(basename "${1:-build/graft}")
build=$(dirname "$graft")
fm=/usr/share/datasets/fashion-mnist
data="$fm/train-images-idx3-ubyte.gz $fm/train-labels-idx1-ubyte.gz $fm/t10k-images-idx3-ubyte.gz $fm/t10k-labels-idx1-ubyte.gz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/../transfer/model.yaml" "$here/../transfer/pretrain.yaml" "$here/plan.yaml" "$work/"
cd "$work"
fail=0
ok() { echo "ok   $1"; }
bad() {
  echo "FAIL $1"
  [ -n "${2:-}" ] && sed 's/^/  | /' "$2" | tail -20 | cut -c1-240
  fail=1
}
"$graft" train pretrain.yaml -q --save pretrained.safetensors > pretrain.log || { bad "pre-training failed" pretrain.log; exit 1; }
echo "pre-trained on classes 0-4: test accuracy $(sed -n 's/^final test accuracy: //p' pretrain.log)"
"$graft" compile plan.yaml -o out --name net
cmake --install "$build" --prefix "$work/prefix" > install.log || { bad "cmake --install failed" install.log; exit 1; }
cmake -S "$here" -B ex -DCMAKE_PREFIX_PATH="$work/prefix" -DGRAFT_ARTIFACT_DIR="$work/out" -DCMAKE_BUILD_TYPE=Release > ex.log 2>&1 &&
  cmake --build ex >> ex.log 2>&1 || { bad "building the example with find_package(graft) failed" ex.log; exit 1; }
ldd ex/aot_example > ldd.log
if grep -qi -e llvm -e libyaml ldd.log; then bad "the example links LLVM or libyaml" ldd.log; else ok "the example links graft's runtime only (ldd: no LLVM, no libyaml)"; fi
# shellcheck disable=SC2086
ex/aot_example $data --classes 5,6,7,8,9 --per-class 100 --save aot.safetensors | tee aot.log
acc=$(sed -n 's/^final test accuracy: //p' aot.log)
[ "$check" = 1 ] || exit $fail

awk -v a="$acc" 'BEGIN { exit !(a >= 0.88) }' && ok "test accuracy $acc >= 0.88" || bad "test accuracy $acc < 0.88" aot.log
"$graft" train plan.yaml -q --save jit.safetensors > jit.log 2>&1 || bad "graft train of the same plan failed" jit.log
cmp -s aot.safetensors jit.safetensors && ok "graft train (JIT) and the compiled program give the same weights, bit for bit" ||
  bad "the JIT's and the compiled program's weights differ" jit.log

"$graft" compile plan.yaml -o v3 --name net --target-cpu x86-64-v3 > v3.log 2>&1 || bad "compiling for x86-64-v3 failed" v3.log
objdump -d v3/net.o > v3.dis
if grep -q zmm v3.dis; then bad "the x86-64-v3 code uses AVX-512 registers"; else ok "--target-cpu x86-64-v3: no AVX-512 instructions ($(grep -c ymm v3.dis) AVX2 ones)"; fi
if grep -q avx512f /proc/cpuinfo; then
  objdump -d out/net.o | grep -q zmm && ok "the host build uses AVX-512" || bad "the host build on an AVX-512 machine has no AVX-512 instructions"
fi
pc="env PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig pkg-config"
# shellcheck disable=SC2046
cc -O2 -I v3 "$here/main.c" v3/libnet.a $($pc --cflags --libs graft-runtime) -lz -o v3_example > cc.log 2>&1 || bad "building with pkg-config graft-runtime failed" cc.log
# shellcheck disable=SC2086
./v3_example $data --classes 5,6,7,8,9 --per-class 100 --epochs 3 > v3run.log 2>&1 &&
  grep -q "^final test accuracy: 0\.[6-9]" v3run.log && ok "the x86-64-v3 build trains ($(sed -n 's/^final test accuracy: //p' v3run.log) after 3 epochs)" ||
  bad "the x86-64-v3 build did not train" v3run.log

# the generated header, as C11 and C++17, strictly
printf '#include "net.h"\nint main(void) { graft_model *m; return net_open(NULL, &m) == GRAFT_OK && graft_classes(m) == NET_CLASSES ? 0 : 1; }\n' > use.c
cp use.c use.cc
# shellcheck disable=SC2046
cc -std=c11 -pedantic -Wall -Wextra -Werror -I out use.c out/libnet.a $($pc --cflags --libs graft-runtime) -o use_c > hc.log 2>&1 &&
  c++ -std=c++17 -pedantic -Wall -Wextra -Werror -I out use.cc out/libnet.a $($pc --cflags --libs graft-runtime) -o use_cc >> hc.log 2>&1 &&
  ./use_c && ./use_cc && ok "the generated header compiles and links as C11 and C++17" || bad "the generated header does not build cleanly as C11 and C++17" hc.log
# the JIT API through pkg-config graft: the same plan opened (compiled) from YAML by a program
printf '#include <graft.h>\n#include <stdio.h>\nint main(void) { graft_model *m; if (graft_open_plan("plan.yaml", NULL, &m)) return 1;\n  printf("%%d phases\\n", graft_phases(m)); graft_close(m); return 0; }\n' > jit.c
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror jit.c $($pc --cflags --libs graft) -o jit_api > jc.log 2>&1 && ./jit_api > jit_api.log 2>&1 && grep -q "^3 phases" jit_api.log &&
  ok "a program using graft_open_plan builds with pkg-config graft and compiles the plan" || bad "the JIT API through pkg-config graft failed" jc.log
exit $fail
