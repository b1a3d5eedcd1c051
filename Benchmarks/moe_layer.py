#!/usr/bin/env python3
"""Writes one DeepSeek-V3-sized MoE layer as an FP8 checkpoint, for timing `moetool verify`:
256 routed experts + 1 shared expert of gate/up (2048x7168) and down (7168x2048) in F8_E4M3 with
128x128 F32 block scales (`weight_scale_inv`), a BF16 router (256x7168) with an F32
e_score_correction_bias, and the layer's BF16 post-attention RMSNorm, under the names DeepSeek
uses, plus a config.json; about 11.3 GB. Codes are random finite E4M3 bytes, scales around 1e-3:
the numbers are not a model's, the shapes, dtypes and bytes to read are.

usage: moe_layer.py OUTDIR [--experts 256]      (needs numpy)
"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", type=int, default=256)
    args = ap.parse_args()
    H, I, E = 7168, 2048, args.experts
    os.makedirs(args.out, exist_ok=True)
    p = "model.layers.0.mlp."
    specs = [(p + "gate.weight", "BF16", [E, H]), (p + "gate.e_score_correction_bias", "F32", [E]),
             ("model.layers.0.post_attention_layernorm.weight", "BF16", [H])]
    experts = [p + f"experts.{e}." for e in range(E)] + [p + "shared_experts."]
    for x in experts:
        for name, shape in [("gate_proj", [I, H]), ("up_proj", [I, H]), ("down_proj", [H, I])]:
            specs.append((x + name + ".weight", "F8_E4M3", shape))
            specs.append((x + name + ".weight_scale_inv", "F32", [(shape[0] + 127) // 128, (shape[1] + 127) // 128]))
    size = {"BF16": 2, "F32": 4, "F8_E4M3": 1}
    header, offset = {}, 0
    for name, dtype, shape in specs:
        n = int(np.prod(shape)) * size[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    rng = np.random.default_rng(7)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape in specs:
            n = int(np.prod(shape))
            if dtype == "F8_E4M3":
                codes = rng.integers(0, 0x7F, size=n, dtype=np.uint8) | (rng.integers(0, 2, size=n, dtype=np.uint8) << 7)
                f.write(codes.tobytes())
            elif dtype == "F32":
                v = rng.uniform(0.5e-3, 1.5e-3, size=n).astype(np.float32) if "scale" in name else (rng.standard_normal(n) * 1e-3).astype(np.float32)
                f.write(v.tobytes())
            else:
                v = (rng.standard_normal(n) * (0.02 if "gate.weight" in name else 0.1) + (1.0 if "norm" in name else 0)).astype(np.float32)
                f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    config = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": H,
              "moe_intermediate_size": I, "n_routed_experts": E, "n_shared_experts": 1, "num_experts_per_tok": 8,
              "n_group": 8, "topk_group": 4, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
              "num_hidden_layers": 1, "first_k_dense_replace": 0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
              "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                      "weight_block_size": [128, 128]}}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(args.out, offset / 1e9, "GB of tensors")


if __name__ == "__main__":
    main()
