"""Memory of DiffusionGemma sessions at the released 26B-A4B shapes, before and after the backend seam.

The "after" figures come from the core's accounting (dgemma_model_memory) on a GGUF with the full
shapes whose matrices are holes in a sparse file (nothing is read from them; the norms are real),
so no 15 GB download or write is needed. The "before" figures follow the previous core's
allocations (d3ea0b3, session.cpp and generate.cpp): each session held its sliding KV ring and
full-layer KV in F32, a workspace of max(canvas, 512) rows, and two [canvas x vocab] F32 logits
buffers (this step's and the self-conditioning copy) once it had generated.

    python bench/session_memory.py [--context 8192] [--sessions 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import dgemma
from dgemma.convert.random_model import PRESETS, tensor_shapes, text_config
from dgemma.convert.gguf_writer import GGUFWriter
from dgemma.convert.hf_to_gguf import SAMPLER_DEFAULTS, rope_freqs, tensor_type, write_metadata
from dgemma.convert.quantize import TYPE_IDS, encode
from dgemma.gguf import GGML_TYPE_IDS

FULL = json.loads((Path(__file__).resolve().parent / "models.json").read_text())["full"]


def write_sparse_full(path: str, wtype: str = "Q8_0") -> None:
    cfg = text_config(dict(FULL), max_position_embeddings=262144)
    shapes = tensor_shapes(cfg)
    with GGUFWriter(path) as w:
        write_metadata(w, cfg, SAMPLER_DEFAULTS, "F32", "sparse-full")
        names = sorted(shapes, key=lambda n: (n.startswith("blk."), n))
        types = {n: tensor_type(n, shapes[n], wtype) for n in names}
        freqs = rope_freqs(cfg)
        w.add_tensor_info("rope_freqs.weight", (freqs.size,), TYPE_IDS["F32"])
        for n in names:
            w.add_tensor_info(n, tuple(reversed(shapes[n])), GGML_TYPE_IDS[types[n]])
        w.write_header()
        w.write_tensor_data("rope_freqs.weight", freqs)
        for n in names:
            if len(shapes[n]) == 1:
                w.write_tensor_data(n, encode(np.ones(shapes[n], np.float32), types[n]))
            else:  # a hole: the writer's bookkeeping, then skip the bytes
                nbytes = w._tensors[w._next][3]
                w._file.seek(nbytes, os.SEEK_CUR)
                w._next += 1
                w._pad()
        w._file.truncate()


def before(cfg: dict, context: int) -> dict:
    """The previous core's per-session bytes (F32 everywhere)."""
    E, V, C, F, k = cfg["hidden_size"], cfg["vocab_size"], cfg["canvas_length"], cfg["intermediate_size"], cfg["top_k_experts"]
    n = cfg["num_hidden_layers"]
    full = [(i + 1) % 6 == 0 or i == n - 1 for i in range(n)]
    kv = sum(2 * 4 * (cfg["num_global_key_value_heads"] * cfg["global_head_dim"] * context if f else
                      cfg["num_key_value_heads"] * cfg["head_dim"] * (cfg["sliding_window"] - 1)) for f in full)
    q = cfg["num_attention_heads"] * max(cfg["head_dim"], cfg["global_head_dim"])
    kvw = max(cfg["num_key_value_heads"] * cfg["head_dim"], cfg["num_global_key_value_heads"] * cfg["global_head_dim"])
    rows = max(C, 512)
    # x xn q k v attn proj ff_gate ff_up dense moe_out router_logits sc sc_h expert_weight, expert_ids
    ws = 4 * rows * (E * 7 + 2 * q + 2 * kvw + 2 * F + cfg["num_experts"] + k) + 4 * rows * k
    logits = 2 * 4 * C * V
    return {"kv": kv, "workspace": ws, "logits": logits, "per_session": kv + ws + logits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", type=int, default=8192, help="positions cached per session")
    ap.add_argument("--sessions", type=int, default=8, help="concurrent sessions for the second row")
    args = ap.parse_args()
    GiB = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/full-sparse.gguf"
        write_sparse_full(path)
        old = before(FULL, args.context)
        rows = []
        for kv_type in ("f32", "f16"):
            with dgemma.Model(path, threads=1, kv_type=kv_type) as m:
                one = m.memory(args.context, n_batch=1, n_sessions=1)
                many = m.memory(args.context, n_batch=args.sessions, n_sessions=args.sessions)
            rows.append((kv_type, one, many))
    print(f"26B-A4B shapes, {args.context} cached positions per session (GiB)\n")
    print("| | KV per session | other per-session state | one session | "
          f"{args.sessions} sessions generating together |")
    print("|---|---|---|---|---|")
    print(f"| before (F32 KV; workspace and 2 logits buffers per session) | {old['kv'] / GiB:.3f} | "
          f"{(old['workspace'] + old['logits']) / GiB:.3f} | {old['per_session'] / GiB:.3f} | "
          f"{args.sessions * old['per_session'] / GiB:.3f} |")
    for kv_type, one, many in rows:
        print(f"| after, {kv_type.upper()} KV (workspace and logits per batch) | {one['per_session'] / GiB:.3f} | 0 | "
              f"{(one['per_session'] + one['per_batch']) / GiB:.3f} | "
              f"{(many['total'] - many['weights_mapped'] - many['weights_owned']) / GiB:.3f} |")
    print(f"\nweights (Q8_0 matrices, mapped): {rows[0][1]['weights_mapped'] / GiB:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
