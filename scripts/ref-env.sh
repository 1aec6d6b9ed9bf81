#!/usr/bin/env bash
# Creates (once) the Python reference environment used by the parity tests and
# prints the path of its python interpreter on stdout.
#
# The venv lives outside the clone, under ${GGUFKIT_CACHE:-~/.cache/ggufkit},
# keyed by the hash of tests/parity/requirements.txt, so a changed pin builds a
# new environment and an unchanged one is reused. llama-cpp-python compiles
# llama.cpp from source (about 10 minutes on 2 cores).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/tests/parity/requirements.txt"
key=$(sha256sum "$req" | cut -c1-16)
cache=${GGUFKIT_CACHE:-$HOME/.cache/ggufkit}
venv="$cache/refenv-$key"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ]; then
  echo "$venv/bin/python"
  exit 0
fi
mkdir -p "$cache"
# One build at a time: a concurrent caller waits here, then finds the result.
exec 9>"$cache/.refenv.lock"
flock 9
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ]; then echo "$venv/bin/python"; exit 0; fi
rm -rf "$venv.tmp"
echo "ref-env: building $venv (llama.cpp compiles from source; this takes a while)" >&2
python3 -m venv "$venv.tmp" >&2
"$venv.tmp/bin/pip" install --quiet --upgrade pip >&2
# Build llama.cpp with the CPU backend only; ggml-base (the quantizers) gets no -march flags.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
  "$venv.tmp/bin/pip" install --no-cache-dir -r "$req" >&2
"$venv.tmp/bin/python" -c "import llama_cpp, gguf, numpy, safetensors, tokenizers, sentencepiece, jinja2, pytest" >&2
touch "$venv.tmp/.complete"
# Moving a venv keeps bin/python working (it finds pyvenv.cfg beside it); only the
# console scripts' shebangs go stale, and the tests always run `python -m ...`.
rm -rf "$venv"
mv "$venv.tmp" "$venv"
echo "$venv/bin/python"
