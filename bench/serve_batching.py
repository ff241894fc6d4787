"""Continuous batching on a random-weight model: N streams arriving one step apart, run by the core's
scheduler, against the same N run one at a time; then a chat's second turn with the prefix cache.
Both timed runs do the same work (no prefix cache: it commits each last canvas once more, for reuse);
their CPU time (all threads) is printed with the wall time, which a busy machine makes noisy.

    python bench/serve_batching.py [--preset medium] [--streams 8] [--new-tokens 256] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import dgemma
from dgemma.convert.random_model import write_random_gguf
from dgemma.generate import sampler_params
from dgemma.scheduler import Scheduler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="denoising steps per canvas (no early stop)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens per stream")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    sampler = dict(max_denoising_steps=a.steps, stability_threshold=0, confidence_threshold=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{a.preset}.gguf")
        write_random_gguf(path, a.preset, "F32", seed=0)
        with dgemma.Model(path, threads=a.threads) as m:
            prompts = [[(7 * i + j) % m.config.n_vocab for j in range(a.prompt)] for i in range(a.streams)]
            t0, c0 = time.perf_counter(), time.process_time()
            alone = [m.generate(p, max_new_tokens=a.new_tokens, seed=i, **sampler) for i, p in enumerate(prompts)]
            t_alone, c_alone = time.perf_counter() - t0, time.process_time() - c0
            with Scheduler(m, max_batch=a.streams) as s:
                t0, c0 = time.perf_counter(), time.process_time()
                reqs = []
                for i, p in enumerate(prompts):  # one arrives per step
                    reqs.append(s.submit(p, sampler_params(m, i, **sampler), a.new_tokens))
                    s.step()
                s.run()
                t_sched, c_sched = time.perf_counter() - t0, time.process_time() - c0
                st = s.stats()
            same = all(r.tokens() == g.tokens for r, g in zip(reqs, alone))
            with Scheduler(m, max_batch=a.streams, prefix_cache=2) as s:
                # A chat's second turn: the first turn's prompt and answer, then 16 new tokens.
                first = reqs[0].tokens()
                t1 = s.submit(prompts[0], sampler_params(m, 0, **sampler), a.new_tokens, [first[-1]])
                s.run()
                before = s.stats()["prefill_tokens"]
                turn2 = prompts[0] + t1.tokens() + [first[-1]] + list(range(16))
                t2 = s.submit(turn2, sampler_params(m, 1, **sampler), a.new_tokens)
                s.run()
                prefilled = s.stats()["prefill_tokens"] - before
    steps = sum(r.result.n_steps for r in reqs)
    print(f"{a.streams} streams, {a.preset} preset, {a.new_tokens} new tokens, {a.steps} steps per canvas, "
          f"{a.prompt}-token prompts arriving one step apart")
    print("| measure | value |\n|---|---|")
    print(f"| denoising steps of all streams (sum) | {steps} |")
    print(f"| decoder passes run by the scheduler | {st['decoder_passes']} |")
    print(f"| forward passes in all (with prefill and commits) | {st['passes']} |")
    print(f"| tokens identical to each stream alone | {'yes' if same else 'NO'} |")
    print(f"| wall time, one at a time (s) | {t_alone:.2f} |")
    print(f"| wall time, scheduler (s) | {t_sched:.2f} |")
    print(f"| speed-up (wall) | {t_alone / t_sched:.2f}x |")
    print(f"| CPU time, one at a time / scheduler (s) | {c_alone:.1f} / {c_sched:.1f} |")
    print(f"| speed-up (CPU time) | {c_alone / c_sched:.2f}x |")
    print(f"| second turn: prompt tokens | {len(turn2)} |")
    print(f"| second turn: reused from the prefix cache | {t2.result.n_prompt_cached} |")
    print(f"| second turn: prefilled | {prefilled} |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
