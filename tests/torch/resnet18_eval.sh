#!/bin/sh
# Acceptance: a torchvision ResNet-18 state_dict, saved with torch.save and converted by
# tools/torch2safetensors.py, loads into examples/resnet18 with no missing or unexpected names, and
# `graft eval` gives torchvision's logits on the same inputs (max abs diff <= 1e-4).
# usage: resnet18_eval.sh GRAFT WORKDIR   (exit 77: no torch/torchvision, skipped)
set -eu
graft=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3 -c "import torch, torchvision" 2>/dev/null || { echo "resnet18_eval: no python3-torch/torchvision; skipping"; exit 77; }
mkdir -p "$work"
cd "$work"
/usr/bin/python3 - <<'PY'
import json, struct, numpy as np, torch, torchvision
torch.manual_seed(3)
m = torchvision.models.resnet18()
with torch.no_grad():  # non-trivial running statistics, so evaluation mode is really tested
    for k, v in m.state_dict().items():
        if k.endswith("running_mean"): v.copy_(torch.randn_like(v) * 0.1)
        if k.endswith("running_var"): v.copy_(torch.rand_like(v) + 0.5)
        if k.endswith("num_batches_tracked"): v.fill_(7)
torch.save(m.state_dict(), "resnet18.pth")
x = torch.randn(5, 3, 64, 64)
y = torch.randint(0, 1000, (5,))
m.eval()
with torch.no_grad():
    np.save("logits.npy", m(x).numpy())
def write(path, t):
    hdr, blobs, off = {}, [], 0
    for k, a in t.items():
        a = np.array(a, order="C")
        hdr[k] = {"dtype": "F32" if a.dtype == np.float32 else "I64", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes()); off += a.nbytes
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
write("inputs.safetensors", {"x": x.numpy(), "y": y.numpy()})
PY
/usr/bin/python3 "$here/../../tools/torch2safetensors.py" resnet18.pth resnet18.safetensors
cat > eval.plan.yaml <<EOF2
model: $here/../../examples/resnet18/model.yaml
init: resnet18.safetensors
data: {format: tensors, train: {file: inputs.safetensors}, test: {file: inputs.safetensors}}
loss: cross_entropy
optimizer: {type: sgd, learning_rate: 0.1}
batch_size: 4
epochs: 1
EOF2
"$graft" eval eval.plan.yaml --output out.safetensors
/usr/bin/python3 - <<'PY'
import json, struct, numpy as np
data = open("out.safetensors", "rb").read(); n = struct.unpack("<Q", data[:8])[0]
t = json.loads(data[8:8 + n])["output"]; b, e = t["data_offsets"]
got = np.frombuffer(data[8 + n + b:8 + n + e], dtype=np.float32).reshape(t["shape"])
want = np.load("logits.npy")
err = float(np.abs(got - want).max())
print(f"resnet18_eval: graft eval vs torchvision logits: max abs diff {err:.3g} over {want.size} logits")
print(f"{int(err <= 1e-4)} passed, {int(err > 1e-4)} failed")
raise SystemExit(0 if err <= 1e-4 else 1)
PY
