#!/bin/sh
# Image folders end to end: writes Fashion-MNIST classes 5-9 as folders of PNG and JPEG files (100
# training images per class, the 5000 test images), pre-trains the CNN on classes 0-4, fine-tunes it
# on the folders with plan.yaml (frozen convolutions, random crops and flips), and asks for the top
# classes of a few image files. Work happens in a temporary directory.
# usage: examples/images/run.sh [--check] [BUILD_DIR]   (default build; needs graft and idx2images)
#   --check   exit 1 unless the test accuracy reaches 0.88 and predict names the right class of
#             most of the files it is given (the ctest image_folder)
set -eu
check=0
[ "${1:-}" = --check ] && check=1 && shift
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
fm=/usr/share/datasets/fashion-mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/examples"
cp -r "$here" "$work/examples/images"
cp -r "$here/../transfer" "$work/examples/transfer"
cd "$work/examples/images"
mkdir -p images
names=tshirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle_boot
"$build/idx2images" $fm/train-images-idx3-ubyte.gz $fm/train-labels-idx1-ubyte.gz images/train --classes 5,6,7,8,9 \
  --per-class 100 --names $names --format both
"$build/idx2images" $fm/t10k-images-idx3-ubyte.gz $fm/t10k-labels-idx1-ubyte.gz images/test --classes 5,6,7,8,9 --names $names
echo "image folders: $(find images/train -type f | wc -l) training and $(find images/test -type f | wc -l) test files in" \
  "$(ls images/train | tr '\n' ' ')"
(cd ../transfer && "$build/graft" train pretrain.yaml -q --save ../images/pretrained.safetensors | tail -1 | sed 's/^/pre-training on classes 0-4: /')
"$build/graft" train plan.yaml -q --save tuned.safetensors | tee train.log
files=$(ls images/test/*/* | awk 'NR % 500 == 1')
"$build/graft" predict plan.yaml --weights tuned.safetensors --top 2 $files | tee predict.log
if [ $check = 1 ]; then
  acc=$(sed -n 's/^final test accuracy: //p' train.log)
  # a line is "images/test/<class>/<file>: <top class> (p), ...": right when the top class is the folder's
  right=$(awk -F'[/: ]+' '$3 == $5 {n++} END {print n + 0}' predict.log)
  total=$(wc -l < predict.log)
  awk -v a="$acc" -v r="$right" -v t="$total" 'BEGIN {
    ok = a >= 0.88 && t == 10 && r >= 7
    printf "check: test accuracy %.4f, predict right on %d of %d files: %s\n", a, r, t, ok ? "ok" : "FAILED"
    exit !ok }'
fi
