"""Hugging Face DiffusionGemma checkpoint -> GGUF in llama.cpp's `diffusion-gemma` dialect.

Streams tensors one at a time (large ones in slices of their first axis), so memory stays near the
largest slice, not the model: each tensor's mapped pages are released once it is written. Writes to a
temporary file renamed into place on success. Besides the plain types (OUT_TYPES) it writes any of
`dgemma quantize`'s recipes (Q4_K_M, ...) straight from the checkpoint, with the quantizer's tensor
types, so a checkpoint becomes a quantized file without an intermediate one.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgemma.errors import ConversionError
from dgemma.gguf import GGML_TYPE_IDS, ValueType
from dgemma.metadata import PROMPT_FORMAT_KEY

from .gguf_writer import GGUFWriter
from .quantize import TYPE_IDS, encode
from .safetensors_reader import SafetensorsCheckpoint

ARCH = "diffusion-gemma"
OUT_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}
# llama.cpp's general.file_type values
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "BF16": 32}
SLICE_BYTES = 256 << 20  # float32 bytes converted at once

# Sampler defaults of the released generation config (the contract's Generation section).
SAMPLER_DEFAULTS = {"max_denoising_steps": 48, "t_min": 0.4, "t_max": 0.8, "entropy_bound": 0.1,
                    "stability_threshold": 1, "confidence_threshold": 0.005}

LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm_1.weight": "post_ffw_norm_1.weight",
    "router.proj.weight": "ffn_gate_inp.weight",
    "router.scale": "ffn_gate_inp.scale",
    "router.per_expert_scale": "ffn_down_exps.scale",
    "pre_feedforward_layernorm_2.weight": "pre_ffw_norm_2.weight",
    "experts.gate_up_proj": "ffn_gate_up_exps.weight",
    "experts.down_proj": "ffn_down_exps.weight",
    "post_feedforward_layernorm_2.weight": "post_ffw_norm_2.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "layer_scalar": "layer_output_scale.weight",
}
GLOBAL_NAMES = {
    "model.decoder.embed_tokens.weight": "token_embd.weight",
    "model.decoder.norm.weight": "output_norm.weight",
    "model.decoder.self_conditioning.pre_norm.weight": "self_cond_pre_norm.weight",
    "model.decoder.self_conditioning.gate_proj.weight": "self_cond_gate.weight",
    "model.decoder.self_conditioning.up_proj.weight": "self_cond_up.weight",
    "model.decoder.self_conditioning.down_proj.weight": "self_cond_down.weight",
}
DECODER_LAYER = re.compile(r"^model\.decoder\.layers\.(\d+)\.(.+)$")
ENCODER_SCALAR = re.compile(r"^model\.encoder\.language_model\.layers\.(\d+)\.layer_scalar$")
# Present in checkpoints, not needed for text: the vision tower, and copies tied to decoder weights.
SKIPPED = re.compile(r"^(model\.encoder\.(vision_tower|embed_vision)\.|lm_head\.weight$|model\.encoder\.language_model\.)")


@dataclass
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    sliding_window: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    rms_norm_eps: float
    final_logit_softcapping: float
    max_position_embeddings: int
    layer_types: list[str]
    head_dims: list[int]
    kv_heads: list[int]
    rope_theta_full: float
    rope_theta_swa: float
    partial_rotary_factor: float
    rope_factor: float
    canvas_length: int


def read_text_config(hf_dir: Path) -> TextConfig:
    try:
        full = json.loads((hf_dir / "config.json").read_text())
    except FileNotFoundError as e:
        raise ConversionError(f"{hf_dir}: no config.json") from e
    if full.get("model_type") not in ("diffusion_gemma", "diffusion_gemma_text"):
        raise ConversionError(f"{hf_dir}: model_type {full.get('model_type')!r} is not DiffusionGemma")
    tc = full.get("text_config", full)
    try:
        n_layer = int(tc["num_hidden_layers"])
        layer_types = tc.get("layer_types") or [
            "sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n_layer)]
        layer_types = list(layer_types)
        layer_types[-1] = "full_attention"  # the reference forces the last layer to full attention
        if tc.get("use_bidirectional_attention") == "all":
            raise ConversionError("use_bidirectional_attention='all' (a non-causal encoder) is not supported")
        head_dim = int(tc.get("head_dim", 256))
        kv = int(tc.get("num_key_value_heads", 4))
        head_dims = [head_dim] * n_layer
        kv_heads = [kv] * n_layer
        per_layer = tc.get("per_layer_config")
        if per_layer:  # as transformers saves it: {"layer index": {"head_dim": .., "num_key_value_heads": ..}}
            for idx, override in per_layer.items():
                i = int(idx)
                head_dims[i] = int(override.get("head_dim", head_dims[i]))
                kv_heads[i] = int(override.get("num_key_value_heads", kv_heads[i]))
        else:  # as released: global_head_dim / num_global_key_value_heads apply to full layers
            g_hd = int(tc.get("global_head_dim", 512))
            g_kv = tc.get("num_global_key_value_heads")
            for i, t in enumerate(layer_types):
                if t == "full_attention":
                    head_dims[i] = g_hd
                    if g_kv is not None:
                        kv_heads[i] = int(g_kv)
        rope = tc.get("rope_parameters") or {}
        full_rope = rope.get("full_attention", {"rope_theta": 1e6, "partial_rotary_factor": 0.25})
        swa_rope = rope.get("sliding_attention", {"rope_theta": 1e4})
        return TextConfig(
            vocab_size=int(tc["vocab_size"]), hidden_size=int(tc["hidden_size"]),
            intermediate_size=int(tc["intermediate_size"]), num_hidden_layers=n_layer,
            num_attention_heads=int(tc["num_attention_heads"]), sliding_window=int(tc.get("sliding_window", 512)),
            num_experts=int(tc["num_experts"]), top_k_experts=int(tc["top_k_experts"]),
            moe_intermediate_size=int(tc["moe_intermediate_size"]), rms_norm_eps=float(tc.get("rms_norm_eps", 1e-6)),
            final_logit_softcapping=float(tc.get("final_logit_softcapping") or 30.0),
            max_position_embeddings=int(tc.get("max_position_embeddings", 131072)),
            layer_types=layer_types, head_dims=head_dims, kv_heads=kv_heads,
            rope_theta_full=float(full_rope.get("rope_theta", 1e6)), rope_theta_swa=float(swa_rope.get("rope_theta", 1e4)),
            partial_rotary_factor=float(full_rope.get("partial_rotary_factor", 1.0)),
            rope_factor=float(full_rope.get("factor", 1.0)),
            canvas_length=int(full.get("canvas_length", 256)),
        )
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{hf_dir}/config.json: missing or malformed field: {e}") from e


def read_generation_config(hf_dir: Path) -> tuple[dict, dict]:
    """(sampler settings with defaults filled in, the raw generation config)."""
    path = hf_dir / "generation_config.json"
    raw = json.loads(path.read_text()) if path.exists() else {}
    s = dict(SAMPLER_DEFAULTS)
    for k in ("max_denoising_steps", "t_min", "t_max", "stability_threshold", "confidence_threshold"):
        if raw.get(k) is not None:
            s[k] = raw[k]
    sampler = raw.get("sampler_config") or {}
    if isinstance(sampler, dict) and sampler.get("entropy_bound") is not None:
        s["entropy_bound"] = sampler["entropy_bound"]
    return s, raw


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name of a checkpoint tensor, or None if it is not needed."""
    if hf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf_name]
    if m := ENCODER_SCALAR.match(hf_name):
        return f"blk.{m.group(1)}.enc_layer_output_scale.weight"
    if SKIPPED.match(hf_name):
        return None
    if (m := DECODER_LAYER.match(hf_name)) and m.group(2) in LAYER_NAMES:
        return f"blk.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
    raise ConversionError(f"unexpected tensor {hf_name!r} in the checkpoint")


def tensor_type(name: str, shape: tuple[int, ...], out_type: str) -> str:
    """Norms, scales and the router stay float32; matrices take the requested type (Q8_0 needs
    rows that are a multiple of 32 and falls back to F16 otherwise)."""
    if len(shape) < 2 or name.endswith("ffn_gate_inp.weight"):
        return "F32"
    if out_type == "Q8_0" and shape[-1] % 32:
        return "F16"
    return out_type


def write_metadata(w: GGUFWriter, cfg: TextConfig, sampler: dict, file_type: str, name: str,
                   file_type_id: int | None = None) -> None:
    """`file_type` names a FILE_TYPES type; a quantize recipe passes its own `file_type_id` instead."""
    a = ARCH
    w.add_string("general.architecture", a)
    w.add_string("general.name", name)
    w.add_u32("general.file_type", FILE_TYPES[file_type] if file_type_id is None else file_type_id)
    if file_type_id is not None or file_type == "Q8_0":
        w.add_u32("general.quantization_version", 2)
    full = [t == "full_attention" for t in cfg.layer_types]
    g_hd = next((hd for hd, f in zip(cfg.head_dims, full) if f), cfg.head_dims[0])
    s_hd = next((hd for hd, f in zip(cfg.head_dims, full) if not f), g_hd)
    if any(hd != (g_hd if f else s_hd) for hd, f in zip(cfg.head_dims, full)):
        raise ConversionError("head_dim must be the same for all layers of one kind (sliding / full)")
    w.add_u32(f"{a}.block_count", cfg.num_hidden_layers)
    w.add_u32(f"{a}.context_length", cfg.max_position_embeddings)
    w.add_u32(f"{a}.embedding_length", cfg.hidden_size)
    w.add_u32(f"{a}.feed_forward_length", cfg.intermediate_size)
    w.add_u32(f"{a}.attention.head_count", cfg.num_attention_heads)
    w.add_array(f"{a}.attention.head_count_kv", cfg.kv_heads, ValueType.UINT32)
    w.add_u32(f"{a}.attention.key_length", g_hd)
    w.add_u32(f"{a}.attention.value_length", g_hd)
    w.add_u32(f"{a}.attention.key_length_swa", s_hd)
    w.add_u32(f"{a}.attention.value_length_swa", s_hd)
    w.add_u32(f"{a}.attention.sliding_window", cfg.sliding_window)
    w.add_array(f"{a}.attention.sliding_window_pattern", [not f for f in full], ValueType.BOOL)
    w.add_f32(f"{a}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    w.add_bool(f"{a}.attention.causal", False)
    w.add_f32(f"{a}.rope.freq_base", cfg.rope_theta_full)
    w.add_f32(f"{a}.rope.freq_base_swa", cfg.rope_theta_swa)
    w.add_u32(f"{a}.rope.dimension_count", g_hd)
    w.add_u32(f"{a}.rope.dimension_count_swa", s_hd)
    w.add_u32(f"{a}.expert_count", cfg.num_experts)
    w.add_u32(f"{a}.expert_used_count", cfg.top_k_experts)
    w.add_u32(f"{a}.expert_feed_forward_length", cfg.moe_intermediate_size)
    w.add_f32(f"{a}.final_logit_softcapping", cfg.final_logit_softcapping)
    w.add_u32("diffusion.canvas_length", cfg.canvas_length)
    w.add_u32("diffusion.eb_max_steps", int(sampler["max_denoising_steps"]))
    w.add_f32("diffusion.eb_t_min", float(sampler["t_min"]))
    w.add_f32("diffusion.eb_t_max", float(sampler["t_max"]))
    w.add_f32("diffusion.eb_entropy_bound", float(sampler["entropy_bound"]))
    w.add_u32("diffusion.eb_stability_threshold", int(sampler["stability_threshold"]))
    w.add_f32("diffusion.eb_confidence_threshold", float(sampler["confidence_threshold"]))


def rope_freqs(cfg: TextConfig) -> np.ndarray:
    """llama.cpp's proportional RoPE: a divisor per frequency; 1e30 switches a pair off."""
    g_hd = max(hd for hd, t in zip(cfg.head_dims, cfg.layer_types) if t == "full_attention")
    rotated = int(cfg.partial_rotary_factor * g_hd // 2)
    f = np.full(g_hd // 2, 1e30, dtype=np.float32)
    f[:rotated] = cfg.rope_factor
    return f


def convert(hf_dir: str | Path, out_path: str | Path, out_type: str = "f16", *, progress=sys.stderr,
            threads: int | None = None) -> None:
    """Writes checkpoint `hf_dir` as GGUF at `out_path`. `out_type`: an OUT_TYPES key, or a RECIPES key of
    convert/quantize_gguf.py (quantized on `threads` threads with the core's quantizers)."""
    hf_dir = Path(hf_dir)
    recipe = None
    if out_type.lower() in OUT_TYPES:
        file_type = OUT_TYPES[out_type.lower()]
    else:
        from .quantize_gguf import RECIPES

        if out_type.upper() not in RECIPES:
            raise ConversionError(f"unknown output type {out_type!r}; choose one of "
                                  f"{', '.join([*OUT_TYPES, *RECIPES])}")
        file_type, recipe = out_type.upper(), RECIPES[out_type.upper()]
    cfg = read_text_config(hf_dir)
    sampler, gen_raw = read_generation_config(hf_dir)
    ckpt = SafetensorsCheckpoint(hf_dir)
    try:
        plan = []  # (gguf name, hf name or None, ggml shape, type)
        for hf_name, entry in ckpt.entries.items():
            name = gguf_name(hf_name)
            if name is None:
                continue
            shape = entry.shape if entry.shape != () else (1,)
            ggml_shape = tuple(reversed(shape))
            if recipe is None:
                t = tensor_type(name, shape, file_type)
            else:
                from .quantize_gguf import tensor_type as quantized_type

                t, note = quantized_type(name, ggml_shape, recipe)
                if note and progress is not None:
                    print(f"note: {name}: {note}", file=progress)
            plan.append((name, hf_name, ggml_shape, t))
        present = {p[0] for p in plan}
        for i in range(cfg.num_hidden_layers):
            if f"blk.{i}.enc_layer_output_scale.weight" not in present:
                raise ConversionError(f"the checkpoint lacks model.encoder.language_model.layers.{i}.layer_scalar")
        g_freqs = rope_freqs(cfg)
        plan.append(("rope_freqs.weight", None, (g_freqs.size,), "F32"))
        plan.sort(key=lambda p: _order_key(p[0]))

        with GGUFWriter(out_path) as w:
            write_metadata(w, cfg, sampler, file_type, hf_dir.name, None if recipe is None else recipe.file_type)
            _add_tokenizer(w, hf_dir, gen_raw, progress)
            for name, _, shape, t in plan:
                w.add_tensor_info(name, shape, GGML_TYPE_IDS[t])
            w.write_header()
            start = time.time()
            total = sum(int(np.prod(p[2])) for p in plan)
            done = 0
            live = progress is not None and progress.isatty()  # redraw one line; else a line per tenth
            shown = 0
            for idx, (name, hf_name, shape, t) in enumerate(plan):
                if hf_name is None:
                    w.write_tensor_data(name, encode(g_freqs, t))
                else:
                    w.write_tensor_data(name, _stream(ckpt, hf_name, _encoder(t, threads)))
                    ckpt.release(hf_name)
                done += int(np.prod(shape))
                line = f"[{idx + 1}/{len(plan)}] {done / total:6.1%} {name:<40} {t:<5} {time.time() - start:6.1f}s"
                if live:
                    print("\r" + line, end="", file=progress, flush=True)
                elif progress is not None and (done * 10 // total > shown or idx + 1 == len(plan)):
                    shown = done * 10 // total
                    print(line, file=progress, flush=True)
            if live:
                print(file=progress)
    finally:
        ckpt.close()


def _encoder(t: str, threads: int | None):
    """float32 rows -> the bytes of type `t`: numpy for the converter's own types, else the core's quantizer."""
    if t in TYPE_IDS:
        return lambda x: encode(x, t)
    from dgemma import kernels

    return lambda x: kernels.quantize_rows(t, x.reshape(-1, x.shape[-1]), threads)


def _stream(ckpt: SafetensorsCheckpoint, hf_name: str, encoder):
    """Yields the encoded tensor in slices of its first axis, so memory stays bounded."""
    entry = ckpt.entries[hf_name]
    if len(entry.shape) < 2:
        yield encoder(ckpt.float32(hf_name).reshape(-1))
        return
    per_row = int(np.prod(entry.shape[1:])) * 4
    step = max(1, SLICE_BYTES // per_row)
    for r0 in range(0, entry.shape[0], step):
        yield encoder(ckpt.float32(hf_name, slice(r0, r0 + step)))


def _order_key(name: str):
    """llama.cpp's order: global tensors first, then layer by layer."""
    m = re.match(r"^blk\.(\d+)\.", name)
    return (1, int(m.group(1)), name) if m else (0, 0, name)


def _add_tokenizer(w: GGUFWriter, hf_dir: Path, gen_raw: dict, progress) -> None:
    from .tokenizer import add_tokenizer_metadata

    if not add_tokenizer_metadata(w, hf_dir, gen_raw) and progress is not None:
        print(f"note: {hf_dir} has no tokenizer; the GGUF will hold none", file=progress)
    # A checkpoint with a chat template is an instruction-tuned one: plain prompts go in as a user turn.
    w.add_string(PROMPT_FORMAT_KEY, "chat" if "tokenizer.chat_template" in w._keys else "raw")
