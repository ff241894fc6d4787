"""Training units: (encoder ids, clean canvas, free mask) in the layout dgemma writes at inference.

Generation (tasks.py answers, infill_tasks documents written whole): the encoder reads <bos>, the
rendered prompt and the answer canvases before the target one; the canvas is the answer (+ END_OF_TURN)
then <pad>, every position free (noised, in the loss).

Infill (python/dgemma/infill.py with hole_length="eos", `_Document.layout`): the encoder reads <bos>,
the rendered prompt (or nothing: a document without a prompt) and the text before the first hole,
tokenized on its own; the canvas holds each hole (its text, then <eos> and <pad> up to the hole's
length; or, for a fifth of the holes, exactly its text, as hole_length="scored" denoises it), each
fixed text after a hole tokenized on its own, then, if the document ends inside the canvas, the end
marker (END_OF_TURN after a chat prompt, else <eos>) and <pad>. Only hole positions are free: at
inference the rest is never noised.
"""
import math
import random

from tasks import END_OF_TURN, render_prompt

MAX_HOLE = 16        # hole lengths seen in training: len(fill)+1 .. MAX_HOLE (dgemma's default is canvas/2)
EXACT_HOLE_P = 0.2   # holes of exactly the fill's length (what hole_length="scored" denoises)
TRUNCATE_P = 0.25   # hole lengths that may push the end of the document out of the canvas
RAW_P = 0.2          # documents without a chat prompt (model.fill / model.infill without prompt=)


def generation_units(sp, examples, canvas):
    """-> [(encoder ids, canvas ids, free mask)], one per (example, answer canvas)."""
    units = []
    for _, p, a in examples:
        prompt = [sp.bos_id()] + sp.encode(render_prompt(p))
        ans = sp.encode(a + END_OF_TURN)
        for k in range(math.ceil(len(ans) / canvas)):
            target = ans[k * canvas:(k + 1) * canvas]
            units.append((prompt + ans[:k * canvas], target + [sp.pad_id()] * (canvas - len(target)),
                          [True] * canvas))
    return units


def layout(prompt_ids, text_ids, fill_ids, lengths, end_marker, eos, pad, canvas):
    """Encoder ids, canvas and free mask of one document with every hole in the first canvas, or
    None when the holes do not fit (layout would move a hole to a later canvas)."""
    ids, free = [], []
    for k, (fill, n) in enumerate(zip(fill_ids, lengths)):
        after = text_ids[k + 1]
        if len(ids) + n > canvas or (len(ids) + n == canvas and after):
            return None
        hole = fill + [eos] * (n > len(fill))
        ids += hole + [pad] * (n - len(hole))
        free += [True] * n
        ids += after
        free += [False] * len(after)
    if len(ids) < canvas:
        ids.append(end_marker)
        free.append(False)
    ids, free = ids[:canvas], free[:canvas]
    return (prompt_ids + text_ids[0], ids + [pad] * (canvas - len(ids)), free + [False] * (canvas - len(free)))


def hole_lengths(r, fill_ids, fixed_after, canvas):
    """Each hole's length: its text, plus an <eos> and some <pad> (or, EXACT_HOLE_P of the time,
    nothing more). Most of the time the slack is kept small enough that the whole document fits
    the canvas, so the text that fixes a hole is not cut off; TRUNCATE_P of the time it is not
    (a long hole, as dgemma's default of half a canvas makes, pushes the end of the text out)."""
    room = canvas - 1 - fixed_after - sum(len(f) + 1 for f in fill_ids)
    if r.random() < TRUNCATE_P:
        room = MAX_HOLE * len(fill_ids)
    out = []
    for f in fill_ids:
        if r.random() < EXACT_HOLE_P:
            out.append(len(f))
            continue
        extra = r.randint(0, max(0, min(MAX_HOLE - len(f) - 1, room)))
        room -= extra
        out.append(len(f) + 1 + extra)
    return out


def encode_document(sp, prompt, texts, fills):
    """-> (prompt ids, fixed texts' ids, holes' ids, end marker); prompt None: no chat prompt."""
    chat = prompt is not None
    prompt_ids = [sp.bos_id()] + (sp.encode(render_prompt(prompt)) if chat else [])
    end_marker = sp.piece_to_id(END_OF_TURN) if chat else sp.eos_id()
    return prompt_ids, [sp.encode(t) for t in texts], [sp.encode(f) for f in fills], end_marker


def infill_unit(sp, r, prompt, texts, fills, canvas):
    """One infill unit of a document, or None if its holes do not fit."""
    prompt_ids, text_ids, fill_ids, end_marker = encode_document(sp, prompt, texts, fills)
    args, tail = (prompt_ids, text_ids, fill_ids), (end_marker, sp.eos_id(), sp.pad_id(), canvas)
    n = hole_lengths(r, fill_ids, sum(map(len, text_ids[1:])), canvas)
    return layout(*args, n, *tail) or layout(*args, [len(f) + 1 for f in fill_ids], *tail)


def infill_units(sp, documents, word_holes, canvas, seed):
    """Units from infill_tasks documents (the key hole half of the time, else one or two random
    holes) and from one-word holes over tasks.py answers."""
    r = random.Random(seed)
    cases = []
    for d in documents:
        holes = d.holes()
        pick = {d.key} if r.random() < 0.5 else set(r.sample(holes, min(len(holes), r.randint(1, 2))))
        # the prompt never fixes a document's holes, so it may be left out; a task answer needs its prompt
        cases.append((None if r.random() < RAW_P else d.prompt, *d.parts(pick)))
    cases += [(p, texts, fills) for _, p, texts, fills in word_holes]
    units = []
    for prompt, texts, fills in cases:
        u = infill_unit(sp, r, prompt, texts, fills, canvas)
        if u is not None:
            units.append(u)
    return units
