#!/usr/bin/env python3
"""Writes a BF16 shard shaped like DeepSeek-V3 experts (~700 MB), values N(0, 0.02).

8 experts x gate/up (2048x7168) and down (7168x2048), a router (256x7168), a norm (7168)
and a 576x7168 kv_a_proj_with_mqa, plus a config.json, in OUTDIR.

usage: expert_shard.py OUTDIR      (needs torch and safetensors: Fixtures/requirements.txt)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for e in range(8):
        p = f"model.layers.3.mlp.experts.{e}."
        tensors[p + "gate_proj.weight"] = (torch.randn(2048, 7168, generator=g) * 0.02).bfloat16()
        tensors[p + "up_proj.weight"] = (torch.randn(2048, 7168, generator=g) * 0.02).bfloat16()
        tensors[p + "down_proj.weight"] = (torch.randn(7168, 2048, generator=g) * 0.02).bfloat16()
    tensors["model.layers.3.mlp.gate.weight"] = (torch.randn(256, 7168, generator=g) * 0.02).bfloat16()
    tensors["model.layers.3.post_attention_layernorm.weight"] = torch.ones(7168).bfloat16()
    tensors["model.layers.3.self_attn.kv_a_proj_with_mqa.weight"] = (torch.randn(576, 7168, generator=g) * 0.02).bfloat16()
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168,
                   "num_hidden_layers": 4, "n_routed_experts": 8, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 2048}, f, indent=2)


if __name__ == "__main__":
    main()
