"""Block-scaled FP8 weights in every FP8 dtype safetensors knows, and a declared non-square block size,
with torch's own dequantization as the reference (Fixtures/README.md, "quant/fp8_variants").

    /work/venv/bin/python Fixtures/fp8_variants.py

Writes Fixtures/quant/fp8_variants/ (a checkpoint: model.safetensors + config.json, 128x128 blocks),
Fixtures/quant/fp8_block100/ (weight_block_size [100, 128]) and their expected BF16 tensors.
"""
import json
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "quant")

# Codes that are neither NaN nor infinite in each dtype (the reference is then finite too).
DTYPES = {
    "e4m3fn": (torch.float8_e4m3fn, lambda c: (c & 0x7F) != 0x7F),
    "e5m2": (torch.float8_e5m2, lambda c: (c & 0x7F) < 0x7C),
    "e4m3fnuz": (torch.float8_e4m3fnuz, lambda c: c != 0x80),
    "e5m2fnuz": (torch.float8_e5m2fnuz, lambda c: c != 0x80),
}


def finite_codes(gen, shape, ok):
    allowed = torch.tensor([c for c in range(256) if ok(c)], dtype=torch.uint8)
    return allowed[torch.randint(0, len(allowed), shape, generator=gen)]


def dequantize(codes, scale, block_rows, block_cols):
    """DeepSeek's weight_dequant, on the CPU: float32(code) * its block's scale, rounded to BF16."""
    rows, cols = codes.shape
    s = scale.float().repeat_interleave(block_rows, 0)[:rows].repeat_interleave(block_cols, 1)[:, :cols]
    return (codes.float() * s).to(torch.bfloat16)


def write(name, tensors, expected, block):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic"}
    if block is not None:
        qc["weight_block_size"] = list(block)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model_type": "deepseek_v3", "quantization_config": qc}, f, indent=2)
    save_file(expected, os.path.join(OUT, name + "-expected.safetensors"), metadata={"format": "pt"})


def main():
    gen = torch.Generator().manual_seed(20261203)
    # 200 x 300: partial blocks in both directions.
    tensors, expected = {}, {}
    for key, (dtype, ok) in DTYPES.items():
        name = f"model.layers.0.mlp.experts.0.{key}_proj.weight"
        codes = finite_codes(gen, (200, 300), ok).view(dtype)
        scale = torch.rand((2, 3), generator=gen) * 0.01 + 1e-4
        tensors[name] = codes
        tensors[name + "_scale_inv"] = scale
        expected[name] = dequantize(codes, scale, 128, 128)
    write("fp8_variants", tensors, expected, None)

    # weight_block_size [100, 128] on a [200, 128] weight: the grid [2, 1] is also what 128x128 blocks give,
    # so only honouring the declared size puts rows 100..127 under the second scale.
    name = "model.layers.0.mlp.experts.0.down_proj.weight"
    codes = finite_codes(gen, (200, 128), DTYPES["e4m3fn"][1]).view(torch.float8_e4m3fn)
    scale = torch.tensor([[0.002], [0.5]], dtype=torch.float32)
    write("fp8_block100", {name: codes, name + "_scale_inv": scale}, {name: dequantize(codes, scale, 100, 128)}, (100, 128))


if __name__ == "__main__":
    main()
