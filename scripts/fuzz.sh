#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 120), seeding the
# corpora from the committed test inputs. Needs cargo-fuzz; libFuzzer needs a
# nightly compiler, or RUSTC_BOOTSTRAP=1 with the stable one (set here).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Crashes land in fuzz/artifacts/<target>/; copy each into
# tests/corpus/fuzz-regressions/<target>/ once fixed (tests/cli.rs and the unit
# tests replay them).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gguf_parse safetensors_header safetensors_index convert_json adapter_config imatrix_parse modelfile_check spm_pieces model_card)
fi
export RUSTC_BOOTSTRAP=1
seed() { # seed TARGET FILE...
    local d=fuzz/corpus/$1; shift
    mkdir -p "$d"
    for f in "$@"; do [ -f "$f" ] && cp "$f" "$d/$(sha1sum "$f" | cut -c1-16)"; done
    return 0
}
inputs=tests/corpus/inputs
seed gguf_parse tests/corpus/gguf/*.gguf "$inputs"/_shared/model-f32.gguf
seed safetensors_header "$inputs"/*/model*.safetensors "$inputs"/*/adapter/adapter_model.safetensors
seed safetensors_index "$inputs"/*/model.safetensors.index.json
seed imatrix_parse "$inputs"/*/imatrix
seed modelfile_check "$inputs"/mf_*/Modelfile formats/templates/*.Modelfile 2>/dev/null || true
mkdir -p fuzz/corpus/convert_json
for c in "$inputs"/*/config.json; do
    d=$(dirname "$c")
    { cat "$c"; printf '\377'; cat "$d/tokenizer.json" 2>/dev/null || true; printf '\377';
      cat "$d/tokenizer_config.json" 2>/dev/null || true; } > "fuzz/corpus/convert_json/$(basename "$d")"
done
mkdir -p fuzz/corpus/adapter_config
for a in "$inputs"/*/adapter; do
    [ -f "$a/adapter_config.json" ] && [ -f "$a/adapter_model.safetensors" ] || continue
    { cat "$a/adapter_config.json"; printf '\0'; cat "$a/adapter_model.safetensors"; } \
        > "fuzz/corpus/adapter_config/$(basename "$(dirname "$a")")"
done
(cd fuzz && cargo fuzz build -O)
for t in "${targets[@]}"; do
    echo "== $t ($secs s)"
    (cd fuzz && cargo fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 2>&1) |
        grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs|ERROR|crash-|SUMMARY" | tail -3
done
