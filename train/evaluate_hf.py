"""Decode held-out prompts with transformers' DiffusionGemmaForBlockDiffusion.generate; print per-task accuracy.

An answer is correct when the text before the first EOS (<eos> or END_OF_TURN) equals the reference exactly.
Prompts are batched by token length, so no padding is needed. The sampler settings come from the checkpoint's
generation_config.json (the contract's defaults).
Usage: nice -n 19 python train/evaluate_hf.py [train/out/latest] [--per-task 20] [--show 2]
"""
import argparse
import collections
import os
import time

import sentencepiece as spm
import torch
from transformers import DiffusionGemmaForBlockDiffusion

from tasks import N_HELD_OUT, eval_set, render_prompt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=os.path.join(os.path.dirname(__file__), "out", "latest"))
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--show", type=int, default=2, help="sample outputs to print per task")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(a.model).eval()
    stops = set(model.generation_config.eos_token_id) | {sp.pad_id()}

    per_task = collections.defaultdict(list)
    for ex in eval_set(N_HELD_OUT):  # at most ~100 per task
        if len(per_task[ex[0]]) < a.per_task:
            per_task[ex[0]].append(ex)
    by_len = collections.defaultdict(list)  # prompt length -> [(task, prompt ids, answer)]
    for exs in per_task.values():
        for task, p, ans in exs:
            ids = [sp.bos_id()] + sp.encode(render_prompt(p))
            by_len[len(ids)].append((task, p, ids, ans))

    results, tpf, t0 = collections.defaultdict(list), [], time.time()
    for length, group in sorted(by_len.items()):
        out = model.generate(torch.tensor([g[2] for g in group]))
        tpf += out.tokens_per_forward.tolist()
        for (task, p, _, ans), seq in zip(group, out.sequences[:, length:].tolist()):
            cut = next((i for i, x in enumerate(seq) if x in stops), len(seq))
            results[task].append((sp.decode(seq[:cut]) == ans, cut < len(seq), p, sp.decode(seq[:cut]), ans))

    total = [r for rs in results.values() for r in rs]
    for task in sorted(results):
        rs = results[task]
        print(f"{task:11s} acc {sum(r[0] for r in rs) / len(rs):.2f}  eos {sum(r[1] for r in rs) / len(rs):.2f}  n {len(rs)}")
        for _, _, p, got, ans in rs[:a.show]:
            print(f"    {p!r} -> {got!r} (want {ans!r})")
    print(f"overall acc {sum(r[0] for r in total) / len(total):.3f} over {len(total)} prompts; "
          f"tokens/forward {sum(tpf) / len(tpf):.2f}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
