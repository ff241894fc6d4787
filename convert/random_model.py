"""Random-weight DiffusionGemma GGUF files, written with numpy alone (no PyTorch, no network).

For the offline demo and for benchmarks: the shapes are real, the weights are noise, so the text
they produce is noise too. PRESETS mirror shared/bench/models.json.

Two writers:
  - write_random_gguf: float weights drawn and "tamed" (random_tensor), then quantized by the core's
    reference quantizers: for tests that compare numbers (quantization quality, backends);
  - write_random_blocks_gguf: random bytes written straight into quantized blocks whose f16 scales
    are set to give weights of about 1/sqrt(row length), in a quantize recipe's mix of types (the
    same rules as `dgemma quantize`): a full 26B-A4B file in well under a minute, for speed work.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from dgemma import kernels
from dgemma.errors import InvalidArgumentError
from dgemma.gguf import GGML_TYPE_IDS, ValueType

from .gguf_writer import GGUFWriter
from .hf_to_gguf import FILE_TYPES, SAMPLER_DEFAULTS, TextConfig, rope_freqs, tensor_type, write_metadata
from .quantize import TYPE_IDS, encode

PRESETS = {
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
                 sliding_window=8, num_experts=8, top_k_experts=2, moe_intermediate_size=32, canvas_length=16),
    "mini": dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, global_head_dim=128, num_global_key_value_heads=1,
                 sliding_window=64, num_experts=16, top_k_experts=4, moe_intermediate_size=128, canvas_length=64),
    "medium": dict(vocab_size=8192, hidden_size=704, intermediate_size=528, num_hidden_layers=6, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=128, global_head_dim=256, num_global_key_value_heads=1,
                   sliding_window=256, num_experts=64, top_k_experts=8, moe_intermediate_size=176, canvas_length=256),
    # The released 26B-A4B. No published config is in the repository: intermediate_size (the dense MLP
    # beside the experts) is models.json's value, inferred there from the published parameter count.
    "full": dict(vocab_size=262144, hidden_size=2816, intermediate_size=2112, num_hidden_layers=30,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=256, global_head_dim=512,
                 num_global_key_value_heads=2, sliding_window=1024, num_experts=128, top_k_experts=8,
                 moe_intermediate_size=704, canvas_length=256),
}


def text_config(preset: dict, max_position_embeddings: int = 8192) -> TextConfig:
    n = preset["num_hidden_layers"]
    types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
    types[-1] = "full_attention"
    full = [t == "full_attention" for t in types]
    return TextConfig(
        vocab_size=preset["vocab_size"], hidden_size=preset["hidden_size"],
        intermediate_size=preset["intermediate_size"], num_hidden_layers=n,
        num_attention_heads=preset["num_attention_heads"], sliding_window=preset["sliding_window"],
        num_experts=preset["num_experts"], top_k_experts=preset["top_k_experts"],
        moe_intermediate_size=preset["moe_intermediate_size"], rms_norm_eps=1e-6, final_logit_softcapping=30.0,
        max_position_embeddings=max_position_embeddings, layer_types=types,
        head_dims=[preset["global_head_dim"] if f else preset["head_dim"] for f in full],
        kv_heads=[preset["num_global_key_value_heads"] if f else preset["num_key_value_heads"] for f in full],
        rope_theta_full=1e6, rope_theta_swa=1e4, partial_rotary_factor=0.25, rope_factor=1.0,
        canvas_length=preset["canvas_length"])


def tensor_shapes(cfg: TextConfig) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> numpy shape (outermost first)."""
    E, F, X, Fe, H = (cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.moe_intermediate_size,
                      cfg.num_attention_heads)
    shapes = {"token_embd.weight": (cfg.vocab_size, E), "output_norm.weight": (E,),
              "self_cond_pre_norm.weight": (E,), "self_cond_gate.weight": (F, E), "self_cond_up.weight": (F, E),
              "self_cond_down.weight": (E, F)}
    for i in range(cfg.num_hidden_layers):
        hd, kv = cfg.head_dims[i], cfg.kv_heads[i]
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (E,), p + "attn_q.weight": (H * hd, E), p + "attn_k.weight": (kv * hd, E),
            p + "attn_output.weight": (E, H * hd), p + "attn_q_norm.weight": (hd,), p + "attn_k_norm.weight": (hd,),
            p + "post_attention_norm.weight": (E,), p + "ffn_norm.weight": (E,), p + "ffn_gate.weight": (F, E),
            p + "ffn_up.weight": (F, E), p + "ffn_down.weight": (E, F), p + "post_ffw_norm_1.weight": (E,),
            p + "ffn_gate_inp.weight": (X, E), p + "ffn_gate_inp.scale": (E,), p + "pre_ffw_norm_2.weight": (E,),
            p + "ffn_gate_up_exps.weight": (X, 2 * Fe, E), p + "ffn_down_exps.weight": (X, E, Fe),
            p + "ffn_down_exps.scale": (X,), p + "post_ffw_norm_2.weight": (E,), p + "post_ffw_norm.weight": (E,),
            p + "layer_output_scale.weight": (1,), p + "enc_layer_output_scale.weight": (1,)})
        if cfg.layer_types[i] == "sliding_attention":
            shapes[p + "attn_v.weight"] = (kv * hd, E)
    return shapes


def write_random_gguf(path, preset: str | dict = "tiny", wtype: str = "F32", seed: int = 0,
                      max_position_embeddings: int = 8192) -> None:
    """A GGUF with random weights of the given preset's shapes; matrices in `wtype`."""
    cfg = text_config(PRESETS[preset] if isinstance(preset, str) else preset, max_position_embeddings)
    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(cfg)
    freqs = rope_freqs(cfg)
    with GGUFWriter(path) as w:
        write_metadata(w, cfg, SAMPLER_DEFAULTS, wtype if wtype in FILE_TYPES else "F32",
                       f"random-{preset if isinstance(preset, str) else 'custom'}")
        w.add_array("dgemma.random_weights", [True], ValueType.BOOL)
        names = sorted(shapes, key=lambda n: (n.startswith("blk."), n))
        types = {n: tensor_type(n, shapes[n], wtype) for n in names}
        w.add_tensor_info("rope_freqs.weight", (freqs.size,), TYPE_IDS["F32"])
        for n in names:
            w.add_tensor_info(n, tuple(reversed(shapes[n])), TYPE_IDS[types[n]])
        w.write_header()
        w.write_tensor_data("rope_freqs.weight", freqs)
        for n in names:
            w.write_tensor_data(n, encode(random_tensor(n, shapes[n], rng), types[n]))


def random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Weights tamed as in tests/reference.py, so that the model is not chaotic (a chaotic random model
    turns any rounding into O(1) output changes and would make quantization quality unmeasurable):
    q/k norm weights scaled by head_dim^-1/4 (attention scale is 1.0), a router of std 1, and experts
    that share a common component (a flipped near-tie between two experts then moves the output a little)."""
    if len(shape) == 1:
        data = rng.uniform(0.7, 1.3, shape)
        return (data * shape[0] ** -0.25 if name.endswith(("attn_q_norm.weight", "attn_k_norm.weight")) else data).astype(np.float32)
    if name.endswith("ffn_gate_inp.weight"):
        return rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("_exps.weight"):
        data = rng.standard_normal(shape[1:], dtype=np.float32) + 0.15 * rng.standard_normal(shape, dtype=np.float32)
    else:
        data = rng.standard_normal(shape, dtype=np.float32) * (2.0 if name == "token_embd.weight" else 1.0)
    return (data / np.float32(np.sqrt(shape[-1]))).astype(np.float32)


# --- random quantized blocks ------------------------------------------------------------------------

# Per type: byte offsets of a block's f16 fields (ggml's layouts, native/src/quant/) and, for the
# types with a minimum, the second field as a multiple of the first (it centres the codes: q ranges
# over 0..15 for 4 bits, 0..31 for 5). The codes and 6-/8-bit sub-block scales stay random bytes.
BLOCK_SCALES: dict[str, tuple[tuple[int, ...], float]] = {
    "Q8_0": ((0,), 0.0), "Q4_0": ((0,), 0.0), "Q5_0": ((0,), 0.0),
    "Q4_1": ((0, 2), -7.5), "Q5_1": ((0, 2), -15.5),
    "Q4_K": ((0, 2), 7.5), "Q5_K": ((0, 2), 15.5),  # x = d*sc*q - dmin*m: dmin = 7.5 d (15.5 d) centres
    "Q6_K": ((208,), 0.0),
}
SLICE_BYTES = 64 << 20


def random_blocks(type_name: str, n_blocks: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """n_blocks random blocks of `type_name` whose f16 fields give values of about `scale` (rms)."""
    info = kernels.type_info(type_name)
    offsets, second = BLOCK_SCALES[type_name]
    blocks = _random_bytes(rng, n_blocks * info.type_size).reshape(n_blocks, info.type_size)
    d = np.float16(scale / _unit_rms(type_name))
    blocks[:, offsets[0]:offsets[0] + 2] = np.array([d], np.float16).view(np.uint8)
    if len(offsets) > 1:
        blocks[:, offsets[1]:offsets[1] + 2] = np.array([np.float16(second * float(d))], np.float16).view(np.uint8)
    return blocks


def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random bytes, writable (the generator's raw 64-bit output: ~6x faster than rng.bytes)."""
    return rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]


_UNIT_RMS: dict[str, float] = {}


def _unit_rms(type_name: str) -> float:
    """RMS of the values of random blocks with d = 1, measured once on 256 blocks by the core's
    dequantizer (so no hand-derived constant per type can be wrong)."""
    if type_name not in _UNIT_RMS:
        info = kernels.type_info(type_name)
        offsets, second = BLOCK_SCALES[type_name]
        b = _random_bytes(np.random.default_rng(0), 256 * info.type_size).reshape(256, -1)
        b[:, offsets[0]:offsets[0] + 2] = np.array([1.0], np.float16).view(np.uint8)
        if len(offsets) > 1:
            b[:, offsets[1]:offsets[1] + 2] = np.array([second], np.float16).view(np.uint8)
        x = kernels.dequantize_row(type_name, b.reshape(-1))
        _UNIT_RMS[type_name] = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return _UNIT_RMS[type_name]


def write_random_blocks_gguf(path, preset: str | dict, recipe: str, seed: int = 0, progress=sys.stderr,
                             max_position_embeddings: int = 8192) -> dict[str, str]:
    """A GGUF of the preset's shapes in `recipe`'s mix of types (a `dgemma quantize` recipe whose
    types have BLOCK_SCALES) with random blocks; 1-D tensors and the router as write_random_gguf.
    Returns name -> type."""
    from .quantize_gguf import RECIPES, tensor_type as recipe_type

    name = recipe.upper()
    if name not in RECIPES:
        raise InvalidArgumentError(f"unknown type {recipe!r}; choose one of {', '.join(RECIPES)}")
    cfg = text_config(PRESETS[preset] if isinstance(preset, str) else preset, max_position_embeddings)
    shapes = tensor_shapes(cfg)
    names = sorted(shapes, key=lambda n: (n.startswith("blk."), n))
    types = {n: recipe_type(n, tuple(reversed(shapes[n])), RECIPES[name])[0] for n in names}
    missing = sorted({t for t in types.values() if t not in BLOCK_SCALES and t not in ("F32", "F16")})
    if missing:
        raise InvalidArgumentError(f"random blocks of {', '.join(missing)} are not supported; "
                                   f"choose one of {', '.join(r for r in RECIPES if RECIPES[r].base in BLOCK_SCALES)}")
    rng = np.random.default_rng(seed)
    freqs = rope_freqs(cfg)
    total = sum(kernels.row_bytes(types[n], shapes[n][-1]) * int(np.prod(shapes[n][:-1])) for n in names)
    written, start = 0, time.time()
    with GGUFWriter(path) as w:
        write_metadata(w, cfg, SAMPLER_DEFAULTS, "F32", f"random-blocks-{preset if isinstance(preset, str) else 'custom'}",
                       file_type_id=RECIPES[name].file_type)
        w.add_array("dgemma.random_weights", [True], ValueType.BOOL)
        w.add_tensor_info("rope_freqs.weight", (freqs.size,), GGML_TYPE_IDS["F32"])
        for n in names:
            w.add_tensor_info(n, tuple(reversed(shapes[n])), GGML_TYPE_IDS[types[n]])
        w.write_header()
        w.write_tensor_data("rope_freqs.weight", freqs)
        for n in names:
            t, shape = types[n], shapes[n]
            if t == "F32":
                data = random_tensor(n, shape, rng)
            elif t == "F16":
                data = (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-1]))).astype(np.float16)
            else:
                data = _block_slices(t, shape, rng)
            w.write_tensor_data(n, data)
            written += kernels.row_bytes(t, shape[-1]) * int(np.prod(shape[:-1]))
            if progress is not None:
                print(f"\rrandom blocks: {written / 2**30:6.2f} of {total / 2**30:.2f} GiB, {time.time() - start:5.1f} s",
                      end="", file=progress, flush=True)
        if progress is not None:
            print(file=progress)
    return types


def _block_slices(type_name: str, shape: tuple[int, ...], rng: np.random.Generator):
    """The tensor's rows as random blocks, SLICE_BYTES at a time; values of rms 1/sqrt(row length)."""
    n_rows, row = int(np.prod(shape[:-1])), shape[-1]
    per_row = row // kernels.type_info(type_name).block_size
    step = max(1, SLICE_BYTES // kernels.row_bytes(type_name, row))
    for r0 in range(0, n_rows, step):
        yield random_blocks(type_name, (min(n_rows, r0 + step) - r0) * per_row, 1.0 / np.sqrt(row), rng)
