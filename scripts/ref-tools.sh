#!/usr/bin/env bash
# Builds (once) llama.cpp's command-line tools from the pinned source
# (scripts/ref-src.sh) and prints the directory holding them:
# llama-perplexity, llama-imatrix, llama-gguf-split, llama-tokenize, llama-quantize.
#
# cmake comes from PyPI (a small venv in the cache); the build is cached under
# ${GGUFKIT_CACHE:-~/.cache/ggufkit}, keyed like the source by the pinned
# llama-cpp-python version. About 5 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$("$here/scripts/ref-src.sh")
version=$(sed -n 's/^llama-cpp-python==//p' "$here/tests/parity/requirements.txt")
cache=${GGUFKIT_CACHE:-$HOME/.cache/ggufkit}
dest="$cache/llama-tools-$version"
if [ -f "$dest/.complete" ]; then
  echo "$dest/bin"
  exit 0
fi
mkdir -p "$cache"
# One build at a time: a concurrent caller waits here, then finds the result.
exec 9>"$cache/.tools.lock"
flock 9
if [ -f "$dest/.complete" ]; then echo "$dest/bin"; exit 0; fi
cmake_venv="$cache/cmake-venv"
if [ ! -x "$cmake_venv/bin/cmake" ]; then
  rm -rf "$cmake_venv"
  python3 -m venv "$cmake_venv" >&2
  "$cmake_venv/bin/pip" install --quiet cmake >&2
fi
echo "ref-tools: building llama.cpp tools into $dest (a few minutes)" >&2
build="$dest.build"
rm -rf "$build" "$dest"
"$cmake_venv/bin/cmake" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
targets=(llama-perplexity llama-imatrix llama-gguf-split llama-tokenize llama-quantize)
"$cmake_venv/bin/cmake" --build "$build" --config Release -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  --target "${targets[@]}" >&2
mkdir -p "$dest/bin"
for t in "${targets[@]}"; do cp "$build/bin/$t" "$dest/bin/"; done
rm -rf "$build"
touch "$dest/.complete"
echo "$dest/bin"
