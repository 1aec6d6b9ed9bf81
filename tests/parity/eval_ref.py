"""llama.cpp's side of tests/eval_parity.rs and tests/imatrix_parity.rs.

  logits   GGUF IDS OUT.f32   llama.cpp (llama_cpp.Llama, logits_all, f32 KV cache, no flash
                              attention) evaluates the token ids (one sequence) and writes
                              the logits of every position as raw little-endian f32
  tokenize GGUF TEXT OUT      the text's ids as llama-perplexity / llama-imatrix get them
                              (common_tokenize(ctx, text, add_special=true, parse_special=false)),
                              written as a JSON array
"""
import json
import sys

import numpy as np
import llama_cpp


def logits(gguf, ids_path, out):
    ids = json.loads(open(ids_path, encoding="utf-8").read())
    n = len(ids)
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=n, n_batch=n, n_ubatch=n, logits_all=True, n_threads=2,
                          verbose=False, seed=1, type_k=0, type_v=0, flash_attn=False)
    llm.reset()
    llm.eval(ids)
    scores = np.asarray(llm.scores[:n], dtype=np.float32)
    scores.tofile(out)
    print(scores.shape[1])


def tokenize(gguf, text_path, out):
    llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
    text = open(text_path, "rb").read()
    ids = llm.tokenize(text, add_bos=True, special=False)
    open(out, "w", encoding="utf-8").write(json.dumps(ids))
    print(len(ids))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"logits": logits, "tokenize": tokenize}[cmd](*args)
