#!/usr/bin/env python3
"""The Python reference path of a data-free 4-bit quantization on a CPU, for Benchmarks/quant_bench.sh: per weight,
the min/max llm-compressor's memoryless observer takes, compressed-tensors' calculate_qparams (and generate_gparam,
one NVFP4 global scale for gate/up and for q/k/v, as llm-compressor fuses them), and compressed-tensors' own
compressor classes; the tensors written with safetensors. It is the arithmetic llm-compressor's data-free path runs,
without loading a model (llm-compressor itself pins an older torch and transformers than Fixtures/requirements.txt),
so its time is a lower bound of llm-compressor's.

usage: peer_quantize.py int4|nvfp4|mxfp4 CHECKPOINT_DIR OUT.safetensors
Quantizes the 2-D .weight tensors moetool quantizes in Benchmarks/expert_shard.py's shard: all but the router and norms
(and, in any checkpoint, 2-D weights whose columns the group size does not divide).
"""
import os
import re
import sys

os.environ.setdefault("TQDM_DISABLE", "1")
import torch
from safetensors.torch import load_file, save_file

from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

PRESETS = {"int4": ("W4A16", PackedQuantizationCompressor), "nvfp4": ("NVFP4A16", NVFP4PackedCompressor),
           "mxfp4": ("MXFP4A16", MXFP4PackedCompressor)}
FUSED = [("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj")]


def quantized(name, t, group):
    return (name.endswith(".weight") and t.ndim == 2 and not name.endswith("mlp.gate.weight")
            and "embed_tokens" not in name and name != "lm_head.weight" and t.shape[1] % group == 0)


def group_min_max(w, group):
    g = w.unflatten(-1, (-1, group))
    return g.amin(-1), g.amax(-1)


def main():
    kind, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
    preset, compressor = PRESETS[kind]
    scheme = preset_name_to_scheme(preset, ["Linear"])
    args = scheme.weights
    tensors = load_file(src + "/model.safetensors")
    result = {}
    amax = {k: v.abs().max() for k, v in tensors.items() if kind == "nvfp4" and quantized(k, v, args.group_size)}
    for name, w in tensors.items():
        if not quantized(name, w, args.group_size):
            result[name] = w
            continue
        module = name[: -len(".weight")]
        lo, hi = group_min_max(w, args.group_size)
        gscale = None
        if kind == "nvfp4":
            parent, _, leaf = module.rpartition(".")
            m = amax[name]
            for group in FUSED:
                if leaf in group:
                    for other in group:
                        m = torch.max(m, amax.get(f"{parent}.{other}.weight", m))
            gscale = generate_gparam(-m.reshape(1), m.reshape(1))
        scale, zp = calculate_qparams(lo, hi, args, global_scale=gscale)
        state = {"weight": w, "weight_scale": scale.to(w.dtype), "weight_zero_point": zp}
        if gscale is not None:
            state["weight_global_scale"] = gscale
        for k, v in compressor.compress(state, scheme).items():
            result[module + "." + k] = v.contiguous()
    save_file(result, out, metadata={"format": "pt"})


if __name__ == "__main__":
    main()
