"""Header-only layouts of published quantized MoE checkpoints, as compact manifests (Fixtures/published/*.json).

    /work/venv/bin/python Fixtures/published_skeletons.py      # about 5 s; needs torch and transformers (pinned)

This machine cannot reach the Hugging Face hub, so the layouts are not downloaded headers: each is written from the
release's published config.json values (below) by the naming rules of its architecture and the storage layout of its
quantization (Fixtures/README.md, "published/", says where each came from). The rules are checked against
transformers: a tiny instance of each architecture (same config keys, small sizes) is saved with save_pretrained
and quantized as the release is, and its tensor names, dtypes and shapes must equal what the rules give for that
tiny config. The test (Tests/InspectionTests/PublishedCheckpointTests.swift) expands a manifest into sparse
safetensors shards (no data written) and checks moetool inspect's counts against the counts this script derives
and against the published figures.

A manifest row is [name pattern, dtype, shape, ranges]: `{L}` and `{E}` in the pattern run over ranges["L"] and
ranges["E"] ([first, end) pairs, or lists of layers).
"""
import json
import os
import re
import tempfile
import warnings

import torch
import transformers
from safetensors.torch import load_file

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "published")

# ---------------------------------------------------------------------------------------------------------------
# The published configurations (the values that set shapes) and figures
# ---------------------------------------------------------------------------------------------------------------

GPT_OSS = dict(model_type="gpt_oss", architectures=["GptOssForCausalLM"], hidden_size=2880, intermediate_size=2880,
               num_attention_heads=64, num_key_value_heads=8, head_dim=64, vocab_size=201088,
               num_experts_per_tok=4, sliding_window=128, tie_word_embeddings=False,
               quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": [
                   "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})

KIMI_QUANT = {
    "config_groups": {"group_0": {"input_activations": None, "output_activations": None, "targets": ["Linear"],
                                  "weights": {"actorder": None, "block_structure": None, "dynamic": False, "group_size": 32,
                                              "num_bits": 4, "observer": "minmax", "observer_kwargs": {},
                                              "strategy": "group", "symmetric": True, "type": "int"}}},
    "format": "pack-quantized",
    "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", r"re:.*mlp\.(gate|up|gate_up|down)_proj.*"],
    "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed",
}

KIMI = dict(model_type="kimi_k2", architectures=["DeepseekV3ForCausalLM"], hidden_size=7168, intermediate_size=18432,
            moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=64, num_key_value_heads=64,
            first_k_dense_replace=1, moe_layer_freq=1, n_routed_experts=384, n_shared_experts=1, num_experts_per_tok=8,
            n_group=1, topk_group=1, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
            v_head_dim=128, vocab_size=163840, num_nextn_predict_layers=0, tie_word_embeddings=False,
            quantization_config=KIMI_QUANT)

NVFP4_QUANT = {
    "config_groups": {"group_0": {"format": "nvfp4-pack-quantized", "targets": ["Linear"], "output_activations": None,
                                  "input_activations": {"dynamic": "local", "group_size": 16, "num_bits": 4,
                                                        "observer": "minmax", "strategy": "tensor_group",
                                                        "symmetric": True, "type": "float"},
                                  "weights": {"dynamic": False, "group_size": 16, "num_bits": 4, "observer": "minmax",
                                              "strategy": "tensor_group", "symmetric": True, "type": "float"}}},
    "format": "nvfp4-pack-quantized", "ignore": ["lm_head"] + [f"model.layers.{i}.mlp.gate" for i in range(48)],
    "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed",
}

QWEN3_30B = dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], hidden_size=2048, intermediate_size=6144,
                 moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                 head_dim=128, num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[],
                 vocab_size=151936, tie_word_embeddings=False, quantization_config=NVFP4_QUANT)

GLM_AIR = dict(model_type="glm4_moe", architectures=["Glm4MoeForCausalLM"], hidden_size=4096, intermediate_size=10944,
               moe_intermediate_size=1408, num_hidden_layers=46, num_attention_heads=96, num_key_value_heads=8, head_dim=128,
               attention_bias=True, use_qk_norm=False, partial_rotary_factor=0.5, first_k_dense_replace=1,
               n_routed_experts=128, n_shared_experts=1, num_experts_per_tok=8, n_group=1, topk_group=1,
               routed_scaling_factor=1.0, norm_topk_prob=True, num_nextn_predict_layers=1, vocab_size=151552,
               tie_word_embeddings=False, torch_dtype="bfloat16")

MINIMAX_M2 = dict(model_type="minimax_m2", architectures=["MiniMaxM2ForCausalLM"], hidden_size=3072, intermediate_size=1536,
                  num_hidden_layers=62, num_attention_heads=48, num_key_value_heads=8, head_dim=128, rotary_dim=64,
                  num_local_experts=256, num_experts_per_tok=8, scoring_func="sigmoid", use_routing_bias=True,
                  use_qk_norm=True, qk_norm_type="per_layer", vocab_size=200064, tie_word_embeddings=False,
                  torch_dtype="bfloat16",
                  quantization_config={"activation_scheme": "dynamic", "fmt": "float8_e4m3fn", "quant_method": "fp8",
                                       "weight_block_size": [128, 128],
                                       "modules_to_not_convert": ["gate", "e_score_correction_bias", "lm_head"]})

LLAMA4_SCOUT = dict(model_type="llama4", architectures=["Llama4ForConditionalGeneration"], tie_word_embeddings=False,
                    text_config=dict(model_type="llama4_text", vocab_size=202048, hidden_size=5120, intermediate_size=8192,
                                     intermediate_size_mlp=16384, num_hidden_layers=48, num_attention_heads=40,
                                     num_key_value_heads=8, head_dim=128, num_local_experts=16, num_experts_per_tok=1,
                                     interleave_moe_layer_step=1, use_qk_norm=True, attention_chunk_size=8192,
                                     rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                                     rope_theta=500000.0, torch_dtype="bfloat16"),
                    vision_config=dict(model_type="llama4_vision_model", hidden_size=1408, num_hidden_layers=34,
                                       num_attention_heads=16, intermediate_size=5632, vision_output_dim=4096,
                                       image_size=336, patch_size=14, projector_input_dim=4096,
                                       projector_output_dim=4096, pixel_shuffle_ratio=0.5))

DEEPSEEK_V32 = dict(model_type="deepseek_v32", architectures=["DeepseekV32ForCausalLM"], hidden_size=7168,
                    intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128,
                    num_key_value_heads=128, first_k_dense_replace=3, moe_layer_freq=1, n_routed_experts=256,
                    n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4, q_lora_rank=1536,
                    kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, vocab_size=129280,
                    num_nextn_predict_layers=1, index_n_heads=64, index_head_dim=128, index_topk=2048,
                    tie_word_embeddings=False, torch_dtype="bfloat16",
                    quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                         "scale_fmt": "ue8m0", "weight_block_size": [128, 128]})

MODELS = {
    # name: (config, published total, published active, where the figures are published)
    "gpt-oss-120b": (dict(GPT_OSS, num_hidden_layers=36, num_local_experts=128), 116.8e9, 5.1e9,
                     "OpenAI's gpt-oss model card: 116.8B total, 5.1B active per token"),
    "gpt-oss-20b": (dict(GPT_OSS, num_hidden_layers=24, num_local_experts=32), 20.9e9, 3.6e9,
                    "OpenAI's gpt-oss model card: 20.9B total, 3.6B active per token"),
    "Kimi-K2-Thinking": (KIMI, 1.04e12, 32e9, "Moonshot's Kimi-K2 model card: 1T total (1.04T), 32B activated"),
    "Qwen3-30B-A3B-NVFP4": (QWEN3_30B, 30.5e9, 3.3e9,
                            "Qwen3-30B-A3B's model card (30.5B total, 3.3B activated); NVFP4 by compressed-tensors, as RedHatAI publishes it"),
    "GLM-4.5-Air": (GLM_AIR, 106e9, 12e9, "Z.ai's GLM-4.5 model card: GLM-4.5-Air 106B total, 12B active (BF16 release)"),
    "MiniMax-M2": (MINIMAX_M2, 230e9, 10e9, "MiniMax's MiniMax-M2 model card: 230B total, 10B active (FP8 release)"),
    "DeepSeek-V3.2": (DEEPSEEK_V32, 671e9, 37e9, "DeepSeek's V3.2 model card and paper: 671B total, 37B activated (FP8 release; 685B with its MTP layer)"),
    "Llama-4-Scout": (LLAMA4_SCOUT, 109e9, 17e9, "Meta's Llama 4 model card: Scout 109B total, 17B active (BF16 release)"),
}

# ---------------------------------------------------------------------------------------------------------------
# Naming and storage rules
# ---------------------------------------------------------------------------------------------------------------


def gpt_oss_rows(c):
    h, i, e = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    layers = [0, c["num_hidden_layers"]]
    p = "model.layers.{L}."
    rows = [["model.embed_tokens.weight", "BF16", [c["vocab_size"], h], {}], ["lm_head.weight", "BF16", [c["vocab_size"], h], {}],
            ["model.norm.weight", "BF16", [h], {}]]
    per_layer = [
        ("input_layernorm.weight", [h]), ("post_attention_layernorm.weight", [h]),
        ("self_attn.q_proj.weight", [q, h]), ("self_attn.q_proj.bias", [q]),
        ("self_attn.k_proj.weight", [kv, h]), ("self_attn.k_proj.bias", [kv]),
        ("self_attn.v_proj.weight", [kv, h]), ("self_attn.v_proj.bias", [kv]),
        ("self_attn.o_proj.weight", [h, q]), ("self_attn.o_proj.bias", [h]),
        ("self_attn.sinks", [c["num_attention_heads"]]),
        ("mlp.router.weight", [e, h]), ("mlp.router.bias", [e]),
        ("mlp.experts.gate_up_proj_bias", [e, 2 * i]), ("mlp.experts.down_proj_bias", [e, h]),
    ]
    rows += [[p + n, "BF16", s, {"L": layers}] for n, s in per_layer]
    # MXFP4 experts: rows = output features, blocks of 32 along the input, 16 bytes each, one E8M0 scale per block
    rows += [[p + "mlp.experts.gate_up_proj_blocks", "U8", [e, 2 * i, h // 32, 16], {"L": layers}],
             [p + "mlp.experts.gate_up_proj_scales", "U8", [e, 2 * i, h // 32], {"L": layers}],
             [p + "mlp.experts.down_proj_blocks", "U8", [e, h, i // 32, 16], {"L": layers}],
             [p + "mlp.experts.down_proj_scales", "U8", [e, h, i // 32], {"L": layers}]]
    return rows


def deepseek_rows(c, expert):
    """DeepSeek-V3's names (Kimi-K2 keeps them); `expert(prefix, out, in)` gives a routed expert projection's rows."""
    h, v = c["hidden_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    rows = [["model.embed_tokens.weight", "BF16", [v, h], {}], ["lm_head.weight", "BF16", [v, h], {}],
            ["model.norm.weight", "BF16", [h], {}]]
    all_layers = [0, c["num_hidden_layers"]]
    dense = [0, c["first_k_dense_replace"]]
    moe = [c["first_k_dense_replace"], c["num_hidden_layers"]]
    p = "model.layers.{L}."
    attn = [("input_layernorm.weight", [h]), ("post_attention_layernorm.weight", [h]),
            ("self_attn.q_a_proj.weight", [c["q_lora_rank"], h]), ("self_attn.q_a_layernorm.weight", [c["q_lora_rank"]]),
            ("self_attn.q_b_proj.weight", [heads * qk, c["q_lora_rank"]]),
            ("self_attn.kv_a_proj_with_mqa.weight", [c["kv_lora_rank"] + c["qk_rope_head_dim"], h]),
            ("self_attn.kv_a_layernorm.weight", [c["kv_lora_rank"]]),
            ("self_attn.kv_b_proj.weight", [heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"]]),
            ("self_attn.o_proj.weight", [h, heads * c["v_head_dim"]])]
    rows += [[p + n, "BF16", s, {"L": all_layers}] for n, s in attn]
    for proj, out_f, in_f in (("gate_proj", c["intermediate_size"], h), ("up_proj", c["intermediate_size"], h),
                              ("down_proj", h, c["intermediate_size"])):
        rows.append([p + f"mlp.{proj}.weight", "BF16", [out_f, in_f], {"L": dense}])
    shared = c["moe_intermediate_size"] * c["n_shared_experts"]
    for proj, out_f, in_f in (("gate_proj", shared, h), ("up_proj", shared, h), ("down_proj", h, shared)):
        rows.append([p + f"mlp.shared_experts.{proj}.weight", "BF16", [out_f, in_f], {"L": moe}])
    rows += [[p + "mlp.gate.weight", "BF16", [c["n_routed_experts"], h], {"L": moe}],
             [p + "mlp.gate.e_score_correction_bias", "F32", [c["n_routed_experts"]], {"L": moe}]]
    m = c["moe_intermediate_size"]
    for proj, out_f, in_f in (("gate_proj", m, h), ("up_proj", m, h), ("down_proj", h, m)):
        for name, dtype, shape in expert(p + "mlp.experts.{E}." + proj, out_f, in_f):
            rows.append([name, dtype, shape, {"L": moe, "E": [0, c["n_routed_experts"]]}])
    return rows


def int4_group32(prefix, out_f, in_f):
    return [(prefix + ".weight_packed", "I32", [out_f, in_f // 8]), (prefix + ".weight_scale", "BF16", [out_f, in_f // 32]),
            (prefix + ".weight_shape", "I32", [2])]


def nvfp4(prefix, out_f, in_f):
    return [(prefix + ".weight_packed", "U8", [out_f, in_f // 2]), (prefix + ".weight_scale", "F8_E4M3", [out_f, in_f // 16]),
            (prefix + ".weight_global_scale", "F32", [1]), (prefix + ".input_global_scale", "F32", [1])]


def qwen3_moe_rows(c):
    h, v = c["hidden_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    layers = [0, c["num_hidden_layers"]]
    p = "model.layers.{L}."
    rows = [["model.embed_tokens.weight", "BF16", [v, h], {}], ["lm_head.weight", "BF16", [v, h], {}],
            ["model.norm.weight", "BF16", [h], {}]]
    rows += [[p + n, "BF16", s, {"L": layers}] for n, s in (
        ("input_layernorm.weight", [h]), ("post_attention_layernorm.weight", [h]), ("self_attn.q_norm.weight", [c["head_dim"]]),
        ("self_attn.k_norm.weight", [c["head_dim"]]), ("mlp.gate.weight", [c["num_experts"], h]))]
    for proj, out_f, in_f in (("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q)):
        for name, dtype, shape in nvfp4(p + "self_attn." + proj, out_f, in_f):
            rows.append([name, dtype, shape, {"L": layers}])
    m = c["moe_intermediate_size"]
    for proj, out_f, in_f in (("gate_proj", m, h), ("up_proj", m, h), ("down_proj", h, m)):
        for name, dtype, shape in nvfp4(p + "mlp.experts.{E}." + proj, out_f, in_f):
            rows.append([name, dtype, shape, {"L": layers, "E": [0, c["num_experts"]]}])
    return rows


def glm4_moe_rows(c):
    """GLM-4.5's names (transformers' Glm4Moe), BF16, plus the MTP layer the release ships at index num_hidden_layers:
    a whole MoE decoder layer with enorm, hnorm, eh_proj [H, 2H] and shared_head.norm. (Whether the release also
    stores a copy of the embedding and head in it could not be checked here: they are left out.)"""
    h, v = c["hidden_size"], c["vocab_size"]
    d, heads, kv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    n = c["num_hidden_layers"]
    rows = [["model.embed_tokens.weight", "BF16", [v, h], {}], ["lm_head.weight", "BF16", [v, h], {}],
            ["model.norm.weight", "BF16", [h], {}]]
    every = [0, n + c["num_nextn_predict_layers"]]
    dense, moe = [0, c["first_k_dense_replace"]], [c["first_k_dense_replace"], n + c["num_nextn_predict_layers"]]
    p = "model.layers.{L}."
    attn = [("input_layernorm.weight", [h]), ("post_attention_layernorm.weight", [h]),
            ("self_attn.q_proj.weight", [heads * d, h]), ("self_attn.q_proj.bias", [heads * d]),
            ("self_attn.k_proj.weight", [kv * d, h]), ("self_attn.k_proj.bias", [kv * d]),
            ("self_attn.v_proj.weight", [kv * d, h]), ("self_attn.v_proj.bias", [kv * d]),
            ("self_attn.o_proj.weight", [h, heads * d])]
    rows += [[p + name, "BF16", shape, {"L": every}] for name, shape in attn]
    i, m = c["intermediate_size"], c["moe_intermediate_size"]
    rows += [[p + f"mlp.{proj}.weight", "BF16", shape, {"L": dense}]
             for proj, shape in (("gate_proj", [i, h]), ("up_proj", [i, h]), ("down_proj", [h, i]))]
    s = m * c["n_shared_experts"]
    rows += [[p + f"mlp.shared_experts.{proj}.weight", "BF16", shape, {"L": moe}]
             for proj, shape in (("gate_proj", [s, h]), ("up_proj", [s, h]), ("down_proj", [h, s]))]
    rows += [[p + "mlp.gate.weight", "BF16", [c["n_routed_experts"], h], {"L": moe}],
             [p + "mlp.gate.e_score_correction_bias", "F32", [c["n_routed_experts"]], {"L": moe}]]
    rows += [[p + f"mlp.experts.{{E}}.{proj}.weight", "BF16", shape, {"L": moe, "E": [0, c["n_routed_experts"]]}]
             for proj, shape in (("gate_proj", [m, h]), ("up_proj", [m, h]), ("down_proj", [h, m]))]
    mtp = [n, n + c["num_nextn_predict_layers"]]
    rows += [[p + name, "BF16", shape, {"L": mtp}] for name, shape in
             (("enorm.weight", [h]), ("hnorm.weight", [h]), ("eh_proj.weight", [h, 2 * h]), ("shared_head.norm.weight", [h]))]
    return rows


def fp8_block(prefix, out_f, in_f):
    """A DeepSeek-style FP8 weight: E4M3 codes and one float32 inverse scale per 128x128 block."""
    return [(prefix + ".weight", "F8_E4M3", [out_f, in_f]),
            (prefix + ".weight_scale_inv", "F32", [-(-out_f // 128), -(-in_f // 128)])]


def minimax_m2_rows(c):
    """MiniMax-M2's names (block_sparse_moe, w1/w2/w3 experts), its FP8 storage: every linear layer but the router
    and lm_head in 128x128 blocks; the q/k norms over the whole projection. No MTP modules in the release."""
    h, v = c["hidden_size"], c["vocab_size"]
    d, heads, kv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    layers = [0, c["num_hidden_layers"]]
    e, i = c["num_local_experts"], c["intermediate_size"]
    p = "model.layers.{L}."
    rows = [["model.embed_tokens.weight", "BF16", [v, h], {}], ["lm_head.weight", "BF16", [v, h], {}],
            ["model.norm.weight", "BF16", [h], {}]]
    rows += [[p + name, dtype, shape, {"L": layers}] for name, dtype, shape in (
        ("input_layernorm.weight", "BF16", [h]), ("post_attention_layernorm.weight", "BF16", [h]),
        ("self_attn.q_norm.weight", "BF16", [heads * d]), ("self_attn.k_norm.weight", "BF16", [kv * d]),
        ("block_sparse_moe.gate.weight", "BF16", [e, h]), ("block_sparse_moe.e_score_correction_bias", "F32", [e]))]
    for proj, out_f, in_f in (("q_proj", heads * d, h), ("k_proj", kv * d, h), ("v_proj", kv * d, h), ("o_proj", h, heads * d)):
        rows += [[name, dtype, shape, {"L": layers}] for name, dtype, shape in fp8_block(p + "self_attn." + proj, out_f, in_f)]
    for proj, out_f, in_f in (("w1", i, h), ("w3", i, h), ("w2", h, i)):
        rows += [[name, dtype, shape, {"L": layers, "E": [0, e]}]
                 for name, dtype, shape in fp8_block(p + "block_sparse_moe.experts.{E}." + proj, out_f, in_f)]
    return rows


def fp8_release(rows):
    """DeepSeek's FP8 storage of BF16 rows: every projection (`*_proj.weight`, the indexer's wq_b and wk) as E4M3
    codes with F32 `weight_scale_inv` per 128x128 block; embeddings, heads, norms, routers and the indexer's
    weights_proj stay BF16."""
    out = []
    for pattern, dtype, shape, ranges in rows:
        if re.search(r"(_proj|indexer\.wq_b|indexer\.wk)\.weight$", pattern) and "weights_proj" not in pattern \
                and "eh_proj" not in pattern:
            out += [[name, dt, sh, ranges] for name, dt, sh in fp8_block(pattern[: -len(".weight")], *shape)]
        else:
            out.append([pattern, dtype, shape, ranges])
    return out


def deepseek_v32_rows(c):
    """DeepSeek-V3's names and FP8 storage, plus each layer's lightning indexer (wq_b from the query latent, wk,
    k_norm a LayerNorm with bias, weights_proj), plus the MTP layer the release ships at index num_hidden_layers: a
    whole MoE decoder layer with enorm, hnorm, eh_proj [H, 2H], shared_head.norm and its own copies of the embedding
    and head, as DeepSeek-V3's checkpoint has them."""
    n, h, v = c["num_hidden_layers"], c["hidden_size"], c["vocab_size"]
    mtp = c["num_nextn_predict_layers"]
    main = deepseek_rows(dict(c, num_hidden_layers=n + mtp), lambda p, o, i: [(p + ".weight", "BF16", [o, i])])
    p = "model.layers.{L}."
    every = {"L": [0, n + mtp]}
    main += [[p + "self_attn.indexer.wq_b.weight", "BF16", [c["index_n_heads"] * c["index_head_dim"], c["q_lora_rank"]], every],
             [p + "self_attn.indexer.wk.weight", "BF16", [c["index_head_dim"], h], every],
             [p + "self_attn.indexer.k_norm.weight", "BF16", [c["index_head_dim"]], every],
             [p + "self_attn.indexer.k_norm.bias", "BF16", [c["index_head_dim"]], every],
             [p + "self_attn.indexer.weights_proj.weight", "BF16", [c["index_n_heads"], h], every]]
    at = {"L": [n, n + mtp]}
    main += [[p + name, "BF16", shape, at] for name, shape in (
        ("enorm.weight", [h]), ("hnorm.weight", [h]), ("eh_proj.weight", [h, 2 * h]), ("shared_head.norm.weight", [h]),
        ("shared_head.head.weight", [v, h]), ("embed_tokens.weight", [v, h]))]
    return fp8_release(main)


def llama4_config(c):
    """transformers' Llama4Config for a manifest config (the legacy rope keys as rope_parameters)."""
    text = {k: v for k, v in c["text_config"].items() if k not in ("model_type", "rope_scaling", "rope_theta", "torch_dtype")}
    if "rope_scaling" in c["text_config"]:
        text["rope_parameters"] = dict(c["text_config"]["rope_scaling"], rope_theta=c["text_config"]["rope_theta"])
    vision = {k: v for k, v in c["vision_config"].items() if k != "model_type"}
    return transformers.Llama4Config(text_config=text, vision_config=vision, tie_word_embeddings=c["tie_word_embeddings"])


def module_rows(model_class, config, dtype="BF16"):
    """Every tensor of the model as transformers builds it (on the meta device: no memory), in BF16, the per-layer
    names folded into {L} patterns over contiguous layer ranges. tiny_check shows save_pretrained writes these names."""
    with torch.device("meta"):
        model = model_class(config)
    grouped = {}
    for name, t in model.state_dict().items():
        m = re.search(r"\.layers\.(\d+)\.", name)
        key = (re.sub(r"\.layers\.\d+\.", ".layers.{L}.", name, count=1), tuple(t.shape))
        grouped.setdefault(key, []).append(int(m.group(1)) if m else None)
    rows = []
    for (pattern, shape), layers in grouped.items():
        if layers == [None]:
            rows.append([pattern, dtype, list(shape), {}])
            continue
        layers.sort()
        start = layers[0]
        for i, layer in enumerate(layers):   # a row per contiguous run of layers
            if i + 1 == len(layers) or layers[i + 1] != layer + 1:
                rows.append([pattern, dtype, list(shape), {"L": [start, layer + 1]}])
                start = layers[i + 1] if i + 1 < len(layers) else None
    return rows


RULES = {"gpt-oss-120b": gpt_oss_rows, "gpt-oss-20b": gpt_oss_rows,
         "Kimi-K2-Thinking": lambda c: deepseek_rows(c, int4_group32), "Qwen3-30B-A3B-NVFP4": qwen3_moe_rows,
         "GLM-4.5-Air": glm4_moe_rows, "MiniMax-M2": minimax_m2_rows,
         "DeepSeek-V3.2": deepseek_v32_rows,
         "Llama-4-Scout": lambda c: module_rows(transformers.Llama4ForConditionalGeneration, llama4_config(c))}


def expand(rows):
    """(name, dtype, shape) of every tensor a manifest describes."""
    out = []
    for pattern, dtype, shape, ranges in rows:
        layers = range(*ranges["L"]) if "L" in ranges else [None]
        experts = range(*ranges["E"]) if "E" in ranges else [None]
        for layer in layers:
            for expert in experts:
                out.append((pattern.replace("{L}", str(layer)).replace("{E}", str(expert)), dtype, shape))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Logical parameters, counted here independently of moetool: packed 4-bit elements unpacked, bookkeeping apart
# ---------------------------------------------------------------------------------------------------------------

def logical(name, dtype, shape):
    n = 1
    for d in shape:
        n *= d
    if name.endswith("_blocks"):
        return n * 2                      # two E2M1 codes a byte
    if name.endswith(".weight_packed"):
        return n * (8 if dtype == "I32" else 2)
    if name.endswith(("_scales", ".weight_scale", ".weight_scale_inv", ".weight_shape", ".weight_global_scale", ".input_global_scale")):
        return 0
    return n


def counts(config, tensors):
    total = sum(logical(*t) for t in tensors)
    text = config.get("text_config", config)
    experts = text.get("n_routed_experts") or text.get("num_experts") or text.get("num_local_experts")
    # Vision towers and their projectors: parameters of the model, not of a text token's pass.
    multimodal = sum(logical(*t) for t in tensors if re.match(r"(vision_model|vision_tower|multi_modal_projector|visual)\.", t[0]))
    routed = sum(logical(*t) for t in tensors if re.search(r"\.experts\.", t[0]) and not t[0].endswith("_bias"))
    routed_bias = sum(logical(*t) for t in tensors if re.search(r"\.experts\..*_bias$", t[0]))
    # Active per token: everything but the routed experts not chosen (all of a fused stack's bias included pro rata)
    k = text["num_experts_per_tok"]
    # MTP layers (model.layers.N from num_hidden_layers on) are parameters of the checkpoint, not of a token's pass.
    layers = text["num_hidden_layers"]
    mtp = sum(logical(*t) for t in tensors if (m := re.match(r"model\.layers\.(\d+)\.", t[0])) and int(m.group(1)) >= layers)
    routed_mtp = sum(logical(*t) for t in tensors if re.search(r"\.experts\.", t[0])
                     and (m := re.match(r"model\.layers\.(\d+)\.", t[0])) and int(m.group(1)) >= layers)
    routed, mtp_rest = routed - routed_mtp, mtp - routed_mtp
    active = total - multimodal - routed_mtp - mtp_rest - (routed + routed_bias) * (experts - k) // experts
    embedding = text["vocab_size"] * text["hidden_size"]
    return total, active, embedding, mtp


# ---------------------------------------------------------------------------------------------------------------
# The rules against transformers on tiny instances
# ---------------------------------------------------------------------------------------------------------------

def tiny_check():
    """save_pretrained names of tiny instances equal the rules' names (dtypes and shapes of plain tensors too)."""
    with tempfile.TemporaryDirectory() as d:
        c = dict(GPT_OSS, hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 vocab_size=128, num_hidden_layers=2, num_local_experts=4, layer_types=["sliding_attention", "full_attention"])
        cfg = transformers.GptOssConfig(**{k: v for k, v in c.items() if k not in ("model_type", "architectures", "quantization_config")})
        transformers.GptOssForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        ours = {n: (t, s) for n, t, s in expand(gpt_oss_rows(c))}
        plain = {n for n in ours if not n.endswith(("_blocks", "_scales"))}
        fused = {n[: -len("_blocks")] for n in ours if n.endswith("_blocks")}
        assert set(saved) == plain | fused, sorted(set(saved) ^ (plain | fused))
        for n in plain:
            assert list(saved[n].shape) == ours[n][1], n
        for n in fused:   # [E, in, out] in memory, stored as [E, out, in/32, 16]
            e, i, o = saved[n].shape
            assert ours[n + "_blocks"][1] == [e, o, i // 32, 16], n

    with tempfile.TemporaryDirectory() as d:
        c = dict(KIMI, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, q_lora_rank=32,
                 kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, vocab_size=128)
        keys = {k: v for k, v in c.items() if k not in ("model_type", "architectures", "quantization_config", "num_nextn_predict_layers")}
        transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**keys)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        bf16 = expand(deepseek_rows(c, lambda p, o, i: [(p + ".weight", "BF16", [o, i])]))
        assert {n for n, _, _ in bf16} == set(saved), sorted({n for n, _, _ in bf16} ^ set(saved))
        for n, _, s in bf16:
            assert list(saved[n].shape) == s, n

    with tempfile.TemporaryDirectory() as d:
        c = dict(QWEN3_30B, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2, vocab_size=128)
        keys = {k: v for k, v in c.items() if k not in ("model_type", "architectures", "quantization_config")}
        transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**keys)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        ours = expand(qwen3_moe_rows(c))
        modules = {n.rsplit(".", 1)[0] + ".weight" for n, _, _ in ours if n.endswith(".weight_packed")}
        plain = {n for n, _, _ in ours if not re.search(r"\.(weight_packed|weight_scale|weight_global_scale|input_global_scale)$", n)}
        assert set(saved) == plain | modules, sorted(set(saved) ^ (plain | modules))

    with tempfile.TemporaryDirectory() as d:
        c = dict(GLM_AIR, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, n_routed_experts=4, num_experts_per_tok=2,
                 vocab_size=128)
        keys = {k: v for k, v in c.items() if k not in ("model_type", "architectures", "torch_dtype")}
        transformers.Glm4MoeForCausalLM(transformers.Glm4MoeConfig(**keys)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        ours = {n: s for n, _, s in expand(glm4_moe_rows(c)) if not n.startswith(f"model.layers.{c['num_hidden_layers']}.")}
        assert set(ours) == set(saved), sorted(set(ours) ^ set(saved))   # transformers leaves the MTP layer out
        for n, shape in ours.items():
            assert list(saved[n].shape) == shape, n

    with tempfile.TemporaryDirectory() as d:
        c = dict(MINIMAX_M2, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, rotary_dim=8, num_local_experts=4, num_experts_per_tok=2, vocab_size=128)
        keys = {k: v for k, v in c.items() if k not in ("model_type", "architectures", "torch_dtype", "quantization_config")}
        transformers.MiniMaxM2ForCausalLM(transformers.MiniMaxM2Config(**keys)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        ours = {n: s for n, _, s in expand(minimax_m2_rows(c)) if not n.endswith("_scale_inv")}
        assert set(ours) == set(saved), sorted(set(ours) ^ set(saved))
        for n, shape in ours.items():
            assert list(saved[n].shape) == shape, n

    with tempfile.TemporaryDirectory() as d:
        c = dict(LLAMA4_SCOUT, text_config=dict(LLAMA4_SCOUT["text_config"], vocab_size=128, hidden_size=64,
                                                intermediate_size=32, intermediate_size_mlp=96, num_hidden_layers=4,
                                                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                                num_local_experts=4, interleave_moe_layer_step=2),
                 vision_config=dict(LLAMA4_SCOUT["vision_config"], hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, vision_output_dim=32, image_size=28,
                                    patch_size=14, projector_input_dim=32, projector_output_dim=64))
        transformers.Llama4ForConditionalGeneration(llama4_config(c)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        ours = {n: s for n, _, s in expand(module_rows(transformers.Llama4ForConditionalGeneration, llama4_config(c)))}
        assert set(ours) == set(saved), sorted(set(ours) ^ set(saved))
        for n, shape in ours.items():
            assert list(saved[n].shape) == shape, n

    with tempfile.TemporaryDirectory() as d:
        c = dict(DEEPSEEK_V32, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=4,
                 first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_group=2,
                 topk_group=1, num_experts_per_tok=2, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16,
                 qk_rope_head_dim=8, v_head_dim=16, vocab_size=128, index_n_heads=2, index_head_dim=16, index_topk=4)
        keys = {k: v for k, v in c.items() if k not in ("model_type", "architectures", "quantization_config", "torch_dtype",
                                                       "num_nextn_predict_layers", "moe_layer_freq")}
        transformers.DeepseekV32ForCausalLM(transformers.DeepseekV32Config(**keys)).to(torch.bfloat16).save_pretrained(d)
        saved = load_file(os.path.join(d, "model.safetensors"))
        mtp = f"model.layers.{c['num_hidden_layers']}."
        ours = {}
        for n, _, shape in expand(deepseek_v32_rows(c)):
            if not n.startswith(mtp) and not n.endswith("_scale_inv"):
                ours[n] = shape
        # transformers holds each layer's experts fused; saved, they are per expert as DeepSeek names them
        assert set(ours) == set(saved), sorted(set(ours) ^ set(saved))
        for n, shape in ours.items():
            assert list(saved[n].shape) == shape, n


def main():
    tiny_check()
    os.makedirs(OUT, exist_ok=True)
    for name, (config, total, active, source) in MODELS.items():
        rows = RULES[name](config)
        tensors = expand(rows)
        ours_total, ours_active, embedding, mtp = counts(config, tensors)
        doc = {"name": name, "source": source, "published": {"total": total, "active": active},
               "derived": {"total": ours_total, "active": ours_active, "embedding": embedding, "mtp": mtp},
               "config": config, "tensors": rows}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"{name}: {len(tensors)} tensors, {ours_total / 1e9:.2f}B total, {(ours_total - mtp) / 1e9:.2f}B without MTP "
              f"(published {total / 1e9:.1f}B), "
              f"{ours_active / 1e9:.2f}B active, {(ours_active - embedding) / 1e9:.2f}B without the input embedding "
              f"(published {active / 1e9:.1f}B)")


if __name__ == "__main__":
    main()
