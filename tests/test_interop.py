"""Files in llama.cpp's layout of the same weights load and give the same logits as our own conversion.

llama.cpp may write, for this architecture: tensors in its converter's order (Hugging Face names sorted
as strings, so blk.10 before blk.2, and globals interleaved), data aligned to general.alignment, the
experts' gate and up projections fused (ffn_gate_up_exps) or split (ffn_gate_exps / ffn_up_exps), and
per-tensor types that differ from the file type (llama-quantize's mixes). A relayout moves bytes only,
so its logits must be bit-identical; a re-typed file is compared by KL.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from dgemma.convert.quantize_gguf import quantize_file
from dgemma.convert.random_model import write_random_gguf
from dgemma.gguf import GGUFFile, ValueType
from gguf_edit import relayout
from test_quantize_tool import KQ_PRESET, kl, logits

PRESET = dict(KQ_PRESET, num_hidden_layers=12)  # blk.10 and blk.11 sort before blk.2 as strings


def hf_order(name: str) -> str:
    """The order of llama.cpp's converter: by Hugging Face tensor name, as strings."""
    m = re.match(r"blk\.(\d+)\.(.*)", name)
    return f"model.decoder.layers.{m.group(1)}.{m.group(2)}" if m else f"model.decoder.{name}"


@pytest.fixture(scope="module")
def f32(tmp_path_factory):
    path = tmp_path_factory.mktemp("interop") / "f32.gguf"
    write_random_gguf(path, PRESET, "F32", seed=9, max_position_embeddings=256)
    return path, logits(path, seed=4)


@pytest.fixture(scope="module", params=["F32", "Q4_K_M"])
def ours(request, f32):
    """Our file of the weights (as written, or quantized by our tool) and its logits."""
    if request.param == "F32":
        return f32
    path = f32[0].with_name(f"{request.param}.gguf")
    quantize_file(f32[0], path, request.param, progress=None)
    return path, logits(path, seed=4)


VARIANTS = {
    "split-experts": dict(split_experts=True),
    "hf-order": dict(order=hf_order),
    "reversed-order": dict(order=lambda n: [-ord(c) for c in n]),
    "align-64": dict(alignment=64),
    # Other writers' alignments: the smallest GGUF allows (8) and a large one.
    "align-8": dict(alignment=8),
    "align-256": dict(alignment=256),
    "all": dict(split_experts=True, order=hf_order, alignment=64),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_relayout_gives_identical_logits(ours, variant, tmp_path):
    path, expected = ours
    out = tmp_path / f"{variant}.gguf"
    relayout(path, out, **VARIANTS[variant])
    with GGUFFile(out) as f, GGUFFile(path) as g:
        assert f.kv["general.file_type"] == g.kv["general.file_type"]
        if alignment := VARIANTS[variant].get("alignment"):
            assert f.kv["general.alignment"] == alignment and all(t.offset % alignment == 0 for t in f.tensors.values())
            assert f.data_offset % alignment == 0
        if "order" in VARIANTS[variant]:
            assert list(f.tensors) != list(g.tensors)
        assert ("blk.0.ffn_gate_exps.weight" in f.tensors) == bool(VARIANTS[variant].get("split_experts"))
    np.testing.assert_array_equal(logits(out, seed=4), expected)


def test_llama_cpp_style_mix(f32, tmp_path):
    """llama-quantize's Q4_K_M on this architecture: Q4_K matrices, Q6_K token embedding, attn_v and
    ffn_down at Q6_K in some layers, split experts with Q5_0 down projections (64-long rows), alignment
    64. No tensor is below Q4_K, so against our F32 logits it may cost no more than Q4_K everywhere
    (measured on this 12-layer model: mean KL 0.46 for Q4_K, 0.24 for this mix, 0.18 for our Q4_K_M;
    the bound adds 10%). One tensor read with a wrong layout costs up to log(512) = 6."""
    path, expected = f32
    with GGUFFile(path) as f:
        mats = [t for t in f.tensors.values() if len(t.shape) > 1 and "gate_inp" not in t.name]
    types = {}
    for t in mats:
        layer = int(m.group(1)) if (m := re.match(r"blk\.(\d+)\.", t.name)) else -1
        more_bits = layer < 2 or layer >= 10 or (layer - 2) % 3 == 2  # llama.cpp's use_more_bits(i, 12)
        if "gate_up_exps" in t.name:
            types[t.name.replace("gate_up", "gate")] = types[t.name.replace("gate_up", "up")] = "Q4_K"
        elif t.name == "token_embd.weight" or (more_bits and re.search(r"attn_v|ffn_down\.", t.name)):
            types[t.name] = "Q6_K" if t.shape[0] % 256 == 0 else "Q8_0"
        else:
            types[t.name] = "Q4_K" if t.shape[0] % 256 == 0 else "Q5_0"
    out = tmp_path / "llama-q4_k_m.gguf"
    relayout(path, out, split_experts=True, order=hf_order, alignment=64, types=types,
             kv={"general.file_type": (15, ValueType.UINT32)})  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    quantize_file(path, tmp_path / "q4_k.gguf", "Q4_K", progress=None)
    d, q4_k = kl(expected, logits(out, seed=4)).mean(), kl(expected, logits(tmp_path / "q4_k.gguf", seed=4)).mean()
    print(f"llama.cpp-style Q4_K_M: mean KL {d:.4f}; Q4_K everywhere {q4_k:.4f}")
    assert d <= 1.1 * q4_k
