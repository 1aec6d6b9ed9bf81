#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds the pinned reference
# environment (Python venv with llama.cpp compiled from source; cached under
# ~/.cache/ggufkit), then runs the Rust tests and the parity tests against
# real llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PY=$(scripts/ref-env.sh)
export GGUFKIT_REF_PYTHON="$PY"
export GGUFKIT_LLAMA_SRC=$(scripts/ref-src.sh)
export GGUFKIT_LLAMA_TOOLS=$(scripts/ref-tools.sh)
export GGUFKIT_PARITY=1
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
echo "== cargo test"
cargo test --locked
echo "== release build"
cargo build --release --locked
export GGUFKIT_BIN="$PWD/target/release/ggufkit"
echo "== parity tests against llama.cpp"
cd tests/parity
"$PY" -m pytest -q -p no:cacheprovider "$@"
cd ../..
echo "== disk: target $(du -sh target | cut -f1), $(df -h --output=avail . | tail -1 | tr -d ' ') free"
