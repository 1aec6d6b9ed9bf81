#!/usr/bin/env bash
# Fetches (once) the llama.cpp source tree vendored in the pinned llama-cpp-python
# sdist and prints its path. Tests read llama.cpp's own vocab GGUFs
# (models/ggml-vocab-*.gguf), chat templates (models/templates) and
# convert_hf_to_gguf.py from it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^llama-cpp-python==//p' "$here/tests/parity/requirements.txt")
cache=${GGUFKIT_CACHE:-$HOME/.cache/ggufkit}
dest="$cache/llama-cpp-python-$version-src"
if [ -f "$dest/.complete" ]; then
  echo "$dest/vendor/llama.cpp"
  exit 0
fi
mkdir -p "$cache"
# One build at a time: a concurrent caller waits here, then finds the result.
exec 9>"$cache/.src.lock"
flock 9
if [ -f "$dest/.complete" ]; then echo "$dest/vendor/llama.cpp"; exit 0; fi
tmp=$(mktemp -d "$cache/src.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" "llama-cpp-python==$version" >&2
tar -xzf "$tmp"/llama_cpp_python-"$version".tar.gz -C "$tmp"
rm -rf "$dest"
mv "$tmp/llama_cpp_python-$version" "$dest"
touch "$dest/.complete"
echo "$dest/vendor/llama.cpp"
