"""Infill through dgemma (model.infill) on held-out instances, against plain continuation without the suffix.

    python train/evaluate_infill.py [MODEL.gguf] [--per-task 30] [--max-hole-tokens 4] [--threads N]

Two kinds of instances:
  - infill_tasks.py documents (record, code_line, story, shopping): the hole is the document's key
    segment, fixed by the text after it and not by the prompt; hole of at most HOLE_TOKENS[task] tokens;
  - tasks.py answers with one word cut out (a word after the first, with the space before it), hole of
    at most --max-hole-tokens tokens: these answers are fixed by the prompt.
Per task: exact match of the hole with each way of finding its length (EOS inside the hole; every
length scored), exact match of plain continuation (the prompt and the text before the hole, then
generate: correct when it writes the hole and then what the suffix starts with), how many points
the suffix adds (EOS minus continuation), decoder steps per infill, tokens per forward with EOS
(hole tokens written, plus the EOS, per decoder step) and whether every output kept the fixed text
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
import infill_tasks  # noqa: E402
from tasks import N_HELD_OUT, eval_set  # noqa: E402

WORD_TASKS = ("copy", "reverse", "sort", "count_up", "sentence", "code")
# Room for the key segment and its EOS, while the text that fixes it still fits the canvas after it.
HOLE_TOKENS = {"record": 8, "code_line": 12, "story": 6, "shopping": 6}


def instances(per_task: int, max_hole_tokens: int):
    """task -> [(prompt, prefix, hole, suffix, max hole tokens)], held out of training."""
    out = defaultdict(list)
    for d in infill_tasks.eval_documents():
        if len(out[d.task]) < per_task:
            (prefix, suffix), (hole,) = d.parts({d.key})
            out[d.task].append((d.prompt, prefix, hole, suffix, HOLE_TOKENS[d.task]))
    for i, (task, prompt, answer) in enumerate(eval_set(N_HELD_OUT)):
        words = answer.split(" ")
        if task not in WORD_TASKS or len(words) < 2 or len(out[task]) >= per_task:
            continue
        j = random.Random(i).randrange(1, len(words))
        prefix, suffix = " ".join(words[:j]), "".join(" " + w for w in words[j + 1:])
        if words[j]:
            out[task].append((prompt, prefix, " " + words[j], suffix, max_hole_tokens))
    return out


def evaluate(model, per_task: int, max_hole_tokens: int, seed: int = 0):
    import dgemma.generate as g

    rows = {}
    for task, items in instances(per_task, max_hole_tokens).items():
        hits, steps, kept, written = defaultdict(int), defaultdict(int), 0, 0
        for k, (prompt, prefix, hole, suffix, n_hole) in enumerate(items):
            msgs = [{"role": "user", "content": prompt}]
            for method in ("eos", "scored"):
                r = model.infill(prefix, suffix, prompt=msgs, max_hole_tokens=n_hole, hole_length=method,
                                 seed=seed + k)
                hits[method] += r.fills[0] == hole
                kept += r.text == prefix + r.fills[0] + suffix
                steps[method] += r.steps
                if method == "eos":
                    written += r.generated_tokens
            prefix_ids = g._Prompt(model, msgs, None).ids + model.tokenizer.encode(prefix)
            cont = g.run(model, prefix_ids, max_new_tokens=model.config.canvas_length, seed=seed + k).text
            # right when it writes the hole, then the suffix's first character (or a word break at the end)
            hits["continuation"] += (cont + (suffix or " ")).startswith(hole + (suffix[:1] or " "))
        n = len(items)
        rows[task] = {"n": n, "hole_tokens": items[0][4],
                      **{m: hits[m] / n for m in ("eos", "scored", "continuation")},
                      "steps_eos": steps["eos"] / n, "steps_scored": steps["scored"] / n,
                      "tokens_per_forward": written / steps["eos"], "fixed_kept": kept == 2 * n}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--per-task", type=int, default=30)
    ap.add_argument("--max-hole-tokens", type=int, default=4, help="hole size for the words cut from tasks.py answers")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    args = ap.parse_args()
    import dgemma

    with dgemma.Model(args.model or dgemma.demo_model_path(), threads=args.threads) as m:
        rows = evaluate(m, args.per_task, args.max_hole_tokens)
    print("| task | n | hole (tokens) | hole: EOS inside | hole: lengths scored | continuation, no suffix "
          "| suffix adds | steps (EOS / scored) | tokens/forward (EOS) | fixed text kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, r in rows.items():
        print(f"| {task} | {r['n']} | {r['hole_tokens']} | {r['eos']:.0%} | {r['scored']:.0%} | {r['continuation']:.0%} "
              f"| {100 * (r['eos'] - r['continuation']):+.0f} | {r['steps_eos']:.1f} / {r['steps_scored']:.1f} "
              f"| {r['tokens_per_forward']:.2f} | {'yes' if r['fixed_kept'] else 'NO'} |")


if __name__ == "__main__":
    main()
