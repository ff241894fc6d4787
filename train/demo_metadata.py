"""Writes dgemma's prompt keys into the shipped demo model, every tensor kept byte for byte.

    python train/demo_metadata.py [python/dgemma/models/demo.gguf]

Run after ship.py. Sets `dgemma.prompt_format` = "chat" (the model was trained on chat-wrapped
prompts, tasks.render_prompt) and `dgemma.prompt_examples`: one prompt per task of tasks.py, so
that `dgemma info` can show a newcomer what the model answers. The file is rewritten with the
`gguf` package under a temporary name, checked against the original (same tensors, same bytes, same
other keys) and renamed into place only then.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "python" / "dgemma" / "models" / "demo.gguf"
try:  # the installed package (it carries the native library); else this checkout's sources
    import dgemma  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "python"))
from dgemma.gguf import GGUFFile  # noqa: E402
from dgemma.metadata import PROMPT_EXAMPLES_KEY, PROMPT_FORMAT_KEY  # noqa: E402

# One prompt per task (tasks.TASKS), in the exact wording the model was trained on.
EXAMPLES = [
    "Copy: cat dog sun moon",
    "Reverse: t z v j",
    "Sort: 64 95 15 55 32 59",
    "How many a in: e a d a e c e a",
    "Count from 27 to 40",
    "What is 5 + 34?",
    "blue=78, box=3. What is box?",
    "Write a sentence: red car, runs",
    "Describe: name=Mia, age=31, city=Oslo",
    "Python: function add(x) returning x plus 5",
]
NEW_KEYS = {PROMPT_FORMAT_KEY: "chat", PROMPT_EXAMPLES_KEY: EXAMPLES}


def rewrite(src: Path, dst: Path) -> None:
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in NEW_KEYS:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    writer.add_string(PROMPT_FORMAT_KEY, NEW_KEYS[PROMPT_FORMAT_KEY])
    writer.add_array(PROMPT_EXAMPLES_KEY, NEW_KEYS[PROMPT_EXAMPLES_KEY])
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_shape=list(reversed(t.shape.tolist())),
                          raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check(src: Path, dst: Path) -> None:
    with GGUFFile(src) as a, GGUFFile(dst) as b:
        if list(a.tensors) != list(b.tensors):
            raise SystemExit("tensor names or order differ")
        for name, ta in a.tensors.items():
            tb = b.tensors[name]
            if (ta.shape, ta.type_id) != (tb.shape, tb.type_id) or not np.array_equal(a.raw(name), b.raw(name)):
                raise SystemExit(f"tensor {name} differs")
        old_keys = [k for k in a.kv if k not in NEW_KEYS]
        if sorted(old_keys) != sorted(k for k in b.kv if k not in NEW_KEYS):
            raise SystemExit("the set of other keys differs")
        for k in old_keys:
            if a.kv_types[k] != b.kv_types[k] or not np.array_equal(np.asarray(a.kv[k]), np.asarray(b.kv[k])):
                raise SystemExit(f"key {k} differs")
        if {k: b.kv.get(k) for k in NEW_KEYS} != NEW_KEYS:
            raise SystemExit("the new keys did not round-trip")


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO
    fd, tmp = tempfile.mkstemp(prefix=".demo-", suffix=".gguf.partial", dir=src.parent)
    os.close(fd)
    try:
        rewrite(src, Path(tmp))
        check(src, Path(tmp))
        os.chmod(tmp, src.stat().st_mode & 0o777)
        os.replace(tmp, src)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {src}: {len(gguf.GGUFReader(src).tensors)} tensors byte-identical, {', '.join(NEW_KEYS)} set")


if __name__ == "__main__":
    main()
