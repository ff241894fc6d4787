"""Random-weight DiffusionGemma checkpoints built with transformers, and the reference forward.

Random models are chaotic in ways trained ones are not, which would make the comparison test the
model's sensitivity instead of our kernels. They are tamed so:
  - q_norm / k_norm weights are scaled by head_dim^-1/4: with unit-RMS q and k and attention scale
    1.0 the scores would have std ~sqrt(head_dim) and softmax would be nearly one-hot;
  - the router projection has std 1 (logit spread ~1, softmax far from uniform), and the experts
    share a common component (each is base + 0.15 * its own noise): whatever the scale, a rounding
    perturbation sometimes flips a near-tie between two experts, and with distinct random experts
    each flip would move the output by O(1); with related experts it moves it a little;
  - every norm weight, router scale, per-expert scale and the two layer scalars are drawn away from
    their initial values (and the encoder's scalars differ from the decoder's);
  - linear weights have std 1/sqrt(fan_in) and the tied embedding std 2/sqrt(hidden), so logits
    spread over a few units instead of being uniform.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODELS_JSON = Path(__file__).resolve().parents[1] / "bench" / "models.json"  # the repository's own copy

TINY_VISION = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=1, num_key_value_heads=1, head_dim=16)


def shared_config(name: str) -> dict:
    """A benchmark configuration from bench/models.json (shared by the tests and the benchmarks)."""
    return dict(json.loads(MODELS_JSON.read_text())[name])


def build_model(text_config: dict, *, seed: int, max_position_embeddings: int = 4096, embed_std: float = 2.0):
    """A tamed random DiffusionGemmaForBlockDiffusion (float32, eval mode). `embed_std` (times
    hidden^-1/2) sets how peaked the output distributions are: larger gives decisive logits."""
    import torch
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    tc = dict(text_config)
    canvas = tc.pop("canvas_length")
    tc.setdefault("max_position_embeddings", max_position_embeddings)
    config = DiffusionGemmaConfig(text_config=tc, vision_config=dict(TINY_VISION), canvas_length=canvas)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    # The eager experts loop calls F.linear per expert, which QuantizedActivations can intercept.
    model.config._experts_implementation = "eager"
    model.config.text_config._experts_implementation = "eager"
    g = torch.Generator().manual_seed(seed + 1)

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    hidden = config.text_config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision" in name:
                continue
            if name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * (embed_std / hidden ** 0.5))
            elif "router.proj" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(uniform(p.shape, 0.7, 1.3) * p.shape[0] ** -0.25)
            elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                base = torch.randn(p.shape[1:], generator=g)
                noise = torch.randn(p.shape, generator=g)
                p.copy_((base[None] + 0.15 * noise) / p.shape[-1] ** 0.5)
            elif p.ndim == 1:  # norms, router scale, per-expert scale
                p.copy_(uniform(p.shape, 0.6, 1.4))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for layer in model.model.decoder.layers:
            layer.layer_scalar.copy_(uniform((1,), 0.8, 1.2))
        for layer in model.model.encoder.language_model.layers:
            layer.layer_scalar.copy_(uniform((1,), 0.5, 0.9))
    return model


def save_checkpoint(model, directory: Path, generation: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if generation is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation))
    return directory


class ReferenceSequence:
    """The transformers side of a session: a DynamicCache filled by the encoder, read by the decoder."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config.get_text_config())

    def prefill(self, ids) -> None:
        import torch

        with torch.no_grad():
            self.model.model.encoder(input_ids=torch.tensor([list(ids)], dtype=torch.long), cache=self.cache)

    def denoise(self, canvas, sc_logits: np.ndarray | None = None) -> np.ndarray:
        import torch

        sc = None if sc_logits is None else torch.from_numpy(np.asarray(sc_logits, dtype=np.float32))[None]
        with torch.no_grad():
            out = self.model(decoder_input_ids=torch.tensor([list(canvas)], dtype=torch.long), cache=self.cache,
                             self_conditioning_logits=sc)
        return out.logits[0].numpy()


def load_weights_from_gguf(model, gguf_path: Path) -> None:
    """Replaces the model's text weights by the (dequantized) tensors of a GGUF file, so the
    reference runs on exactly the rounded weights our kernels see. Uses the gguf package's reader
    and gguf.quants as the independent oracle."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from dgemma.convert.hf_to_gguf import gguf_name

    reader = GGUFReader(str(gguf_path))
    tensors = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors}
    state = model.state_dict()
    with torch.no_grad():
        for hf_name, value in state.items():
            try:
                name = gguf_name(hf_name)
            except Exception:
                continue
            if name is None or name not in tensors:
                continue
            value.copy_(torch.from_numpy(np.array(tensors[name], dtype=np.float32).reshape(value.shape)))
        # The encoder shares the decoder's weights (tied), except its layer scalars.


class QuantizedActivations:
    """Context manager: inside it, every F.linear whose weight is one of `weights` first rounds
    its input rows to Q8_0 (ggml's rule, as our integer dot products consume them). With it the
    reference computes what dgemma's Q8_0 kernels compute, so the comparison stays tight."""

    def __init__(self, weights):
        self.storages = {w.untyped_storage().data_ptr() for w in weights}

    @staticmethod
    def q8_0_roundtrip(x):
        import torch

        shape = x.shape
        b = x.reshape(-1, 32).float()
        d = b.abs().amax(dim=1, keepdim=True) / 127.0
        inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
        v = b * inv
        q = torch.sign(v) * torch.floor(v.abs() + 0.5)
        return (d.half().float() * q).reshape(shape)

    def __enter__(self):
        import torch.nn.functional as F

        self._orig = F.linear

        def linear(x, w, b=None):
            if w.untyped_storage().data_ptr() in self.storages:
                x = self.q8_0_roundtrip(x)
            return self._orig(x, w, b)

        F.linear = linear
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F

        F.linear = self._orig


class DrawTable:
    """A table of raw 64-bit draws, the test hook of dgemma's sampler (`draws=`), and the same values
    served to the reference's torch.randint and torch.multinomial through `patch_torch`. The mapping
    is written here from dgemma.h ("Randomness") independently of the core:
      k = ((canvas * (N + 1) + s) * 2 + kind) * C + position
    s = 0 for a canvas's initial ids, s = 1, 2, .. for its steps; kind 0 = the initial id or the step's
    uniform, 1 = the step's re-noise id; an id is (r * V) >> 64, a uniform (r >> 40) / 2^24."""

    def __init__(self, seed: int, n_vocab: int, n_canvas: int, max_steps: int, n_canvases: int = 1):
        self.n_vocab, self.C, self.N = n_vocab, n_canvas, max_steps
        n = n_canvases * (max_steps + 1) * 2 * n_canvas
        self.raw = np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        self._canvas, self._s, self._state = -1, 0, "init"

    def index(self, canvas: int, s: int, kind: int) -> np.ndarray:
        return ((canvas * (self.N + 1) + s) * 2 + kind) * self.C + np.arange(self.C)

    def ids(self, canvas: int, s: int, kind: int) -> np.ndarray:
        r = self.raw[self.index(canvas, s, kind)]
        hi, lo, v = r >> np.uint64(32), r & np.uint64(0xFFFFFFFF), np.uint64(self.n_vocab)
        return ((hi * v + ((lo * v) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)

    def uniforms(self, canvas: int, s: int) -> np.ndarray:
        return (self.raw[self.index(canvas, s, 0)] >> np.uint64(40)).astype(np.float64) / 2.0**24

    # The reference asks, per canvas: C initial ids (randint), then per step C draws (multinomial)
    # and C re-noise ids (randint). A randint after a step's re-noise starts the next canvas.
    def _next_ids(self) -> np.ndarray:
        if self._state in ("init", "after_renoise"):
            self._canvas, self._s, self._state = self._canvas + 1, 0, "after_init"
            return self.ids(self._canvas, 0, 0)
        assert self._state == "after_draw", self._state
        self._state = "after_renoise"
        return self.ids(self._canvas, self._s, 1)

    def _next_uniforms(self) -> np.ndarray:
        assert self._state in ("after_init", "after_renoise"), self._state
        self._s += 1
        self._state = "after_draw"
        return self.uniforms(self._canvas, self._s)

    def patch_torch(self, monkeypatch):
        import torch

        def randint(*args, low=0, high=None, size=None, **kw):
            if high is None:
                low, high = (0, args[0]) if len(args) == 1 else args[:2]
                size = args[-1] if size is None and len(args) > 2 else size
            assert high == self.n_vocab, high
            assert int(np.prod(size)) == self.C, size
            return torch.from_numpy(self._next_ids()).view(*size)

        def multinomial(probs, num_samples, **kw):
            # Inverse CDF with the table's uniforms: the first index whose cumulative probability
            # exceeds u times the total (the rule dgemma's sampler uses).
            assert num_samples == 1
            p = probs.detach().double().numpy()
            assert p.shape[0] == self.C, p.shape
            u = self._next_uniforms()
            cum = np.cumsum(p, axis=-1)
            idx = (cum > (u * cum[:, -1])[:, None]).argmax(axis=-1)
            return torch.from_numpy(idx.astype(np.int64))[:, None]

        monkeypatch.setattr(torch, "randint", randint)
        monkeypatch.setattr(torch, "multinomial", multinomial)
