"""The Gemma 4 tokenizer rebuilt from GGUF metadata alone.

A `diffusion-gemma` GGUF stores the tokenizer with llama.cpp's keys (`tokenizer.ggml.model = "gemma4"`,
tokens, token types, merges, special ids, `tokenizer.chat_template`). From those we rebuild exactly the
pipeline transformers' `GemmaTokenizer` builds: normalizer `" " -> "▁"`, BPE with byte fallback and
fused unknowns, added tokens matched on the raw text, decoder `"▁" -> " "` + byte fallback + fuse. The
`tokenizers` library runs it, so ids match transformers token for token. See docs/tokenizer.md.
"""

from __future__ import annotations

import functools
import numbers
import os
import re
from collections.abc import Iterable, Mapping

import numpy as np
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _Backend

from .errors import OutOfRangeError, TokenizerError

MODEL_NAME = "gemma4"
EOS_IDS_KEY = "dgemma.eos_token_ids"  # generation EOS set (generation_config.eos_token_id); no llama.cpp key exists

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(1, 7)

SPECIAL_ID_KEYS = {  # attribute -> GGUF key
    "bos": "tokenizer.ggml.bos_token_id",
    "eos_token_id": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "mask": "tokenizer.ggml.mask_token_id",
    "end_of_turn": "tokenizer.ggml.eot_token_id",
}
END_OF_TURN_TOKENS = ("<turn|>", "<end_of_turn>")  # looked up when a file has no eot_token_id
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gemma_backend(tokens: list[str], merges: list[tuple[str, str]], added: Iterable[tuple[int, bool]],
                  unk_token: str | None) -> _Backend:
    """Gemma's pipeline as transformers' GemmaTokenizer builds it, for `tokens` (by id), `merges` and
    `added` ((id, special) of the tokens matched on the raw text before normalization)."""
    # reversed so that a duplicated piece keeps its first id
    vocab = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))
    backend = _Backend(models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, fuse_unk=True,
                                  byte_fallback=True, dropout=None))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_tokens([AddedToken(tokens[i], special=special, normalized=False) for i, special in added])
    return backend


def _bad_merge(merges: list[str], vocab: set[str]) -> str | None:
    """Describes the first merge that is not "left right" over known pieces (for error messages)."""
    for n, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2 or not all(parts):
            return f"merge {n} {m!r} is not two pieces separated by one space"
        if parts[0] not in vocab or parts[1] not in vocab or parts[0] + parts[1] not in vocab:
            return f"merge {n} {m!r} names a piece that is not in the vocabulary"
    return None


def _int_array(kv: Mapping, key: str) -> list[int] | None:
    """The integer array under `key` (None when absent); anything else under it is a TokenizerError."""
    value = kv.get(key)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.integer):
        return value.tolist()  # how dgemma.gguf reads a numeric array
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise TokenizerError(f"{key} is not an integer array")
    return [int(v) for v in value]


def _special_id(kv: Mapping, key: str, n_vocab: int) -> int | None:
    value = kv.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < n_vocab:
        raise TokenizerError(f"{key} = {value!r} is not a token id below {n_vocab}")
    return int(value)


class Tokenizer:
    """Encode / decode / chat for one GGUF. Build with `from_gguf` or `from_gguf_metadata`."""

    def __init__(self, kv: Mapping):
        model = kv.get("tokenizer.ggml.model")
        if model != MODEL_NAME:
            raise TokenizerError(f"tokenizer.ggml.model is {model!r}; only {MODEL_NAME!r} (Gemma 4 BPE) is supported")
        tokens = kv.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens or set(map(type, tokens)) != {str}:
            raise TokenizerError("tokenizer.ggml.tokens is missing or not a non-empty string array")
        n = len(tokens)
        types = _int_array(kv, "tokenizer.ggml.token_type")
        types = [NORMAL] * n if types is None else types
        if len(types) != n:
            raise TokenizerError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
        if types and (min(types) < NORMAL or max(types) > BYTE):
            raise TokenizerError("tokenizer.ggml.token_type holds a value outside 1..6")
        scores = kv.get("tokenizer.ggml.scores")
        if scores is not None and not (isinstance(scores, list) or isinstance(scores, np.ndarray) and scores.ndim == 1):
            raise TokenizerError("tokenizer.ggml.scores is not an array")
        if scores is not None and len(scores) != n:
            raise TokenizerError(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
        merges = kv.get("tokenizer.ggml.merges")
        if not isinstance(merges, list) or set(map(type, merges)) - {str}:
            raise TokenizerError("tokenizer.ggml.merges is missing or not a string array")

        for attr, key in SPECIAL_ID_KEYS.items():
            setattr(self, attr, _special_id(kv, key, n))
        if self.end_of_turn is None:
            self.end_of_turn = next((tokens.index(t) for t in END_OF_TURN_TOKENS if t in tokens), None)
        eos_ids = _int_array(kv, EOS_IDS_KEY)
        if eos_ids is not None:
            if not eos_ids or any(not 0 <= i < n for i in eos_ids):
                raise TokenizerError(f"{EOS_IDS_KEY} = {eos_ids} is empty or holds ids outside the vocabulary")
        #: token ids that end generation (generation_config's EOS list, else the EOS token); add
        #: `end_of_turn` when generating from chat messages.
        self.eos: tuple[int, ...] = tuple(eos_ids or ([] if self.eos_token_id is None else [self.eos_token_id]))
        self.add_bos: bool = bool(kv.get("tokenizer.ggml.add_bos_token", True))
        self.chat_template: str | None = kv.get("tokenizer.chat_template")
        self.tokens = tokens
        self.token_types = types

        # CONTROL / UNKNOWN tokens are special added tokens, USER_DEFINED ones non-special added tokens
        added = [(i, t != USER_DEFINED) for i, t in enumerate(types) if t in (UNKNOWN, CONTROL, USER_DEFINED)]
        self._special = frozenset(i for i, special in added if special)
        unk_token = None if self.unk is None else tokens[self.unk]
        pairs = [tuple(m.split(" ")) for m in merges]
        try:
            self._backend = gemma_backend(tokens, pairs, added, unk_token)
        except Exception as e:
            detail = _bad_merge(merges, set(tokens)) or str(e)
            raise TokenizerError(f"cannot build the BPE tokenizer: {detail}") from None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_gguf_metadata(cls, kv: Mapping) -> "Tokenizer":
        return cls(kv)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> "Tokenizer":
        from .gguf import GGUFFile

        with GGUFFile(path) as f:
            return cls(f.kv)

    # -- vocabulary --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_to_piece(self, token_id: int) -> str:
        """The vocabulary entry of `token_id` (spaces shown as "▁", bytes as "<0xXX>")."""
        self._check(token_id)
        return self.tokens[token_id]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def _check(self, token_id: int) -> None:
        if not 0 <= token_id < len(self.tokens):
            raise OutOfRangeError(f"token id {token_id} is outside the vocabulary (size {len(self.tokens)})")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens as strings (the variables chat templates see, e.g. `bos_token`)."""
        named = {"bos_token": self.bos, "eos_token": self.eos_token_id, "unk_token": self.unk,
                 "pad_token": self.pad, "mask_token": self.mask}
        return {name: self.tokens[i] for name, i in named.items() if i is not None}

    # -- encode / decode -----------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        try:
            ids = self._backend.encode(text, add_special_tokens=False).ids
        except (TypeError, UnicodeError) as e:
            raise TokenizerError(f"cannot encode {text[:40]!r}: {e}") from None
        if add_bos:
            if self.bos is None:
                raise TokenizerError("add_bos requested but the GGUF has no tokenizer.ggml.bos_token_id")
            ids.insert(0, self.bos)
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= len(self.tokens)):
            self._check(min(ids) if min(ids) < 0 else max(ids))
        return self._backend.decode(ids, skip_special_tokens=skip_special)

    def stream_decoder(self, skip_special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)

    @functools.cached_property
    def _pieces(self) -> tuple[list[int], list[str]]:
        """Per id: the byte of a byte-fallback piece (else -1) and the decoded text of other pieces."""
        return ([int(m.group(1), 16) if (m := _BYTE_PIECE.fullmatch(t)) else -1 for t in self.tokens],
                [t.replace("▁", " ") for t in self.tokens])

    # -- chat ----------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """Renders `tokenizer.chat_template` like transformers' apply_chat_template(tokenize=False)."""
        from .chat import render_chat

        if not self.chat_template:
            raise TokenizerError("this GGUF has no tokenizer.chat_template, so it cannot format chat messages; "
                                 "pass a plain prompt instead")
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           template_name="the file's tokenizer.chat_template", **{**self.special_tokens_map, **kwargs})


class StreamDecoder:
    """Incremental detokenization: the concatenated results of `push` and `flush` equal
    `decode(all ids)`. A run of byte-fallback pieces is held back until a non-byte piece (or `flush`)
    ends it, because the run decodes as a whole: valid UTF-8 gives its characters, anything else one
    U+FFFD per byte (the `tokenizers` ByteFallback rule). Other pieces decode on their own."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._pending = bytearray()

    def push(self, ids: Iterable[int]) -> str:
        tok, out = self._tok, []
        byte_of, text_of = tok._pieces
        for i in ids:
            tok._check(i)
            if self._skip and i in tok._special:
                continue
            if byte_of[i] >= 0:
                self._pending.append(byte_of[i])
            else:
                out.append(self.flush())
                out.append(text_of[i])
        return "".join(out)

    def flush(self) -> str:
        """Ends the current byte run (call at the end of generation)."""
        if not self._pending:
            return ""
        try:
            text = self._pending.decode("utf-8")
        except UnicodeDecodeError:
            text = "\ufffd" * len(self._pending)
        self._pending.clear()
        return text
