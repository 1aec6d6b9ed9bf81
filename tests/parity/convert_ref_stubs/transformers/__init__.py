"""A stand-in for the parts of transformers that convert_hf_to_gguf.py uses (see README.md)."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class AutoConfig:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        raise OSError("transformers stub: AutoConfig is not available; read config.json instead")


class _Fast:
    is_fast = True

    def __init__(self, path):
        self._t = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self.vocab_size = self._t.get_vocab_size(with_added_tokens=False)

    @property
    def vocab(self):
        return self._t.get_vocab(with_added_tokens=True)

    def get_vocab(self):
        return self.vocab

    @property
    def added_tokens_decoder(self):
        return dict(self._t.get_added_tokens_decoder())

    def get_added_vocab(self):
        return {t.content: i for i, t in sorted(self.added_tokens_decoder.items(), key=lambda x: x[0])}

    def encode(self, text, add_special_tokens=True, **kwargs):
        return self._t.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        return self._t.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, tok):
        return self._t.token_to_id(tok)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path, *args, **kwargs):
        return _Fast(path)
