"""Evaluates a shipped GGUF through dgemma (not transformers) on held-out task instances.

    python train/evaluate.py [MODEL.gguf] [--per-task 50] [--seed 0]

Reports exact-match accuracy per task, mean tokens per forward (generated tokens, EOS included, per
decoder step), how often a canvas stopped early (before the step budget), and how often generation
ended with EOS rather than at the length limit.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import N_HELD_OUT, eval_set  # noqa: E402


def evaluate(model, per_task: int, seed: int = 0, max_new_tokens: int = 96):
    import dgemma.generate as g

    examples = defaultdict(list)
    for task, prompt, answer in eval_set(N_HELD_OUT):  # held out of training
        if len(examples[task]) < per_task:
            examples[task].append((prompt, answer))
    n_steps_budget = model.config.sampler.max_steps
    rows, totals = {}, defaultdict(float)
    for task, items in sorted(examples.items()):
        correct = 0
        for i, (prompt, answer) in enumerate(items):
            steps_per_canvas = [0]

            def on_step(step, draft):
                steps_per_canvas[-1] = step
                return False

            def on_canvas(tokens):
                steps_per_canvas.append(0)

            gen = g.run(model, [{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens, seed=seed + i,
                        on_step=on_step, on_canvas=on_canvas)
            correct += gen.text.strip() == answer.strip()
            canvases = [s for s in steps_per_canvas if s > 0]
            totals["tokens"] += len(gen.tokens) + gen.eos_generated
            totals["steps"] += gen.steps
            totals["canvases"] += len(canvases)
            totals["early"] += sum(s < n_steps_budget for s in canvases)
            totals["eos"] += gen.finish_reason == "eos"
            totals["n"] += 1
        rows[task] = correct / len(items)
    return rows, {"tokens_per_forward": totals["tokens"] / totals["steps"],
                  "early_stop_rate": totals["early"] / totals["canvases"],
                  "eos_rate": totals["eos"] / totals["n"], "examples": int(totals["n"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    args = ap.parse_args()
    import dgemma

    with dgemma.Model(args.model or dgemma.demo_model_path(), threads=args.threads) as m:
        rows, summary = evaluate(m, args.per_task, args.seed)
    print("| task | accuracy |")
    print("|---|---|")
    for task, acc in rows.items():
        print(f"| {task} | {acc:.0%} |")
    print(f"\n{summary['examples']} held-out examples; tokens per forward {summary['tokens_per_forward']:.2f}; "
          f"canvases stopped early {summary['early_stop_rate']:.0%}; ended with EOS {summary['eos_rate']:.0%}")


if __name__ == "__main__":
    main()
