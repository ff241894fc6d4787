"""Writes the fuzzers' seed corpus from the project's own files into DIR (default build/fuzz/seeds).

DIR/gguf: random-weight models of a micro configuration (F32, and Q8_0 matrices at a width Q8_0
allows), small enough to keep the fuzzers fast yet each reaching the model binding; the shipped demo
model's header (metadata, tokenizer and tensor directory, cut where the data section starts); and the
demo model's metadata alone as a complete GGUF without tensors (a real tokenizer and chat template);
and a ten-token tokenizer (fast to build, so the tokenizer fuzzer runs many times more inputs).
DIR/chat: the demo model's chat template, a NUL byte, and a conversation as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# An editable install's import hook answers for `dgemma` before sys.path is searched: drop it.
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
sys.path.insert(0, str(ROOT / "python"))

from dgemma.convert.random_model import write_random_gguf  # noqa: E402
from dgemma.convert.gguf_writer import GGUFWriter  # noqa: E402
from dgemma.gguf import GGUFFile, ValueType  # noqa: E402

MICRO = dict(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=4, global_head_dim=8, num_global_key_value_heads=1,
             sliding_window=4, num_experts=2, top_k_experts=1, moe_intermediate_size=4, canvas_length=4)
MICRO_Q8 = dict(MICRO, vocab_size=4, hidden_size=32, intermediate_size=32, moe_intermediate_size=32)


CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to 3."},
     {"role": "assistant", "content": "1 2 3", "thinking": "easy"}, {"role": "user", "content": "Again"}],
]


MICRO_TOKENIZER = {
    "tokenizer.ggml.model": ("gemma4", ValueType.STRING),
    "tokenizer.ggml.tokens": (["<pad>", "<eos>", "<bos>", "<unk>", "\u2581", "a", "b", "\u2581a", "ab", "<0x41>"],
                              ValueType.ARRAY, ValueType.STRING),
    "tokenizer.ggml.token_type": ([3, 3, 3, 2, 1, 1, 1, 1, 1, 6], ValueType.ARRAY, ValueType.INT32),
    "tokenizer.ggml.merges": (["\u2581 a", "a b"], ValueType.ARRAY, ValueType.STRING),
    "tokenizer.ggml.bos_token_id": (2, ValueType.UINT32),
    "tokenizer.ggml.eos_token_id": (1, ValueType.UINT32),
    "tokenizer.ggml.unknown_token_id": (3, ValueType.UINT32),
    "tokenizer.chat_template": ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
                                ValueType.STRING),
}


def main(out: Path) -> None:
    gguf, chat = out / "gguf", out / "chat"
    gguf.mkdir(parents=True, exist_ok=True)
    chat.mkdir(parents=True, exist_ok=True)
    write_random_gguf(gguf / "micro-f32.gguf", MICRO, "F32", max_position_embeddings=16)
    write_random_gguf(gguf / "micro-q8_0.gguf", MICRO_Q8, "Q8_0", max_position_embeddings=16)
    demo = ROOT / "python" / "dgemma" / "models" / "demo.gguf"
    with GGUFFile(demo) as f, GGUFWriter(gguf / "demo-metadata.gguf") as w:
        data_start = min(t.offset for t in f.tensors.values())
        for key, value in f.kv.items():
            vtype, etype = f.kv_types[key]
            if vtype == ValueType.ARRAY:
                w.add_array(key, list(value), etype)
            else:
                w.add(key, value, vtype)
        w.write_header()
        template = f.kv["tokenizer.chat_template"]
    with GGUFWriter(gguf / "tokenizer-micro.gguf") as w:
        for key, (value, vtype, *etype) in MICRO_TOKENIZER.items():
            w.add_array(key, value, etype[0]) if vtype == ValueType.ARRAY else w.add(key, value, vtype)
        w.write_header()
    (gguf / "demo-header.gguf").write_bytes(demo.read_bytes()[:data_start])
    for i, conversation in enumerate(CONVERSATIONS):
        (chat / f"demo-{i}.txt").write_text(template + "\0" + json.dumps(conversation))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "fuzz" / "seeds")
