#!/usr/bin/env python3
"""Writes Fixtures/verify/<model>.safetensors: what transformers' own MoE blocks compute on the tiny
float32 fixture models, for moetool's forward-pass tests.

And Fixtures/verify/<model>.model.safetensors: the whole model's logits and hidden states (see
whole_models). For every MoE layer i of each model: `layer.<i>.input` (16 tokens of N(0, 1) hidden states, seed
1000 + i), `layer.<i>.output` (the layer's `mlp` module applied to them, float32), and the router's
choice as its gate returned it: `layer.<i>.experts` (top-k expert ids per token, ascending, I64) and
`layer.<i>.weights` (their routing weights in the same order, F32).

usage: python Fixtures/moe_reference.py [gpt_oss|glm4_moe|minimax_m2|qwen3_next|qwen3_5_moe]      (only that model; torch, transformers, safetensors: Fixtures/requirements.txt)
"""
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["deepseek_v3-f32-sharded", "mixtral-f32-sharded", "qwen2_moe-f32-sharded", "qwen3_moe-f32-sharded"]
TOKENS = 16


def run_whole(model):
    """Logits and hidden states of the whole model on the deterministic token ids."""
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    out = model(input_ids=ids, output_hidden_states=True)
    tensors = {"token_ids": ids[0].to(torch.int64).contiguous(), "logits": out.logits[0].contiguous()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden.{i}"] = h[0].contiguous()
    return tensors


def run_blocks(model):
    """Each MoE layer's mlp on seeded hidden states, with the router's choice as its gate returned it."""
    tensors = {}
    for i, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        if not hasattr(mlp, "gate"):
            continue  # a dense layer
        captured = {}
        hook = mlp.gate.register_forward_hook(lambda m, a, out: captured.update(out=out))
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(1, TOKENS, model.config.hidden_size, generator=g, dtype=torch.float32)
        y = mlp(x)
        hook.remove()
        _, weights, indices = captured["out"]
        order = torch.argsort(indices, dim=-1)
        tensors[f"layer.{i}.input"] = x[0].contiguous()
        tensors[f"layer.{i}.output"] = y[0].contiguous()
        tensors[f"layer.{i}.experts"] = torch.gather(indices, 1, order).to(torch.int64).contiguous()
        tensors[f"layer.{i}.weights"] = torch.gather(weights.float(), 1, order).contiguous()
    return tensors


def main():
    out_dir = os.path.join(HERE, "verify")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_grad_enabled(False)
    for name in MODELS:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(HERE, "models", name), dtype=torch.float32)
        model.eval()
        tensors = run_blocks(model)
        save_file(tensors, os.path.join(out_dir, name + ".safetensors"), metadata={"tokens": str(TOKENS)})
        print(name, sorted(k for k in tensors if k.endswith("output")))


def whole_models():
    """Fixtures/verify/<model>.model.safetensors: logits and hidden states of the whole model on 16
    deterministic token ids (`token_ids`, i * 7919 + 13 mod vocab), float32."""
    out_dir = os.path.join(HERE, "verify")
    torch.set_grad_enabled(False)
    for name in MODELS:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(HERE, "models", name), dtype=torch.float32)
        model.eval()
        tensors = run_whole(model)
        save_file(tensors, os.path.join(out_dir, name + ".model.safetensors"), metadata={"tokens": str(TOKENS)})
        print(name, "hidden states:", sum(k.startswith("hidden.") for k in tensors))




def yarn_variant():
    """The tiny DeepSeek-V3 with DeepSeek-V3's kind of YaRN rope scaling (factor 40, mscale and
    mscale_all_dim 1, beta 32/1) over a short original context, so the ramp between interpolated
    and extrapolated frequencies falls inside the 8 rotary dimensions: the config used is written
    to verify/deepseek_v3-yarn.config.json and the logits and hidden states to
    verify/deepseek_v3-yarn.model.safetensors."""
    import json
    from transformers import AutoConfig
    src = os.path.join(HERE, "models", "deepseek_v3-f32-sharded")
    config = AutoConfig.from_pretrained(src)
    config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                              "original_max_position_embeddings": 64, "beta_fast": 32.0, "beta_slow": 1.0,
                              "mscale": 1.0, "mscale_all_dim": 1.0}
    model = AutoModelForCausalLM.from_pretrained(src, config=config, dtype=torch.float32)
    model.eval()
    torch.set_grad_enabled(False)
    tensors = run_whole(model)
    out_dir = os.path.join(HERE, "verify")
    save_file(tensors, os.path.join(out_dir, "deepseek_v3-yarn.model.safetensors"), metadata={"tokens": str(TOKENS)})
    with open(os.path.join(src, "config.json")) as f:
        raw = json.load(f)
    raw["rope_parameters"] = config.rope_parameters
    with open(os.path.join(out_dir, "deepseek_v3-yarn.config.json"), "w") as f:
        json.dump(raw, f, indent=2, sort_keys=True)
    print("yarn variant written")




def deepseek_32_experts():
    """A tiny DeepSeek-V3 shaped like the real one's routing: 32 routed experts in 8 groups keeping 4,
    top-8, one shared expert, routed scaling 2.5, a random e_score_correction_bias, YaRN rope scaling;
    random float32 weights (seed 32), saved by save_pretrained to verify/deepseek_v3-32e/, with its
    whole-model logits and hidden states (verify/deepseek_v3-32e.model.safetensors) and its MoE blocks'
    outputs and router choices (verify/deepseek_v3-32e.safetensors)."""
    from transformers import AutoConfig
    src = os.path.join(HERE, "models", "deepseek_v3-f32-sharded")
    config = AutoConfig.from_pretrained(src)
    config.n_routed_experts = 32
    config.num_experts_per_tok = 8
    config.n_group = 8
    config.topk_group = 4
    config.routed_scaling_factor = 2.5
    config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                              "original_max_position_embeddings": 64, "beta_fast": 32.0, "beta_slow": 1.0,
                              "mscale": 1.0, "mscale_all_dim": 1.0}
    torch.manual_seed(32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    g = torch.Generator().manual_seed(320)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.e_score_correction_bias.copy_(torch.randn(32, generator=g) * 0.02)
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
    out_model = os.path.join(HERE, "verify", "deepseek_v3-32e")
    model.save_pretrained(out_model, safe_serialization=True)
    model = AutoModelForCausalLM.from_pretrained(out_model, dtype=torch.float32)
    model.eval()
    torch.set_grad_enabled(False)
    tensors = run_whole(model)
    save_file(tensors, os.path.join(HERE, "verify", "deepseek_v3-32e.model.safetensors"), metadata={"tokens": str(TOKENS)})
    blocks = run_blocks(model)
    save_file(blocks, os.path.join(HERE, "verify", "deepseek_v3-32e.safetensors"), metadata={"tokens": str(TOKENS)})
    print("deepseek_v3-32e written")


def _router_choices(model, ids):
    """Logits, hidden states and each MoE layer's router choice (ascending experts, their weights) on `ids`.
    The router is the MoE block's `router` (gpt-oss) or `gate` (glm4_moe); dense layers have neither."""
    captured = {}
    routers = [(i, layer.mlp.router if hasattr(layer.mlp, "router") else getattr(layer.mlp, "gate", None))
               for i, layer in enumerate(model.model.layers)]
    hooks = [r.register_forward_hook(lambda m, a, out, i=i: captured.update({i: out})) for i, r in routers if r is not None]
    out = model(input_ids=ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    tensors = {"token_ids": ids[0].to(torch.int64).contiguous(), "logits": out.logits[0].contiguous()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden.{i}"] = h[0].contiguous()
    for i, (_, weights, indices) in sorted(captured.items()):
        order = torch.argsort(indices, dim=-1)
        tensors[f"router.{i}.experts"] = torch.gather(indices, 1, order).to(torch.int64).contiguous()
        tensors[f"router.{i}.weights"] = torch.gather(weights.float(), 1, order).contiguous()
    return tensors


def gpt_oss():
    """A tiny gpt-oss (GptOssForCausalLM): hidden 32, 2 layers (sliding window 4, then full attention), 4 heads /
    2 KV heads of 16, 4 experts top-2 of intermediate 32, vocab 128, gpt-oss's own YaRN rope (its config's
    default), swiglu_alpha 1.5 and swiglu_limit 2 (not the defaults, so that a reader of config.json is checked,
    and small enough that the clamps act), random float32 weights (seed 16) large enough that the sinks,
    biases and clamps all matter; saved by save_pretrained to verify/gpt_oss/. Then, run with eager attention
    and eager experts: verify/gpt_oss.model.safetensors (16 tokens i * 7919 + 13 mod vocab) and
    verify/gpt_oss-seq2.model.safetensors (24 seeded random tokens): logits, every hidden state and each
    layer's router choice (`router.<i>.experts` ascending, `router.<i>.weights`); verify/gpt_oss.safetensors:
    the MoE blocks on seeded hidden states, as for the other models."""
    from transformers import GptOssConfig, GptOssForCausalLM
    config = GptOssConfig(vocab_size=128, hidden_size=32, intermediate_size=32, head_dim=16, num_attention_heads=4,
                          num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                          sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                          max_position_embeddings=131072, tie_word_embeddings=False, swiglu_alpha=1.5, swiglu_limit=2.0)
    torch.manual_seed(16)
    model = GptOssForCausalLM(config)
    g = torch.Generator().manual_seed(160)
    scales = {"embed_tokens": 1.0, "lm_head": 0.1, "experts": 0.3, "router": 0.4, "sinks": 1.0, "self_attn": 0.08}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
                continue
            scale = next(v for k, v in scales.items() if k in name)
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    out_model = os.path.join(HERE, "verify", "gpt_oss")
    model.save_pretrained(out_model, safe_serialization=True)
    model = GptOssForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                              experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    # The clamps must act: record whether some gate exceeds the limit and some up value lies outside it.
    clamped = {"gate": False, "up": False}
    for layer in model.model.layers:
        experts = layer.mlp.experts
        original = experts._apply_gate

        def watched(gate_up, original=original, limit=experts.limit):
            clamped["gate"] |= bool((gate_up[..., ::2] > limit).any())
            clamped["up"] |= bool((gate_up[..., 1::2].abs() > limit).any())
            return original(gate_up)
        experts._apply_gate = watched
    vocab = config.vocab_size
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(17))
    for ids, name in [(first, "gpt_oss"), (second, "gpt_oss-seq2")]:
        tensors = _router_choices(model, ids)
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    assert clamped["gate"] and clamped["up"], clamped
    blocks = {}
    for i, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        captured = {}
        hook = mlp.router.register_forward_hook(lambda m, a, out: captured.update(out=out))
        x = torch.randn(1, TOKENS, config.hidden_size, generator=torch.Generator().manual_seed(1000 + i))
        y, _ = mlp(x)
        hook.remove()
        _, weights, indices = captured["out"]
        order = torch.argsort(indices, dim=-1)
        blocks[f"layer.{i}.input"] = x[0].contiguous()
        blocks[f"layer.{i}.output"] = y[0].contiguous()
        blocks[f"layer.{i}.experts"] = torch.gather(indices, 1, order).to(torch.int64).contiguous()
        blocks[f"layer.{i}.weights"] = torch.gather(weights.float(), 1, order).contiguous()
    save_file(blocks, os.path.join(HERE, "verify", "gpt_oss.safetensors"), metadata={"tokens": str(TOKENS)})
    # The window matters on these sequences: with it as long as the sequence the logits change.
    model.config.sliding_window = 64
    for layer in model.model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = 64
    wide = model(input_ids=first).logits[0]
    narrow = load_file(os.path.join(HERE, "verify", "gpt_oss.model.safetensors"))["logits"]
    assert (wide - narrow).abs().max() > 1e-3
    print("gpt_oss written")


def glm4_moe():
    """A tiny GLM-4.5 (Glm4MoeForCausalLM): vocab 128, hidden 16, 3 layers of which the first is dense
    (first_k_dense_replace 1, intermediate 48) and two MoE: 12 routed experts of intermediate 8 in 4 groups keeping 2,
    top-3, one shared expert, routed scaling 2.5, norm_topk_prob, a random e_score_correction_bias; attention of
    4 heads / 2 KV heads of 16 with q/k/v biases (attention_bias), per-head q/k RMSNorms (use_qk_norm) and rotary
    on the first half of each head only (partial_rotary_factor 0.5); random float32 weights (seed 45) large enough
    that the biases, norms and routing all matter; saved by save_pretrained to verify/glm4_moe/. transformers does not
    build the MTP layer (num_nextn_predict_layers 1), so one is added to the saved file by hand, named as GLM-4.5
    names it: `model.layers.3.*`, a whole MoE decoder layer plus enorm, hnorm, eh_proj [H, 2H], shared_head.norm,
    shared_head.head [V, H] and its own embed_tokens [V, H], random. Then, run with eager attention and experts (the
    MTP layer left aside by the loader): verify/glm4_moe.model.safetensors (16 tokens i * 7919 + 13 mod vocab) and
    verify/glm4_moe-seq2.model.safetensors (24 seeded random tokens): logits, every hidden state and each MoE layer's
    router choice; verify/glm4_moe.safetensors: the MoE blocks on seeded hidden states, as for the other models."""
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM
    config = Glm4MoeConfig(vocab_size=128, hidden_size=16, intermediate_size=48, moe_intermediate_size=8, head_dim=16,
                           num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3, first_k_dense_replace=1,
                           n_routed_experts=12, num_experts_per_tok=3, n_group=4, topk_group=2, n_shared_experts=1,
                           routed_scaling_factor=2.5, norm_topk_prob=True, use_qk_norm=True, attention_bias=True,
                           partial_rotary_factor=0.5, num_nextn_predict_layers=1, tie_word_embeddings=False)
    assert config.rope_parameters["partial_rotary_factor"] == 0.5
    torch.manual_seed(45)
    model = Glm4MoeForCausalLM(config)
    g = torch.Generator().manual_seed(450)
    scales = {"embed_tokens": 1.0, "lm_head": 0.15, "experts": 0.3, "mlp.gate.weight": 0.5,
              "e_score_correction_bias": 0.05, "self_attn": 0.15, "mlp.": 0.3}
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                continue
            scale = next((v for k, v in scales.items() if k in name), None)
            if scale is None:
                continue  # rotary caches
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    out_model = os.path.join(HERE, "verify", "glm4_moe")
    model.save_pretrained(out_model, safe_serialization=True)
    # The MTP layer, GLM-4.5's names at index num_hidden_layers: a copy of the last layer's shapes, new values.
    shard = os.path.join(out_model, "model.safetensors")
    saved = load_file(shard)
    last, mtp = f"model.layers.{config.num_hidden_layers - 1}.", f"model.layers.{config.num_hidden_layers}."
    h, vocab = config.hidden_size, config.vocab_size

    def rnd(shape, norm=False):
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        return 1 + 0.2 * x if norm else 0.3 * x
    extra = {mtp + n[len(last):]: rnd(t.shape, norm="norm" in n) for n, t in saved.items() if n.startswith(last)}
    extra.update({mtp + "enorm.weight": rnd([h], True), mtp + "hnorm.weight": rnd([h], True),
                  mtp + "eh_proj.weight": rnd([h, 2 * h]), mtp + "shared_head.norm.weight": rnd([h], True),
                  mtp + "shared_head.head.weight": rnd([vocab, h]), mtp + "embed_tokens.weight": rnd([vocab, h])})
    save_file({**saved, **extra}, shard, metadata={"format": "pt"})
    model = Glm4MoeForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                               experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(46))
    for ids, name in [(first, "glm4_moe"), (second, "glm4_moe-seq2")]:
        tensors = _router_choices(model, ids)
        assert sorted(k for k in tensors if k.startswith("router.") and k.endswith(".experts")) == \
            ["router.1.experts", "router.2.experts"]
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = run_blocks(model)
    save_file(blocks, os.path.join(HERE, "verify", "glm4_moe.safetensors"), metadata={"tokens": str(TOKENS)})
    # What the fixture must be able to tell apart: rotating whole heads, or leaving out the q/k norms, the
    # attention biases or the correction bias, each moves the logits.
    reference = load_file(os.path.join(HERE, "verify", "glm4_moe.model.safetensors"))["logits"]
    def rotate_whole_heads(config):
        config.rope_parameters = {**config.rope_parameters, "partial_rotary_factor": 1.0}
    for what, config_change, change in [
            ("whole-head rotary", rotate_whole_heads, lambda m: None),
            ("no q/k norms", None, lambda m: [setattr(l.self_attn, "use_qk_norm", False) for l in m.model.layers]),
            ("no q/k/v biases", None, lambda m: [getattr(l.self_attn, p).bias.zero_() for l in m.model.layers
                                                 for p in ("q_proj", "k_proj", "v_proj")]),
            ("no correction bias", None, lambda m: [l.mlp.gate.e_score_correction_bias.zero_() for l in m.model.layers[1:]])]:
        altered_config = Glm4MoeConfig.from_pretrained(out_model)
        if config_change:
            config_change(altered_config)
        altered = Glm4MoeForCausalLM.from_pretrained(out_model, config=altered_config, dtype=torch.float32,
                                                     attn_implementation="eager", experts_implementation="eager")
        change(altered)
        moved = (altered(input_ids=first).logits[0] - reference).abs().max().item()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what
    print("glm4_moe written")


def minimax_m2():
    """A tiny MiniMax-M2 (MiniMaxM2ForCausalLM): vocab 128, hidden 16, 2 MoE layers of 8 experts (w1/w2/w3 of
    intermediate 8, SwiGLU), top-3, the sigmoid router whose e_score_correction_bias (random) picks the experts but
    not their weights (the unbiased scores of the chosen, renormalised); attention of 4 heads / 2 KV heads of 16
    without biases, q/k RMSNorms over the whole projection ([heads x head_dim], before the split into heads) and
    rotary on the first 8 dims of each head (half-split; the released config's legacy rotary_dim, 8 of 16); random
    float32 weights (seed 47) large enough that the norms and routing matter; saved by save_pretrained to
    verify/minimax_m2/ (MiniMax's own names: block_sparse_moe.gate, block_sparse_moe.e_score_correction_bias,
    experts.<e>.w1/w2/w3). Then, with eager attention and experts: verify/minimax_m2.model.safetensors (16 tokens
    i * 7919 + 13 mod vocab) and verify/minimax_m2-seq2.model.safetensors (24 seeded random tokens): logits, every
    hidden state and each layer's router choice; verify/minimax_m2.safetensors: the MoE blocks on seeded hidden states."""
    from transformers import MiniMaxM2Config, MiniMaxM2ForCausalLM
    config = MiniMaxM2Config(vocab_size=128, hidden_size=16, intermediate_size=8, head_dim=16, num_attention_heads=4,
                             num_key_value_heads=2, num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=3,
                             rotary_dim=8, tie_word_embeddings=False)
    assert config.rope_parameters["partial_rotary_factor"] == 0.5
    torch.manual_seed(47)
    model = MiniMaxM2ForCausalLM(config)
    g = torch.Generator().manual_seed(470)
    scales = {"embed_tokens": 1.0, "lm_head": 0.3, "experts": 0.3, "mlp.gate.weight": 0.5,
              "e_score_correction_bias": 0.05, "self_attn": 0.25}
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                continue
            scale = next((v for k, v in scales.items() if k in name), None)
            if scale is None:
                continue  # rotary caches
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    out_model = os.path.join(HERE, "verify", "minimax_m2")
    model.save_pretrained(out_model, safe_serialization=True)
    model = MiniMaxM2ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    vocab = config.vocab_size
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(48))
    for ids, name in [(first, "minimax_m2"), (second, "minimax_m2-seq2")]:
        tensors = _router_choices(model, ids)
        assert sorted(k for k in tensors if k.startswith("router.") and k.endswith(".experts")) == \
            ["router.0.experts", "router.1.experts"]
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = run_blocks(model)
    save_file(blocks, os.path.join(HERE, "verify", "minimax_m2.safetensors"), metadata={"tokens": str(TOKENS)})
    # What the fixture must be able to tell apart: rotating whole heads, q/k norms per head instead of over the
    # whole projection, or leaving out the correction bias, each moves the logits.
    reference = load_file(os.path.join(HERE, "verify", "minimax_m2.model.safetensors"))["logits"]
    def rotate_whole_heads(config):
        config.rope_parameters = {**config.rope_parameters, "partial_rotary_factor": 1.0}
    def per_head_norm(m):
        for l in m.model.layers:
            for norm in (l.self_attn.q_norm, l.self_attn.k_norm):
                norm.forward = lambda x, n=norm: torch.stack([
                    n.weight.view(-1, 16)[i] * (c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + n.variance_epsilon))
                    for i, c in enumerate(x.view(*x.shape[:-1], -1, 16).unbind(-2))], dim=-2).flatten(-2)
    for what, config_change, change in [
            ("whole-head rotary", rotate_whole_heads, lambda m: None),
            ("per-head q/k norms", None, per_head_norm),
            ("no correction bias", None, lambda m: [l.mlp.e_score_correction_bias.zero_() for l in m.model.layers])]:
        altered_config = MiniMaxM2Config.from_pretrained(out_model)
        if config_change:
            config_change(altered_config)
        altered = MiniMaxM2ForCausalLM.from_pretrained(out_model, config=altered_config, dtype=torch.float32,
                                                       attn_implementation="eager", experts_implementation="eager")
        change(altered)
        moved = (altered(input_ids=first).logits[0] - reference).abs().max().item()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what
    print("minimax_m2 written")


def _qwen3_next_weights(model, seed):
    """Random float32 weights for a tiny Qwen3-Next or Qwen3.5-MoE, large enough that every part matters: the
    (1 + weight) RMSNorms around 0 (so 1 + w is near 1), the gated output norm (plain weight) around 1, A_log from
    log U(0.02, 0.15) so the DeltaNet's decay keeps some state across a 64-token chunk, dt_bias small. The q/k/v/z
    projections, the attention and the LM head are smaller than the rest: with them at 0.3 this 16-wide model moved
    by FP8 (blocks of 128 x 128, so one scale per matrix) fails verify's default limits (logits relative error 0.35),
    a property of the tiny random model rather than of the format (Fixtures/README.md)."""
    g = torch.Generator().manual_seed(seed)
    scales = {"embed_tokens": 1.0, "lm_head": 0.15, "experts": 0.3, "shared_expert.": 0.3, "shared_expert_gate": 0.5,
              "mlp.gate.weight": 0.5, "self_attn": 0.15, "conv1d": 0.75, "in_proj_qkv": 0.09, "in_proj_z": 0.09,
              "in_proj": 0.3, "out_proj": 0.3, "dt_bias": 0.3, "mlp.": 0.3, "visual": 0.1}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("linear_attn.norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name and "visual" not in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("A_log"):
                p.copy_((0.02 + 0.13 * torch.rand(p.shape, generator=g)).log())
            else:
                scale = next(v for k, v in scales.items() if k in name)
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _decoder_layers(model):
    inner = model.model
    return inner.language_model.layers if hasattr(inner, "language_model") else inner.layers


def _hybrid_checks(name, load, first, second, reference, reference2, module):
    """What a Qwen3-Next-style fixture must tell apart, each measured on the logits: the recurrent order against the
    chunked one (printed: it must be far below verify's 1e-4), and changes that must move the logits. `module` is the
    modeling module whose torch_chunk_gated_delta_rule the DeltaNet layers call."""
    chunked = module.torch_chunk_gated_delta_rule

    def run_with(rule, ids):
        module.torch_chunk_gated_delta_rule = rule
        try:
            return load()(input_ids=ids).logits[0]
        finally:
            module.torch_chunk_gated_delta_rule = chunked

    def recurrent(q, k, v, g, beta, chunk_size=64, **kw):
        return module.torch_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, **kw)
    for ids, ref, label in [(first, reference, "16 tokens"), (second, reference2, f"{second.shape[1]} tokens")]:
        moved = (run_with(recurrent, ids) - ref).abs().max().item()
        print(f"{name} ({label}): the recurrent form instead of the chunked: logits move by {moved:.3g}")
        assert 0 < moved < 1e-4, moved

    def no_l2norm(q, k, v, g, beta, **kw):
        return chunked(q, k, v, g=g, beta=beta, **{**kw, "use_qk_l2norm_in_kernel": False})

    def state_reset_per_chunk(q, k, v, g, beta, **kw):  # each 64-token chunk starting from a zero state
        outs = [chunked(q[:, s:s + 64], k[:, s:s + 64], v[:, s:s + 64], g=g[:, s:s + 64], beta=beta[:, s:s + 64], **kw)
                for s in range(0, q.shape[1], 64)]
        return torch.cat([o for o, _ in outs], dim=1), outs[-1][1]
    for what, rule, ids, ref in [("no q/k l2norm in the DeltaNet", no_l2norm, first, reference),
                                 ("DeltaNet state reset at each chunk", state_reset_per_chunk, second, reference2)]:
        moved = (run_with(rule, ids) - ref).abs().max().item()
        print(f"{name}: {what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what

    def plain_norms(m):  # RMSNorm times weight instead of (1 + weight)
        for mod in m.modules():
            if type(mod).__name__.endswith("RMSNorm"):
                mod.weight.sub_(1)

    def no_output_gate(m):  # the gate half of q_proj zeroed: sigmoid(0) = 1/2 everywhere, o_proj doubled
        for layer in _decoder_layers(m):
            if hasattr(layer, "self_attn"):
                attn = layer.self_attn
                attn.q_proj.weight.view(m.config.get_text_config().num_attention_heads, 2, attn.head_dim, -1)[:, 1].zero_()
                attn.o_proj.weight.mul_(2)

    def no_conv(m):  # the depthwise conv1d replaced by the identity (then silu)
        for layer in _decoder_layers(m):
            if hasattr(layer, "linear_attn"):
                w = layer.linear_attn.conv1d.weight
                w.zero_()
                w[..., -1] = 1

    def shared_ungated(m):
        for layer in _decoder_layers(m):
            if hasattr(layer.mlp, "shared_expert_gate"):
                layer.mlp.shared_expert_gate.weight.fill_(1e3)

    for what, change in [("plain-weight RMSNorms", plain_norms), ("no attention output gate", no_output_gate),
                         ("no causal conv1d", no_conv), ("shared expert ungated", shared_ungated)]:
        altered = load()
        with torch.no_grad():
            change(altered)
            moved = (altered(input_ids=first).logits[0] - reference).abs().max().item()
        print(f"{name}: {what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what


def qwen3_next():
    """A tiny Qwen3-Next (Qwen3NextForCausalLM): vocab 32, hidden 16, 3 layers: Gated DeltaNet, Gated DeltaNet, gated
    full attention (full_attention_interval 3, written by transformers as layer_types); the DeltaNet of 2 key heads /
    4 value heads of 8 (value heads grouped over key heads as in the release, 16/32), causal depthwise conv1d of kernel
    4; the full attention of 4 heads / 2 KV heads of 16, q_proj twice as wide (query and output gate per head),
    (1 + weight) q/k norms per head, rotary on the first 4 dims (partial_rotary_factor 0.25); layers 0 and 2 MoE (8
    experts of intermediate 8, top-3, norm_topk_prob, a shared expert of intermediate 16 behind a sigmoid
    shared_expert_gate), layer 1 dense (mlp_only_layers [1], intermediate 32); weights from _qwen3_next_weights (seed
    53); saved by save_pretrained to verify/qwen3_next/ (transformers writes the experts one by one,
    experts.<e>.gate_proj, as the release stores them). An MTP block is added to the saved file by hand under the
    release's names (mtp.fc, mtp.pre_fc_norm_embedding/hidden, mtp.layers.0.* a full-attention MoE layer,
    mtp.norm), random; transformers' loader ignores mtp.*. Then, eager attention and experts, and the torch paths of
    the DeltaNet (no flash-linear-attention or causal-conv1d installed: a whole prompt goes through
    torch_chunk_gated_delta_rule, chunks of 64): verify/qwen3_next.model.safetensors (16 tokens i * 7919 + 13 mod
    vocab) and verify/qwen3_next-seq2.model.safetensors (72 seeded random tokens: two chunks, so the state carried
    from the first chunk into the second matters): logits, every hidden state and each MoE layer's router choice;
    verify/qwen3_next.safetensors: the MoE blocks on seeded hidden states."""
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM
    from transformers.models.qwen3_next import modeling_qwen3_next as mq
    config = Qwen3NextConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_conv_kernel_dim=4,
                             linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                             linear_num_value_heads=4, full_attention_interval=3, moe_intermediate_size=8,
                             shared_expert_intermediate_size=16, num_experts=8, num_experts_per_tok=3,
                             norm_topk_prob=True, mlp_only_layers=[1], tie_word_embeddings=False)
    assert config.layer_types == ["linear_attention", "linear_attention", "full_attention"]
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    # The torch paths are the ones that run here: the kernels' packages are absent.
    import importlib.util
    assert all(importlib.util.find_spec(p) is None for p in ("fla", "causal_conv1d", "kernels"))
    torch.manual_seed(53)
    model = Qwen3NextForCausalLM(config)
    _qwen3_next_weights(model, 530)
    out_model = os.path.join(HERE, "verify", "qwen3_next")
    model.save_pretrained(out_model, safe_serialization=True)
    shard = os.path.join(out_model, "model.safetensors")
    saved = load_file(shard)
    g = torch.Generator().manual_seed(531)

    def rnd(shape, norm=False):
        return 0.2 * torch.randn(shape, generator=g) if norm else 0.3 * torch.randn(shape, generator=g)
    last, h = "model.layers.2.", config.hidden_size
    mtp = {"mtp.layers.0." + n[len(last):]: rnd(t.shape, norm="norm" in n) for n, t in saved.items() if n.startswith(last)}
    mtp.update({"mtp.fc.weight": rnd([h, 2 * h]), "mtp.pre_fc_norm_embedding.weight": rnd([h], True),
                "mtp.pre_fc_norm_hidden.weight": rnd([h], True), "mtp.norm.weight": rnd([h], True)})
    save_file({**saved, **mtp}, shard, metadata={"format": "pt"})

    def load():
        m = Qwen3NextForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
        m.eval()
        return m
    model = load()
    torch.set_grad_enabled(False)
    vocab = config.vocab_size
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 72), generator=torch.Generator().manual_seed(54))
    for ids, name in [(first, "qwen3_next"), (second, "qwen3_next-seq2")]:
        tensors = _router_choices(model, ids)
        assert sorted(k for k in tensors if k.startswith("router.") and k.endswith(".experts")) == \
            ["router.0.experts", "router.2.experts"]
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = run_blocks(model)
    save_file(blocks, os.path.join(HERE, "verify", "qwen3_next.safetensors"), metadata={"tokens": str(TOKENS)})
    reference = load_file(os.path.join(HERE, "verify", "qwen3_next.model.safetensors"))["logits"]
    reference2 = load_file(os.path.join(HERE, "verify", "qwen3_next-seq2.model.safetensors"))["logits"]
    _hybrid_checks("qwen3_next", load, first, second, reference, reference2, mq)
    print("qwen3_next written")


def qwen3_5_moe():
    """A tiny Qwen3.5-MoE as released (Qwen3_5MoeForConditionalGeneration: the text decoder under
    model.language_model., a vision tower under model.visual., lm_head at the top; config.json nests the decoder's
    fields in text_config): vocab 32, hidden 16, 3 layers (DeltaNet, DeltaNet, gated full attention:
    full_attention_interval 3), every layer MoE (Qwen3.5 has no dense layers or norm_topk_prob: the router always
    renormalises), 6 experts of intermediate 8, top-2, written one by one (experts.<e>.gate_proj: transformers
    fuses them on loading and splits them again on saving, as the release stores them), a shared expert of 16 behind its sigmoid gate; the DeltaNet with
    Qwen3.5's four projections (in_proj_qkv, in_proj_z, in_proj_b, in_proj_a) of 2 key / 4 value heads of 8; the
    full attention as Qwen3-Next's, rotary on half of each head of 16 (partial_rotary_factor 0.5) with
    mrope_section [2, 1, 1] (text-only positions are the same on all three axes, so it is plain rotary); a vision
    tower of depth 1, hidden 8; weights from _qwen3_next_weights (seed 58) (no MTP block: the Qwen3-Next fixture
    has one, under the same names). Then verify/qwen3_5_moe.model.safetensors (16 tokens) and
    verify/qwen3_5_moe-seq2.model.safetensors (72 seeded random tokens, two chunks): logits, hidden states, router
    choices of the text model run on token ids alone; verify/qwen3_5_moe.safetensors: the MoE blocks."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration
    from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe as mq
    text = dict(vocab_size=32, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                linear_num_key_heads=2, linear_num_value_heads=4, full_attention_interval=3, moe_intermediate_size=8,
                shared_expert_intermediate_size=16, num_experts=6, num_experts_per_tok=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=8, intermediate_size=16, num_heads=1, patch_size=4, temporal_patch_size=2,
                  spatial_merge_size=1, out_hidden_size=16, num_position_embeddings=16)
    config = Qwen3_5MoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    assert config.text_config.layer_types == ["linear_attention", "linear_attention", "full_attention"]
    torch.manual_seed(58)
    model = Qwen3_5MoeForConditionalGeneration(config)
    _qwen3_next_weights(model, 580)
    out_model = os.path.join(HERE, "verify", "qwen3_5_moe")
    model.save_pretrained(out_model, safe_serialization=True)
    def load():
        m = Qwen3_5MoeForConditionalGeneration.from_pretrained(out_model, dtype=torch.float32,
                                                               attn_implementation="eager", experts_implementation="eager")
        m.eval()
        return m
    model = load()
    torch.set_grad_enabled(False)
    first = torch.tensor([[(i * 7919 + 13) % 32 for i in range(TOKENS)]])
    second = torch.randint(0, 32, (1, 72), generator=torch.Generator().manual_seed(56))
    text_model = _TextView(model)
    for ids, name in [(first, "qwen3_5_moe"), (second, "qwen3_5_moe-seq2")]:
        tensors = _router_choices(text_model, ids)
        assert sorted(k for k in tensors if k.startswith("router.") and k.endswith(".experts")) == \
            ["router.0.experts", "router.1.experts", "router.2.experts"]
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = run_blocks(text_model)
    save_file(blocks, os.path.join(HERE, "verify", "qwen3_5_moe.safetensors"), metadata={"tokens": str(TOKENS)})
    reference = load_file(os.path.join(HERE, "verify", "qwen3_5_moe.model.safetensors"))["logits"]
    reference2 = load_file(os.path.join(HERE, "verify", "qwen3_5_moe-seq2.model.safetensors"))["logits"]
    _hybrid_checks("qwen3_5_moe", load, first, second, reference, reference2, mq)
    print("qwen3_5_moe written")


class _TextView:
    """A multimodal Qwen3.5 model seen as the helpers above expect a causal LM: model.model.layers, the config's
    hidden_size, a call on input_ids."""
    def __init__(self, model):
        self.full = model
        self.model = model.model.language_model
        self.config = model.config.text_config

    def __call__(self, **kw):
        return self.full(**kw)


if __name__ == "__main__":
    import sys
    only = {"gpt_oss": gpt_oss, "glm4_moe": glm4_moe, "minimax_m2": minimax_m2, "qwen3_next": qwen3_next,
            "qwen3_5_moe": qwen3_5_moe}
    if len(sys.argv) == 2 and sys.argv[1] in only:
        only[sys.argv[1]]()
    else:
        main()
        whole_models()
        yarn_variant()
        deepseek_32_experts()
        gpt_oss()
        glm4_moe()
        minimax_m2()
        qwen3_next()
        qwen3_5_moe()
