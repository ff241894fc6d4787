"""Tokenizer and chat template from GGUF metadata alone, checked token for token against transformers.

A small sentencepiece BPE (byte fallback, Gemma 4 special tokens) is trained in the session, turned into
a checkpoint (tokenizer.json + tokenizer_config.json + chat_template.jinja) and a metadata-only GGUF;
`Tokenizer.from_gguf` must then agree with transformers' AutoTokenizer on the checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import pytest

sentencepiece = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_corpus import (GEMMA4_STYLE_CHAT_TEMPLATE, parity_corpus, synthetic_vocabulary,  # noqa: E402
                              training_lines)

from dgemma import cli_tokenize  # noqa: E402
from dgemma.convert import tokenizer as convert_tokenizer  # noqa: E402
from dgemma.convert.gguf_writer import GGUFWriter  # noqa: E402
from dgemma.errors import ConversionError, OutOfRangeError, TokenizerError  # noqa: E402
from dgemma.gguf import GGUFFile, ValueType  # noqa: E402
from dgemma.tokenizer import BYTE, CONTROL, NORMAL, USER_DEFINED, Tokenizer  # noqa: E402

CONTROL_SYMBOLS = ["<mask>", "<|turn>", "<turn|>", "<|think|>"]
USER_SYMBOLS = ["<|channel>", "<channel|>"]
GENERATION_CONFIG = {"eos_token_id": [1, 6]}  # <eos>, <turn|>
TOKENIZER_CONFIG = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
                    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
                    "clean_up_tokenization_spaces": False, "padding_side": "left"}


def train_spm(path: Path, **overrides) -> Path:
    args = dict(model_type="bpe", vocab_size=3000, byte_fallback=True, character_coverage=0.995,
                normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
                split_digits=True, allow_whitespace_only_pieces=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                control_symbols=CONTROL_SYMBOLS, user_defined_symbols=USER_SYMBOLS, num_threads=1,
                max_sentence_length=100_000, minloglevel=2)
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(training_lines()), model_writer=buf,
                                             **{**args, **overrides})
    path.write_bytes(buf.getvalue())
    return path


def write_gguf(path: Path, hf_dir: Path, generation_config=GENERATION_CONFIG) -> Path:
    writer = GGUFWriter(path)
    assert convert_tokenizer.add_tokenizer_metadata(writer, hf_dir, generation_config)
    writer.finish()
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizer")


@pytest.fixture(scope="session")
def spm_model(workdir) -> Path:
    return train_spm(workdir / "tokenizer.model")


@pytest.fixture(scope="session")
def checkpoint(workdir, spm_model) -> Path:
    ckpt = workdir / "checkpoint"
    ckpt.mkdir()
    (ckpt / "tokenizer.json").write_text(convert_tokenizer.spm_to_tokenizer_json(spm_model), encoding="utf-8")
    (ckpt / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    (ckpt / "chat_template.jinja").write_text(GEMMA4_STYLE_CHAT_TEMPLATE)
    return ckpt


@pytest.fixture(scope="session")
def gguf_path(workdir, checkpoint) -> Path:
    return write_gguf(workdir / "tokenizer.gguf", checkpoint)


@pytest.fixture(scope="session")
def ours(gguf_path) -> Tokenizer:
    return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="session")
def ref(checkpoint):
    return transformers.AutoTokenizer.from_pretrained(checkpoint)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return parity_corpus()


@pytest.fixture(scope="session")
def ours_spm_only(workdir, spm_model) -> Tokenizer:
    ckpt = workdir / "spm_only"
    ckpt.mkdir()
    (ckpt / "tokenizer.model").write_bytes(spm_model.read_bytes())
    return Tokenizer.from_gguf(write_gguf(workdir / "spm_only.gguf", ckpt))


# -- conversion ------------------------------------------------------------------------------------
def test_metadata_uses_llama_cpp_keys(gguf_path, checkpoint):
    with GGUFFile(gguf_path) as f:
        kv = f.kv
        assert f.kv_types["tokenizer.ggml.token_type"] == (ValueType.ARRAY, ValueType.INT32)
    tj = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = kv["tokenizer.ggml.tokens"]
    assert kv["tokenizer.ggml.model"] == "gemma4" and len(tokens) == 3000
    assert len(kv["tokenizer.ggml.scores"]) == len(kv["tokenizer.ggml.token_type"]) == 3000
    assert len(kv["tokenizer.ggml.merges"]) == len(tj["model"]["merges"])
    types = dict(zip(tokens, kv["tokenizer.ggml.token_type"].tolist()))
    assert [types[t] for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>")] == [CONTROL] * 6
    assert types["<|channel>"] == USER_DEFINED and types["<0x0A>"] == BYTE and types["▁the"] == NORMAL
    assert [kv[f"tokenizer.ggml.{k}_token_id"] for k in ("padding", "eos", "bos", "unknown", "mask", "eot")] == \
        [0, 1, 2, 3, 4, 6]
    assert kv["dgemma.eos_token_ids"].tolist() == [1, 6]
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_space_prefix"] is False
    assert kv["tokenizer.chat_template"] == GEMMA4_STYLE_CHAT_TEMPLATE


def test_no_tokenizer_writes_nothing(tmp_path):
    writer = GGUFWriter(tmp_path / "x.gguf")
    assert convert_tokenizer.add_tokenizer_metadata(writer, tmp_path, None) is False
    assert writer._kv == []


def test_spm_converter_rejects_non_gemma_models(workdir):
    model = train_spm(workdir / "dummy_prefix.model", add_dummy_prefix=True, vocab_size=500)
    with pytest.raises(ConversionError, match="dummy prefix"):
        convert_tokenizer.spm_to_tokenizer_json(model)


# -- encode / decode parity ----------------------------------------------------------------------------
def test_encode_parity(ours, ref, corpus):
    assert len(corpus) >= 5000
    mismatches = [s for s in corpus if ours.encode(s) != ref.encode(s, add_special_tokens=False)]
    assert mismatches == []
    assert all(ours.encode(s, add_bos=True) == ref.encode(s) for s in corpus[:500])


def test_decode_parity_and_round_trip(ours, ref, corpus):
    round_trips = 0
    for s in corpus:
        ids = ours.encode(s)
        assert ours.decode(ids) == ref.decode(ids)
        assert ours.decode(ids, skip_special=True) == ref.decode(ids, skip_special_tokens=True)
        if ref.decode(ids) == s:
            round_trips += 1
            assert ours.decode(ids) == s
    assert round_trips > 0.95 * len(corpus)  # a literal "▁" in the text decodes as a space


def test_random_ids_decode_like_reference(ours, ref):
    rng = random.Random(5)
    byte_ids = [i for i, t in enumerate(ours.tokens) if t.startswith("<0x")]
    for _ in range(300):
        ids = [rng.choice(byte_ids) if rng.random() < 0.6 else rng.randrange(ours.vocab_size)
               for _ in range(rng.randint(1, 40))]
        assert ours.decode(ids) == ref.decode(ids)
        assert ours.decode(ids, skip_special=True) == ref.decode(ids, skip_special_tokens=True)


def test_special_tokens(ours, ref):
    assert (ours.bos, ours.eos_token_id, ours.unk, ours.pad, ours.mask) == \
        (ref.bos_token_id, ref.eos_token_id, ref.unk_token_id, ref.pad_token_id, ref.mask_token_id)
    assert ours.end_of_turn == ref.convert_tokens_to_ids("<turn|>") == 6
    assert ours.eos == (1, 6) and ours.add_bos and ours.vocab_size == len(ref)
    assert ours.encode("<|turn>model\n<turn|>") == ref.encode("<|turn>model\n<turn|>", add_special_tokens=False)
    assert ours.encode("<|turn>")[0] == 5 and ours.token_to_piece(5) == "<|turn>"
    assert ours.is_special(5) and not ours.is_special(ours.encode("<|channel>")[0])
    ids = ours.encode("<bos>a<|channel>b<turn|>")
    assert ours.decode(ids, skip_special=True) == "a<|channel>b"
    with pytest.raises(OutOfRangeError):
        ours.decode([ours.vocab_size])
    with pytest.raises(OutOfRangeError):
        ours.token_to_piece(-1)
    with pytest.raises(TokenizerError):
        ours.encode("lone \ud800 surrogate")


def test_spm_only_checkpoint(ours, ours_spm_only, spm_model, corpus):
    """tokenizer.model alone gives the same tokenizer, which encodes like sentencepiece itself
    (except that control-token strings in the text become control tokens)."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    assert ours_spm_only.tokens == ours.tokens and ours_spm_only.eos == ours.eos
    for s in corpus:
        ids = ours_spm_only.encode(s)
        assert ids == ours.encode(s)
        if not any(c in s for c in CONTROL_SYMBOLS + ["<pad>", "<eos>", "<bos>", "<unk>"]):
            assert ids == sp.encode(s)


# -- streaming -----------------------------------------------------------------------------------------
def _stream(tok: Tokenizer, ids: list[int], rng: random.Random, skip_special=False) -> list[str]:
    decoder, chunks, pos = tok.stream_decoder(skip_special), [], 0
    while pos < len(ids):
        step = rng.randint(1, 4)
        chunks.append(decoder.push(ids[pos:pos + step]))
        pos += step
    chunks.append(decoder.flush())
    return chunks


def test_stream_decoder_matches_decode(ours, corpus):
    rng = random.Random(7)
    for s in corpus[::5]:
        ids = ours.encode(s)
        for skip in (False, True):
            chunks = _stream(ours, ids, rng, skip)
            assert "".join(chunks) == ours.decode(ids, skip_special=skip)
            if "\ufffd" not in s:
                assert not any("\ufffd" in c for c in chunks)  # no character split across chunks


def test_stream_decoder_byte_fallback(ours, ref):
    rng = random.Random(11)
    text = "𝐀😀中" + "\U0010FFFF"
    ids = ours.encode(text)
    assert all(ours.token_to_piece(i).startswith("<0x") for i in ids)  # all byte fallback
    for _ in range(50):
        chunks = _stream(ours, ids, rng)
        assert "".join(chunks) == text and all(c in text for c in chunks)
        decoder = ours.stream_decoder()
        assert [decoder.push([i]) for i in ids] == [""] * len(ids) and decoder.flush() == text
    byte_ids = [i for i, t in enumerate(ours.tokens) if t.startswith("<0x")]
    for _ in range(200):  # invalid UTF-8 runs, interleaved with normal pieces
        ids = [rng.choice(byte_ids) if rng.random() < 0.7 else rng.randrange(ours.vocab_size) for _ in range(30)]
        assert "".join(_stream(ours, ids, rng)) == ours.decode(ids) == ref.decode(ids)


# -- chat ----------------------------------------------------------------------------------------------
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "  You are terse.  "}, {"role": "user", "content": "Sum 2 and 2."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Write a haiku about 中文 and emoji 😀"}],
    [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
     {"role": "user", "content": [{"type": "text", "text": "What is\n\tthis?"}, {"type": "image"}]},
     {"role": "assistant", "content": "<|channel>thought\nhmm<channel|>It is a tab.", "tool_calls": None},
     {"role": "user", "content": "Thanks"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_parity(ours, ref, messages, add_generation_prompt):
    expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    got = ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert got == expected
    assert ours.encode(got) == ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       return_dict=False)


def test_chat_template_variables_and_tools(ours, ref):
    messages = CONVERSATIONS[1]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": "int", "b": "é"}}}]
    for kwargs in ({"enable_thinking": True}, {"add_date": True}, {"tools": tools}):
        assert ours.apply_chat_template(messages, **kwargs) == \
            ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    rendered = ours.apply_chat_template(CONVERSATIONS[0])
    assert rendered == "<bos><|turn>user\nHello there!<turn|>\n<|turn>model\n"


def test_chat_errors(ours, gguf_path):
    with pytest.raises(TokenizerError, match="Unsupported role"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(TokenizerError, match="empty"):
        ours.apply_chat_template([])
    with GGUFFile(gguf_path) as f:
        kv = {k: v for k, v in f.kv.items() if k != "tokenizer.chat_template"}
    with pytest.raises(TokenizerError, match="no tokenizer.chat_template"):
        Tokenizer.from_gguf_metadata(kv).apply_chat_template(CONVERSATIONS[0])


# -- malformed metadata --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def good_kv(gguf_path) -> dict:
    with GGUFFile(gguf_path) as f:
        return dict(f.kv)


MALFORMED = {
    "missing tokens": lambda kv: kv.pop("tokenizer.ggml.tokens"),
    "empty tokens": lambda kv: kv.update({"tokenizer.ggml.tokens": []}),
    "missing merges": lambda kv: kv.pop("tokenizer.ggml.merges"),
    "merge without space": lambda kv: kv["tokenizer.ggml.merges"].insert(10, "▁the"),
    "merge with three parts": lambda kv: kv["tokenizer.ggml.merges"].append("▁ t he"),
    "merge of unknown pieces": lambda kv: kv["tokenizer.ggml.merges"].append("qqq zzz"),
    "short scores": lambda kv: kv.update({"tokenizer.ggml.scores": kv["tokenizer.ggml.scores"][:-1]}),
    "long token types": lambda kv: kv.update({"tokenizer.ggml.token_type": [1] * 3001}),
    "bad token type": lambda kv: kv.update({"tokenizer.ggml.token_type": [9] * 3000}),
    "unknown model": lambda kv: kv.update({"tokenizer.ggml.model": "llama"}),
    "no model": lambda kv: kv.pop("tokenizer.ggml.model"),
    "bos out of range": lambda kv: kv.update({"tokenizer.ggml.bos_token_id": 3000}),
    "eos list out of range": lambda kv: kv.update({"dgemma.eos_token_ids": [1, 99999]}),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_metadata(good_kv, case):
    kv = {k: list(v) if isinstance(v, list) else v for k, v in good_kv.items()}
    MALFORMED[case](kv)
    with pytest.raises(TokenizerError):
        Tokenizer.from_gguf_metadata(kv)


# -- size, CLI ---------------------------------------------------------------------------------------------
def test_gemma_sized_vocabulary_loads_fast(tmp_path):
    tokens, merges = synthetic_vocabulary()
    writer = GGUFWriter(tmp_path / "big.gguf")
    writer.add_string("tokenizer.ggml.model", "gemma4")
    writer.add_array("tokenizer.ggml.tokens", tokens, ValueType.STRING)
    writer.add_array("tokenizer.ggml.merges", merges, ValueType.STRING)
    writer.finish()
    start = time.perf_counter()
    tok = Tokenizer.from_gguf(tmp_path / "big.gguf")
    elapsed = time.perf_counter() - start
    assert tok.vocab_size == 262_144 and len(merges) == 500_000
    assert tok.encode("▁eta") == [tokens.index("▁eta")]
    assert elapsed < 6.0, f"loading a 262k vocabulary took {elapsed:.2f} s"


def test_cli_tokenize(gguf_path, ours, capsys):
    parser = argparse.ArgumentParser()
    cli_tokenize.register(parser.add_subparsers())
    args = parser.parse_args(["tokenize", "-m", str(gguf_path), "--json", "--bos", "Hello world"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ids"] == ours.encode("Hello world", add_bos=True)
    assert out["pieces"][0] == "<bos>"
    args = parser.parse_args(["tokenize", "-m", str(gguf_path), "--chat", "Hi"])
    assert args.func(args) == 0
    assert '"<|turn>"' in capsys.readouterr().out
