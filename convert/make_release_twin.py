"""A synthetic twin of the released google/diffusiongemma-26B-A4B-it checkpoint, for rehearsing
`dgemma pull` / convert / quantize / tokenize / generate without the 52 GB download.

Laid out as the release is: `config.json` in the released spelling (`text_config` with `global_head_dim`
and `num_global_key_value_heads`, a `vision_config`), BF16 safetensors in several shards with
`model.safetensors.index.json`, the vision tower's tensors present under their released names (small),
the encoder's layer scalars, a Gemma-4-style `tokenizer.json` of 262,144 tokens (BPE with merges and byte
fallback), `tokenizer_config.json` with the chat template, `generation_config.json` with the sampler
keys. At `--scale full` the widths are the release's and only two layers are kept (one sliding, one
full): about 4.7 GB. `--scale tiny` has the 'tiny' test widths. Weights are random (numpy), written
tensor by tensor in bounded slices.

    python -m dgemma.convert.make_release_twin OUTDIR [--scale full|tiny] [--shards 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import struct
import sys
from pathlib import Path

import numpy as np

from .hf_to_gguf import SAMPLER_DEFAULTS
from .random_model import PRESETS

# The released text widths (the 'full' benchmark configuration); the twin keeps two layers (LAYER_TYPES).
SCALES = {"full": PRESETS["full"], "tiny": PRESETS["tiny"]}
LAYER_TYPES = ["sliding_attention", "full_attention"]
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
              patch_size=16, position_embedding_size=1024)
SLICE_BYTES = 64 << 20

# Gemma 4's special tokens (ids 0..4, then the turn / thinking / tool / image markers).
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>", "<|think|>", "<|channel>",
            "<channel|>", "<|tool>", "<tool|>", "<|image>", "<image|>", "<|image_soft_token|>"]
EOT = "<turn|>"
ALPHABET = "▁etaoinshrdlucmfwypgbvk"  # the pieces merges are built from, most frequent first
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' + (message['content'] | trim) + '<turn|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}{%- endif -%}")


# -- weights -------------------------------------------------------------------------------------------
def tensor_shapes(w: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the release (two layers), by Hugging Face name, with its shape."""
    h, i, e, f = w["hidden_size"], w["intermediate_size"], w["num_experts"], w["moe_intermediate_size"]
    nh = w["num_attention_heads"]
    shapes = {"model.decoder.embed_tokens.weight": (w["vocab_size"], h), "model.decoder.norm.weight": (h,),
              "model.decoder.self_conditioning.pre_norm.weight": (h,),
              "model.decoder.self_conditioning.gate_proj.weight": (i, h),
              "model.decoder.self_conditioning.up_proj.weight": (i, h),
              "model.decoder.self_conditioning.down_proj.weight": (h, i)}
    for n, kind in enumerate(LAYER_TYPES):
        full = kind == "full_attention"
        hd = w["global_head_dim"] if full else w["head_dim"]
        kv = w["num_global_key_value_heads"] if full else w["num_key_value_heads"]
        p = f"model.decoder.layers.{n}."
        layer = {"self_attn.q_proj.weight": (nh * hd, h), "self_attn.k_proj.weight": (kv * hd, h),
                 "self_attn.o_proj.weight": (h, nh * hd), "self_attn.q_norm.weight": (hd,),
                 "self_attn.k_norm.weight": (hd,), "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h),
                 "mlp.down_proj.weight": (h, i), "router.proj.weight": (e, h), "router.scale": (h,),
                 "router.per_expert_scale": (e,), "experts.gate_up_proj": (e, 2 * f, h),
                 "experts.down_proj": (e, h, f), "layer_scalar": (1,)}
        if not full:  # full layers have no v_proj (K is the V source)
            layer["self_attn.v_proj.weight"] = (kv * hd, h)
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "post_feedforward_layernorm_1", "pre_feedforward_layernorm_2",
                     "post_feedforward_layernorm_2"):
            layer[f"{norm}.weight"] = (h,)
        shapes.update({p + k: v for k, v in layer.items()})
        shapes[f"model.encoder.language_model.layers.{n}.layer_scalar"] = (1,)
    vh, vi = VISION["hidden_size"], VISION["intermediate_size"]
    v = "model.encoder.vision_tower."
    shapes[v + "patch_embedder.position_embedding_table"] = (2, VISION["position_embedding_size"], vh)
    shapes[v + "patch_embedder.input_proj.weight"] = (vh, 3 * VISION["patch_size"] ** 2)
    for n in range(VISION["num_hidden_layers"]):
        p = f"{v}encoder.layers.{n}."
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}self_attn.{proj}_proj.linear.weight"] = (vh, vh)
        shapes[f"{p}self_attn.q_norm.weight"] = shapes[f"{p}self_attn.k_norm.weight"] = (VISION["head_dim"],)
        shapes[f"{p}mlp.gate_proj.linear.weight"] = shapes[f"{p}mlp.up_proj.linear.weight"] = (vi, vh)
        shapes[f"{p}mlp.down_proj.linear.weight"] = (vh, vi)
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            shapes[f"{p}{norm}.weight"] = (vh,)
    shapes["model.encoder.embed_vision.embedding_projection.weight"] = (h, vh)
    return shapes


def _bf16(x: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes (round to nearest even)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def _slices(name: str, shape: tuple[int, ...], rng: np.random.Generator):
    """The tensor's values as float32, a bounded slice of its first axis at a time. Norm weights and
    scales sit near 1, matrices have std fan_in^-1/2 (the embedding hidden^-1/2), so the twin runs
    without overflow."""
    if len(shape) == 1 or name.endswith("position_embedding_table"):
        yield rng.uniform(0.8, 1.2, shape).astype(np.float32) if len(shape) == 1 else \
            rng.standard_normal(shape, dtype=np.float32)
        return
    std = shape[-1] ** -0.5
    row = int(np.prod(shape[1:]))
    step = max(1, SLICE_BYTES // (4 * row))
    for r0 in range(0, shape[0], step):
        n = min(step, shape[0] - r0)
        yield rng.standard_normal((n, *shape[1:]), dtype=np.float32) * np.float32(std)


def write_shards(out: Path, shapes: dict[str, tuple[int, ...]], n_shards: int, seed: int) -> None:
    """BF16 safetensors shards (names sorted, split into `n_shards` of similar size) and their index."""
    names = sorted(shapes)
    sizes = {n: int(np.prod(shapes[n])) * 2 for n in names}
    total = sum(sizes.values())
    groups: list[list[str]] = [[] for _ in range(n_shards)]
    done = 0
    for n in names:  # contiguous runs of the sorted names, cut at equal shares of the bytes
        groups[min(n_shards - 1, done * n_shards // total)].append(n)
        done += sizes[n]
    groups = [g for g in groups if g]
    rng = np.random.default_rng(seed)
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for n in group:
            header[n] = {"dtype": "BF16", "shape": list(shapes[n]), "data_offsets": [offset, offset + sizes[n]]}
            offset += sizes[n]
            weight_map[n] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(out / fname, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)) + blob)
            for n in group:
                for part in _slices(n, shapes[n], rng):
                    fh.write(_bf16(part))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# -- tokenizer -----------------------------------------------------------------------------------------
def vocabulary(n_tokens: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Gemma-style tokens by id and their merges: the specials, 256 byte pieces, single characters
    (printable ASCII, the space marker "▁", newline, tab), then every string over ALPHABET of length
    2, 3, ... until `n_tokens`. Each string gets the merges (t[:-1], t[-1]) and (t[0], t[1:]), ranked by
    length so shorter pieces form first; every piece a merge names is in the vocabulary."""
    tokens = list(SPECIALS) + [f"<0x{b:02X}>" for b in range(256)]
    singles = dict.fromkeys(["▁", "\n", "\t"] + [chr(c) for c in range(33, 127)] + list(ALPHABET))
    tokens += list(singles)
    if len(tokens) > n_tokens:
        raise ValueError(f"a vocabulary of {n_tokens} cannot hold the {len(tokens)} base tokens")
    merges: list[tuple[str, str]] = []
    for length in itertools.count(2):
        for chars in itertools.product(ALPHABET, repeat=length):
            if len(tokens) == n_tokens:
                return tokens, merges
            t = "".join(chars)
            tokens.append(t)
            merges.append((t[:-1], t[-1]))
            if length > 2:
                merges.append((t[0], t[1:]))
    raise AssertionError("unreachable")


def write_tokenizer(out: Path, n_tokens: int) -> None:
    from tokenizers import processors

    from dgemma.tokenizer import gemma_backend

    tokens, merges = vocabulary(n_tokens)
    backend = gemma_backend(tokens, merges, [(i, True) for i in range(len(SPECIALS))], "<unk>")
    backend.post_processor = processors.TemplateProcessing(single="<bos>:0 $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1",
                                                           special_tokens=[("<bos>", 2)])
    backend.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
              "pad_token": "<pad>", "mask_token": "<mask>", "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "padding_side": "left",
              "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


# -- configs -------------------------------------------------------------------------------------------
def write_configs(out: Path, w: dict) -> None:
    text = {k: w[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
                              "num_key_value_heads", "head_dim", "global_head_dim", "num_global_key_value_heads",
                              "sliding_window", "num_experts", "top_k_experts", "moe_intermediate_size")}
    text.update(model_type="diffusion_gemma_text", num_hidden_layers=len(LAYER_TYPES), layer_types=LAYER_TYPES,
                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, final_logit_softcapping=30.0,
                max_position_embeddings=262_144, attention_bias=False, attention_dropout=0.0, pad_token_id=0,
                eos_token_id=1, bos_token_id=2, tie_word_embeddings=True, use_bidirectional_attention=None,
                rope_parameters={"full_attention": {"rope_type": "proportional", "rope_theta": 1_000_000.0,
                                                    "partial_rotary_factor": 0.25},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})
    vision = dict(VISION, model_type="gemma4_vision", num_key_value_heads=VISION["num_attention_heads"],
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, pooling_kernel_size=3)
    config = {"architectures": ["DiffusionGemmaForBlockDiffusion"], "model_type": "diffusion_gemma",
              "canvas_length": w["canvas_length"], "torch_dtype": "bfloat16", "text_config": text,
              "vision_config": vision, "boi_token_id": SPECIALS.index("<|image>"),
              "eoi_token_id": SPECIALS.index("<image|>"), "image_token_id": SPECIALS.index("<|image_soft_token|>")}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = dict(SAMPLER_DEFAULTS)
    generation["sampler_config"] = {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": generation.pop("entropy_bound")}
    generation.update(bos_token_id=2, pad_token_id=0, eos_token_id=[1, SPECIALS.index(EOT)])
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def make_twin(out: str | Path, scale: str = "full", shards: int = 4, seed: int = 0) -> Path:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    w = SCALES[scale]
    write_configs(out, w)
    write_tokenizer(out, w["vocab_size"])
    write_shards(out, tensor_shapes(w), shards, seed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", help="folder to write (created if needed)")
    p.add_argument("--scale", choices=list(SCALES), default="full", help="widths: the release's, or 'tiny' (tests)")
    p.add_argument("--shards", type=int, default=4, help="number of safetensors shards (default 4)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be at least 1")
    print(make_twin(args.outdir, args.scale, args.shards, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
