"""Tokenizer metadata for a `diffusion-gemma` GGUF, in llama.cpp's `gemma4` dialect.

`add_tokenizer_metadata` reads a checkpoint's tokenizer.json (or, failing that, its sentencepiece
tokenizer.model) plus tokenizer_config.json / special_tokens_map.json / chat_template.jinja and writes
the keys listed in docs/tokenizer.md. `spm_to_tokenizer_json` turns a sentencepiece BPE model into the
tokenizer.json transformers' GemmaTokenizer would use (no dummy prefix, spaces as "▁", byte fallback).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from tokenizers import processors

from dgemma.errors import ConversionError
from dgemma.gguf import ValueType
from dgemma.tokenizer import (BYTE, CONTROL, EOS_IDS_KEY, END_OF_TURN_TOKENS, MODEL_NAME, NORMAL, SPECIAL_ID_KEYS,
                              UNKNOWN, USER_DEFINED, gemma_backend)

# named special tokens: tokenizer_config / special_tokens_map entry -> GGUF key (GemmaTokenizer's defaults)
NAMED_SPECIALS = {
    "bos_token": (SPECIAL_ID_KEYS["bos"], "<bos>"),
    "eos_token": (SPECIAL_ID_KEYS["eos_token_id"], "<eos>"),
    "unk_token": (SPECIAL_ID_KEYS["unk"], "<unk>"),
    "pad_token": (SPECIAL_ID_KEYS["pad"], "<pad>"),
    "mask_token": (SPECIAL_ID_KEYS["mask"], "<mask>"),
}
LLAMA_CPP_SCORE = -1000.0  # BPE ignores scores; llama.cpp's converter writes this placeholder
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


# -- sentencepiece models (read without protobuf) --------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ConversionError("truncated sentencepiece model")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(buf: bytes):
    """(field number, value) of one protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ConversionError(f"unsupported protobuf wire type {wire} in sentencepiece model")
        yield key >> 3, value


def read_spm_model(path: str | Path) -> tuple[list[tuple[str, float, int]], dict[int, object], dict[int, object]]:
    """Pieces (piece, score, sentencepiece type) plus the trainer and normalizer spec fields of a model."""
    pieces, trainer, normalizer = [], {}, {}
    try:
        for field, value in _fields(Path(path).read_bytes()):
            if field == 1:  # SentencePiece {1: piece, 2: score, 3: type (NORMAL=1 by default)}
                piece = dict(_fields(value))
                score = struct.unpack("<f", piece[2])[0] if 2 in piece else 0.0
                pieces.append((piece.get(1, b"").decode("utf-8"), score, piece.get(3, NORMAL)))
            elif field == 2:
                trainer = dict(_fields(value))
            elif field == 3:
                normalizer = dict(_fields(value))
    except (UnicodeDecodeError, struct.error, TypeError) as e:
        raise ConversionError(f"{path}: not a sentencepiece model ({e})") from None
    if not pieces:
        raise ConversionError(f"{path}: no pieces; not a sentencepiece model")
    return pieces, trainer, normalizer


def spm_to_tokenizer_json(spm_model_path: str | Path) -> str:
    """A Gemma-style tokenizer.json for a sentencepiece BPE model with byte fallback.

    Merges are every split of a normal piece into two normal pieces, ranked by the merged piece's score
    (higher first, then lower id): the order sentencepiece's BPE applies them in. Control and unknown
    pieces become special added tokens, user-defined pieces non-special ones; the post-processor
    prepends the model's BOS piece.
    """
    pieces, trainer, normalizer = read_spm_model(spm_model_path)
    problems = []
    if trainer.get(3, 1) != 2:
        problems.append("it is not a BPE model (train with model_type='bpe')")
    if not trainer.get(35, 0):
        problems.append("it has no byte fallback (byte_fallback=True)")
    if normalizer.get(3, 1):
        problems.append("it adds a dummy prefix (add_dummy_prefix=False)")
    if normalizer.get(4, 1):
        problems.append("it removes extra whitespace (remove_extra_whitespaces=False)")
    if normalizer.get(2):
        problems.append("it normalizes text (normalization_rule_name='identity')")
    if problems:
        raise ConversionError(f"{spm_model_path}: not a Gemma-style tokenizer: " + "; ".join(problems))
    tokens = [p for p, _, _ in pieces]
    normal = {p: (score, i) for i, (p, score, kind) in enumerate(pieces) if kind == NORMAL}
    ranked = sorted((-score, i, k, p[:k], p[k:]) for p, (score, i) in normal.items()
                    for k in range(1, len(p)) if p[:k] in normal and p[k:] in normal)
    added = [(i, kind != USER_DEFINED) for i, (_, _, kind) in enumerate(pieces)
             if kind in (UNKNOWN, CONTROL, USER_DEFINED)]
    unk = next((p for p, _, kind in pieces if kind == UNKNOWN), None)
    backend = gemma_backend(tokens, [(left, right) for *_, left, right in ranked], added, unk)
    bos_id = trainer.get(41, 1)  # trainer_spec.bos_id
    if bos_id < len(pieces) and pieces[bos_id][2] == CONTROL:
        bos = tokens[bos_id]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    return backend.to_str()


# -- checkpoint -> GGUF ------------------------------------------------------------------------------------
def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: {e}") from e


def _token_text(entry) -> str | None:
    return entry.get("content") if isinstance(entry, dict) else entry if isinstance(entry, str) else None


def _chat_template(hf_dir: Path, config: dict) -> str | None:
    template = config.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").is_file():
        template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None:
        template = (_read_json(hf_dir / "chat_template.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is not None and not isinstance(template, str):
        raise ConversionError(f"{hf_dir}: chat_template is neither a string nor a list of named templates")
    return template


def _vocabulary(tj: dict, where: Path) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id, llama.cpp token types and "left right" merges of a Gemma tokenizer.json."""
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ConversionError(f"{where}: not a BPE tokenizer with byte fallback (Gemma 4 style)")
    vocab = model.get("vocab") or {}
    by_id = {int(i): t for t, i in vocab.items()}
    added = {}
    for entry in tj.get("added_tokens") or []:
        by_id[int(entry["id"])] = entry["content"]
        added[int(entry["id"])] = bool(entry.get("special"))
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"{where}: token ids are not contiguous from 0")
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [(CONTROL if added[i] else USER_DEFINED) if i in added else BYTE if _BYTE_PIECE.fullmatch(t) else NORMAL
             for i, t in enumerate(tokens)]
    merges = []
    for m in model.get("merges") or []:
        pair = m.split(" ") if isinstance(m, str) else list(m)
        if len(pair) != 2 or any(" " in p or not p for p in pair):
            raise ConversionError(f"{where}: merge {m!r} cannot be stored as 'left right'")
        merges.append(f"{pair[0]} {pair[1]}")
    return tokens, types, merges


def _post_processor_adds_bos(tj: dict) -> bool:
    """Whether tokenizer.json's post-processor starts single sequences with a special token (transformers
    takes add_bos_token from there when a tokenizer.json exists)."""
    post = tj.get("post_processor") or {}
    for processor in post.get("processors", [post]):
        if processor.get("type") == "TemplateProcessing":
            single = processor.get("single") or []
            return bool(single) and "SpecialToken" in single[0]
    return False


def add_tokenizer_metadata(writer, hf_dir, generation_config: dict | None = None) -> bool:
    """Writes the tokenizer of checkpoint `hf_dir` into `writer`; False (nothing written) if it has none.

    The EOS set for generation comes from `generation_config["eos_token_id"]` (int or list) and is
    stored under `dgemma.eos_token_ids`.
    """
    hf_dir = Path(hf_dir)
    config = _read_json(hf_dir / "tokenizer_config.json") or {}
    if (hf_dir / "tokenizer.json").is_file():
        tj, where = _read_json(hf_dir / "tokenizer.json"), hf_dir / "tokenizer.json"
        add_bos = _post_processor_adds_bos(tj)
    elif (hf_dir / "tokenizer.model").is_file():
        tj, where = json.loads(spm_to_tokenizer_json(hf_dir / "tokenizer.model")), hf_dir / "tokenizer.model"
        add_bos = bool(config.get("add_bos_token", True))
    else:
        return False
    tokens, types, merges = _vocabulary(tj, where)
    special_map = _read_json(hf_dir / "special_tokens_map.json") or {}
    ids = {t: i for i, t in reversed(list(enumerate(tokens)))}

    special_ids = {}
    for name, (key, default) in NAMED_SPECIALS.items():
        text = _token_text(config.get(name)) or _token_text(special_map.get(name)) or default
        if text in ids:
            special_ids[key] = ids[text]
    eot = next((ids[t] for t in END_OF_TURN_TOKENS if t in ids), None)
    if eot is not None:
        special_ids[SPECIAL_ID_KEYS["end_of_turn"]] = eot
    eos_ids = (generation_config or {}).get("eos_token_id")
    if eos_ids is not None:
        eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
        if not eos_ids or any(not isinstance(i, int) or not 0 <= i < len(tokens) for i in eos_ids):
            raise ConversionError(f"generation_config eos_token_id {eos_ids} is not a list of token ids")
    template = _chat_template(hf_dir, config)

    writer.add_string("tokenizer.ggml.model", MODEL_NAME)
    writer.add_array("tokenizer.ggml.tokens", tokens, ValueType.STRING)
    writer.add_array("tokenizer.ggml.scores", [LLAMA_CPP_SCORE] * len(tokens), ValueType.FLOAT32)
    writer.add_array("tokenizer.ggml.token_type", types, ValueType.INT32)
    writer.add_array("tokenizer.ggml.merges", merges, ValueType.STRING)
    for key, token_id in special_ids.items():
        writer.add_u32(key, token_id)
    if eos_ids is not None:
        writer.add_array(EOS_IDS_KEY, eos_ids, ValueType.UINT32)
    writer.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    writer.add_bool("tokenizer.ggml.add_eos_token", bool(config.get("add_eos_token", False)))
    writer.add_bool("tokenizer.ggml.add_space_prefix", False)
    if template is not None:
        writer.add_string("tokenizer.chat_template", template)
    return True
