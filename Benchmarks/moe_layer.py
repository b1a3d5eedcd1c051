#!/usr/bin/env python3
"""Writes one MoE layer of a released FP8 model's size as an FP8 checkpoint, for timing `moetool verify`.
`--arch deepseek_v3` (the default): DeepSeek-V3's 256 routed experts + 1 shared expert of gate/up (2048x7168) and
down (7168x2048) in F8_E4M3 with 128x128 F32 block scales (`weight_scale_inv`), a BF16 router (256x7168) with an F32
e_score_correction_bias, and the layer's BF16 post-attention RMSNorm, under the names DeepSeek uses, plus a
config.json; about 11.3 GB. `--arch glm4_moe`: GLM-4.5's (GLM-4.5-FP8: 160 experts of 1536x5120 and a shared one,
the same router with one group, top-8; 3.8 GB). `--arch minimax_m2`: MiniMax-M2's (256 experts w1/w3/w2 of
1536x3072 under block_sparse_moe, the router's correction bias on the block, top-8, no shared expert; 3.6 GB).
Codes are random finite E4M3 bytes, scales around 1e-3: the numbers are not a model's, the shapes, dtypes and
bytes to read are.

usage: moe_layer.py OUTDIR [--arch deepseek_v3|glm4_moe|minimax_m2] [--experts N]      (needs numpy)
"""
import argparse
import json
import os
import struct

import numpy as np


FP8 = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}

# arch: hidden, expert intermediate, experts, config.json, router names (weight, correction bias), experts' prefix,
# projection names (gate, up, down), shared expert prefix or None
ARCHS = {
    "deepseek_v3": (7168, 2048, 256, {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "n_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 0}, ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"), "mlp.experts.",
        ("gate_proj", "up_proj", "down_proj"), "mlp.shared_experts."),
    "glm4_moe": (5120, 1536, 160, {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "n_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 0, "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128},
        ("mlp.gate.weight", "mlp.gate.e_score_correction_bias"), "mlp.experts.", ("gate_proj", "up_proj", "down_proj"),
        "mlp.shared_experts."),
    "minimax_m2": (3072, 1536, 256, {
        "architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2", "num_experts_per_tok": 8,
        "num_attention_heads": 48, "num_key_value_heads": 8, "head_dim": 128, "rotary_dim": 64},
        ("block_sparse_moe.gate.weight", "block_sparse_moe.e_score_correction_bias"), "block_sparse_moe.experts.",
        ("w1", "w3", "w2"), None),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="deepseek_v3")
    ap.add_argument("--experts", type=int)
    args = ap.parse_args()
    H, I, E, extra, (router, bias), expert_prefix, (g, u, d), shared = ARCHS[args.arch]
    E = args.experts or E
    os.makedirs(args.out, exist_ok=True)
    p = "model.layers.0."
    specs = [(p + router, "BF16", [E, H]), (p + bias, "F32", [E]),
             ("model.layers.0.post_attention_layernorm.weight", "BF16", [H])]
    experts = [p + expert_prefix + f"{e}." for e in range(E)] + ([p + shared] if shared else [])
    for x in experts:
        for name, shape in [(g, [I, H]), (u, [I, H]), (d, [H, I])]:
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
                v = (rng.standard_normal(n) * (0.02 if name.endswith("gate.weight") else 0.1) + (1.0 if "norm" in name else 0)).astype(np.float32)
                f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    config = dict(extra, hidden_size=H, moe_intermediate_size=I, intermediate_size=I, num_hidden_layers=1,
                  rms_norm_eps=1e-6, hidden_act="silu", quantization_config=FP8)
    config["n_routed_experts" if args.arch != "minimax_m2" else "num_local_experts"] = E
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(args.out, offset / 1e9, "GB of tensors")


if __name__ == "__main__":
    main()
