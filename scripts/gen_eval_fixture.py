#!/usr/bin/env python3
"""The fixture model of tests/eval_parity.rs and tests/imatrix_parity.rs:
scripts/gen_fixtures.py's generator with widths that are multiples of 256, so
that Q4_K_M really uses K-quant blocks (the shared fixtures are 64 wide and fall
back to legacy types), and a SentencePiece vocabulary of 32000 (BOS added), with
an output layer scaled so that the logits spread like a trained model's. Random weights, f32, llama architecture (normal RoPE, GQA).

usage: gen_eval_fixture.py --llama-src SRC --out DIR
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_fixtures  # noqa: E402

NAME = "llama-eval-256"
gen_fixtures.LARGE_FIXTURES[NAME] = dict(
    arch="LlamaForCausalLM", model_type="llama", vocab="llama-spm", dtype="float32", tied=False, shards=1,
    seed=11, vocab_size=32000, hidden=256, layers=2, heads=4, kv_heads=2, ff=512, head_dim=64,
    rope_theta=10000.0, eps=1e-5, ctx=4096, bias=False,
    # logits of std ~4, so that the distributions are peaked like a trained model's and the
    # KL-divergence statistics (same top p, RMS Δp) measure something
    lm_head_scale=4.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-src", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    pt = Path(__file__).resolve().parent.parent / "formats" / "pretokenizers.json"
    chktxt = json.loads(pt.read_text(encoding="utf-8"))["chktxt"]
    a.out.mkdir(parents=True, exist_ok=True)
    gen_fixtures.build(NAME, a.out, a.llama_src, chktxt)
    print(a.out / NAME)


if __name__ == "__main__":
    main()
