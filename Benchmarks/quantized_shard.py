#!/usr/bin/env python3
"""Writes a quantized expert shard for the dequantization benchmark (Benchmarks/dequant_bench.sh).

  quantized_shard.py int4 OUTDIR    compressed-tensors pack-quantized W4A16, group 32, symmetric: 28 DeepSeek-V3
                                    experts (gate/up 2048x7168, down 7168x2048), ~690 MB
  quantized_shard.py nvfp4 OUTDIR   compressed-tensors nvfp4-pack-quantized (NVFP4A16): 28 DeepSeek-V3 experts, E4M3
                                    group scales and an F32 global scale per weight, ~690 MB
  quantized_shard.py mxfp4 OUTDIR   gpt-oss's MXFP4 experts: 2 layers of 24 experts, gate_up [24, 5760, 90, 16]
                                    and down [24, 2880, 90, 16] blocks with E8M0 scales, ~640 MB

Codes are random (every nibble is a valid code), scales positive and random in a realistic range. Needs numpy,
torch and safetensors (Fixtures/requirements.txt).
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

META = {"format": "pt"}


def int4(out):
    rng = np.random.default_rng(11)
    tensors = {}
    for e in range(28):
        for name, rows, cols in (("gate_proj", 2048, 7168), ("up_proj", 2048, 7168), ("down_proj", 7168, 2048)):
            p = f"model.layers.3.mlp.experts.{e}.{name}."
            words = rng.integers(0, 2**32, size=(rows, cols // 8), dtype=np.uint64).astype(np.uint32).view(np.int32)
            tensors[p + "weight_packed"] = torch.from_numpy(words)
            scales = rng.uniform(1e-4, 4e-3, size=(rows, cols // 32)).astype(np.float32)
            tensors[p + "weight_scale"] = torch.from_numpy(scales).bfloat16()
            tensors[p + "weight_shape"] = torch.tensor([rows, cols], dtype=torch.int64)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata=META)
    group = {"format": "pack-quantized", "input_activations": None, "output_activations": None,
             "targets": ["Linear"], "weights": {"dynamic": False, "group_size": 32, "num_bits": 4,
                                                 "strategy": "group", "symmetric": True, "type": "int"}}
    config = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168,
              "num_hidden_layers": 4, "n_routed_experts": 28, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
              "dtype": "bfloat16",
              "quantization_config": {"config_groups": {"group_0": group}, "format": "pack-quantized", "ignore": [],
                                      "quant_method": "compressed-tensors", "quantization_status": "compressed"}}
    return config


def nvfp4(out):
    rng = np.random.default_rng(13)
    tensors = {}
    for e in range(28):
        for name, rows, cols in (("gate_proj", 2048, 7168), ("up_proj", 2048, 7168), ("down_proj", 7168, 2048)):
            p = f"model.layers.3.mlp.experts.{e}.{name}."
            tensors[p + "weight_packed"] = torch.from_numpy(rng.integers(0, 256, size=(rows, cols // 2), dtype=np.uint8))
            # E4M3 codes 0x20..0x5f: 2^-4 .. 2^3.9, as group scales times a global scale of ~2000 come out
            tensors[p + "weight_scale"] = torch.from_numpy(rng.integers(0x20, 0x60, size=(rows, cols // 16), dtype=np.uint8)).view(torch.float8_e4m3fn)
            tensors[p + "weight_global_scale"] = torch.tensor([float(rng.uniform(1500, 3000))], dtype=torch.float32)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata=META)
    group = {"format": "nvfp4-pack-quantized", "input_activations": None, "output_activations": None,
             "targets": ["Linear"], "weights": {"dynamic": False, "group_size": 16, "num_bits": 4, "scale_dtype": "torch.float8_e4m3fn",
                                                 "strategy": "tensor_group", "symmetric": True, "type": "float"}}
    return {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168,
            "num_hidden_layers": 4, "n_routed_experts": 28, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
            "dtype": "bfloat16",
            "quantization_config": {"config_groups": {"group_0": group}, "format": "nvfp4-pack-quantized", "ignore": [],
                                    "quant_method": "compressed-tensors", "quantization_status": "compressed"}}


def mxfp4(out):
    rng = np.random.default_rng(12)
    tensors = {}
    for layer in range(2):
        p = f"model.layers.{layer}.mlp.experts."
        for name, rows in (("gate_up_proj", 5760), ("down_proj", 2880)):
            tensors[p + name + "_blocks"] = torch.from_numpy(rng.integers(0, 256, size=(24, rows, 90, 16), dtype=np.uint8))
            tensors[p + name + "_scales"] = torch.from_numpy(rng.integers(118, 128, size=(24, rows, 90), dtype=np.uint8))
            tensors[p + name + "_bias"] = torch.zeros(24, rows, dtype=torch.bfloat16)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata=META)
    return {"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "hidden_size": 2880, "intermediate_size": 2880,
            "num_hidden_layers": 2, "num_local_experts": 24, "num_experts_per_tok": 4, "dtype": "bfloat16",
            "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": []}}


def main():
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    config = {"int4": int4, "nvfp4": nvfp4, "mxfp4": mxfp4}[kind](out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
