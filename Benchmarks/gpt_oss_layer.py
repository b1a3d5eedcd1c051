#!/usr/bin/env python3
"""Writes one MoE layer of gpt-oss-120b's size as it is published (MXFP4 experts), for timing `moetool verify`:
128 experts, hidden 2880, intermediate 2880: `mlp.experts.gate_up_proj_blocks` U8 [128, 5760, 90, 16] with its
E8M0 `_scales` U8 [128, 5760, 90], `down_proj_blocks` U8 [128, 2880, 90, 16] with `_scales` [128, 2880, 90], the
BF16 expert biases, the BF16 router (128x2880) and its bias, and the layer's BF16 post-attention RMSNorm, under
gpt-oss's names, plus gpt-oss-120b's config.json with one layer; about 1.7 GB. Codes are random bytes (every byte is
two valid E2M1 codes), exponents 2^-8 to 2^-1: the numbers are not a model's, the shapes, dtypes and bytes to read are.

usage: gpt_oss_layer.py OUTDIR [--experts 128]      (needs numpy)
"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", type=int, default=128)
    args = ap.parse_args()
    H, I, E = 2880, 2880, args.experts
    os.makedirs(args.out, exist_ok=True)
    p = "model.layers.0.mlp."
    specs = [(p + "router.weight", "BF16", [E, H]), (p + "router.bias", "BF16", [E]),
             ("model.layers.0.post_attention_layernorm.weight", "BF16", [H]),
             (p + "experts.gate_up_proj_blocks", "U8", [E, 2 * I, H // 32, 16]),
             (p + "experts.gate_up_proj_scales", "U8", [E, 2 * I, H // 32]),
             (p + "experts.gate_up_proj_bias", "BF16", [E, 2 * I]),
             (p + "experts.down_proj_blocks", "U8", [E, H, I // 32, 16]),
             (p + "experts.down_proj_scales", "U8", [E, H, I // 32]),
             (p + "experts.down_proj_bias", "BF16", [E, H])]
    size = {"BF16": 2, "U8": 1}
    header, offset = {}, 0
    for name, dtype, shape in specs:
        n = int(np.prod(shape)) * size[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    rng = np.random.default_rng(20)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape in specs:
            n = int(np.prod(shape))
            if name.endswith("_blocks"):
                for start in range(0, n, 1 << 28):  # 256 MB at a time
                    f.write(rng.integers(0, 256, size=min(1 << 28, n - start), dtype=np.uint8).tobytes())
            elif name.endswith("_scales"):
                f.write(rng.integers(119, 127, size=n, dtype=np.uint8).tobytes())
            else:
                v = (rng.standard_normal(n) * (0.02 if "router.weight" in name else 0.1) + (1.0 if "norm" in name else 0)).astype(np.float32)
                f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    config = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": H, "intermediate_size": I,
              "num_local_experts": E, "num_experts_per_tok": 4, "num_hidden_layers": 1, "num_attention_heads": 64,
              "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088, "rms_norm_eps": 1e-5, "hidden_act": "silu",
              "swiglu_limit": 7.0, "sliding_window": 128, "layer_types": ["sliding_attention"], "attention_bias": True,
              "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                               "rope_type": "yarn", "truncate": False},
              "rope_theta": 150000, "torch_dtype": "bfloat16", "max_position_embeddings": 131072,
              "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                 "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"}}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(args.out, offset / 1e9, "GB of tensors")


if __name__ == "__main__":
    main()
