"""Quantized-weight encodings written by the libraries that define them, with those libraries' own
dequantizations as the reference (Fixtures/README.md, "quant/formats").

    /work/venv/bin/pip install -r Fixtures/requirements.txt     # compressed-tensors 0.20.1 is pinned there
    /work/venv/bin/python Fixtures/quant_formats.py      # after generate.py (which deletes quant/)

Writes, under Fixtures/quant/formats/:
  <name>/config.json, <name>/model.safetensors   a tiny quantized checkpoint
  <name>-expected.safetensors                     the producing library's dequantization of each quantized weight
  <name>-params.json                              the logical parameter count of the unquantized model

compressed-tensors fixtures (ct-*): a tiny seeded Qwen3-MoE (transformers), saved by save_pretrained (per-expert
names), whose 2-D projections are put into torch.nn.Linear modules of the same names; compressed-tensors then
applies its QuantizationConfig (apply_quantization_config), its qparam math (calculate_qparams, generate_gparam)
is fed the weights' min/max the way llm-compressor's memoryless min-max observer reduces them (llm-compressor
itself pins older torch/transformers), and ModelCompressor compresses the modules and writes the config. The
reference is CompressedTensorsDequantizer(checkpoint).process(tensors read back from the file).

gpt_oss-mxfp4: a tiny seeded GptOssForCausalLM whose expert weights this script encodes to gpt-oss's MXFP4 layout
(transformers can only quantize to it with the hub's triton kernels); the reference is transformers' own
convert_moe_packed_tensors, and the script checks that from_pretrained(..., Mxfp4Config(dequantize=True)) on the
CPU loads the same tensors.
"""
import json
import os
import re

os.environ.setdefault("TQDM_DISABLE", "1")  # compressed-tensors and transformers draw progress bars
import shutil
import tempfile
import warnings

import torch
import transformers
from safetensors.torch import load_file, save_file

import compressed_tensors
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer
from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    QuantizationStrategy,
    apply_quantization_config,
)
from compressed_tensors.quantization.lifecycle.forward import dequantize
from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam, maybe_pad_tensor_for_block_quant

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # compressed-tensors logs through loguru; keep the run quiet
    from loguru import logger as _loguru

    _loguru.remove()
except Exception:
    pass

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "quant", "formats")
META = {"format": "pt"}

EXPERTS = r"re:.*mlp\.experts\.\d+\."
ATTN = r"re:.*self_attn\.(q|k|v|o)_proj$"
GATE_UP = EXPERTS + r"(gate|up)_proj$"
DOWN = EXPERTS + r"down_proj$"
IGNORE = ["lm_head", r"re:.*mlp\.gate$"]


# ---------------------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------------------

def randomize(model, seed):
    """Overwrite every parameter with seeded values: N(0, 0.05) matrices, 1 + N(0, 0.1) norms, N(0, 0.02) biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1 and "norm" in name:
                v = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            elif p.ndim == 1 or name.endswith("_bias") or name.endswith(".bias") or name.endswith("sinks"):
                v = 0.02 * torch.randn(p.shape, generator=gen)
            else:
                v = 0.05 * torch.randn(p.shape, generator=gen)
            p.copy_(v.to(p.dtype))


def qwen3_moe(moe_intermediate, seed, layers=2):
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=moe_intermediate,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
        tie_word_embeddings=False, max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    randomize(model, seed)
    return model


def saved_state(model, dtype):
    """save_pretrained in `dtype` (per-expert names, as a checkpoint has them), read back: (state dict, config)."""
    with tempfile.TemporaryDirectory() as d:
        model.to(dtype).save_pretrained(d)
        with open(os.path.join(d, "config.json")) as f:
            config = json.load(f)
        return load_file(os.path.join(d, "model.safetensors")), config


def spread(state, fused):
    """Give the expert weights scales worth decoding: output row r is multiplied by 2^((r % 7) - 3) (exact), row 1
    of layer 0's first expert gate projection by a further 2^-40, and the first 32 inputs of its row 0 are zeroed
    (an all-zero group/block). `fused`: gpt-oss's [E, in, out] tensors, whose output rows are the last dim."""
    for k, v in state.items():
        if ".mlp.experts." not in k or v.ndim < 2:
            continue
        rows = v.shape[-1] if fused else v.shape[-2]
        f = torch.exp2(torch.arange(rows) % 7 - 3.0)
        w = v.float() * (f if fused else f.unsqueeze(-1))
        first = k.startswith("model.layers.0.") and ("experts.0.gate_proj" in k or "experts.gate_up_proj" == k.split("mlp.")[-1])
        if first:
            if fused:
                w[0, :, 1] *= 2.0 ** -40
                w[0, :32, 0] = 0
            else:
                w[1] *= 2.0 ** -40
                w[0, :32] = 0
        state[k] = w.to(v.dtype)


class Node(torch.nn.Module):
    pass


def shadow_model(state):
    """An nn.Module tree with the checkpoint's names: 2-D `*.weight` become nn.Linear (nn.Embedding for
    embed_tokens), everything else a plain parameter."""
    root = Node()
    for name, t in state.items():
        *path, leaf = name.split(".")
        mod = root
        for i, part in enumerate(path):
            if not hasattr(mod, part):
                last = i == len(path) - 1
                if last and leaf == "weight" and t.ndim == 2:
                    child = (torch.nn.Embedding(t.shape[0], t.shape[1]) if part == "embed_tokens"
                             else torch.nn.Linear(t.shape[1], t.shape[0], bias=False))
                    del child.weight
                else:
                    child = Node()
                mod.add_module(part, child)
            mod = getattr(mod, part)
        mod.register_parameter(leaf, torch.nn.Parameter(t.clone(), requires_grad=False))
    return root


# ---------------------------------------------------------------------------------------------------------------
# Data-free weight calibration with compressed-tensors' qparam math
# ---------------------------------------------------------------------------------------------------------------

def weight_min_max(w, args):
    """min/max reduced as llm-compressor's memoryless min-max observer reduces a weight (its
    flatten_for_calibration + amin/amax over the observation and group dims)."""
    s = args.strategy
    if s == QuantizationStrategy.TENSOR:
        v = w.reshape(1, 1, -1)
    elif s == QuantizationStrategy.CHANNEL:
        v = w.unsqueeze(-2).unsqueeze(0)
    elif s in (QuantizationStrategy.GROUP, QuantizationStrategy.TENSOR_GROUP):
        v = w.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    elif s == QuantizationStrategy.BLOCK:
        bh, bw = args.block_structure
        p = maybe_pad_tensor_for_block_quant(w, args.block_structure)
        r, c = p.shape
        v = p.reshape(r // bh, bh, c // bw, bw).transpose(1, 2).flatten(-2, -1).unsqueeze(0)
    else:
        raise ValueError(s)
    return torch.amin(v, dim=(0, -1)), torch.amax(v, dim=(0, -1))


FUSED = [("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj")]


def calibrate_weights(model):
    """Set weight_scale / weight_zero_point / weight_global_scale of every quantized module. TENSOR_GROUP
    (NVFP4) global scales are shared by gate/up and by q/k/v, as llm-compressor fuses them for vLLM."""
    stats = {}
    for name, m in model.named_modules():
        scheme = getattr(m, "quantization_scheme", None)
        if scheme is not None and scheme.weights is not None:
            stats[name] = (m, scheme.weights, *weight_min_max(m.weight.data, scheme.weights))
    absmax = {}
    for name, (m, args, lo, hi) in stats.items():
        absmax[name] = torch.max(-lo.min(), hi.max())
    for name, (m, args, lo, hi) in stats.items():
        gscale = None
        if args.strategy == QuantizationStrategy.TENSOR_GROUP:
            parent, _, leaf = name.rpartition(".")
            amax = absmax[name]
            for group in FUSED:
                if leaf in group:
                    for other in group:
                        amax = torch.max(amax, absmax.get(f"{parent}.{other}", amax))
            gscale = generate_gparam(-amax.reshape(1), amax.reshape(1))
            m.weight_global_scale.data.copy_(gscale)
        scale, zp = calculate_qparams(lo, hi, args, global_scale=gscale)
        m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
        if hasattr(m, "weight_zero_point"):
            m.weight_zero_point.data.copy_(zp.reshape(m.weight_zero_point.shape))


def calibrate_inputs(hf_model, shadow, seed):
    """Static per-tensor input scales: min/max of each targeted Linear's input over one seeded batch run through
    the transformers model (the min-max an activation observer keeps), then calculate_qparams."""
    wanted = {n: m for n, m in shadow.named_modules()
              if getattr(m, "quantization_scheme", None) is not None
              and m.quantization_scheme.input_activations is not None
              and not m.quantization_scheme.input_activations.dynamic}
    if not wanted:
        return
    seen, hooks = {}, []
    modules = dict(hf_model.named_modules())
    for n in wanted:
        def hook(mod, inp, n=n):
            x = inp[0].detach()
            lo, hi = x.min(), x.max()
            if n in seen:
                lo, hi = torch.min(lo, seen[n][0]), torch.max(hi, seen[n][1])
            seen[n] = (lo, hi)
        hooks.append(modules[n].register_forward_pre_hook(hook))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, hf_model.config.vocab_size, (2, 16), generator=gen)
    with torch.no_grad():
        hf_model(input_ids=ids)
    for h in hooks:
        h.remove()
    for n, m in wanted.items():
        lo, hi = seen[n]
        scale, _ = calculate_qparams(lo.reshape(1), hi.reshape(1), m.quantization_scheme.input_activations)
        m.input_scale.data.copy_(scale.reshape(m.input_scale.shape).to(m.input_scale.dtype))
        if hasattr(m, "input_zero_point"):
            m.input_zero_point.data.zero_()


# ---------------------------------------------------------------------------------------------------------------
# compressed-tensors fixtures
# ---------------------------------------------------------------------------------------------------------------

def int4(strategy, symmetric, group_size=None):
    return QuantizationArgs(num_bits=4, type="int", strategy=strategy, group_size=group_size,
                            symmetric=symmetric, dynamic=False)


def schemes_for(name):
    """config_groups of each compressed-tensors fixture."""
    if name in ("ct-w4a16", "ct-w4a16-asym"):
        sym = name == "ct-w4a16"
        return {
            "group_0": QuantizationScheme(targets=[GATE_UP, ATTN], weights=int4("group", sym, 32)),
            # moe_intermediate 36: down_proj's in-dimension is a multiple neither of 8 nor of 32
            "group_1": QuantizationScheme(targets=[DOWN], weights=int4("channel", sym)),
        }
    if name == "ct-nvfp4a16":
        return {"group_0": preset_name_to_scheme("NVFP4A16", ["Linear"])}
    if name == "ct-mxfp4a16":
        return {"group_0": preset_name_to_scheme("MXFP4A16", ["Linear"])}
    if name in ("ct-fp8", "ct-fp8-f32"):
        fp8 = preset_name_to_scheme("FP8", [ATTN])            # static per-tensor weights and inputs
        dyn = preset_name_to_scheme("FP8_DYNAMIC", [GATE_UP])  # per-channel weights, dynamic per-token inputs
        blk = preset_name_to_scheme("FP8_BLOCK", [DOWN])       # block weights, dynamic per-group inputs
        blk.weights.block_structure = [32, 32]                # [64, 48] down_proj: a partial block column
        blk.input_activations.group_size = 16
        return {"group_0": fp8, "group_1": dyn, "group_2": blk}
    raise ValueError(name)


CT_FIXTURES = {
    # name: (moe_intermediate, dtype, seed)
    "ct-w4a16": (36, torch.bfloat16, 11),
    "ct-w4a16-asym": (36, torch.bfloat16, 12),
    "ct-nvfp4a16": (32, torch.bfloat16, 13),
    "ct-mxfp4a16": (32, torch.bfloat16, 14),
    "ct-fp8": (48, torch.bfloat16, 15),
    "ct-fp8-f32": (48, torch.float32, 16),
}


def reference_f32(name, tensors, qconfig):
    """Where the library's arithmetic is float32 inside a BF16 result (NVFP4: scale / global_scale and the
    product are float32, then rounded), the float32 values before that rounding, by the library's dequantize."""
    out = {}
    if name != "ct-nvfp4a16":
        return out
    args = qconfig.config_groups["group_0"].weights
    for k in sorted(tensors):
        if k.endswith(".weight_packed"):
            mod = k[: -len(".weight_packed")]
            packed = tensors[k]
            q = unpack_fp4_from_uint8(packed, packed.shape[0], packed.shape[1] * 2, dtype=torch.float32)
            out[mod + ".weight.f32"] = dequantize(q, tensors[mod + ".weight_scale"].to(torch.float32), args=args,
                                                  global_scale=tensors[mod + ".weight_global_scale"],
                                                  dtype=torch.float32)
    return out


def make_ct(name):
    inter, dtype, seed = CT_FIXTURES[name]
    hf = qwen3_moe(inter, seed)
    params = sum(p.numel() for p in hf.parameters())
    hf = hf.to(dtype)
    state, config = saved_state(hf, dtype)
    spread(state, fused=False)
    shadow = shadow_model(state)

    qconfig = QuantizationConfig(config_groups=schemes_for(name), ignore=list(IGNORE),
                                 quantization_status=QuantizationStatus.INITIALIZED)
    apply_quantization_config(shadow, qconfig, show_progress=False)
    calibrate_weights(shadow)
    calibrate_inputs(hf, shadow, seed)
    quantized = sorted(n for n, m in shadow.named_modules() if getattr(m, "quantization_scheme", None) is not None)

    compressor = ModelCompressor.from_pretrained_model(shadow)
    compressor.compress_model(shadow)
    compressor.remove_decompression_hook(shadow)
    tensors = {k: v.detach().contiguous() for k, v in shadow.state_dict().items()}

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata=META)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    compressor.update_config(d)  # adds quantization_config (writes sort_keys, indent 2)

    # The reference: the library's model-free dequantizer on the tensors read back from the file.
    back = load_file(os.path.join(d, "model.safetensors"))
    deq = CompressedTensorsDequantizer(d, dtype=dtype)
    qc = deq.quant_config
    full = deq.process(dict(back))
    expected = {}
    for mod in quantized:
        w = full[mod + ".weight"]
        expected[mod + ".weight"] = w.to(torch.bfloat16).contiguous()
        if w.dtype == torch.float32:
            expected[mod + ".weight.f32"] = w.contiguous()
    expected.update(reference_f32(name, back, qc))
    check_rules(name, back, qc, expected)
    orig = {m: state[m + ".weight"].float() for m in quantized}
    worst = max(((expected[m + ".weight"].float() - orig[m]).abs().max() / orig[m].abs().max()).item() for m in quantized)
    print(f"{name}: worst |dequantized - original| / max|original| = {worst:.3f}")
    save_file(expected, os.path.join(OUT, name + "-expected.safetensors"), metadata=META)
    write_params(name, params, hf, quantized, back)


def write_params(name, params, hf, quantized, tensors):
    experts = sum(p.numel() for n, p in hf.named_parameters() if ".experts." in n)
    info = {
        "parameters": params,
        "expert_parameters": experts,
        "quantized_modules": quantized,
        "stored_tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                           for k, v in sorted(tensors.items())},
        "stored_elements": sum(v.numel() for v in tensors.values()),
    }
    with open(os.path.join(OUT, name + "-params.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------------
# The dequantization rules of Fixtures/README.md, restated with plain torch ops and checked bit for bit
# ---------------------------------------------------------------------------------------------------------------

def nibbles(u8):
    """U8 [..., n] -> [..., 2n] codes, the low nibble first."""
    return torch.stack((u8 & 0xF, u8 >> 4), dim=-1).flatten(-2)


def e2m1(codes):
    mag = E2M1[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def int4_from_i32(words, n):
    """I32 [rows, w] -> [rows, n] signed int4: element j is bits 4*(j%8).. of word j//8, stored as q + 8."""
    u8 = words.contiguous().view(torch.uint8)  # little-endian bytes
    return nibbles(u8)[:, :n].to(torch.int32) - 8


def bf16_mul(a, b):
    """torch's BF16 x BF16 on the CPU: float32 product, rounded to BF16 (nearest even)."""
    return (a.float() * b.float()).to(torch.bfloat16)


def expand(scale, rows, cols, br, bc):
    return scale.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols]


def check_rules(name, tensors, qconfig, expected):
    for k in sorted(tensors):
        mod, _, leaf = k.rpartition(".")
        if leaf not in ("weight_packed", "weight") or tensors[k].dtype not in (torch.int32, torch.uint8, torch.float8_e4m3fn):
            continue
        scheme = next(s for s in qconfig.config_groups.values()
                      if any(t == "Linear" or re.fullmatch(t[3:], mod) for t in s.targets))
        args, fmt = scheme.weights, scheme.format
        scale = tensors[mod + ".weight_scale"]
        if fmt == "pack-quantized":
            rows, cols = tensors[mod + ".weight_shape"].tolist()
            q = int4_from_i32(tensors[k], cols)
            gs = args.group_size if args.strategy == "group" else cols
            zp = torch.zeros_like(scale, dtype=torch.int32)
            if mod + ".weight_zero_point" in tensors:  # packed along dim 0: [ceil(rows/8), groups]
                zp = int4_from_i32(tensors[mod + ".weight_zero_point"].t(), rows).t()
            diff = (q - expand(zp, rows, cols, 1, gs)).to(torch.bfloat16)  # small integers: exact
            got = bf16_mul(diff, expand(scale, rows, cols, 1, gs))
        elif fmt == "nvfp4-pack-quantized":
            v = e2m1(nibbles(tensors[k]))
            rows, cols = v.shape
            eff = scale.float() / tensors[mod + ".weight_global_scale"].float()  # float32 division
            f32 = v * expand(eff, rows, cols, 1, 16)
            assert torch.equal(f32, expected[mod + ".weight.f32"]), (name, mod)
            got = f32.to(torch.bfloat16)
        elif fmt == "mxfp4-pack-quantized":
            v = e2m1(nibbles(tensors[k]))
            rows, cols = v.shape
            pow2 = torch.exp2(scale.float() - 127).to(torch.bfloat16)
            got = bf16_mul(v.to(torch.bfloat16), expand(pow2, rows, cols, 1, 32))
        elif fmt == "float-quantized":
            rows, cols = tensors[k].shape
            if args.strategy == "block":
                br, bc = args.block_structure
            elif args.strategy == "channel":
                br, bc = 1, cols
            else:
                br, bc = rows, cols
            s = expand(scale.reshape(-1, 1) if scale.numel() == 1 else scale, rows, cols, br, bc)
            prod = tensors[k].float() * s.float()
            if scale.dtype == torch.float32:
                assert torch.equal(prod, expected[mod + ".weight.f32"]), (name, mod)
            got = prod.to(torch.bfloat16)
        else:
            raise ValueError(fmt)
        want = expected[mod + ".weight"]
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), (name, mod, fmt)


def check_gpt_oss(tensors, expected):
    for k, want in expected.items():
        blocks, scales = tensors[k + "_blocks"], tensors[k + "_scales"]
        e, rows, g, _ = blocks.shape
        v = e2m1(nibbles(blocks)).to(torch.bfloat16).reshape(e, rows, g, 32)
        pow2 = torch.exp2(scales.float() - 127).to(torch.bfloat16).unsqueeze(-1)
        got = bf16_mul(v, pow2).reshape(e, rows, g * 32).transpose(1, 2)
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), k


# ---------------------------------------------------------------------------------------------------------------
# gpt-oss MXFP4
# ---------------------------------------------------------------------------------------------------------------

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def mxfp4_encode(w):
    """[..., rows, cols] float32 -> (blocks U8 [..., rows, cols/32, 16], scales U8 [..., rows, cols/32]), as OpenAI's
    triton_kernels writes gpt-oss's MXFP4 (downcast_to_mxfp with ROUND_UP scales; its torch reference is
    downcast_to_mxfp_torch; the kernels need a GPU, so the rule is restated here): per 32 consecutive elements of a
    row, d = amax / 6 in float32 rounded up to a power of two on its bit pattern ((bits + 0x7FFFFF) & 0x7F800000),
    stored as its biased exponent; elements x * (1 / d) (0 for an all-zero group) rounded to the nearest E2M1 value,
    ties to the even code, saturating at 6, the sign bit kept (-0.0 gives code 8); element 2j in the low nibble of
    byte j, 2j+1 in the high nibble."""
    *prefix, rows, cols = w.shape
    assert cols % 32 == 0
    g = w.reshape(*prefix, rows, cols // 32, 32).to(torch.float32)
    amax = g.abs().amax(-1)
    d_bits = ((amax / 6.0).view(torch.int32).to(torch.int64) + 0x7FFFFF) & 0x7F800000
    d = d_bits.to(torch.int32).view(torch.float32)
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
    x = g * inv.unsqueeze(-1)
    mag = x.abs().clamp(max=6.0)
    # nearest E2M1 value, ties to the even code (codes 0, 2, 4, 6 have an even mantissa bit): the thresholds
    code = ((mag > 0.25).long() + (mag >= 0.75).long() + (mag > 1.25).long() + (mag >= 1.75).long()
            + (mag > 2.5).long() + (mag >= 3.5).long() + (mag > 5.0).long())
    code = code | (torch.signbit(x).long() << 3)
    code = code.to(torch.uint8).reshape(*prefix, rows, cols // 32, 16, 2)
    blocks = code[..., 0] | (code[..., 1] << 4)
    scales = (d_bits >> 23).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()


def make_gpt_oss():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    name = "gpt_oss-mxfp4"
    cfg = transformers.GptOssConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, head_dim=16, num_attention_heads=4,
        num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=32, layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(21)
    hf = transformers.GptOssForCausalLM(cfg).eval()
    randomize(hf, 21)
    params = sum(p.numel() for p in hf.parameters())
    state, config = saved_state(hf, torch.bfloat16)
    spread(state, fused=True)
    # Its BF16 source, for convert --to mxfp4 (gpt-oss layout): quant/targets/gpt_oss-source.
    src = os.path.join(TARGETS, "gpt_oss-source")
    os.makedirs(src, exist_ok=True)
    save_file(state, os.path.join(src, "model.safetensors"), metadata=META)
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    tensors, expected = {}, {}
    for k, v in state.items():
        if k.endswith("mlp.experts.gate_up_proj") or k.endswith("mlp.experts.down_proj"):
            # in memory [E, in, out]; stored transposed, rows = out features, blocks along in
            blocks, scales = mxfp4_encode(v.float().transpose(1, 2))
            tensors[k + "_blocks"], tensors[k + "_scales"] = blocks, scales
            ref = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
            assert ref.shape == v.shape, (ref.shape, v.shape)
            expected[k] = ref.contiguous()
        else:
            tensors[k] = v
    modules_to_not_convert = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": modules_to_not_convert}
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata=META)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(expected, os.path.join(OUT, name + "-expected.safetensors"), metadata=META)

    # transformers' own loader (CPU: dequantizes to BF16) must give the same tensors.
    loaded = transformers.GptOssForCausalLM.from_pretrained(d, dtype=torch.bfloat16,
                                                            quantization_config=transformers.Mxfp4Config(dequantize=True))
    got = dict(loaded.named_parameters())
    for k, v in expected.items():
        assert torch.equal(got[k].data.view(torch.int16), v.view(torch.int16)), k
    # and the encoding is within an MXFP4 step of the original weights
    for k, v in expected.items():
        orig = state[k].float()
        assert (v.float() - orig).abs().max() <= orig.abs().max() / 4 + 1e-6, k
    check_gpt_oss(tensors, expected)
    write_params(name, params, hf, sorted(expected), tensors)


# ---------------------------------------------------------------------------------------------------------------
# ModelOpt NVFP4 (quant_method "modelopt"): the same E2M1 codes and E4M3 group scales as compressed-tensors' NVFP4,
# but the per-tensor F32 scale (`weight_scale_2`) multiplies where compressed-tensors' global scale divides
# ---------------------------------------------------------------------------------------------------------------

def make_modelopt():
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from modelopt.torch.quantization.qtensor import NVFP4QTensor

    name = "modelopt-nvfp4"
    hf = qwen3_moe(32, 17, layers=1)
    params = sum(p.numel() for p in hf.parameters())
    hf.config.architectures = ["Qwen3MoeForCausalLM"]
    hf = hf.to(torch.bfloat16)
    gen = torch.Generator().manual_seed(17)
    batch = torch.randint(0, hf.config.vocab_size, (2, 16), generator=gen)
    mtq.quantize(hf, mtq.NVFP4_DEFAULT_CFG, lambda m: m(input_ids=batch))
    d = os.path.join(OUT, name)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_checkpoint(hf, export_dir=tmp)
        os.makedirs(d, exist_ok=True)
        for f in ("model.safetensors", "config.json", "hf_quant_config.json"):
            shutil.copy(os.path.join(tmp, f), os.path.join(d, f))
    # Keep only what a loader reads: the quantized weights and the config (generation_config is not needed here).
    tensors = load_file(os.path.join(d, "model.safetensors"))
    expected = {}
    for k in sorted(tensors):
        if k.endswith(".weight") and tensors[k].dtype == torch.uint8:
            mod = k[: -len(".weight")]
            packed = tensors[k]
            rows, cols = packed.shape[0], packed.shape[1] * 2
            q = NVFP4QTensor(torch.Size([rows, cols]), torch.bfloat16, packed)
            kw = dict(scale=tensors[mod + ".weight_scale"], double_scale=tensors[mod + ".weight_scale_2"], block_sizes={-1: 16})
            expected[k] = q.dequantize(dtype=torch.bfloat16, **kw).contiguous()
            expected[k + ".f32"] = q.dequantize(dtype=torch.float32, **kw).contiguous()
            # the rule of Fixtures/README.md: f32(e2m1 x f32(f32(scale) x scale_2)), then BF16
            v = e2m1(nibbles(packed))
            eff = tensors[mod + ".weight_scale"].float() * tensors[mod + ".weight_scale_2"].float()
            f32 = v * expand(eff, rows, cols, 1, 16)
            assert torch.equal(f32, expected[k + ".f32"]), k
    save_file(expected, os.path.join(OUT, name + "-expected.safetensors"), metadata=META)
    write_params(name, params, hf, sorted(k[: -len(".weight")] for k in expected if not k.endswith(".f32")), tensors)


# ---------------------------------------------------------------------------------------------------------------
# moetool's quantizing targets (convert --to int4|nvfp4|mxfp4): one BF16 source, quantized by compressed-tensors
# ---------------------------------------------------------------------------------------------------------------

TARGETS = OUT.replace("formats", "targets")

# target: (scheme preset, group size of the W4A16 scheme or None)
TARGET_SCHEMES = {
    "int4-g32": ("W4A16", 32),
    "int4-g128": ("W4A16", 128),
    "nvfp4": ("NVFP4A16", None),
    "mxfp4": ("MXFP4A16", None),
}


def make_targets():
    """quant/targets/source: a tiny seeded Qwen3-MoE in BF16 (hidden 128, so that groups of 128 fit its
    in-features; moe_intermediate 64 and o_proj's 64 in-features do not, so at group size 128 those stay BF16 and
    are listed in `ignore`, as compressed-tensors requires groups to divide the columns). For each target, the
    tensors compressed-tensors writes for every quantized module (<target>.safetensors) and the quantization_config
    it writes (<target>-config.json), calibrated data-free as llm-compressor does (see calibrate_weights)."""
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=128, hidden_size=128, intermediate_size=128, moe_intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
        tie_word_embeddings=False, max_position_embeddings=256,
    )
    torch.manual_seed(31)
    hf = transformers.Qwen3MoeForCausalLM(cfg).eval()
    randomize(hf, 31)
    state, config = saved_state(hf.to(torch.bfloat16), torch.bfloat16)
    spread(state, fused=False)
    src = os.path.join(TARGETS, "source")
    os.makedirs(src, exist_ok=True)
    save_file(state, os.path.join(src, "model.safetensors"), metadata=META)
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for target, (preset, group) in TARGET_SCHEMES.items():
        scheme = preset_name_to_scheme(preset, ["Linear"])
        if group is not None:
            scheme.weights.group_size = group
        linear = sorted(k[: -len(".weight")] for k, v in state.items()
                        if k.endswith(".weight") and v.ndim == 2 and "embed_tokens" not in k)
        ignore = [m for m in linear if m == "lm_head" or m.endswith(".mlp.gate")
                  or state[m + ".weight"].shape[1] % scheme.weights.group_size != 0]
        shadow = shadow_model({k: v.clone() for k, v in state.items()})
        qconfig = QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore,
                                     quantization_status=QuantizationStatus.INITIALIZED)
        apply_quantization_config(shadow, qconfig, show_progress=False)
        calibrate_weights(shadow)
        quantized = sorted(n for n, m in shadow.named_modules() if getattr(m, "quantization_scheme", None) is not None)
        compressor = ModelCompressor.from_pretrained_model(shadow)
        compressor.compress_model(shadow)
        compressor.remove_decompression_hook(shadow)
        tensors = {k: v.detach().contiguous() for k, v in shadow.state_dict().items()
                   if k.rpartition(".")[0] in quantized}
        save_file(tensors, os.path.join(TARGETS, target + ".safetensors"), metadata=META)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({}, f)
            compressor.update_config(d)
            with open(os.path.join(d, "config.json")) as f:
                written = json.load(f)["quantization_config"]
        with open(os.path.join(TARGETS, target + "-config.json"), "w") as f:
            json.dump(written, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"targets/{target}: {len(quantized)} quantized modules, {len(ignore)} ignored")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    torch.use_deterministic_algorithms(True)
    if os.path.isdir(TARGETS):
        shutil.rmtree(TARGETS)
    for name in CT_FIXTURES:
        make_ct(name)
    make_gpt_oss()
    make_modelopt()
    make_targets()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    assert total < 5 * 1024 * 1024, total
    print(f"quant/formats: {total} bytes; compressed-tensors {compressed_tensors.__version__}, "
          f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
