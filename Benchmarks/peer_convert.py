#!/usr/bin/env python3
"""The torch peer for `moetool convert`: the same math on the CPU, as people script it.

load_file, then per 128x128 block of each 2-D projection weight: s = max(amax, 1e-4) / 448,
q = (w / s).clamp(-448, 448) -> float8_e4m3fn; scales stored as <name>_scale_inv; save_file.
With --to bf16: q.float() * s -> bfloat16, scales dropped.

usage: peer_convert.py IN.safetensors OUT.safetensors [--to fp8|bf16]
"""
import sys
import time

import torch
from safetensors.torch import load_file, save_file

B = 128


def blocks(shape):
    r, c = shape
    return -(-r // B), -(-c // B)


def quantize(w):
    w = w.float()
    r, c = w.shape
    gr, gc = blocks(w.shape)
    padded = torch.zeros(gr * B, gc * B)
    padded[:r, :c] = w
    v = padded.view(gr, B, gc, B)
    amax = v.abs().amax(dim=(1, 3))
    s = torch.clamp(amax, min=1e-4) / 448.0
    q = (v / s[:, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q.view(gr * B, gc * B)[:r, :c].contiguous(), s


def dequantize(q, s):
    r, c = q.shape
    full = s.repeat_interleave(B, 0)[:r].repeat_interleave(B, 1)[:, :c]
    return (q.float() * full).to(torch.bfloat16)


def selected(name, t):
    parts = name.split(".")
    module = parts[-2] if len(parts) >= 2 else ""
    return t.dim() == 2 and name.endswith(".weight") and ("proj" in module or module in ("w1", "w2", "w3")) \
        and module != "eh_proj" and "embed_tokens" not in parts and "lm_head" not in parts


def main():
    src, dst = sys.argv[1], sys.argv[2]
    to = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--to" else "fp8"
    start = time.perf_counter()
    tensors = load_file(src)
    out = {}
    for name, t in tensors.items():
        if to == "fp8" and t.dtype in (torch.bfloat16, torch.float16, torch.float32) and selected(name, t):
            out[name], out[name + "_scale_inv"] = quantize(t)
        elif to == "bf16" and t.dtype == torch.float8_e4m3fn and name + "_scale_inv" in tensors:
            out[name] = dequantize(t, tensors[name + "_scale_inv"])
        elif to == "bf16" and name.endswith("_scale_inv"):
            continue
        else:
            out[name] = t
    save_file(out, dst, metadata={"format": "pt"})
    print(f"elapsed: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
