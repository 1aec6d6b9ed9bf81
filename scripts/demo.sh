#!/usr/bin/env bash
# Builds ggufkit and runs its main job on the bundled tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
bin=target/release/ggufkit
out=${1:-target/demo}
mkdir -p "$out"
echo "== inspect the bundled model"
$bin inspect examples/tiny-llama.gguf --tensors
echo "== rewrite it with a new name (atomic write; tensors streamed)"
$bin edit examples/tiny-llama.gguf "$out/tiny-renamed.gguf" --set general.name=str:tiny-demo --quiet
echo "== compare the two files"
$bin diff examples/tiny-llama.gguf "$out/tiny-renamed.gguf" || true
