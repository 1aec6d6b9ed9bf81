"""Shared fixtures of the parity tests (run by scripts/test.sh with the reference venv)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> str:
    return subprocess.run([str(ROOT / "scripts" / name)], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def ggufkit() -> str:
    """Path of the ggufkit binary under test (GGUFKIT_BIN, else the release build)."""
    path = os.environ.get("GGUFKIT_BIN") or str(ROOT / "target" / "release" / "ggufkit")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="session")
def llama_src() -> Path:
    """The pinned llama.cpp source tree (models/, convert_hf_to_gguf.py, ...)."""
    return Path(os.environ.get("GGUFKIT_LLAMA_SRC") or _script("ref-src.sh"))


@pytest.fixture(scope="session")
def vocab_ggufs(llama_src) -> list:
    """llama.cpp's own vocab GGUFs: real files written by llama.cpp's tools."""
    files = sorted((llama_src / "models").glob("ggml-vocab-*.gguf"))
    assert len(files) >= 10, "llama.cpp source tree has no vocab GGUFs"
    return files


def run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p
