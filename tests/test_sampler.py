"""The entropy-bound sampler against transformers' classes, step for step, with the same random
draws fed to both sides (reference.DrawTable); the draw mapping and generator of the contract
(dgemma.h, "Randomness"); fixed positions; NaN logits; and the categorical draw's distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler, EntropyBoundSamplerConfig, LinearTemperatureScheduleLogitsProcessor,
    StableAndConfidentStoppingCriteria)

from reference import DrawTable

import dgemma
from dgemma.sampler import Sampler

C = 24


def random_logits(rng, steps, V):
    """Soft-capped logits as a random model gives them: high entropy, one accepted per step."""
    return [np.float32(30) * np.tanh(rng.normal(0, 3, (C, V)).astype(np.float32) / 30) for _ in range(steps)]


def sharp_logits(rng, steps, V):
    """Low-entropy logits that settle: a target token per position, more confident each step, so
    many positions are accepted per step and the stable-and-confident stop fires."""
    target = rng.integers(0, V, C)
    out = []
    for k in range(steps):
        z = rng.normal(0, 1, (C, V)).astype(np.float32)
        z[np.arange(C), target] += 4.0 + 2.5 * k
        out.append(np.float32(30) * np.tanh(z / 30))
    return out


def reference_run(logits_seq, params, stream, monkeypatch):
    V = logits_seq[0].shape[1]
    stream.patch_torch(monkeypatch)
    N = params["max_denoising_steps"]
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=params["entropy_bound"]), C, V, N)
    proc = LinearTemperatureScheduleLogitsProcessor(params["t_min"], params["t_max"], N)
    stopper = StableAndConfidentStoppingCriteria(params["stability_threshold"], params["confidence_threshold"])
    canvas = sampler.initialize_canvas(1, "cpu")
    steps = [dict(canvas0=canvas[0].numpy().copy())]
    for k, z in enumerate(logits_seq):
        n = N - k
        y = proc(None, torch.from_numpy(z)[None], cur_step=torch.tensor(n, dtype=torch.int32))
        probs = torch.softmax(y, dim=-1, dtype=torch.float32)
        draw = torch.multinomial(probs.view(-1, V), num_samples=1).view(1, C)
        amax = torch.argmax(y, dim=-1)
        accepted = sampler.accept_canvas(canvas, draw, y, n)
        mask = sampler.accepted_token_mask[0].numpy().copy()
        canvas = sampler.renoise_canvas(accepted, n)
        stop = bool(stopper(amax, y)[0])
        steps.append(dict(y=y[0].numpy(), canvas=canvas[0].numpy().copy(), argmax=amax[0].numpy(), mask=mask,
                          stop=stop))
        if stop:
            break
    return steps


def ours_run(logits_seq, params, stream):
    s = Sampler(C, logits_seq[0].shape[1], draws=stream.raw, **params)
    steps = [dict(canvas0=s.init_canvas())]
    N = params["max_denoising_steps"]
    for k, z in enumerate(logits_seq):
        r = s.step(N - k, z)
        steps.append(dict(y=r.processed_logits, canvas=r.canvas, argmax=r.argmax, mask=r.accepted, stop=r.stop))
        if r.stop:
            break
    return steps


PARAMS = {
    "defaults": dict(max_denoising_steps=48, t_min=0.4, t_max=0.8, entropy_bound=0.1, stability_threshold=1,
                     confidence_threshold=0.005),
    "loose": dict(max_denoising_steps=12, t_min=0.3, t_max=1.1, entropy_bound=2.5, stability_threshold=2,
                  confidence_threshold=0.05),
    "no-stability": dict(max_denoising_steps=10, t_min=0.5, t_max=0.9, entropy_bound=0.5, stability_threshold=0,
                         confidence_threshold=0.02),
}


def table(params, V, seed=5):
    return DrawTable(seed, V, C, params["max_denoising_steps"])


# V = 500 fits one chunk of the blocked reductions; 3000 spans three, the last one partial.
@pytest.mark.parametrize("V", [500, 3000])
@pytest.mark.parametrize("kind", ["random", "sharp"])
@pytest.mark.parametrize("pname", sorted(PARAMS))
def test_steps_match_transformers(kind, pname, V, monkeypatch):
    params = PARAMS[pname]
    rng = np.random.default_rng(len(kind) * 100 + len(pname) + V)
    n_steps = min(params["max_denoising_steps"], 12)
    logits_seq = (random_logits if kind == "random" else sharp_logits)(rng, n_steps, V)
    ref = reference_run(logits_seq, params, table(params, V), monkeypatch)
    ours = ours_run(logits_seq, params, table(params, V))
    assert len(ours) == len(ref), "the early stop fired at a different step"
    np.testing.assert_array_equal(ours[0]["canvas0"], ref[0]["canvas0"])
    accepted_counts = []
    for k, (o, r) in enumerate(zip(ours[1:], ref[1:])):
        np.testing.assert_allclose(o["y"], r["y"], rtol=1e-6, atol=0, err_msg=f"step {k}: processed logits")
        np.testing.assert_array_equal(o["argmax"], r["argmax"], err_msg=f"step {k}: argmax")
        np.testing.assert_array_equal(o["mask"], r["mask"], err_msg=f"step {k}: acceptance mask")
        np.testing.assert_array_equal(o["canvas"], r["canvas"], err_msg=f"step {k}: next canvas")
        assert o["stop"] == r["stop"], f"step {k}: stop decision"
        accepted_counts.append(int(o["mask"].sum()))
    if kind == "sharp":
        assert max(accepted_counts) > 1, "the sharpened logits should accept several positions per step"
        assert ours[-1]["stop"] or pname == "no-stability" and len(ours) - 1 == n_steps
    else:
        assert accepted_counts[0] >= 1


def test_sharp_logits_stop_early():
    rng = np.random.default_rng(1)
    params = dict(PARAMS["defaults"])
    logits_seq = sharp_logits(rng, 12, 500)
    ours = ours_run(logits_seq, params, table(params, 500, seed=2))
    assert ours[-1]["stop"] and len(ours) - 1 < 12


def test_categorical_draw_distribution():
    """Pearson's chi-square on a fixed 8-way distribution: the draws of accepted positions follow
    softmax(processed logits). With every position accepted the next canvas is the draws."""
    p = np.array([0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02])
    n_pos, rounds = 4096, 4
    counts = np.zeros(8)
    for r in range(rounds):
        s = Sampler(n_pos, 8, max_denoising_steps=1, t_min=0.5, t_max=1.0, entropy_bound=1e9,
                    stability_threshold=0, confidence_threshold=0.0, seed=100 + r)
        s.init_canvas()
        # At step 1 of 1 the temperature is t_max = 1, so the processed logits are log p.
        step = s.step(1, np.tile(np.log(p).astype(np.float32), (n_pos, 1)))
        assert step.accepted.all()
        counts += np.bincount(step.canvas, minlength=8)
    expected = p * n_pos * rounds
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.32, f"chi2 = {chi2:.1f} (df 7, p = 0.001 critical value 24.32)"
    wrong = np.roll(p, 1) * n_pos * rounds  # the same test rejects a wrong distribution
    assert float(((counts - wrong) ** 2 / wrong).sum()) > 1000


@pytest.mark.parametrize("bad", [dict(max_denoising_steps=0), dict(t_min=0.8, t_max=0.8), dict(t_min=0.9, t_max=0.5),
                                 dict(entropy_bound=-0.1), dict(stability_threshold=-1),
                                 dict(confidence_threshold=-1.0), dict(t_min=float("nan"))])
def test_bad_parameters(bad):
    with pytest.raises(dgemma.InvalidArgumentError):
        Sampler(4, 10, **bad)


def test_bad_step_and_shapes():
    s = Sampler(4, 10, max_denoising_steps=5)
    s.init_canvas()
    with pytest.raises(dgemma.InvalidArgumentError, match="step 6"):
        s.step(6, np.zeros((4, 10), np.float32) + 1)
    with pytest.raises(dgemma.InvalidArgumentError, match="shape"):
        s.step(1, np.zeros((4, 9), np.float32))


def splitmix64(seed: int, n: int) -> np.ndarray:
    """Outputs 0 .. n-1 of splitmix64 seeded with `seed`, written from its definition."""
    out, state, mask = [], seed, 2**64 - 1
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return np.array(out, dtype=np.uint64)


def test_generator_is_splitmix64_through_the_mapping():
    """The seeded generator's value k is splitmix64 output k: a table of those outputs gives the
    same canvases, step for step, as the seed (two canvases, so the canvas index enters k)."""
    params = dict(PARAMS["loose"], seed=1234)
    V, N = 700, params["max_denoising_steps"]
    rng = np.random.default_rng(9)
    raw = splitmix64(1234, 2 * (N + 1) * 2 * C)
    seeded = Sampler(C, V, **params)
    tabled = Sampler(C, V, draws=raw, **{k: v for k, v in params.items() if k != "seed"})
    for canvas in range(2):
        np.testing.assert_array_equal(seeded.init_canvas(), tabled.init_canvas())
        for n in range(N, N - 4, -1):
            z = random_logits(rng, 1, V)[0]
            a, b = seeded.step(n, z), tabled.step(n, z)
            np.testing.assert_array_equal(a.canvas, b.canvas)
            np.testing.assert_array_equal(a.argmax, b.argmax)
    # The initial ids follow the mapping: canvas 1's ids are entries k = ((1 * (N + 1) + 0) * 2 + 0) * C + i.
    t = DrawTable(0, V, C, N)
    t.raw = raw
    fresh = Sampler(C, V, draws=raw, **{k: v for k, v in params.items() if k != "seed"})
    fresh.init_canvas()
    np.testing.assert_array_equal(fresh.init_canvas(), t.ids(1, 0, 0))


def test_draw_table_too_short_is_an_error():
    s = Sampler(C, 50, max_denoising_steps=4, draws=np.arange(C, dtype=np.uint64))
    s.init_canvas()
    with pytest.raises(dgemma.OutOfRangeError, match="draw table"):
        s.step(4, np.zeros((C, 50), np.float32))


def test_fixed_positions():
    """Fixed positions keep their tokens in every canvas the sampler writes, their argmax is their
    token, they stay out of the entropy budget (free positions are accepted as if they were absent),
    and the free positions see the same random values with or without the mask."""
    V, N = 300, 6
    rng = np.random.default_rng(4)
    fixed = np.zeros(C, bool)
    fixed[::3] = True
    tokens = rng.integers(0, V, C).astype(np.int32)
    raw = DrawTable(11, V, C, N).raw
    masked = Sampler(C, V, max_denoising_steps=N, entropy_bound=0.5, draws=raw, fixed=fixed)
    plain = Sampler(C, V, max_denoising_steps=N, entropy_bound=0.5, draws=raw)
    masked.canvas[:] = tokens
    c_masked, c_plain = masked.init_canvas(), plain.init_canvas()
    np.testing.assert_array_equal(c_masked[fixed], tokens[fixed])
    np.testing.assert_array_equal(c_masked[~fixed], c_plain[~fixed])
    for n in range(N, 0, -1):
        z = random_logits(rng, 1, V)[0]
        z[fixed] = 0.0  # a flat row: maximal entropy, it would use up the budget if it counted
        r = masked.step(n, z)
        np.testing.assert_array_equal(r.canvas[fixed], tokens[fixed])
        np.testing.assert_array_equal(r.argmax[fixed], tokens[fixed])
        assert not r.accepted[fixed].any()
        assert r.accepted[~fixed].any()


def test_all_fixed_canvas_returns_itself_in_one_step():
    V = 100
    tokens = np.arange(C, dtype=np.int32) * 3
    s = Sampler(C, V, max_denoising_steps=10, fixed=np.ones(C, bool))
    s.canvas[:] = tokens
    np.testing.assert_array_equal(s.init_canvas(), tokens)
    r = s.step(10, np.random.default_rng(0).normal(size=(C, V)).astype(np.float32))
    assert r.stop
    np.testing.assert_array_equal(r.canvas, tokens)
    np.testing.assert_array_equal(r.argmax, tokens)


def test_nan_and_infinite_logits_have_a_defined_outcome():
    """A row with a NaN counts the NaN as -inf; a row with no finite maximum has argmax 0 and
    infinite entropy: never accepted, so re-noised; the step never stops on it."""
    V = 64
    rng = np.random.default_rng(3)
    z = rng.normal(size=(C, V)).astype(np.float32)
    z[0, 5] = np.nan
    z[1, :] = np.nan
    z[2, :] = -np.inf
    z[3, 7] = np.inf
    s = Sampler(C, V, max_denoising_steps=4, entropy_bound=1e9, stability_threshold=0, confidence_threshold=1e9)
    s.init_canvas()
    r = s.step(4, z)
    assert r.argmax[0] == np.nanargmax(np.where(np.isnan(z[0]), -np.inf, z[0]))
    assert r.accepted[0]
    for row in (1, 2, 3):
        assert r.argmax[row] == 0 and not r.accepted[row]
    assert not r.stop  # infinite mean entropy is not confident
