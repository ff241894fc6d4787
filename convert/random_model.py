"""Random-weight DiffusionGemma GGUF files, written with numpy alone (no PyTorch, no network).

For the offline demo and for benchmarks: the shapes are real, the weights are noise, so the text
they produce is noise too. PRESETS mirror shared/bench/models.json.
"""

from __future__ import annotations

import numpy as np

from dgemma.gguf import ValueType

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
