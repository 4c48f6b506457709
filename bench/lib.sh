# lib.sh — shared by the bench/ scripts (sourced from the repository root): checks and a median.
# needs_graft: stop unless build/graft exists.
needs_graft() { [ -x build/graft ] || { echo "build graft first (make)"; exit 1; }; }
# resnet_work: needs_graft, then a scratch directory $work (removed on exit) holding data.safetensors
# (resnet_data).
resnet_work() {
  needs_graft
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  resnet_data "$work/data.safetensors"
}
# needs_graft_and_torch: stop unless build/graft exists and Debian's python3-torch imports.
needs_graft_and_torch() {
  needs_graft
  /usr/bin/python3 -c "import torch" 2>/dev/null || { echo "needs python3-torch: apt-get install python3-torch"; exit 1; }
}
# median: of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# resnet_data FILE: 640 random 3x64x64 images with labels of 1000 classes, as a tensors file (python3-numpy).
resnet_data() {
  PYTHONPATH=tests/torch /usr/bin/python3 -c '
import sys
import numpy as np
from safetensors_io import write_safetensors
rng = np.random.default_rng(0)
write_safetensors(sys.argv[1], {"x": rng.standard_normal((640, 3, 64, 64), dtype=np.float32),
                                "y": rng.integers(0, 1000, 640).astype(np.int64)})' "$1"
}
# resnet_plan FILE EPOCHS: a plan fine-tuning examples/resnet18 (batch 64, SGD momentum) on data.safetensors beside it.
resnet_plan() {
  cat > "$1" <<YAML
model: $PWD/examples/resnet18/model.yaml
data: {format: tensors, train: {file: data.safetensors}}
loss: cross_entropy
optimizer: {type: sgd, learning_rate: 0.01, momentum: 0.9}
batch_size: 64
epochs: $2
YAML
}
