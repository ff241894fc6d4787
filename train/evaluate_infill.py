"""Infill on the shipped demo model, which was NOT trained for it: held-out task answers with one
word cut out, filled through dgemma (model.infill), against plain continuation without the suffix.

    python train/evaluate_infill.py [MODEL.gguf] [--per-task 30] [--max-hole-tokens 4]

The hole is one space-separated word of the answer (not the first), with the space before it, so
the fixed text and the hole are whole tokens as in training. Per task: exact match of the hole
with each way of finding its length (EOS inside the hole; every length scored), exact match of
plain continuation (the answer up to the hole, then generate: correct when it continues with the
word), decoder steps per infill, and whether every output kept the fixed text
byte for byte. Prints one table.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import N_HELD_OUT, eval_set  # noqa: E402

TASKS = ("copy", "reverse", "sort", "count_up", "sentence", "code")


def instances(per_task: int):
    """(task, prompt, prefix, hole, suffix) from held-out examples whose answer has two words or more."""
    out = defaultdict(list)
    for i, (task, prompt, answer) in enumerate(eval_set(N_HELD_OUT)):
        words = answer.split(" ")
        if task not in TASKS or len(words) < 2 or len(out[task]) >= per_task:
            continue
        j = random.Random(i).randrange(1, len(words))
        prefix, suffix = " ".join(words[:j]), "".join(" " + w for w in words[j + 1:])
        if words[j]:
            out[task].append((prompt, prefix, " " + words[j], suffix))
    return out


def evaluate(model, per_task: int, max_hole_tokens: int, seed: int = 0):
    import dgemma.generate as g

    rows = {}
    for task, items in instances(per_task).items():
        hits, steps, kept = defaultdict(int), defaultdict(int), 0
        for k, (prompt, prefix, hole, suffix) in enumerate(items):
            msgs = [{"role": "user", "content": prompt}]
            for method in ("eos", "scored"):
                r = model.infill(prefix, suffix, prompt=msgs, max_hole_tokens=max_hole_tokens, hole_length=method,
                                 seed=seed + k)
                hits[method] += r.fills[0] == hole
                kept += r.text == prefix + r.fills[0] + suffix
                steps[method] += r.steps
            prefix_ids = g._Prompt(model, msgs, None).ids + model.tokenizer.encode(prefix)
            cont = g.run(model, prefix_ids, max_new_tokens=model.config.canvas_length, seed=seed + k).text
            hits["continuation"] += (cont + " ").startswith(hole + " ")
        n = len(items)
        rows[task] = {"n": n, **{m: hits[m] / n for m in ("eos", "scored", "continuation")},
                      "steps_eos": steps["eos"] / n, "steps_scored": steps["scored"] / n, "fixed_kept": kept == 2 * n}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--per-task", type=int, default=30)
    ap.add_argument("--max-hole-tokens", type=int, default=4)
    args = ap.parse_args()
    import dgemma

    with dgemma.Model(args.model or dgemma.demo_model_path()) as m:
        rows = evaluate(m, args.per_task, args.max_hole_tokens)
    print("| task | n | hole: EOS inside | hole: lengths scored | continuation, no suffix | steps (EOS / scored) "
          "| fixed text kept |")
    print("|---|---|---|---|---|---|---|")
    for task, r in rows.items():
        print(f"| {task} | {r['n']} | {r['eos']:.0%} | {r['scored']:.0%} | {r['continuation']:.0%} "
              f"| {r['steps_eos']:.1f} / {r['steps_scored']:.1f} | {'yes' if r['fixed_kept'] else 'NO'} |")


if __name__ == "__main__":
    main()
