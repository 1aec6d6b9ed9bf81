#!/usr/bin/env bash
# Builds ggufkit and runs its main job on the bundled tiny model: a fine-tuned
# Hugging Face model (and its LoRA adapter) to a release directory with GGUF
# files and Ollama Modelfiles, ready for `ollama create`. No Python needed.
#
# Usage: scripts/demo.sh [RELEASE_DIR]   (default target/demo/release)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
bin=target/release/ggufkit
out=${1:-target/demo/release}
model=examples/tiny-mistral        # MistralForCausalLM, Llama-2 SentencePiece tokenizer, bf16 safetensors
adapter=examples/tiny-mistral-lora # PEFT LoRA adapter (r=4, q_proj/v_proj)

lora=(--lora "$adapter")

echo "== ggufkit pack $model ${lora[*]} --types Q4_K_M,Q8_0 -o $out"
"$bin" pack "$model" ${lora[@]+"${lora[@]}"} --types Q4_K_M,Q8_0 -o "$out" --force
echo
echo "== the release"
ls -l "$out"
echo
echo "== verify it: sha256sum -c SHA256SUMS"
(cd "$out" && sha256sum -c SHA256SUMS)
echo
echo "== $out/Modelfile.Q4_K_M (first lines)"
head -n 6 "$out/Modelfile.Q4_K_M"
echo "..."
echo
echo "== the GGUF's metadata and tensor types"
"$bin" inspect "$out"/*-Q4_K_M.gguf | head -n 20
echo
echo "== next: ollama create tiny-mistral -f $out/Modelfile.Q4_K_M && ollama run tiny-mistral"
