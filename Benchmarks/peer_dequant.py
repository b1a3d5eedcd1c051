#!/usr/bin/env python3
"""The Python reference path people use to dequantize on a CPU, for Benchmarks/dequant_bench.sh:
compressed-tensors' own model-free dequantizer for INT4, llm-dequant (the streaming dequantizer on PyPI) for NVFP4,
transformers' convert_moe_packed_tensors for gpt-oss's MXFP4; the result written as BF16 with safetensors, as moetool
convert --to bf16 writes it.

usage: peer_dequant.py int4|nvfp4|mxfp4 CHECKPOINT_DIR OUT.safetensors
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def main():
    kind, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if kind == "nvfp4":
        # llm-dequant streams module by module and writes its own shard; it is moved to OUT.
        import glob, os, shutil, tempfile
        from pathlib import Path
        from llm_dequant.model import convert
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as d:
            convert(Path(src), Path(d) / "out", dtype="bf16", log=lambda *a, **k: None)
            shard, = glob.glob(os.path.join(d, "out", "*.safetensors"))
            shutil.move(shard, out)
        return
    tensors = load_file(src + "/model.safetensors")
    if kind == "int4":
        from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
        result = CompressedTensorsDequantizer(src, dtype=torch.bfloat16).process(tensors)
        result = {k: v.to(torch.bfloat16).contiguous() for k, v in result.items()}
    else:
        from transformers.integrations.mxfp4 import convert_moe_packed_tensors
        result = {}
        for k in list(tensors):
            if k.endswith("_blocks"):
                base = k[: -len("_blocks")]
                result[base] = convert_moe_packed_tensors(tensors[k], tensors[base + "_scales"], dtype=torch.bfloat16).contiguous()
            elif not k.endswith("_scales"):
                result[k] = tensors[k]
    save_file(result, out, metadata={"format": "pt"})


if __name__ == "__main__":
    main()
