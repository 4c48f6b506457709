#!/bin/sh
# generate.sh — regenerates the small binary fixtures used by the data-file cases in tests/bad/.
# Run it from anywhere: `sh tests/bad/data/generate.sh`. It writes next to itself, is deterministic
# (printf octal escapes, dd from /dev/zero, `gzip -n` without a timestamp) and needs no python.
#
#   images-3.idx            valid: 3 images of 28x28 unsigned bytes (header 00 00 08 03, 3, 28, 28), all 0
#   labels-3.idx            valid: 3 labels 1 2 3
#   labels-2.idx            valid by itself, but only 2 labels (count mismatch against images-3.idx)
#   labels-3-range.idx      3 labels 1 12 3: label 12 at offset 9 is out of range for a 10-class model
#   images-truncated.idx    header promises 3x28x28 = 2352 data bytes, only 100 follow
#   images-badmagic.idx     a PGM image ("P5 ..."), not an IDX file: bad magic bytes 50 35
#   images-truncated.idx.gz images-3.idx gzipped, then cut to its first 20 bytes (deflate stream cut short)
#   bad-utf8.model.yaml     a model file with an invalid UTF-8 byte (0xFF) at line 5, column 14
#   tiny-wrong.safetensors  weights that do not fit tiny.model.yaml (wrong shape, missing, unexpected)
#   images-6.idx, labels-6.idx  valid: 6 blank images with labels 1 1 1 2 2 3 (class subsets, tests/data_select.sh)
#   tokens-range.safetensors  tensors data: x I64 [2, 3] token indices 1 2 3 / 4 7 0, y I64 [2]; index 7 is out
#                           of range for an embedding of 5 rows (x[4])
set -eu
cd "$(dirname "$0")"

header3() { printf '\000\000\010\003\000\000\000\003\000\000\000\034\000\000\000\034'; } # 3 x 28 x 28
zeros() { dd if=/dev/zero bs="$1" count=1 2>/dev/null; }

{ header3; zeros 2352; } >images-3.idx
printf '\000\000\010\001\000\000\000\003\001\002\003' >labels-3.idx
printf '\000\000\010\001\000\000\000\002\001\002' >labels-2.idx
printf '\000\000\010\001\000\000\000\003\001\014\003' >labels-3-range.idx
{ header3; zeros 100; } >images-truncated.idx
{ printf 'P5\n28 28\n255\n'; zeros 784; } >images-badmagic.idx
gzip -n -c images-3.idx | dd bs=20 count=1 2>/dev/null >images-truncated.idx.gz

# Not IDX, but binary all the same: a model whose layer name holds the byte 0xFF (invalid UTF-8), on line 5.
printf '# A model file with a byte that is not UTF-8 in the name of its second layer.\ninput: {shape: [1, 28, 28]}\nlayers:\n  - flatten\n  - {name: fc\377, op: linear, out_features: 10}\n' >bad-utf8.model.yaml

# tiny-wrong.safetensors: weights that do not fit data/tiny.model.yaml: fc.weight has the wrong
# shape [10, 5], fc.bias is missing, head.bias is not a parameter of the model. The header is padded
# with spaces to a multiple of 8 bytes; its length (< 256) is the first byte of the 8-byte prefix.
h='{"fc.weight":{"dtype":"F32","shape":[10,5],"data_offsets":[0,200]},"head.bias":{"dtype":"F32","shape":[3],"data_offsets":[200,212]}}'
pad=$(( (8 - ${#h} % 8) % 8 ))
h="$h$(printf '%*s' "$pad" '')"
{ printf "\\$(printf '%03o' ${#h})\\000\\000\\000\\000\\000\\000\\000"; printf '%s' "$h"; zeros 212; } >tiny-wrong.safetensors

# tokens-range.safetensors: x I64 [2, 3] = 1 2 3 4 7 0 (x[4] = 7), y I64 [2] = 1 2.
i64() { for v in "$@"; do printf "\\$(printf '%03o' "$v")\\000\\000\\000\\000\\000\\000\\000"; done; }
h='{"x":{"dtype":"I64","shape":[2,3],"data_offsets":[0,48]},"y":{"dtype":"I64","shape":[2],"data_offsets":[48,64]}}'
pad=$(( (8 - ${#h} % 8) % 8 ))
h="$h$(printf '%*s' "$pad" '')"
{ printf "\\$(printf '%03o' ${#h})\\000\\000\\000\\000\\000\\000\\000"; printf '%s' "$h"; i64 1 2 3 4 7 0 1 2; } >tokens-range.safetensors

# images-6.idx / labels-6.idx: 6 images (all 0) labelled 1 1 1 2 2 3.
{ printf '\000\000\010\003\000\000\000\006\000\000\000\034\000\000\000\034'; zeros 4704; } >images-6.idx
printf '\000\000\010\001\000\000\000\006\001\001\001\002\002\003' >labels-6.idx
