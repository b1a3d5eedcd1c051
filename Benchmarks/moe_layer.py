#!/usr/bin/env python3
"""Writes one MoE layer of a released model's size, stored as the release stores it, for timing `moetool verify`
in layer mode. The numbers are not a model's (random codes, scales around 1e-3, BF16 values N(0, 0.1)); the shapes,
dtypes, names and bytes to read are.

  --arch deepseek_v3 (default)  DeepSeek-V3 / V3.2 / Kimi-K2's FP8 layer: 256 routed experts + 1 shared of gate/up
                                2048x7168 and down 7168x2048 in F8_E4M3 with 128x128 F32 `weight_scale_inv`, a BF16
                                router with an F32 e_score_correction_bias, 8 groups keeping 4, top-8; 11.3 GB.
  --arch glm4_moe               GLM-4.5-FP8's: 160 experts of 1536x5120 and a shared one, one group, top-8; 3.8 GB.
  --arch minimax_m2             MiniMax-M2's FP8: 256 experts w1/w3/w2 of 1536x3072 under block_sparse_moe, the
                                block's correction bias, top-8, no shared expert; 3.6 GB.
  --arch llama4                 Llama-4-Scout's BF16: 16 experts as fused stacks `experts.gate_up_proj`
                                [16, 5120, 16384] and `down_proj` [16, 8192, 5120] under language_model., the router,
                                a shared expert of 8192, top-1; 4.4 GB.
  --arch qwen3_next             Qwen3-Next-80B-A3B's BF16: 512 experts of 512x2048, a shared expert of 512 with its
                                sigmoid gate, top-10; 3.2 GB.
  --arch deepseek_v4            DeepSeek-V4's release storage at transformers' default sizes (DeepseekV4Config: hidden
                                4096, 256 experts of 2048, top-6): FP4 experts w1/w3/w2 two codes to an I8 byte with an
                                E8M0 scale per 32, the shared expert in FP8 with E8M0 128x128 block scales, the router
                                and its bias, under the release's names (layers.0.ffn.*, ffn_norm); 3.4 GB.

Each layer comes with its post-attention RMSNorm and a config.json with one decoder layer.

usage: moe_layer.py OUTDIR [--arch A] [--experts N]      (needs numpy)
"""
import argparse
import json
import os
import struct

import numpy as np

FP8 = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
SIZE = {"BF16": 2, "F32": 4, "F8_E4M3": 1, "I8": 1, "F8_E8M0": 1}


def fp8(name, shape):
    return [(name + ".weight", "F8_E4M3", shape),
            (name + ".weight_scale_inv", "F32", [(shape[0] + 127) // 128, (shape[1] + 127) // 128])]


def bf16(name, shape):
    return [(name + ".weight", "BF16", shape)]


def swiglu(prefix, names, hidden, inter, store):
    gate, up, down = names
    return store(prefix + gate, [inter, hidden]) + store(prefix + up, [inter, hidden]) + store(prefix + down, [hidden, inter])


def deepseek_like(h, i, e, config, p="model.layers.0.mlp.", shared=True):
    specs = [(p + "gate.weight", "BF16", [e, h]), (p + "gate.e_score_correction_bias", "F32", [e])]
    for x in range(e):
        specs += swiglu(p + f"experts.{x}.", ("gate_proj", "up_proj", "down_proj"), h, i, fp8)
    if shared:
        specs += swiglu(p + "shared_experts.", ("gate_proj", "up_proj", "down_proj"), h, i, fp8)
    return specs, dict(config, hidden_size=h, moe_intermediate_size=i, n_routed_experts=e, quantization_config=FP8)


def deepseek_v3(e):
    return deepseek_like(7168, 2048, e or 256, {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "n_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 0})


def glm4_moe(e):
    return deepseek_like(5120, 1536, e or 160, {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "n_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 0, "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128})


def minimax_m2(e):
    h, i, e = 3072, 1536, e or 256
    p = "model.layers.0.block_sparse_moe."
    specs = [(p + "gate.weight", "BF16", [e, h]), (p + "e_score_correction_bias", "F32", [e])]
    for x in range(e):
        specs += swiglu(p + f"experts.{x}.", ("w1", "w3", "w2"), h, i, fp8)
    return specs, {"architectures": ["MiniMaxM2ForCausalLM"], "model_type": "minimax_m2", "hidden_size": h,
                   "intermediate_size": i, "num_local_experts": e, "num_experts_per_tok": 8, "num_attention_heads": 48,
                   "num_key_value_heads": 8, "head_dim": 128, "rotary_dim": 64, "quantization_config": FP8}


def llama4(e):
    h, i, e = 5120, 8192, e or 16
    p = "language_model.model.layers.0.feed_forward."
    specs = [(p + "router.weight", "BF16", [e, h]), (p + "experts.gate_up_proj", "BF16", [e, h, 2 * i]),
             (p + "experts.down_proj", "BF16", [e, i, h])]
    specs += swiglu(p + "shared_expert.", ("gate_proj", "up_proj", "down_proj"), h, i, bf16)
    text = {"model_type": "llama4_text", "hidden_size": h, "intermediate_size": i, "intermediate_size_mlp": 16384,
            "num_hidden_layers": 1, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
            "num_local_experts": e, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1, "moe_layers": [0],
            "vocab_size": 202048, "rms_norm_eps": 1e-5, "hidden_act": "silu", "torch_dtype": "bfloat16"}
    return specs, {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "text_config": text,
                   "torch_dtype": "bfloat16"}


def qwen3_next(e):
    h, i, e = 2048, 512, e or 512
    p = "model.layers.0.mlp."
    specs = [(p + "gate.weight", "BF16", [e, h]), (p + "shared_expert_gate.weight", "BF16", [1, h])]
    for x in range(e):
        specs += swiglu(p + f"experts.{x}.", ("gate_proj", "up_proj", "down_proj"), h, i, bf16)
    specs += swiglu(p + "shared_expert.", ("gate_proj", "up_proj", "down_proj"), h, i, bf16)
    return specs, {"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": h,
                   "moe_intermediate_size": i, "shared_expert_intermediate_size": i, "num_experts": e,
                   "num_experts_per_tok": 10, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
                   "layer_types": ["full_attention"], "full_attention_interval": 1, "num_attention_heads": 16,
                   "num_key_value_heads": 2, "head_dim": 256, "torch_dtype": "bfloat16"}


def deepseek_v4(e):
    h, i, e = 4096, 2048, e or 256
    p = "layers.0.ffn."
    specs = [(p + "gate.weight", "BF16", [e, h]), (p + "gate.bias", "F32", [e])]
    for x in range(e):
        for name, (out, inputs) in (("w1", (i, h)), ("w3", (i, h)), ("w2", (h, i))):
            specs += [(p + f"experts.{x}.{name}.weight", "I8", [out, inputs // 2]),
                      (p + f"experts.{x}.{name}.scale", "F8_E8M0", [out, inputs // 32])]
    for name, (out, inputs) in (("w1", (i, h)), ("w3", (i, h)), ("w2", (h, i))):
        specs += [(p + f"shared_experts.{name}.weight", "F8_E4M3", [out, inputs]),
                  (p + f"shared_experts.{name}.scale", "F8_E8M0", [(out + 127) // 128, (inputs + 127) // 128])]
    return specs, {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "hidden_size": h,
                   "moe_intermediate_size": i, "n_routed_experts": e, "num_experts_per_tok": 6, "n_shared_experts": 1,
                   "mlp_layer_types": ["moe"], "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
                   "swiglu_limit": 10.0, "expert_dtype": "fp4",
                   "quantization_config": dict(FP8, scale_fmt="ue8m0")}


ARCHS = {"deepseek_v3": deepseek_v3, "glm4_moe": glm4_moe, "minimax_m2": minimax_m2, "llama4": llama4,
         "qwen3_next": qwen3_next, "deepseek_v4": deepseek_v4}


def write(path, specs):
    """A safetensors file of `specs`, its values drawn in chunks (a 2.7 GB stack never sits in memory whole)."""
    header, offset = {}, 0
    for name, dtype, shape in specs:
        n = int(np.prod(shape)) * SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    rng = np.random.default_rng(7)
    chunk = 1 << 24
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, dtype, shape in specs:
            total = int(np.prod(shape))
            for start in range(0, total, chunk):
                n = min(chunk, total - start)
                if dtype == "I8":   # every byte is two E2M1 codes
                    f.write(rng.integers(0, 256, size=n, dtype=np.uint8).tobytes())
                elif dtype == "F8_E8M0":   # exponents 2^-8 to 2^-1
                    f.write(rng.integers(119, 127, size=n, dtype=np.uint8).tobytes())
                elif dtype == "F8_E4M3":   # finite E4M3 codes of either sign
                    codes = rng.integers(0, 0x7F, size=n, dtype=np.uint8) | (rng.integers(0, 2, size=n, dtype=np.uint8) << 7)
                    f.write(codes.tobytes())
                elif dtype == "F32":
                    scale = "scale" in name
                    v = rng.uniform(0.5e-3, 1.5e-3, size=n) if scale else rng.standard_normal(n) * 1e-3
                    f.write(v.astype(np.float32).tobytes())
                else:
                    router = name.endswith(("gate.weight", "router.weight"))
                    v = (rng.standard_normal(n, dtype=np.float32) * (0.02 if router else 0.1)
                         + (1.0 if "norm" in name else 0)).astype(np.float32)
                    f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    return offset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="deepseek_v3")
    ap.add_argument("--experts", type=int)
    args = ap.parse_args()
    specs, config = ARCHS[args.arch](args.experts)
    norm = {"llama4": "language_model.model.layers.0.post_attention_layernorm.weight",
            "deepseek_v4": "layers.0.ffn_norm.weight"}.get(args.arch, "model.layers.0.post_attention_layernorm.weight")
    specs = [(norm, "BF16", [config.get("hidden_size") or config["text_config"]["hidden_size"]])] + specs
    if "text_config" not in config:
        config.update(num_hidden_layers=1, rms_norm_eps=1e-6, hidden_act="silu")
    os.makedirs(args.out, exist_ok=True)
    size = write(os.path.join(args.out, "model.safetensors"), specs)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(args.out, size / 1e9, "GB of tensors")


if __name__ == "__main__":
    main()
