#!/usr/bin/python3
"""Converts a PyTorch checkpoint (a state_dict saved with torch.save, e.g. torchvision's resnet18
weights) into a safetensors file that graft's `init:` and `graft eval --weights` load by name.

usage: torch2safetensors.py CHECKPOINT.pth OUT.safetensors [--prefix P] [--strip P]

Floating-point tensors are written as F32; integer buffers (num_batches_tracked) as I64. A checkpoint
that wraps its state_dict (under "state_dict" or "model") is unwrapped. --strip removes a name prefix
(e.g. "module." from DataParallel checkpoints); --prefix adds one. Needs Debian's python3-torch; graft
itself never uses Python."""
import argparse
import json
import os
import struct
import sys

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--strip", default="")
    a = ap.parse_args()
    sd = torch.load(a.checkpoint, map_location="cpu")
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        sys.exit(f"{a.checkpoint}: not a state_dict (a mapping of names to tensors)")
    header, blobs, off = {}, [], 0
    for name, t in sd.items():
        if a.strip and name.startswith(a.strip):
            name = name[len(a.strip):]
        name = a.prefix + name
        t = t.detach().cpu().contiguous()
        if t.is_floating_point():
            t, dtype = t.float(), "F32"
        elif t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            t, dtype = t.long(), "I64"
        else:
            sys.exit(f"{a.checkpoint}: tensor '{name}' has dtype {t.dtype}, which graft does not read")
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt", "source": os.path.basename(a.checkpoint)}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(sd)} tensors, {off} bytes")


if __name__ == "__main__":
    main()
