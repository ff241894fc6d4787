"""The scheduler (continuous batching): requests that arrive while others run get exactly the tokens
they get alone; decoder passes are shared; prompts are prefilled in chunks between steps; rows per
pass, memory and cancellation bound what runs; a conversation's next turn prefills only its new
tokens."""

from __future__ import annotations

import pytest

import dgemma
from dgemma.generate import sampler_params
from dgemma.scheduler import Scheduler

# Never stops early on a random model's flat distributions: every canvas runs all its steps.
SAMPLER = dict(max_denoising_steps=6, t_min=0.4, t_max=0.8, entropy_bound=0.5, stability_threshold=0,
               confidence_threshold=0.0)
PROMPTS = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [40, 41], [7] * 30]


@pytest.fixture(scope="module")
def tiny_model(workdir):
    from dgemma.convert.random_model import write_random_gguf

    path = workdir / "sched-tiny.gguf"
    write_random_gguf(path, "tiny", "F32", seed=21, max_position_embeddings=1024)
    with dgemma.Model(path, threads=2) as m:
        yield m


def alone(m, prompt, seed, n=40, eos=()):
    return m.generate(prompt, max_new_tokens=n, seed=seed, eos_ids=list(eos), **SAMPLER).tokens


def test_staggered_arrivals_get_the_tokens_they_get_alone(tiny_model):
    m = tiny_model
    expect = [alone(m, p, seed=100 + i) for i, p in enumerate(PROMPTS)]
    with Scheduler(m, max_batch=8, prefill_chunk=8) as s:  # the long prompts take several passes
        reqs = [s.submit(PROMPTS[0], sampler_params(m, 100, **SAMPLER), 40)]
        for i, p in enumerate(PROMPTS[1:], start=1):
            for _ in range(3 * i):  # the others arrive while the first denoises
                s.step()
            reqs.append(s.submit(p, sampler_params(m, 100 + i, **SAMPLER), 40))
        s.run()
        st = s.stats()
    assert [r.tokens() for r in reqs] == expect
    assert all(r.result.n_steps == 3 * SAMPLER["max_denoising_steps"] for r in reqs)
    # Shared passes: fewer decoder passes than the steps of all requests together.
    assert st["canvas_steps"] == sum(r.result.n_steps for r in reqs)
    assert st["decoder_passes"] < st["canvas_steps"]
    assert st["prefill_tokens"] == sum(len(p) for p in PROMPTS) and st["running"] == 0 and st["waiting"] == 0


def test_rows_per_pass_are_bounded_and_turns_are_fair(tiny_model):
    m = tiny_model
    with Scheduler(m, max_batch=2) as s:
        reqs = [s.submit(p, sampler_params(m, 7, **SAMPLER), 32) for p in PROMPTS]
        finished_at = []
        while s.step():
            finished_at.append(sum(r.done.is_set() for r in reqs))
        st = s.stats()
    assert [r.tokens() for r in reqs] == [alone(m, p, 7, 32) for p in PROMPTS]
    assert st["canvas_steps"] <= 2 * st["decoder_passes"]
    # Taking turns, all four progress together: none finishes before the others are well under way.
    first_done = finished_at.index(1)
    assert first_done >= 0.75 * len(finished_at)


def test_admission_by_memory(tiny_model):
    m = tiny_model
    one = m.memory(n_ctx_tokens=len(PROMPTS[3]) + 48, n_batch=0, n_sessions=1)["per_session"]
    with Scheduler(m, memory_budget=one + one // 2) as s:  # room for one request at a time
        reqs = [s.submit(p, sampler_params(m, 3, **SAMPLER), 48) for p in PROMPTS]
        running = []
        while s.step():
            running.append(s.stats()["running"])
    assert max(running) == 1
    assert [r.tokens() for r in reqs] == [alone(m, p, 3, 48) for p in PROMPTS]


def test_cancel_leaves_the_others_alone(tiny_model):
    m = tiny_model
    with Scheduler(m) as s:
        a = s.submit(PROMPTS[0], sampler_params(m, 5, **SAMPLER), 48)
        b = s.submit(PROMPTS[1], sampler_params(m, 6, **SAMPLER), 48)
        queued = s.submit(PROMPTS[2], sampler_params(m, 6, **SAMPLER), 48)
        for _ in range(4):
            s.step()
        s.cancel(a)
        s.cancel(queued)
        s.run()
    assert a.done.is_set() and a.result.finish_reason == 3 and queued.result.finish_reason == 3
    assert b.tokens() == alone(m, PROMPTS[1], 6, 48)


def test_a_second_turn_prefills_only_its_new_tokens(tiny_model):
    m = tiny_model
    free = alone(m, PROMPTS[1], 11, 48)
    eos = free[20]  # ends the first turn inside its second canvas
    first = free[:free.index(eos)]
    with Scheduler(m, prefix_cache=4) as s:
        t1 = s.submit(PROMPTS[1], sampler_params(m, 11, **SAMPLER), 48, [eos])
        s.run()
        assert t1.tokens() == first and t1.result.finish_reason == 1
        before = s.stats()["prefill_tokens"]
        turn2 = PROMPTS[1] + first + [eos] + [30, 31, 32]  # the history, then the user's new tokens
        t2 = s.submit(turn2, sampler_params(m, 12, **SAMPLER), 32)
        s.run()
        st = s.stats()
    assert t2.result.n_prompt_cached == len(turn2) - 3
    assert st["prefill_tokens"] - before == 3 and st["cached_tokens"] == len(turn2) - 3
    assert t2.tokens() == alone(m, turn2, 12, 32)  # the cached prefix gives the same tokens as a fresh prefill


def test_bad_requests_fail_at_submit(tiny_model):
    m = tiny_model
    with Scheduler(m) as s:
        with pytest.raises(dgemma.OutOfRangeError, match="context length"):
            s.submit([1] * 1000, sampler_params(m, 0, **SAMPLER), 64)
        with pytest.raises(dgemma.OutOfRangeError):
            s.submit([1, m.config.n_vocab], sampler_params(m, 0, **SAMPLER), 16)
        with pytest.raises(dgemma.InvalidArgumentError):
            s.submit([], sampler_params(m, 0, **SAMPLER), 16)
        with pytest.raises(dgemma.InvalidArgumentError):
            s.submit([1, 2], sampler_params(m, 0, **SAMPLER), 0)
        assert not s.step() and s.stats()["waiting"] == 0
    with pytest.raises(dgemma.InvalidArgumentError):
        Scheduler(m, max_batch=0)
    with pytest.raises(dgemma.InvalidArgumentError):
        Scheduler(m, prefill_chunk=513)
