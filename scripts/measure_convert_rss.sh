#!/usr/bin/env bash
# Peak resident memory of `ggufkit convert` on a sharded bf16 model of a few
# hundred MB (scripts/gen_fixtures.py qwen2-large-bf16-sharded: 4 shards,
# 554 MB), for each output type. Usage: scripts/measure_convert_rss.sh [BIN]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/ggufkit}
PY=$("$here/scripts/ref-env.sh")
SRC=$("$here/scripts/ref-src.sh")
work=${TMPDIR:-/tmp}/ggufkit-rss
mkdir -p "$work"
"$PY" "$here/scripts/gen_fixtures.py" --llama-src "$SRC" --out "$work" qwen2-large-bf16-sharded >/dev/null
model="$work/qwen2-large-bf16-sharded"
size=$(cat "$model"/*.safetensors | wc -c)
echo "model: $model ($size bytes of safetensors)"
for t in auto f16 f32; do
  /usr/bin/time -f "%M %e" -o "$work/time.txt" "$bin" convert "$model" "$work/out-$t.gguf" --outtype "$t" -q
  read -r kb secs < "$work/time.txt"
  echo "--outtype $t: peak RSS $((kb / 1024)) MiB, ${secs}s, output $(stat -c %s "$work/out-$t.gguf") bytes"
  rm -f "$work/out-$t.gguf"
done
