#!/usr/bin/env python3
"""Write a DeepSeek-V3-shaped safetensors checkpoint skeleton.

Usage: deepseek_v3_skeleton.py OUTDIR

The skeleton has DeepSeek-V3's real tensor names, dtypes and shapes, 163
shards named like the real checkpoint (model-00001-of-000163.safetensors ...),
a model.safetensors.index.json and a config.json with the real values.

Each shard is a valid safetensors file (8-byte little-endian header length,
compact JSON header padded with spaces to a multiple of 8, data region), but
the data region is never written: the file is only truncated to its full
length, so on a filesystem with sparse-file support (ext4, xfs, btrfs, tmpfs,
APFS) the ~641 GiB of tensor data costs no disk. Reading the data returns
zeros; that is fine for tools that only look at headers.

Only the Python standard library is used.
"""

import json
import math
import os
import struct
import sys
import time

# --------------------------------------------------------------------------
# DeepSeek-V3 configuration (values from the published config.json).
# --------------------------------------------------------------------------

CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

NUM_SHARDS = 163
EXPECTED_TENSORS = 91_991
# How many weight_scale_inv tensors to place in the shard after their weight,
# as happens in the real checkpoint.
NUM_SPLIT_SCALES = 5

DTYPE_SIZE = {"BF16": 2, "F32": 4, "F8_E4M3": 1}

INDEX_NAME = "model.safetensors.index.json"


def shard_name(i):
    """1-based shard i, DeepSeek's naming: 5-digit index, 6-digit total."""
    return "model-%05d-of-%06d.safetensors" % (i, NUM_SHARDS)


# --------------------------------------------------------------------------
# Tensor list, in natural order.
# --------------------------------------------------------------------------

def tensors():
    """Yield (name, dtype, shape) in natural order."""
    c = CONFIG
    h = c["hidden_size"]
    vocab = c["vocab_size"]
    block = c["quantization_config"]["weight_block_size"]
    n_heads = c["num_attention_heads"]
    q_head = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]          # 192
    q_lora = c["q_lora_rank"]                                        # 1536
    kv_lora = c["kv_lora_rank"]                                      # 512
    rope = c["qk_rope_head_dim"]                                     # 64
    v_head = c["v_head_dim"]                                         # 128
    inter = c["intermediate_size"]                                   # 18432
    moe_inter = c["moe_intermediate_size"]                           # 2048
    n_experts = c["n_routed_experts"]
    n_layers = c["num_hidden_layers"]
    n_mtp = c["num_nextn_predict_layers"]
    first_dense = c["first_k_dense_replace"]

    def fp8_linear(prefix, out_f, in_f):
        yield (prefix + ".weight", "F8_E4M3", [out_f, in_f])
        yield (prefix + ".weight_scale_inv", "F32",
               [math.ceil(out_f / block[0]), math.ceil(in_f / block[1])])

    yield ("model.embed_tokens.weight", "BF16", [vocab, h])

    for layer in range(n_layers + n_mtp):
        p = "model.layers.%d." % layer
        yield (p + "input_layernorm.weight", "BF16", [h])
        yield (p + "post_attention_layernorm.weight", "BF16", [h])

        a = p + "self_attn."
        yield from fp8_linear(a + "q_a_proj", q_lora, h)
        yield (a + "q_a_layernorm.weight", "BF16", [q_lora])
        yield from fp8_linear(a + "q_b_proj", n_heads * q_head, q_lora)
        yield from fp8_linear(a + "kv_a_proj_with_mqa", kv_lora + rope, h)
        yield (a + "kv_a_layernorm.weight", "BF16", [kv_lora])
        yield from fp8_linear(a + "kv_b_proj",
                              n_heads * (c["qk_nope_head_dim"] + v_head),
                              kv_lora)
        yield from fp8_linear(a + "o_proj", h, n_heads * v_head)

        m = p + "mlp."
        if layer < first_dense:
            yield from fp8_linear(m + "gate_proj", inter, h)
            yield from fp8_linear(m + "up_proj", inter, h)
            yield from fp8_linear(m + "down_proj", h, inter)
        else:
            yield (m + "gate.weight", "BF16", [n_experts, h])
            yield (m + "gate.e_score_correction_bias", "F32", [n_experts])
            s = m + "shared_experts."
            n_sh = c["n_shared_experts"]
            yield from fp8_linear(s + "gate_proj", moe_inter * n_sh, h)
            yield from fp8_linear(s + "up_proj", moe_inter * n_sh, h)
            yield from fp8_linear(s + "down_proj", h, moe_inter * n_sh)
            for e in range(n_experts):
                x = m + "experts.%d." % e
                yield from fp8_linear(x + "gate_proj", moe_inter, h)
                yield from fp8_linear(x + "up_proj", moe_inter, h)
                yield from fp8_linear(x + "down_proj", h, moe_inter)

        if layer >= n_layers:  # multi-token-prediction layer
            yield (p + "enorm.weight", "BF16", [h])
            yield (p + "hnorm.weight", "BF16", [h])
            yield (p + "eh_proj.weight", "BF16", [h, 2 * h])
            yield (p + "shared_head.norm.weight", "BF16", [h])
            yield (p + "shared_head.head.weight", "BF16", [vocab, h])
            yield (p + "embed_tokens.weight", "BF16", [vocab, h])

    yield ("model.norm.weight", "BF16", [h])
    yield ("lm_head.weight", "BF16", [vocab, h])


def nbytes(dtype, shape):
    n = DTYPE_SIZE[dtype]
    for d in shape:
        n *= d
    return n


# --------------------------------------------------------------------------
# Shard assignment.
# --------------------------------------------------------------------------

def assign_shards(tlist):
    """Return a list of shard indices (0-based), one per tensor.

    Contiguous runs of roughly equal data bytes: a tensor goes to the shard
    whose byte range contains the tensor's midpoint, except that a
    weight_scale_inv always stays with its weight. Since no tensor is larger
    than a shard's share, every shard gets at least one tensor (asserted by
    the caller).
    """
    total = sum(nbytes(d, s) for _, d, s in tlist)
    target = total / NUM_SHARDS
    largest = max(nbytes(d, s) for _, d, s in tlist)
    assert largest < target, "a tensor is larger than a shard's share"
    out = []
    cum = 0
    for name, d, s in tlist:
        size = nbytes(d, s)
        if name.endswith(".weight_scale_inv"):
            # Keep a scale with its weight (always the tensor just before);
            # the few deliberate splits are made by split_some_scales.
            out.append(out[-1])
        else:
            out.append(min(NUM_SHARDS - 1, int((cum + size / 2) // target)))
        cum += size
    return out


def split_some_scales(tlist, shard_of):
    """Move NUM_SPLIT_SCALES weight_scale_inv tensors to the next shard.

    For a few shards spread over the checkpoint, the last weight_scale_inv
    whose weight is in the same shard is moved to the following shard, so
    the weight and its scale live in different files (as in the real
    DeepSeek-V3 checkpoint). Returns the names moved.
    """
    index_of = {name: i for i, (name, _, _) in enumerate(tlist)}
    picks = [round((k + 1) * (NUM_SHARDS - 1) / (NUM_SPLIT_SCALES + 1))
             for k in range(NUM_SPLIT_SCALES)]
    moved = []
    for shard in picks:
        for i in range(len(tlist) - 1, -1, -1):
            if shard_of[i] != shard:
                continue
            name = tlist[i][0]
            if not name.endswith(".weight_scale_inv"):
                continue
            w = index_of[name[: -len("_scale_inv")]]
            if shard_of[w] == shard:
                shard_of[i] = shard + 1
                moved.append(name)
                break
        else:
            raise AssertionError("no scale to move in shard %d" % shard)
    return moved


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------

def write_shard(path, entries):
    """entries: list of (name, dtype, shape). Returns (header_bytes, data_bytes)."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape in entries:
        size = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.truncate(8 + len(hb) + off)   # sparse data region
    return len(hb), off


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: %s OUTDIR" % os.path.basename(argv[0]), file=sys.stderr)
        return 2
    outdir = argv[1]
    t0 = time.perf_counter()
    os.makedirs(outdir, exist_ok=True)

    # Remove a stale index first, so an interrupted run never leaves a
    # directory that looks complete (the index is written last).
    index_path = os.path.join(outdir, INDEX_NAME)
    if os.path.exists(index_path):
        os.remove(index_path)

    tlist = list(tensors())
    names = [n for n, _, _ in tlist]
    assert len(tlist) == EXPECTED_TENSORS, len(tlist)
    assert len(set(names)) == len(names), "duplicate tensor names"

    shard_of = assign_shards(tlist)
    moved = split_some_scales(tlist, shard_of)

    per_shard = [[] for _ in range(NUM_SHARDS)]
    for t, s in zip(tlist, shard_of):
        per_shard[s].append(t)
    assert all(per_shard), "empty shard"

    weight_map = {}
    total_size = 0
    header_sizes = []
    for i, entries in enumerate(per_shard):
        fname = shard_name(i + 1)
        hlen, dlen = write_shard(os.path.join(outdir, fname), entries)
        header_sizes.append(hlen)
        total_size += dlen
        for name, _, _ in entries:
            weight_map[name] = fname

    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")

    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    os.replace(tmp, index_path)

    elapsed = time.perf_counter() - t0
    n_params = 0
    for _, _, shape in tlist:
        n_params += math.prod(shape)
    print("wrote %s" % outdir)
    print("  tensors:            %d" % len(tlist))
    print("  parameters:         %d" % n_params)
    print("  shards:             %d" % NUM_SHARDS)
    print("  total_size:         %d bytes (%.2f GiB)" % (total_size, total_size / 2**30))
    print("  shard data bytes:   min %d, max %d" % (
        min(sum(nbytes(d, s) for _, d, s in e) for e in per_shard),
        max(sum(nbytes(d, s) for _, d, s in e) for e in per_shard)))
    print("  header bytes:       largest %d, sum %d" % (max(header_sizes), sum(header_sizes)))
    print("  index.json bytes:   %d" % os.path.getsize(index_path))
    print("  scales split from their weight: %d" % len(moved))
    for name in moved:
        print("    %s" % name)
    print("  elapsed:            %.2f s" % elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
