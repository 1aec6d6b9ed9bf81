#!/usr/bin/env python3
"""Generates tiny random-weight Hugging Face models of the architectures of
issue 15 (qwen3moe, gemma3, gemma2, phi3) for ggufkit's parity tests.

Run with the reference venv's python (scripts/ref-env.sh):

    gen_arch_fixtures.py --llama-src "$(scripts/ref-src.sh)" --out DIR [NAME ...]

Each config is the real config.json of the named model with its sizes shrunk
(hidden size, layers, heads, experts, ...); everything else (rope, norms,
softcapping, sliding windows, expert routing keys, tie_word_embeddings) is
kept. Tokenizers are real ones rebuilt from llama.cpp's vocab GGUFs
(scripts/gen_fixtures.py) or, for Gemma, a SentencePiece model trained here
with the `sentencepiece` package on a small fixed corpus, with Gemma's special
tokens as user-defined pieces.

Weights come from numpy's default_rng with a fixed seed per fixture: the output
is deterministic. DIR/NAME/.complete marks a finished fixture.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_fixtures as gf  # noqa: E402  (shared tokenizer writers and safetensors writer)

# Qwen3's tokenizer: Qwen2.5's plus the tool-response and thinking tokens.
QWEN3_EXTRA_ADDED = [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                     ("</think>", False)]

# --- configs: the real config.json of each model, sizes shrunk ------------------------------

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}

QWEN3_CODER_30B_A3B = {
    **QWEN3_30B_A3B, "max_position_embeddings": 262144, "rope_theta": 10000000.0, "max_window_layers": 28,
    "transformers_version": "4.51.0",
}

SHRINK_QWEN3MOE = {"head_dim": 32, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
                   "num_experts_per_tok": 2, "num_hidden_layers": 2, "max_window_layers": 2}

GEMMA_2_2B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
    "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
    "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
    "transformers_version": "4.42.4", "use_cache": True, "vocab_size": 256000,
}

GEMMA_3_1B = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
    "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144,
}

# google/gemma-3-4b-it: the text_config as transformers' Gemma3Config.to_dict() fills it in.
GEMMA_3_4B_TEXT = {
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
    "cache_implementation": "hybrid", "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2560, "initializer_range": 0.02,
    "intermediate_size": 10240, "max_position_embeddings": 131072, "model_type": "gemma3_text",
    "num_attention_heads": 8, "num_hidden_layers": 34, "num_key_value_heads": 4, "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "rope_theta": 1000000.0, "sliding_window": 1024, "sliding_window_pattern": 6, "use_cache": True,
    "vocab_size": 262208,
}
GEMMA_3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3", "text_config": GEMMA_3_4B_TEXT, "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}

# Gemma sizes shrunk; vocab_size is the trained SentencePiece model's size (GEMMA_VOCAB), plus padding rows.
# query_pre_attn_scalar stays equal to head_dim as in the real 2B/1B/4B models (llama.cpp scales
# attention by 1/sqrt(head_dim) and does not store it).
SHRINK_GEMMA = {"head_dim": 32, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                "num_key_value_heads": 2, "query_pre_attn_scalar": 32}
GEMMA_VOCAB = 1000

# microsoft/Phi-3.5-mini-instruct (long_factor / short_factor: 8 of the 48 values, for head_dim 16).
PHI_35_MINI = {
    "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
    "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "phi3", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
    "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
    "rope_scaling": {"long_factor": [1.0800000429153442, 1.1100000143051147, 1.340000033378601, 1.600000023841858,
                                     2.620000123977661, 3.2300000190734863, 7.220000267028809, 18.06999969482422],
                     "short_factor": [1.0, 1.0199999809265137, 1.0299999713897705, 1.0499999523162842,
                                      1.0499999523162842, 1.0699999332427979, 1.1100000143051147,
                                      1.1799999475479126],
                     "type": "longrope"},
    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.3", "use_cache": True, "vocab_size": 32064,
}

# microsoft/phi-4
PHI_4 = {
    "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 100257,
    "embd_pdrop": 0.0, "eos_token_id": 100265, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 17920, "max_position_embeddings": 16384, "model_type": "phi3", "num_attention_heads": 40,
    "num_hidden_layers": 40, "num_key_value_heads": 10, "original_max_position_embeddings": 16384,
    "pad_token_id": 100349, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 250000,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.47.0",
    "use_cache": True, "vocab_size": 100352,
}

SHRINK_PHI = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
              "num_hidden_layers": 2}

FIXTURES = {
    # Qwen3-30B-A3B, shrunk: bf16, one file.
    "qwen3moe-30b-a3b-bf16": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE}, dtype="bfloat16", shards=1, seed=31,
                                  vocab="qwen3", template="Qwen-Qwen3-0.6B.jinja"),
    # Qwen3-Coder-30B-A3B-Instruct, shrunk: bf16, three shards (experts of a block split across files).
    "qwen3moe-coder-bf16-sharded": dict(config={**QWEN3_CODER_30B_A3B, **SHRINK_QWEN3MOE, "num_hidden_layers": 3,
                                                "num_experts": 6, "num_experts_per_tok": 3},
                                        dtype="bfloat16", shards=3, seed=32, vocab="qwen3",
                                        template="Qwen3-Coder.jinja"),
    # f32 weights (the 1e-3 logit check), 128 experts of width 32.
    "qwen3moe-f32": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE, "num_experts": 16, "num_experts_per_tok": 4,
                                 "torch_dtype": "float32"},
                         dtype="float32", shards=1, seed=33, vocab="qwen3", template="Qwen-Qwen3-0.6B.jinja"),
    # Gemma-3-1B (Gemma3ForCausalLM), shrunk: 6 layers (5 sliding-window, 1 global), window 8, bf16.
    "gemma3-1b-bf16": dict(config={**GEMMA_3_1B, **SHRINK_GEMMA, "num_key_value_heads": 1, "num_hidden_layers": 6,
                                   "sliding_window": 8, "vocab_size": GEMMA_VOCAB + 24},
                           dtype="bfloat16", shards=1, seed=41, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    # The same in f16 (norm + 1 rounded to f16) and f32 (the tight logit check); the sliding-window
    # pattern stays 6 (llama.cpp hard-codes Gemma 3's).
    "gemma3-1b-f16": dict(config={**GEMMA_3_1B, **SHRINK_GEMMA, "num_hidden_layers": 3, "sliding_window": 8,
                                  "vocab_size": GEMMA_VOCAB, "torch_dtype": "float16"},
                          dtype="float16", shards=1, seed=42, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    "gemma3-1b-f32": dict(config={**GEMMA_3_1B, **SHRINK_GEMMA, "num_hidden_layers": 6, "sliding_window": 8,
                                  "vocab_size": GEMMA_VOCAB, "torch_dtype": "float32"},
                          dtype="float32", shards=1, seed=43, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    # Gemma-3-4B-it (Gemma3ForConditionalGeneration): text model with linear rope scaling, plus a
    # (tiny) vision tower and projector that conversion skips; bf16, two shards.
    "gemma3-4b-mm-bf16": dict(config={**GEMMA_3_4B, "text_config": {**GEMMA_3_4B_TEXT, **SHRINK_GEMMA,
                                                                      "num_hidden_layers": 2, "sliding_window": 8,
                                                                      "vocab_size": GEMMA_VOCAB + 8}},
                              dtype="bfloat16", shards=2, seed=44, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    # Gemma-2-2B, shrunk: f32 as published; both softcaps, window 8.
    "gemma2-2b-f32": dict(config={**GEMMA_2_2B, **SHRINK_GEMMA, "num_hidden_layers": 3, "sliding_window": 8,
                                  "vocab_size": GEMMA_VOCAB},
                          dtype="float32", shards=1, seed=45, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    "gemma2-2b-bf16": dict(config={**GEMMA_2_2B, **SHRINK_GEMMA, "num_hidden_layers": 2, "sliding_window": 8,
                                   "vocab_size": GEMMA_VOCAB, "torch_dtype": "bfloat16"},
                           dtype="bfloat16", shards=1, seed=46, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    # Phi-3.5-mini-instruct, shrunk: the real Phi-3 SentencePiece vocabulary with its added tokens, longrope.
    "phi3.5-mini-bf16": dict(config={**PHI_35_MINI, **SHRINK_PHI}, dtype="bfloat16", shards=1, seed=51,
                             vocab="phi3", template="microsoft-Phi-3.5-mini-instruct.jinja"),
    "phi3.5-mini-f32": dict(config={**PHI_35_MINI, **SHRINK_PHI, "torch_dtype": "float32"}, dtype="float32",
                            shards=1, seed=52, vocab="phi3", template="microsoft-Phi-3.5-mini-instruct.jinja"),
    # Phi-4, shrunk: GQA, no rope scaling, no sliding window, GPT2Tokenizer (a real BPE tokenizer: Llama 3's).
    "phi4-bf16-sharded": dict(config={**PHI_4, **SHRINK_PHI, "num_key_value_heads": 1, "vocab_size": 128256,
                                      "bos_token_id": 128000, "eos_token_id": 128009},
                              dtype="bfloat16", shards=2, seed=53, vocab="phi4",
                              template="microsoft-Phi-3.5-mini-instruct.jinja"),
    # Rows of 256 (the K-quant block): for quantize parity with llama-quantize on each architecture.
    "qwen3moe-k256-bf16": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE, "hidden_size": 256, "head_dim": 64,
                                       "intermediate_size": 768, "moe_intermediate_size": 256,
                                       "tie_word_embeddings": True},
                               dtype="bfloat16", shards=1, seed=35, vocab="qwen3", template="Qwen3-Coder.jinja"),
    # The forward-pass check (tests/moe_forward.rs): rows of 256, 16 experts with 4 used, and an
    # embedding (tied output) of std 1/16 so that logits have the spread of a real model's (std ~1)
    # and perplexity means something; llama-perplexity and llama-imatrix run on it.
    "qwen3moe-eval-bf16": dict(config={**QWEN3_30B_A3B, **SHRINK_QWEN3MOE, "hidden_size": 256, "head_dim": 64,
                                       "intermediate_size": 768, "moe_intermediate_size": 256,
                                       "num_experts": 16, "num_experts_per_tok": 4, "tie_word_embeddings": True},
                               dtype="bfloat16", shards=1, seed=36, vocab="qwen3", template="Qwen3-Coder.jinja",
                               embed_scale=1.0 / 16),
    "gemma3-k256-bf16": dict(config={**GEMMA_3_1B, "hidden_size": 256, "intermediate_size": 512,
                                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
                                     "query_pre_attn_scalar": 128,
                                     "num_hidden_layers": 2, "sliding_window": 8, "vocab_size": GEMMA_VOCAB},
                             dtype="bfloat16", shards=1, seed=47, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    "gemma2-k256-bf16": dict(config={**GEMMA_2_2B, "hidden_size": 256, "intermediate_size": 512,
                                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128,
                                     "query_pre_attn_scalar": 128,
                                     "num_hidden_layers": 2, "sliding_window": 8, "vocab_size": GEMMA_VOCAB,
                                     "torch_dtype": "bfloat16"},
                             dtype="bfloat16", shards=1, seed=48, vocab="gemma", template="google-gemma-2-2b-it.jinja"),
    "phi3.5-k256-bf16": dict(config={**PHI_35_MINI, **SHRINK_PHI, "hidden_size": 256, "intermediate_size": 512,
                                     "rope_scaling": {"type": "longrope",
                                                      "long_factor": [1.0 + 0.5 * i for i in range(32)],
                                                      "short_factor": [1.0 + 0.01 * i for i in range(32)]}},
                             dtype="bfloat16", shards=1, seed=54, vocab="phi3",
                             template="microsoft-Phi-3.5-mini-instruct.jinja"),
}

# Built only when named: a Qwen3-MoE shape with 128 experts (8 used) at half of Qwen3-30B-A3B's widths
# (hidden 1024, experts of 384), two blocks, untied: 1.2 GB of bf16 in 2 shards, for measuring
# conversion memory and time (BENCHMARKS.md).
LARGE_FIXTURES = {
    "qwen3moe-128x-large-bf16": dict(config={**QWEN3_30B_A3B, "num_hidden_layers": 2, "hidden_size": 1024,
                                             "moe_intermediate_size": 384, "intermediate_size": 3072,
                                             "num_attention_heads": 16, "num_key_value_heads": 4,
                                             "max_window_layers": 2},
                                     dtype="bfloat16", shards=2, seed=34, vocab="qwen3",
                                     template="Qwen-Qwen3-0.6B.jinja"),
}


# --- weights ---------------------------------------------------------------------------------

class Rng:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def mat(self, rows, cols, scale):
        return self.rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)

    def vec(self, n, center, scale):
        return (center + self.rng.standard_normal(n) * scale).astype(np.float32)


def attention(w, r: Rng, pre, c, qk_norm):
    h, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or h // nh
    w[pre + "self_attn.q_proj.weight"] = r.mat(nh * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.k_proj.weight"] = r.mat(nkv * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.v_proj.weight"] = r.mat(nkv * hd, h, 1.0 / np.sqrt(h))
    w[pre + "self_attn.o_proj.weight"] = r.mat(h, nh * hd, 1.0 / np.sqrt(nh * hd))
    if qk_norm:
        w[pre + "self_attn.q_norm.weight"] = r.vec(hd, 1.0, 0.1)
        w[pre + "self_attn.k_norm.weight"] = r.vec(hd, 1.0, 0.1)


def qwen3moe_weights(c: dict, seed: int, embed_scale: float = 1.0) -> dict[str, np.ndarray]:
    r = Rng(seed)
    h, V, E, ffe = c["hidden_size"], c["vocab_size"], c["num_experts"], c["moe_intermediate_size"]
    w = {"model.embed_tokens.weight": r.mat(V, h, embed_scale)}
    for i in range(c["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        w[pre + "input_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        w[pre + "post_attention_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        attention(w, r, pre, c, True)
        w[pre + "mlp.gate.weight"] = r.mat(E, h, 1.0 / np.sqrt(h))
        for x in range(E):
            w[pre + f"mlp.experts.{x}.gate_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
            w[pre + f"mlp.experts.{x}.up_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
            w[pre + f"mlp.experts.{x}.down_proj.weight"] = r.mat(h, ffe, 1.0 / np.sqrt(ffe))
    w["model.norm.weight"] = r.vec(h, 1.0, 0.1)
    if not c.get("tie_word_embeddings", False):
        w["lm_head.weight"] = r.mat(V, h, 1.0 / np.sqrt(h))
    return w


def gemma_weights(c: dict, seed: int, multimodal: bool) -> dict[str, np.ndarray]:
    """Gemma 2 / 3 text weights (norm weights near 0: Gemma's RMSNorm scales by 1 + w)."""
    r = Rng(seed)
    tc = c.get("text_config", c)
    h, V, ff = tc["hidden_size"], tc["vocab_size"], tc["intermediate_size"]
    qk_norm = c["architectures"][0].startswith("Gemma3")
    w = {"model.embed_tokens.weight": r.mat(V, h, 1.0)}
    for i in range(tc["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[pre + n + ".weight"] = r.vec(h, 0.0, 0.1)
        attention(w, r, pre, tc, False)
        if qk_norm:
            hd = tc["head_dim"]
            w[pre + "self_attn.q_norm.weight"] = r.vec(hd, 0.0, 0.1)
            w[pre + "self_attn.k_norm.weight"] = r.vec(hd, 0.0, 0.1)
        w[pre + "mlp.gate_proj.weight"] = r.mat(ff, h, 1.0 / np.sqrt(h))
        w[pre + "mlp.up_proj.weight"] = r.mat(ff, h, 1.0 / np.sqrt(h))
        w[pre + "mlp.down_proj.weight"] = r.mat(h, ff, 1.0 / np.sqrt(ff))
    w["model.norm.weight"] = r.vec(h, 0.0, 0.1)
    if multimodal:
        # Gemma3ForConditionalGeneration as transformers 4.50 saves it.
        w = {"language_model." + k: a for k, a in w.items()}
        w["vision_tower.vision_model.embeddings.patch_embedding.weight"] = r.mat(16, 12, 0.1)
        w["vision_tower.vision_model.post_layernorm.weight"] = r.vec(16, 1.0, 0.1)
        w["multi_modal_projector.mm_input_projection_weight"] = r.mat(16, h, 0.1)
        w["multi_modal_projector.mm_soft_emb_norm.weight"] = r.vec(16, 0.0, 0.1)
    return w


def phi3_weights(c: dict, seed: int) -> dict[str, np.ndarray]:
    r = Rng(seed)
    h, V, ff = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // nh
    w = {"model.embed_tokens.weight": r.mat(V, h, 1.0)}
    for i in range(c["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        w[pre + "input_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        w[pre + "post_attention_layernorm.weight"] = r.vec(h, 1.0, 0.1)
        w[pre + "self_attn.qkv_proj.weight"] = r.mat((nh + 2 * nkv) * hd, h, 1.0 / np.sqrt(h))
        w[pre + "self_attn.o_proj.weight"] = r.mat(h, nh * hd, 1.0 / np.sqrt(nh * hd))
        w[pre + "mlp.gate_up_proj.weight"] = r.mat(2 * ff, h, 1.0 / np.sqrt(h))
        w[pre + "mlp.down_proj.weight"] = r.mat(h, ff, 1.0 / np.sqrt(ff))
    w["model.norm.weight"] = r.vec(h, 1.0, 0.1)
    w["lm_head.weight"] = r.mat(V, h, 1.0 / np.sqrt(h))
    return w


def write_weights(d: Path, weights: dict[str, np.ndarray], dtype: str, shards: int):
    stored = {k: gf.to_dtype(a, dtype)[0] for k, a in weights.items()}
    dtype_name = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[dtype]
    if shards == 1:
        gf.write_st(d / "model.safetensors", stored, dtype_name)
        return
    names = sorted(stored)
    groups = [names[i::shards] for i in range(shards)]
    weight_map, total = {}, 0
    for s, g in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        gf.write_st(d / fname, {k: stored[k] for k in g}, dtype_name)
        for k in g:
            weight_map[k] = fname
            total += stored[k].nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_large_weights(d: Path, c: dict, seed: int, shards: int):
    """Like write_weights for a model too big to hold: one block per shard
    group, written tensor group by tensor group (bf16 only)."""
    r = Rng(seed)
    h, V, E, ffe = c["hidden_size"], c["vocab_size"], c["num_experts"], c["moe_intermediate_size"]
    L = c["num_hidden_layers"]
    weight_map, total = {}, 0
    files = [{} for _ in range(shards)]
    files[0]["model.embed_tokens.weight"] = None
    files[0]["model.norm.weight"] = None
    files[-1]["lm_head.weight"] = None
    for i in range(L):
        files[i * shards // L][f"model.layers.{i}"] = None
    for s, group in enumerate(files):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        t = {}
        for key in group:
            if key == "model.embed_tokens.weight":
                t[key] = r.mat(V, h, 1.0)
            elif key == "model.norm.weight":
                t[key] = r.vec(h, 1.0, 0.1)
            elif key == "lm_head.weight":
                t[key] = r.mat(V, h, 1.0 / np.sqrt(h))
            else:
                pre = key + "."
                t[pre + "input_layernorm.weight"] = r.vec(h, 1.0, 0.1)
                t[pre + "post_attention_layernorm.weight"] = r.vec(h, 1.0, 0.1)
                attention(t, r, pre, c, True)
                t[pre + "mlp.gate.weight"] = r.mat(E, h, 1.0 / np.sqrt(h))
                for x in range(E):
                    t[pre + f"mlp.experts.{x}.gate_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
                    t[pre + f"mlp.experts.{x}.up_proj.weight"] = r.mat(ffe, h, 1.0 / np.sqrt(h))
                    t[pre + f"mlp.experts.{x}.down_proj.weight"] = r.mat(h, ffe, 1.0 / np.sqrt(ffe))
        stored = {k: gf.to_dtype(a, "bfloat16")[0] for k, a in t.items()}
        del t
        gf.write_st(d / fname, stored, "BF16")
        for k, a in stored.items():
            weight_map[k] = fname
            total += a.nbytes
        del stored
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


# --- tokenizers ------------------------------------------------------------------------------

def write_qwen3_tokenizer(d: Path, src: Path, template: str, chktxt: str):
    gf.write_qwen2_tokenizer(d, src, template)
    assert gf.chk_hash(d / "tokenizer.json", chktxt) == gf.HASH_QWEN2, "qwen2 tokenizer hash mismatch"
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    tc = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    n = max(a["id"] for a in tj["added_tokens"]) + 1
    for k, (content, special) in enumerate(QWEN3_EXTRA_ADDED):
        a = gf.added_token(n + k, content, special)
        tj["added_tokens"].append(a)
        tc["added_tokens_decoder"][str(a["id"])] = {k2: a[k2] for k2 in ("content", "lstrip", "normalized", "rstrip",
                                                                          "single_word", "special")}
    tc["model_max_length"] = 131072
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]", "<start_of_turn>", "<end_of_turn>",
                 "<start_of_image>", "<end_of_image>"]


def gemma_corpus(src: Path) -> list[str]:
    """A fixed training corpus: llama.cpp's own documentation (deterministic for a pinned source)."""
    lines = []
    for f in sorted((src / "docs").rglob("*.md"))[:40]:
        lines.extend(x for x in f.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip())
    return lines


def write_gemma_tokenizer(d: Path, src: Path, template: str, vocab_size: int):
    """A Gemma-style SentencePiece model trained here: BPE with byte fallback, no dummy prefix,
    identity normalization, <pad>/<eos>/<bos>/<unk> as ids 0-3 and Gemma's turn tokens."""
    import io
    import sentencepiece as spm
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(gemma_corpus(src)), model_writer=out, model_type="bpe", vocab_size=GEMMA_VOCAB,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=["<mask>", "[@BOS@]"],
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"],
        byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, num_threads=1, character_coverage=1.0,
        minloglevel=2)
    (d / "tokenizer.model").write_bytes(out.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=out.getvalue())
    assert sp.vocab_size() <= vocab_size, (sp.vocab_size(), vocab_size)
    decoder = {}
    for t in GEMMA_SPECIAL:
        i = sp.piece_to_id(t)
        decoder[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True}
    tc = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": decoder,
          "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], "bos_token": "<bos>",
          "chat_template": template, "clean_up_tokenization_spaces": False, "eos_token": "<eos>",
          "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>", "sp_model_kwargs": {},
          "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>",
          "use_default_system_prompt": False}
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")
    sm = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
          "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    (d / "special_tokens_map.json").write_text(json.dumps(sm, indent=2), encoding="utf-8")


def write_phi3_tokenizer(d: Path, src: Path, template: str):
    """Phi-3's tokenizer: tokenizer.model (the SentencePiece pieces of llama.cpp's
    ggml-vocab-phi-3.gguf) and its added tokens in tokenizer_config.json."""
    v = gf.read_vocab_gguf(src / "models" / "ggml-vocab-phi-3.gguf")
    n_base = 32000
    pieces = b""
    # The vocab GGUF's types of <unk>, <s>, </s> are the converter's (control, control, user-defined);
    # tokenizer.model has them as SentencePiece defines them: unknown, control, control.
    types = [2, 3, 3] + v["types"][3:n_base]
    for t, sc, ty in zip(v["tokens"][:n_base], v["scores"][:n_base], types):
        body = gf.pb_bytes(1, t.encode("utf-8")) + gf.pb_float(2, sc)
        if ty != 1:
            body += gf.pb_int(3, ty)
        pieces += gf.pb_bytes(1, body)
    trainer = (gf.pb_int(3, 2) + gf.pb_int(4, n_base) + gf.pb_int(25, 1) + gf.pb_int(26, 1) + gf.pb_int(35, 1)
               + gf.pb_int(40, 0) + gf.pb_int(41, 1) + gf.pb_int(42, 2) + gf.pb_int(43, -1))
    normalizer = gf.pb_bytes(1, b"identity") + gf.pb_int(3, 1) + gf.pb_int(4, 0) + gf.pb_int(5, 1)
    (d / "tokenizer.model").write_bytes(pieces + gf.pb_bytes(2, trainer) + gf.pb_bytes(3, normalizer))
    decoder = {}
    for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>")):
        decoder[str(i)] = {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True}
    for i in range(n_base, len(v["tokens"])):
        t = v["tokens"][i]
        # Phi-3.5: <|endoftext|> and the role/end markers are special, the placeholders are not.
        special = not t.startswith("<|placeholder")
        decoder[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": special,
                           "single_word": False, "special": special}
    tc = {"add_bos_token": False, "add_eos_token": False, "added_tokens_decoder": decoder, "bos_token": "<s>",
          "chat_template": template, "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
          "legacy": False, "model_max_length": 131072, "pad_token": "<|endoftext|>", "padding_side": "left",
          "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
          "use_default_system_prompt": False}
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


def write_phi4_tokenizer(d: Path, src: Path, template: str, chktxt: str):
    gf.write_llama3_tokenizer(d, src, template)
    assert gf.chk_hash(d / "tokenizer.json", chktxt) == gf.HASH_LLAMA_BPE, "llama-bpe tokenizer hash mismatch"
    tc = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "GPT2Tokenizer"
    (d / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2), encoding="utf-8")


# --- driver ----------------------------------------------------------------------------------

def build(name: str, out: Path, src: Path, chktxt: str):
    p = FIXTURES.get(name) or LARGE_FIXTURES[name]
    d = out / name
    if (d / ".complete").is_file():
        return
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    c = p["config"]
    (d / "config.json").write_text(json.dumps(c, indent=2), encoding="utf-8")
    g = {"bos_token_id": c.get("bos_token_id"), "do_sample": True, "eos_token_id": c.get("eos_token_id"),
         "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": c.get("transformers_version")}
    (d / "generation_config.json").write_text(json.dumps(g, indent=2), encoding="utf-8")
    template = (src / "models" / "templates" / p["template"]).read_text(encoding="utf-8")
    if p["vocab"] == "qwen3":
        write_qwen3_tokenizer(d, src, template, chktxt)
    elif p["vocab"] == "phi3":
        write_phi3_tokenizer(d, src, template)
    elif p["vocab"] == "phi4":
        write_phi4_tokenizer(d, src, template, chktxt)
    elif p["vocab"] == "gemma":
        write_gemma_tokenizer(d, src, template, c.get("text_config", c)["vocab_size"])
    else:
        raise ValueError(p["vocab"])
    arch = c["architectures"][0]
    if name in LARGE_FIXTURES:
        write_large_weights(d, c, p["seed"], p["shards"])
    elif arch == "Qwen3MoeForCausalLM":
        write_weights(d, qwen3moe_weights(c, p["seed"], p.get("embed_scale", 1.0)), p["dtype"], p["shards"])
    elif arch == "Phi3ForCausalLM":
        write_weights(d, phi3_weights(c, p["seed"]), p["dtype"], p["shards"])
    elif arch.startswith("Gemma"):
        write_weights(d, gemma_weights(c, p["seed"], arch.endswith("ConditionalGeneration")), p["dtype"],
                      p["shards"])
    else:
        raise ValueError(arch)
    (d / ".complete").write_text("ok\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-src", required=True, type=Path, help="llama.cpp source tree (scripts/ref-src.sh)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("names", nargs="*", help=f"fixtures to build (default: all of {', '.join(FIXTURES)}; "
                                             f"also {', '.join(LARGE_FIXTURES)})")
    a = ap.parse_args()
    pt = Path(__file__).resolve().parent.parent / "formats" / "pretokenizers.json"
    chktxt = json.loads(pt.read_text(encoding="utf-8"))["chktxt"]
    a.out.mkdir(parents=True, exist_ok=True)
    for n in a.names or list(FIXTURES):
        if n not in FIXTURES and n not in LARGE_FIXTURES:
            sys.exit(f"unknown fixture {n}")
        build(n, a.out, a.llama_src, chktxt)
        print(a.out / n)


if __name__ == "__main__":
    main()
