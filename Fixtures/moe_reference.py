#!/usr/bin/env python3
"""Writes Fixtures/verify/<model>.safetensors: what transformers' own MoE blocks compute on the tiny
float32 fixture models, for moetool's forward-pass tests.

And Fixtures/verify/<model>.model.safetensors: the whole model's logits and hidden states (see
whole_models). For every MoE layer i of each model: `layer.<i>.input` (16 tokens of N(0, 1) hidden states, seed
1000 + i), `layer.<i>.output` (the layer's `mlp` module applied to them, float32), and the router's
choice as its gate returned it: `layer.<i>.experts` (top-k expert ids per token, ascending, I64) and
`layer.<i>.weights` (their routing weights in the same order, F32).

usage: python Fixtures/moe_reference.py [gpt_oss|glm4_moe|minimax_m2|kimi_k2|llama4|deepseek_v32|glm_moe_dsa|qwen3_next|qwen3_5_moe|deepseek_v4]      (only that model; torch, transformers, safetensors: Fixtures/requirements.txt)
"""
import importlib
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


def _redraw(model, g, scales, norm_spread=0.2, buffers=True):
    """Draws every parameter of `model` (and buffer, with `buffers`) again from generator `g`, in the model's own
    order: a norm's weight 1 + N(0, norm_spread) (a norm's bias N(0, norm_spread)), anything else N(0, s) with s the
    value of the first key of `scales` its name contains; a name matching no key keeps its value (rotary caches)."""
    with torch.no_grad():
        tensors = list(model.named_parameters()) + (list(model.named_buffers()) if buffers else [])
        for name, p in tensors:
            if "norm" in name:
                centre = 0.0 if name.endswith("bias") else 1.0
                p.copy_(centre + norm_spread * torch.randn(p.shape, generator=g))
                continue
            scale = next((v for k, v in scales.items() if k in name), None)
            if scale is not None:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


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


def _save_references(model, name, vocab, seed, routed, length=24, blocks=True):
    """The whole model on two sequences, the TOKENS ids i * 7919 + 13 mod vocab and `length` ids from torch.randint
    (generator seed `seed`), into verify/<name>.model.safetensors and verify/<name>-seq2.model.safetensors: logits,
    every hidden state and the router choices, which must be those of the layers `routed`; with `blocks`, the MoE
    blocks on seeded hidden states into verify/<name>.safetensors. Returns both sequences' ids."""
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))
    for ids, file in [(first, name), (second, name + "-seq2")]:
        tensors = _router_choices(model, ids)
        assert sorted(k for k in tensors if k.startswith("router.") and k.endswith(".experts")) == \
            sorted(f"router.{layer}.experts" for layer in routed)
        save_file(tensors, os.path.join(HERE, "verify", file + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    if blocks:
        save_file(run_blocks(model), os.path.join(HERE, "verify", name + ".safetensors"), metadata={"tokens": str(TOKENS)})
    return first, second


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
    _redraw(model, g, scales, norm_spread=0.1, buffers=False)
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
    first, second = _save_references(model, "gpt_oss", vocab, seed=17, routed=[0, 1], blocks=False)
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
    _redraw(model, g, scales)
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
    first, second = _save_references(model, "glm4_moe", vocab, seed=46, routed=[1, 2])
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
    _redraw(model, g, scales)
    out_model = os.path.join(HERE, "verify", "minimax_m2")
    model.save_pretrained(out_model, safe_serialization=True)
    model = MiniMaxM2ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    vocab = config.vocab_size
    first, second = _save_references(model, "minimax_m2", vocab, seed=48, routed=[0, 1])
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


# Kimi-K2-Instruct's config.json as Moonshot publishes it, but for the sizes: its own model_type on DeepSeek-V3's
# architecture, the legacy rope_scaling key with "type", rope_theta at the top level, 384 experts in one group.
KIMI_K2_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2",
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "attention_bias": False, "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1,
    "first_k_dense_replace": 1, "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
    "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 384, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_experts_per_tok": 8, "num_nextn_predict_layers": 0, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 50000.0, "routed_scaling_factor": 2.827, "scoring_func": "sigmoid", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc", "torch_dtype": "float32",
    "use_cache": True,
}


def kimi_k2():
    """A tiny Kimi-K2 (DeepSeek-V3's architecture, Moonshot's routing): 384 routed experts in one group, top-8, one
    shared expert, routed scaling 2.827, a random e_score_correction_bias, YaRN with Kimi's factor 32, theta 50000
    and beta 1/1; vocab 128, hidden 16, 3 layers (the first dense), MLA of 4 heads, experts of intermediate 4 (so that
    384 of them stay small); random float32 weights (seed 38). transformers has no "kimi_k2" model type (the release
    runs its own modeling_deepseek.py through auto_map), so the model is built and run as DeepseekV3ForCausalLM and
    its config.json is then rewritten as Kimi-K2 publishes it (KIMI_K2_CONFIG): model_type kimi_k2, rope_scaling with
    "type", rope_theta at the top. Saved to verify/kimi_k2/, with verify/kimi_k2.model.safetensors (16 tokens
    i * 7919 + 13 mod vocab) and verify/kimi_k2-seq2.model.safetensors (24 seeded random tokens): logits, every
    hidden state and each MoE layer's router choice."""
    import json
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    sizes = dict(vocab_size=128, hidden_size=16, intermediate_size=32, moe_intermediate_size=4, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=4, q_lora_rank=8, kv_lora_rank=8, qk_nope_head_dim=4,
                 qk_rope_head_dim=4, v_head_dim=4)
    keys = {k: v for k, v in KIMI_K2_CONFIG.items()
            if k not in ("architectures", "model_type", "auto_map", "rope_scaling", "rope_theta", "torch_dtype")}
    rope = dict(KIMI_K2_CONFIG["rope_scaling"])
    rope["rope_type"] = rope.pop("type")
    config = DeepseekV3Config(**keys, **sizes, rope_parameters={**rope, "rope_theta": KIMI_K2_CONFIG["rope_theta"]})
    torch.manual_seed(38)
    model = DeepseekV3ForCausalLM(config)
    g = torch.Generator().manual_seed(380)
    scales = {"embed_tokens": 1.0, "lm_head": 0.15, "experts": 0.25, "mlp.gate.weight": 1.0,
              "e_score_correction_bias": 0.05, "self_attn": 0.2, "mlp.": 0.3}
    _redraw(model, g, scales)
    out_model = os.path.join(HERE, "verify", "kimi_k2")
    model.save_pretrained(out_model, safe_serialization=True)
    model = DeepseekV3ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                  experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    vocab = config.vocab_size
    first, second = _save_references(model, "kimi_k2", vocab, seed=39, routed=[1, 2], blocks=False)
    # The routing must use the experts' whole range, and the scaling and correction bias must matter.
    chosen = torch.cat([load_file(os.path.join(HERE, "verify", n + ".model.safetensors"))[f"router.{l}.experts"].flatten()
                        for n in ("kimi_k2", "kimi_k2-seq2") for l in (1, 2)])
    assert chosen.max() >= 256 and chosen.unique().numel() > 100, chosen.unique().numel()
    reference = load_file(os.path.join(HERE, "verify", "kimi_k2.model.safetensors"))["logits"]
    for what, change in [("routed scaling 2.5", lambda m: [setattr(l.mlp.gate, "routed_scaling_factor", 2.5) for l in m.model.layers[1:]]),
                         ("no correction bias", lambda m: [l.mlp.gate.e_score_correction_bias.zero_() for l in m.model.layers[1:]])]:
        altered = DeepseekV3ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                        experts_implementation="eager")
        change(altered)
        moved = (altered(input_ids=first).logits[0] - reference).abs().max().item()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-3, what
    # config.json as the release writes it.
    saved = json.load(open(os.path.join(out_model, "config.json")))
    published = dict(KIMI_K2_CONFIG, **sizes)
    published["transformers_version"] = saved["transformers_version"]
    with open(os.path.join(out_model, "config.json"), "w") as f:
        json.dump(dict(sorted(published.items())), f, indent=2)
        f.write("\n")
    print("kimi_k2 written")
def llama4():
    """A tiny Llama 4 (Llama4ForConditionalGeneration, as meta-llama/Llama-4-Scout-17B-16E-Instruct is published: the
    text model under language_model.model.*, the vision tower and projector beside it). Text: vocab 128, hidden 16,
    4 layers; MoE every second layer (interleave_moe_layer_step 2: layers 1 and 3) with 4 fused experts
    (experts.gate_up_proj [E, hidden, 2 x 8], gate columns first; experts.down_proj [E, 8, hidden]), top-1 sigmoid
    router and a shared expert; dense layers 0 and 2 of intermediate_size_mlp 32; attention of 4 heads / 2 KV heads of
    8; layer 3 NoPE (no_rope_layer_interval 4) with attention temperature tuning (floor_scale 4, attn_scale 0.5: the
    query scale grows from position 3 on), layers 0-2 rotary (interleaved pairs, llama3 scaling with
    original_max_position_embeddings 64 so that its three frequency bands all occur at head_dim 8), L2 q/k norm and
    chunked attention of 6 tokens. Vision: one layer of hidden 16, images of 28 / patches of 14. Random float32
    weights (seed 53) saved by save_pretrained to verify/llama4/. Then, with eager attention, the text model on
    verify/llama4.model.safetensors (16 tokens i * 7919 + 13 mod vocab) and verify/llama4-seq2.model.safetensors (24
    seeded random tokens): logits, every hidden state and each MoE layer's router choice (the top logit's expert and
    its sigmoid); verify/llama4.safetensors: the MoE blocks on seeded hidden states."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration
    text = dict(vocab_size=128, hidden_size=16, intermediate_size=8, intermediate_size_mlp=32, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=1,
                interleave_moe_layer_step=2, attention_chunk_size=6, floor_scale=4, attn_scale=0.5,
                rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                tie_word_embeddings=False, pad_token_id=0)
    vision = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  vision_output_dim=16, image_size=28, patch_size=14, projector_input_dim=16, projector_output_dim=16)
    config = Llama4Config(text_config=text, vision_config=vision)
    assert config.text_config.moe_layers == [1, 3] and config.text_config.no_rope_layers == [1, 1, 1, 0]
    torch.manual_seed(53)
    model = Llama4ForConditionalGeneration(config)
    g = torch.Generator().manual_seed(530)
    scales = {"embed_tokens": 1.0, "lm_head": 0.3, "experts": 0.4, "router": 0.6, "shared_expert": 0.2,
              "feed_forward": 0.2, "self_attn": 0.25}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("language_model."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * next(v for k, v in scales.items() if k in name))
    out_model = os.path.join(HERE, "verify", "llama4")
    model.save_pretrained(out_model, safe_serialization=True)
    # The same text model with one Linear per expert, as Meta's FP8 releases store Llama 4's experts
    # (experts.<e>.gate_proj/up_proj/down_proj.weight, [out, in]); no vision tower.
    per_expert = {}
    for name, t in load_file(os.path.join(out_model, "model.safetensors")).items():
        if not name.startswith("language_model."):
            continue
        if name.endswith("experts.gate_up_proj"):
            half = t.shape[2] // 2
            for e in range(t.shape[0]):
                per_expert[name[:-len("gate_up_proj")] + f"{e}.gate_proj.weight"] = t[e, :, :half].T.contiguous()
                per_expert[name[:-len("gate_up_proj")] + f"{e}.up_proj.weight"] = t[e, :, half:].T.contiguous()
        elif name.endswith("experts.down_proj"):
            for e in range(t.shape[0]):
                per_expert[name[:-len("down_proj")] + f"{e}.down_proj.weight"] = t[e].T.contiguous()
        else:
            per_expert[name] = t
    per_expert_dir = os.path.join(HERE, "verify", "llama4-per-expert")
    os.makedirs(per_expert_dir, exist_ok=True)
    save_file(per_expert, os.path.join(per_expert_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_model, "config.json")) as src, open(os.path.join(per_expert_dir, "config.json"), "w") as dst:
        dst.write(src.read())

    def load(text_changes=None):
        altered = Llama4Config.from_pretrained(out_model)
        for k, v in (text_changes or {}).items():
            setattr(altered.text_config, k, v)
        m = Llama4ForConditionalGeneration.from_pretrained(out_model, config=altered, dtype=torch.float32,
                                                           attn_implementation="eager")
        m.eval()
        return m
    torch.set_grad_enabled(False)
    model = load()
    text_model = model.language_model
    vocab = text["vocab_size"]
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(54))
    layers = text_model.model.layers
    for ids, name in [(first, "llama4"), (second, "llama4-seq2")]:
        captured = {}
        hooks = [l.feed_forward.router.register_forward_hook(lambda m, a, out, i=i: captured.update({i: out}))
                 for i, l in enumerate(layers) if l.is_moe_layer]
        out = text_model(input_ids=ids, output_hidden_states=True)
        for h in hooks:
            h.remove()
        tensors = {"token_ids": ids[0].to(torch.int64).contiguous(), "logits": out.logits[0].contiguous()}
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden.{i}"] = h[0].contiguous()
        for i, (scores, logits) in sorted(captured.items()):
            chosen = torch.topk(logits, 1, dim=-1).indices
            tensors[f"router.{i}.experts"] = chosen.to(torch.int64).contiguous()
            tensors[f"router.{i}.weights"] = torch.gather(scores, 1, chosen).contiguous()
        assert sorted(k for k in tensors if k.endswith(".experts")) == ["router.1.experts", "router.3.experts"]
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = {}
    for i, layer in enumerate(layers):
        if not layer.is_moe_layer:
            continue
        x = torch.randn(1, TOKENS, text["hidden_size"], generator=torch.Generator().manual_seed(1000 + i))
        y, logits = layer.feed_forward(x)
        top = torch.topk(logits, 1, dim=-1)
        blocks[f"layer.{i}.input"] = x[0].contiguous()
        blocks[f"layer.{i}.output"] = y.reshape(TOKENS, -1).contiguous()
        blocks[f"layer.{i}.experts"] = top.indices.to(torch.int64).contiguous()
        blocks[f"layer.{i}.weights"] = torch.sigmoid(top.values).contiguous()
    save_file(blocks, os.path.join(HERE, "verify", "llama4.safetensors"), metadata={"tokens": str(TOKENS)})

    # What the fixture must be able to tell apart: each feature turned off (or done the other way) moves the logits.
    reference = load_file(os.path.join(HERE, "verify", "llama4.model.safetensors"))["logits"]
    import transformers.models.llama4.modeling_llama4 as modeling

    def half_split_rotary(xq, xk, freqs_cis):
        def rotate(x):
            half = x.shape[-1] // 2
            c, s = freqs_cis.real[:, :, None, :], freqs_cis.imag[:, :, None, :]
            a, b = x[..., :half], x[..., half:]
            return torch.cat([a * c - b * s, b * c + a * s], dim=-1)
        return rotate(xq), rotate(xk)

    def router_weights_on_output(m):
        def forward(block, hidden_states):
            hidden_states = hidden_states.reshape(-1, block.hidden_dim)
            scores, logits = block.router(hidden_states)
            ones = (scores > 0).to(scores.dtype)
            routed = block.experts(hidden_states.repeat(scores.shape[1], 1) * ones.transpose(0, 1).reshape(-1, 1))
            routed = routed.reshape(scores.shape[1], -1, hidden_states.shape[-1]) * scores.transpose(0, 1)[..., None]
            return block.shared_expert(hidden_states) + routed.sum(dim=0), logits
        for l in m.language_model.model.layers:
            if l.is_moe_layer:
                l.feed_forward.forward = lambda x, b=l.feed_forward: forward(b, x)

    def default_rope(m):
        rotary = m.language_model.model.rotary_emb
        dim = 8
        rotary.inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))

    for what, changes, patch in [
            ("no chunked attention", {"attention_chunk_size": 1000}, None),
            ("no NoPE layer", {"no_rope_layers": [1, 1, 1, 1]}, None),
            ("no temperature tuning", {"attn_temperature_tuning": False}, None),
            ("no q/k norm", {"use_qk_norm": False}, None),
            ("no llama3 rope scaling", {}, default_rope),
            ("router weights on the output", {}, router_weights_on_output)]:
        altered = load(changes)
        if patch:
            patch(altered)
        moved = (altered.language_model(input_ids=first).logits[0] - reference).abs().max().item()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what
    original = modeling.apply_rotary_emb
    modeling.apply_rotary_emb = half_split_rotary
    try:
        moved = (load().language_model(input_ids=first).logits[0] - reference).abs().max().item()
    finally:
        modeling.apply_rotary_emb = original
    print(f"half-split rotary pairs: logits move by {moved:.3g}")
    assert moved > 1e-2
    print("llama4 written")
def _dsa_selections(model, ids):
    """_router_choices plus, for every layer with a DSA indexer, the keys it let each query attend to:
    `indexer.<l>.keys` [S, S] I64, 1 where key j <= i was among query i's top index_topk (keys after the query are
    masked causally whatever the indexer returns). The index scores are recomputed here from the indexer's inputs by
    the formula (q from wq_b on the query latent, k = LayerNorm(wk x), rotary on the first qk_rope_head_dim dims,
    sum over heads of weights_proj(x) / sqrt(heads) x relu(q.k / sqrt(index_head_dim))): they must select the same
    keys, and the smallest gap between the last kept and the first dropped score (over the queries that drop keys)
    is returned per layer, so that a fixture whose selection hangs on a rounding difference is refused. A layer
    sharing an earlier layer's selection (GLM's "shared") records the keys it reused."""
    captured, margins = {}, {}

    def capture(module, args, out, l):
        hidden, q_resid, (cos, sin), mask = args[:4]
        captured[l] = out[0].long()
        s, heads, dim, rope = hidden.shape[1], module.n_heads, module.head_dim, module.qk_rope_head_dim
        q = module.wq_b(q_resid)[0].view(s, heads, dim)
        k = module.k_norm(module.wk(hidden))[0]
        interleaved = getattr(model.config, "model_type", "") == "glm_moe_dsa"
        def rotate(x, c, si):  # x [..., rope] at positions along dim 0
            if interleaved:
                a, b = x[..., 0::2], x[..., 1::2]
                c, si = c[..., : rope // 2], si[..., : rope // 2]
                return torch.cat([a * c - b * si, b * c + a * si], dim=-1)
            a, b = x[..., : rope // 2], x[..., rope // 2:]
            return x * c + torch.cat([-b, a], dim=-1) * si
        c, si = cos[0], sin[0]
        q = torch.cat([rotate(q[..., :rope], c[:, None, :], si[:, None, :]), q[..., rope:]], dim=-1)
        k = torch.cat([rotate(k[..., :rope], c, si), k[..., rope:]], dim=-1)
        w = module.weights_proj(hidden)[0] * heads ** -0.5                      # [S, H]
        per_head = torch.relu(torch.einsum("shd,td->sht", q, k) * dim ** -0.5)  # [S, H, T]
        scores = torch.einsum("sh,sht->st", w, per_head)
        topk, gap = module.index_topk, float("inf")
        for i in range(s):
            if i + 1 <= topk:
                continue
            ranked = torch.sort(scores[i, : i + 1], descending=True)
            mine = set(ranked.indices[:topk].tolist())
            theirs = set(j for j in out[0, i].tolist() if j <= i)
            assert mine == theirs, (l, i, sorted(mine), sorted(theirs))
            gap = min(gap, (ranked.values[topk - 1] - ranked.values[topk]).item())
        margins[l] = gap

    hooks = [layer.self_attn.indexer.register_forward_hook(lambda m, a, out, l=l: capture(m, a, out, l))
             for l, layer in enumerate(model.model.layers) if getattr(layer.self_attn, "indexer", None) is not None]
    # GLM's "shared" layers have no indexer: their attention returns the top-k it reused as its third output.
    hooks += [layer.self_attn.register_forward_hook(lambda m, a, out, l=l: captured.update({l: out[2][0].long()}))
              for l, layer in enumerate(model.model.layers) if getattr(layer.self_attn, "indexer", 0) is None]
    tensors = _router_choices(model, ids)
    for h in hooks:
        h.remove()
    s = ids.shape[1]
    causal = torch.tril(torch.ones(s, s, dtype=torch.int64))
    for l, chosen in sorted(captured.items()):
        tensors[f"indexer.{l}.keys"] = (torch.zeros(s, s, dtype=torch.int64).scatter(1, chosen, 1) * causal).contiguous()
    return tensors, margins


def deepseek_v32():
    """A tiny DeepSeek-V3.2 (DeepseekV32ForCausalLM): vocab 64, hidden 16, 3 layers of which the first is dense
    (first_k_dense_replace 1, intermediate 32) and two MoE: 8 routed experts of intermediate 8 in 4 groups keeping 2,
    top-3, one shared expert, routed scaling 2.5, a random e_score_correction_bias; MLA of 2 heads (q_lora_rank 16,
    kv_lora_rank 16, qk_nope 8, qk_rope 8, v 8) with DeepSeek-V3's YaRN (factor 40, mscale and mscale_all_dim 1,
    original context 64); and in every layer the lightning indexer of DSA: 8 heads of 16 (wq_b on the query latent,
    wk + LayerNorm k_norm, weights_proj), index_topk 5, so that on 16 and 24 tokens every query from the sixth on
    attends to 5 of its keys only. Random float32 weights (seed 56; o_proj small, 0.06, so that the queries whose
    selection FP8 rounding flips move the model no more than FP8 moves the other fixtures: the FP8 conversion must
    pass verify's default limits), saved by save_pretrained to verify/deepseek_v32/
    (the released checkpoint's names: self_attn.indexer.wq_b/wk/k_norm/weights_proj, experts.<e>.gate_proj...).
    Then, with eager attention and experts: verify/deepseek_v32.model.safetensors (16 tokens i * 7919 + 13 mod vocab)
    and verify/deepseek_v32-seq2.model.safetensors (24 seeded random tokens): logits, every hidden state, each MoE
    layer's router choice and each layer's indexer selection (indexer.<l>.keys); verify/deepseek_v32.safetensors:
    the MoE blocks on seeded hidden states."""
    from transformers import DeepseekV32Config, DeepseekV32ForCausalLM
    config = DeepseekV32Config(vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                               num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=2,
                               num_key_value_heads=2, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
                               qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8, num_experts_per_tok=3, n_group=4,
                               topk_group=2, n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                               index_topk=5, index_head_dim=16, index_n_heads=8, max_position_embeddings=2560,
                               rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                                "original_max_position_embeddings": 64, "beta_fast": 32.0,
                                                "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
                               tie_word_embeddings=False)
    def interleaved_indexer_rotary(m):  # the main attention's layout in the indexer (module global, indexer only)
        module = importlib.import_module(type(m.model.layers[0].self_attn.indexer).__module__)
        saved = module.apply_rotary_pos_emb
        module.apply_rotary_pos_emb = module.apply_rotary_pos_emb_interleave
        return lambda: setattr(module, "apply_rotary_pos_emb", saved)
    _dsa_fixture(config, DeepseekV32ForCausalLM, "deepseek_v32", seed=56,
                 changes=[("interleaved indexer rotary", interleaved_indexer_rotary)])


def glm_moe_dsa():
    """A tiny GLM-5 (GlmMoeDsaForCausalLM, model_type glm_moe_dsa): DeepSeek-V3.2's structure (see deepseek_v32) with
    GLM's two differences, the indexer's rotary in interleaved pairs (as the main attention's; transformers 5.23 always
    so, whatever config.json's indexer_rope_interleave says) and GLM-5.2's cross-layer sharing: indexer_types full,
    shared, full, so that layer 1 has no indexer and attends to the keys layer 0 chose. vocab 64, hidden 16, 3 layers
    of which the first is dense (first_k_dense_replace 1, intermediate 32), two MoE of 8 experts of intermediate 8 in
    one group (GLM-5's n_group 1), top-3, one shared expert, routed scaling 2.5; MLA of 2 heads (q_lora_rank 16,
    kv_lora_rank 16, qk_nope 8, qk_rope 8, v 8), default rotary with theta 1e6 (GLM-5's), rms_norm_eps 1e-5; the
    indexer 8 heads of 16 keeping index_topk 5. Random float32 weights (seed 60), files as for deepseek_v32:
    verify/glm_moe_dsa/, verify/glm_moe_dsa.model.safetensors (16 tokens), verify/glm_moe_dsa-seq2.model.safetensors
    (24 tokens) with indexer.<l>.keys for the shared layer too, verify/glm_moe_dsa.safetensors."""
    from transformers import GlmMoeDsaConfig, GlmMoeDsaForCausalLM
    from transformers.models.deepseek_v32.modeling_deepseek_v32 import DeepseekV32Indexer
    config = GlmMoeDsaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                             num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=2,
                             num_key_value_heads=2, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
                             qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8, num_experts_per_tok=3, n_group=1,
                             topk_group=1, n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                             index_topk=5, index_head_dim=16, index_n_heads=8, indexer_types=["full", "shared", "full"],
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                             tie_word_embeddings=False)
    assert config.rms_norm_eps == 1e-5
    def half_split_indexer_rotary(m):  # DeepSeek-V3.2's indexer (half-split rotary) in GLM's place
        indexer_class = type(m.model.layers[0].self_attn.indexer)
        saved = indexer_class.forward
        indexer_class.forward = DeepseekV32Indexer.forward
        return lambda: setattr(indexer_class, "forward", saved)
    def dense_shared_layer(m):  # layer 1 attending to all its keys instead of reusing layer 0's choice
        attention = m.model.layers[1].self_attn
        saved = attention.forward
        def forward(*args, prev_topk_indices=None, **kwargs):
            s = prev_topk_indices.shape[1]
            everything = torch.arange(s, dtype=prev_topk_indices.dtype).expand(1, s, s)
            return saved(*args, prev_topk_indices=everything, **kwargs)
        attention.forward = forward
        return lambda: None
    _dsa_fixture(config, GlmMoeDsaForCausalLM, "glm_moe_dsa", seed=60,
                 changes=[("half-split indexer rotary", half_split_indexer_rotary),
                          ("shared layer attending densely", dense_shared_layer)])


def _dsa_fixture(config, model_class, name, seed, changes):
    """Writes the model (random weights), its references on two sequences and its MoE blocks (see deepseek_v32), then
    checks that each of `changes` (name, function altering a loaded model and returning its undo) moves the logits."""
    torch.manual_seed(seed)
    model = model_class(config)
    g = torch.Generator().manual_seed(seed * 10)
    scales = {"embed_tokens": 1.0, "lm_head": 0.15, "experts": 0.2, "mlp.gate.weight": 0.5,
              "e_score_correction_bias": 0.05, "indexer": 0.4, "o_proj": 0.06, "self_attn": 0.15, "mlp.": 0.2}
    _redraw(model, g, scales)  # the indexer's LayerNorm has a bias too: centred on 0
    out_model = os.path.join(HERE, "verify", name)
    model.save_pretrained(out_model, safe_serialization=True)
    def load(config=None):
        m = model_class.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                        experts_implementation="eager", **({"config": config} if config else {}))
        m.eval()
        return m
    model = load()
    torch.set_grad_enabled(False)
    vocab = config.vocab_size
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(seed + 1))
    for ids, file in [(first, name), (second, name + "-seq2")]:
        tensors, margins = _dsa_selections(model, ids)
        print(f"{file}: smallest gap between kept and dropped index scores per layer:",
              {l: round(m, 4) for l, m in margins.items()})
        assert all(m > 1e-3 for m in margins.values()), margins
        save_file(tensors, os.path.join(HERE, "verify", file + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    blocks = run_blocks(model)
    save_file(blocks, os.path.join(HERE, "verify", name + ".safetensors"), metadata={"tokens": str(TOKENS)})
    # What the fixture must be able to tell apart: the sparse selection itself (dense attention: index_topk at
    # least the sequence), and the parts of the indexer that decide it, each moves the logits.
    reference = load_file(os.path.join(HERE, "verify", name + ".model.safetensors"))["logits"]
    def dense(c):
        c.index_topk = 4096
    def no_k_norm_bias(m):
        for l in m.model.layers:
            if l.self_attn.indexer is not None:
                l.self_attn.indexer.k_norm.bias.zero_()
        return lambda: None
    for what, config_change, change in [("dense attention (no selection)", dense, lambda m: (lambda: None)),
                                        ("no k_norm bias", None, no_k_norm_bias)] + [(w, None, c) for w, c in changes]:
        altered_config = type(config).from_pretrained(out_model)
        if config_change:
            config_change(altered_config)
        altered = load(altered_config)
        undo = change(altered)
        moved = (altered(input_ids=first).logits[0] - reference).abs().max().item()
        undo()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-2, what
    print(name + " written")
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
    first, second = _save_references(model, "qwen3_next", vocab, seed=54, routed=[0, 2], length=72)
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
    text_model = _TextView(model)
    first, second = _save_references(text_model, "qwen3_5_moe", 32, seed=56, routed=[0, 1, 2], length=72)
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


DEEPSEEK_V4_PUBLISHED = [("model.embed_tokens.weight", "embed.weight"), ("model.hc_head.hc_fn", "hc_head_fn"),
                         ("model.hc_head.hc_base", "hc_head_base"), ("model.hc_head.hc_scale", "hc_head_scale"),
                         ("model.norm.weight", "norm.weight")]


def deepseek_v4():
    """A tiny DeepSeek-V4 (DeepseekV4ForCausalLM): vocab 64, hidden 16, 3 layers, one of each attention kind --
    layer 0 sliding-window only (window 4), layer 1 compressed sparse attention (CSA: windows of 4 tokens, the
    overlapping Ca/Cb series, a lightning indexer of 8 heads of 8 keeping the top 2 compressed entries), layer 2
    heavily compressed attention (HCA: windows of 8); 2 query heads of 16 sharing one key=value head, rotary on the
    last 8 dims (interleaved pairs; theta 10000 on the sliding layer, the compress rope -- theta 160000, YaRN factor
    16 over 8 positions -- on the others), q_lora_rank 8, grouped output projection of 2 groups of rank 4, sinks;
    hyper-connections of 4 streams (20 Sinkhorn iterations) and the hyper head; layer 0 hash-routed (tid2eid),
    layers 1-2 top-2 of 8 experts (sqrtsoftplus scores, the correction bias for the choice, renormalised, times
    1.5), a shared expert, SwiGLU clamped at swiglu_limit 1 (10 in the release: 1 makes the clamp bite here);
    random float32 weights (seed 49). save_pretrained writes the release's own names under "model."; the file is
    then renamed to the release's names as published (no "model." prefix, embed.weight, hc_head_fn, norm.weight,
    head.weight) and loaded back by transformers, which must give the same parameters. Then with eager attention
    and experts, no cache: verify/deepseek_v4.model.safetensors (16 tokens i * 7919 + 13 mod vocab) and
    verify/deepseek_v4-seq2.model.safetensors (24 seeded random tokens): logits, every hidden state (the 4 streams
    of each layer's output, [tokens, 4, hidden]; the last after the hyper head and the norm) and each layer's
    router choice (hash and top-k)."""
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    config = DeepseekV4Config(
        vocab_size=64, hidden_size=16, moe_intermediate_size=8, num_hidden_layers=3, num_attention_heads=2,
        head_dim=16, q_lora_rank=8, o_groups=2, o_lora_rank=4, hc_mult=4, n_routed_experts=8, num_experts_per_tok=2,
        sliding_window=4, swiglu_limit=1.0, index_n_heads=8, index_head_dim=8, index_topk=2,
        partial_rotary_factor=0.5, max_position_embeddings=128, tie_word_embeddings=False,
        layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
        mlp_layer_types=["hash_moe", "moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        rope_parameters={"rope_type": "yarn", "factor": 16, "original_max_position_embeddings": 8,
                         "beta_fast": 32, "beta_slow": 1})
    torch.manual_seed(49)
    model = DeepseekV4ForCausalLM(config)
    g = torch.Generator().manual_seed(490)
    scales = {"indexer": 0.5, "embed_tokens": 1.0, "lm_head": 0.15, "experts": 0.3, "mlp.gate.weight": 0.5,
              "e_score_correction_bias": 0.05, "position_bias": 0.5, "sinks": 0.5, "attn_hc": 0.2, "ffn_hc": 0.2,
              "hc_head": 0.2, "self_attn": 0.15}
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("tid2eid"):
                p.copy_(torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(p.shape[0])]))
                continue
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                continue
            scale = next((v for k, v in scales.items() if k in name), None)
            if scale is None:
                continue  # rotary caches
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    out_model = os.path.join(HERE, "verify", "deepseek_v4")
    model.save_pretrained(out_model, safe_serialization=True)
    # The release's names: no "model." prefix, the embeddings, hyper head and final norm named as it names them.
    shard = os.path.join(out_model, "model.safetensors")
    renames = dict(DEEPSEEK_V4_PUBLISHED)
    saved = load_file(shard)
    published = {renames.get(n, n[len("model."):] if n.startswith("model.") else n): t for n, t in saved.items()}
    assert "head.weight" in published and all(not n.startswith("model.") for n in published)
    save_file(published, shard, metadata={"format": "pt"})
    original = dict(model.state_dict())
    model = DeepseekV4ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                  experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    loaded = model.state_dict()
    for n, t in original.items():
        assert torch.equal(loaded[n], t), f"{n} not loaded back from the release's names"
    vocab = config.vocab_size
    first = torch.tensor([[(i * 7919 + 13) % vocab for i in range(TOKENS)]])
    second = torch.randint(0, vocab, (1, 24), generator=torch.Generator().manual_seed(50))
    # The indexer's choice must not rest on a tie (equal scores would let any order pick).
    indexer = model.model.layers[1].self_attn.compressor.indexer
    scored = {}
    hook = indexer.scorer.register_forward_hook(lambda m, a, out: scored.update(out=out))
    for ids, name in [(first, "deepseek_v4"), (second, "deepseek_v4-seq2")]:
        captured = {}
        hooks = [l.mlp.gate.register_forward_hook(lambda m, a, out, i=i: captured.update({i: out}))
                 for i, l in enumerate(model.model.layers)]
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        for h in hooks:
            h.remove()
        scores = scored["out"][0]
        for t in range(ids.shape[1]):
            valid = scores[t, : (t + 1) // 4].sort(descending=True).values
            if valid.numel() > 2:
                assert valid[1] - valid[2] > 1e-4, f"indexer tie at token {t}: {valid}"
        tensors = {"token_ids": ids[0].to(torch.int64).contiguous(), "logits": out.logits[0].contiguous()}
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden.{i}"] = h[0].contiguous()
        for i, (_, weights, indices) in sorted(captured.items()):
            order = torch.argsort(indices, dim=-1)
            tensors[f"router.{i}.experts"] = torch.gather(indices, 1, order).to(torch.int64).contiguous()
            tensors[f"router.{i}.weights"] = torch.gather(weights.float(), 1, order).contiguous()
        save_file(tensors, os.path.join(HERE, "verify", name + ".model.safetensors"), metadata={"tokens": str(ids.shape[1])})
    hook.remove()
    # What the fixture must be able to tell apart: each mechanism, switched off, moves the logits.
    reference = load_file(os.path.join(HERE, "verify", "deepseek_v4.model.safetensors"))["logits"]
    def no_compressor(m, layer):
        attn = m.model.layers[layer].self_attn
        attn.compressor = None
    def no_overlap(m):
        # CSA without the previous window's Ca series: window w pools only its own Cb.
        compressor = m.model.layers[1].self_attn.compressor
        with torch.no_grad():
            compressor.position_bias[:, :16] = -1e9
    def no_hash(m):
        from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4TopKRouter
        block = m.model.layers[0].mlp
        router = DeepseekV4TopKRouter(m.config)
        router.weight.data.copy_(block.gate.weight.data)
        block.gate, block.is_hash = router, False
    def compress_rope_default(c):
        c.rope_parameters = {"main": c.rope_parameters["main"],
                             "compress": {"rope_type": "default", "rope_theta": 160000.0, "partial_rotary_factor": 0.5}}
    for what, config_change, change in [
            ("whole window", lambda c: setattr(c, "sliding_window", 64), lambda m: None),
            ("no CSA compressor", None, lambda m: no_compressor(m, 1)),
            ("no HCA compressor", None, lambda m: no_compressor(m, 2)),
            ("indexer keeps everything", None, lambda m: setattr(m.model.layers[1].self_attn.compressor.indexer, "index_topk", 64)),
            ("no CSA overlap", None, no_overlap),
            ("no sinks", None, lambda m: [l.self_attn.sinks.data.fill_(-1e9) for l in m.model.layers]),
            ("top-k instead of hash routing", None, no_hash),
            ("no correction bias", None, lambda m: [l.mlp.gate.e_score_correction_bias.zero_() for l in m.model.layers[1:]]),
            ("swiglu_limit 100", lambda c: setattr(c, "swiglu_limit", 100.0), lambda m: None),
            ("compress rope without YaRN", compress_rope_default, lambda m: None),
            ("one Sinkhorn iteration", lambda c: setattr(c, "hc_sinkhorn_iters", 1), lambda m: None)]:
        altered_config = DeepseekV4Config.from_pretrained(out_model)
        if config_change:
            config_change(altered_config)
        altered = DeepseekV4ForCausalLM.from_pretrained(out_model, config=altered_config, dtype=torch.float32,
                                                        attn_implementation="eager", experts_implementation="eager")
        change(altered)
        moved = (altered(input_ids=first, use_cache=False).logits[0] - reference).abs().max().item()
        print(f"{what}: logits move by {moved:.3g}")
        assert moved > 1e-3, what
    print("deepseek_v4 written")

def deepseek_v4_release():
    """verify/deepseek_v4-release/: the tiny DeepSeek-V4 (verify/deepseek_v4) stored as the release stores its weights:
    the attention projections (wq_a, wq_b, wkv, wo_a, wo_b, the indexer's wq_b) and the shared experts in FP8 E4M3 with
    a `<module>.scale` of UE8M0 block scales (F8_E8M0, 128x128 blocks: one here), each power of two the smallest that
    keeps the block within 448; the routed experts in FP4 E2M1, two codes a byte (the first in the low nibble) in an I8
    `.weight` of [rows, cols / 2], with a `.scale` of E8M0 exponents per group of 32 along the rows (one group here:
    16 or 8 columns), each the smallest power of two that keeps the group within 6, codes the nearest E2M1 value; the
    rest (embeddings, head, norms, routers, tid2eid, hyper-connections, compressors, the indexer's weights_proj) as
    they were. config.json gains the release's quantization_config (fp8, e4m3, ue8m0, [128, 128]) and expert_dtype
    fp4; an MTP layer `mtp.0.*` (a copy of layer 2's norms and experts, and an e_proj) is added as the release has
    one. transformers loads it on the CPU by dequantizing (its Fp8Dequantize: `.scale` read as weight_scale_inv, FP4
    unpacked), leaving mtp.* aside; its float32 forward on the fixture's first 16 tokens is
    verify/deepseek_v4-release.model.safetensors (logits, hidden states, router choices)."""
    import json
    import shutil
    from transformers import DeepseekV4ForCausalLM
    source = os.path.join(HERE, "verify", "deepseek_v4")
    out_model = os.path.join(HERE, "verify", "deepseek_v4-release")
    shutil.rmtree(out_model, ignore_errors=True)
    os.makedirs(out_model)
    weights = load_file(os.path.join(source, "model.safetensors"))
    fp8_modules = ("attn.wq_a", "attn.wq_b", "attn.wkv", "attn.wo_a", "attn.wo_b", "attn.indexer.wq_b", "ffn.shared_experts.")
    e2m1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])

    def power_of_two_at_least(x):
        return torch.exp2(torch.ceil(torch.log2(x.clamp(min=2.0 ** -126))))

    def fp8(w):
        scale = power_of_two_at_least(w.abs().max() / 448.0).reshape(1, 1)
        return (w / scale).to(torch.float8_e4m3fn), scale.to(torch.float8_e8m0fnu)

    def fp4(w):
        rows, cols = w.shape
        groups = (cols + 31) // 32
        scale = torch.stack([power_of_two_at_least(w[:, g * 32:(g + 1) * 32].abs().amax(dim=1) / 6.0) for g in range(groups)], dim=1)
        q = w / scale.repeat_interleave(32, dim=1)[:, :cols]
        codes = (q.unsqueeze(-1) - e2m1).abs().argmin(dim=-1).to(torch.uint8)
        packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)
        return packed.contiguous(), scale.to(torch.float8_e8m0fnu)

    stored = {}
    for name, w in weights.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module and ".ffn.experts." in name:
            stored[name], stored[module + ".scale"] = fp4(w)
        elif module and any(m in name for m in fp8_modules) and w.dim() == 2:
            stored[name], stored[module + ".scale"] = fp8(w)
        else:
            stored[name] = w
    # The MTP layer the release ships (not part of the main model).
    for name in [n for n in stored if n.startswith("layers.2.ffn.experts.") or n.startswith("layers.2.ffn_norm")]:
        stored["mtp.0." + name[len("layers.2."):]] = stored[name].clone()
    stored["mtp.0.e_proj.weight"] = torch.randn(16, 16, generator=torch.Generator().manual_seed(51))
    save_file(stored, os.path.join(out_model, "model.safetensors"), metadata={"format": "pt"})
    config = json.load(open(os.path.join(source, "config.json")))
    config["expert_dtype"] = "fp4"
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                     "scale_fmt": "ue8m0", "weight_block_size": [128, 128]}
    with open(os.path.join(out_model, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    model = DeepseekV4ForCausalLM.from_pretrained(out_model, dtype=torch.float32, attn_implementation="eager",
                                                  experts_implementation="eager")
    model.eval()
    torch.set_grad_enabled(False)
    # Dequantized as the release's format says: the FP4 expert rows are E2M1 values times their group's power of two.
    gate_up = model.model.layers[1].mlp.experts.gate_up_proj[3]
    w1 = stored["layers.1.ffn.experts.3.w1.weight"].view(torch.uint8)
    first = e2m1[(w1[0, 0] & 0xF).long()] * stored["layers.1.ffn.experts.3.w1.scale"][0, 0].float()
    assert gate_up.dtype == torch.float32 and gate_up[0, 0].item() == first.item(), (gate_up[0, 0], first)
    original = DeepseekV4ForCausalLM.from_pretrained(source, dtype=torch.float32)
    moved = (original.model.layers[1].mlp.experts.gate_up_proj - model.model.layers[1].mlp.experts.gate_up_proj).abs().max().item()
    assert 0 < moved < 0.5, moved
    ids = torch.tensor([[(i * 7919 + 13) % config["vocab_size"] for i in range(TOKENS)]])
    captured = {}
    hooks = [l.mlp.gate.register_forward_hook(lambda m, a, out, i=i: captured.update({i: out}))
             for i, l in enumerate(model.model.layers)]
    out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()
    tensors = {"token_ids": ids[0].to(torch.int64).contiguous(), "logits": out.logits[0].contiguous()}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden.{i}"] = h[0].contiguous()
    for i, (_, weights, indices) in sorted(captured.items()):
        order = torch.argsort(indices, dim=-1)
        tensors[f"router.{i}.experts"] = torch.gather(indices, 1, order).to(torch.int64).contiguous()
        tensors[f"router.{i}.weights"] = torch.gather(weights.float(), 1, order).contiguous()
    save_file(tensors, os.path.join(HERE, "verify", "deepseek_v4-release.model.safetensors"), metadata={"tokens": str(TOKENS)})
    # What transformers' dequantization made of each stored FP4 expert and FP8 shared expert, under the release's
    # names (its fused gate_up_proj rows are w1 then w3), for the bit-for-bit test of moetool's decoders.
    dequantized = {}
    for l in range(config["num_hidden_layers"]):
        mlp = model.model.layers[l].mlp
        half = mlp.experts.gate_up_proj.shape[1] // 2
        for e in range(mlp.experts.gate_up_proj.shape[0]):
            p = f"layers.{l}.ffn.experts.{e}."
            dequantized[p + "w1.weight"] = mlp.experts.gate_up_proj[e, :half].contiguous()
            dequantized[p + "w3.weight"] = mlp.experts.gate_up_proj[e, half:].contiguous()
            dequantized[p + "w2.weight"] = mlp.experts.down_proj[e].contiguous()
        for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            dequantized[f"layers.{l}.ffn.shared_experts.{ours}.weight"] = getattr(mlp.shared_experts, theirs).weight.contiguous()
    save_file(dequantized, os.path.join(HERE, "verify", "deepseek_v4-release.dequantized.safetensors"))
    print("deepseek_v4-release written")


if __name__ == "__main__":
    import sys
    only = {"gpt_oss": gpt_oss, "glm4_moe": glm4_moe, "minimax_m2": minimax_m2, "kimi_k2": kimi_k2, "llama4": llama4,
            "deepseek_v32": deepseek_v32, "glm_moe_dsa": glm_moe_dsa, "qwen3_next": qwen3_next, "qwen3_5_moe": qwen3_5_moe,
            "deepseek_v4": lambda: (deepseek_v4(), deepseek_v4_release())}
    if len(sys.argv) == 2 and sys.argv[1] in only:
        only[sys.argv[1]]()
    elif len(sys.argv) > 1:
        sys.exit(f"usage: moe_reference.py [{'|'.join(only)}]  (no argument: every fixture)")
    else:
        main()
        whole_models()
        yarn_variant()
        deepseek_32_experts()
        gpt_oss()
        glm4_moe()
        minimax_m2()
        kimi_k2()
        llama4()
        deepseek_v32()
        glm_moe_dsa()
        qwen3_next()
        qwen3_5_moe()
        deepseek_v4()
        deepseek_v4_release()
