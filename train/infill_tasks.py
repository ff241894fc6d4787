"""Infill tasks: documents whose holes are fixed by the text AFTER them, plus one-word holes cut from
the answers of tasks.py, generated offline and deterministically from a seed.

A document is a chat prompt and a list of segments (text, may it be a hole?). The prompt never fixes
the hole: the JSON record's id reappears as its ref, the code line's variable is returned by
the next line, the sentence's noun recurs in the next sentence, the list's items are listed again
after it. So plain continuation (the prompt and the text before the hole) can only guess, and the
suffix is what makes the hole exact; `key` is the segment evaluation cuts out.

The same documents, written whole, are plain generation examples (`generation_set`), so the model
also learns to write them and "continuation without the suffix" is a fair baseline.
Split as tasks.py: training seeds [0, EVAL_SEED_BASE), evaluation seeds from EVAL_SEED_BASE on, and
training drops a document whose text is one of the first N_HELD_OUT held-out documents.
"""
import random
from dataclasses import dataclass

from tasks import EVAL_SEED_BASE, N_HELD_OUT, WORDS, NAMES, COLORS

FRUITS = "apple pear plum lime kiwi fig date melon mango peach grape lemon cherry olive".split()
FOODS = "milk tea cake egg bread rice jam salt honey soup corn beans fish cheese".split()
MOODS = "new old big small clean warm cold soft".split()


@dataclass(frozen=True)
class Document:
    task: str
    prompt: str
    segments: tuple  # ((text, may be a hole), ...)
    key: int         # index of the segment evaluation cuts out (fixed by what follows it)

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.segments)

    def holes(self) -> list:
        return [i for i, (_, h) in enumerate(self.segments) if h]

    def parts(self, holes) -> tuple[list, list]:
        """-> (fixed texts, hole texts): texts[0] + fills[0] + texts[1] + ... == self.text."""
        texts, fills, cur = [], [], ""
        for i, (t, _) in enumerate(self.segments):
            if i in holes:
                texts.append(cur)
                fills.append(t)
                cur = ""
            else:
                cur += t
        return texts + [cur], fills


def _doc(task, prompt, segments, key):
    return Document(task, prompt, tuple(segments), key)


def record(r):
    """A JSON record whose `ref` repeats its id: the ref fixes the id; the name is free (any fruit)."""
    i, name = r.randint(100, 999), r.choice(FRUITS)
    sp = r.random() < 0.5  # the space after a colon in the hole or in the fixed text (templates write both)
    value = lambda v: ((" " if sp else "") + v, True)  # noqa: E731
    colon = ":" if sp else ": "
    seg = [('{"id"' + colon, False), value(str(i)), (', "name": "', False), (name, True),
           ('", "ref"' + colon, False), value(str(i)), ("}", False)]
    return _doc("record", f"Write a {r.choice(('fruit', 'shop', 'stock'))} record.", seg, 1)


def code_line(r):
    """def f(x): a line that sets a variable, then `return` of that variable: the return line fixes its name."""
    op, word = r.choice((("+", "plus"), ("-", "minus"), ("*", "times")))
    n, var = r.randint(1, 99), r.choice(WORDS)
    name = r.choice(("add", "calc", "f", "g", "step"))
    seg = [(f"def {name}(x):\n", False), (f"    {var} = x {op} {n}", True), ("\n", False),
           (f"    return {var}", True)]
    return _doc("code_line", f"Python: function {name}(x) returning x {word} {n}, through a variable", seg, 1)


def story(r):
    """Two sentences; the second repeats the first one's colour and thing."""
    name, adj, noun, mood = r.choice(NAMES), r.choice(COLORS), r.choice(WORDS), r.choice(MOODS)
    seg = [(f"{name} has a", False), (f" {adj}", True), (f" {noun}", True), (f". The {adj}", False),
           (f" {noun}", True), (f" is {mood}.", False)]
    return _doc("story", f"Write two sentences about {name}.", seg, 2)


def shopping(r):
    """A list of items, then the same items on one line: the line fixes every item of the list."""
    items = r.sample(FOODS, r.randint(2, 4))
    seg = []
    for k, it in enumerate(items):  # the hole takes the space before the item: the tokenizer attaches it to the word
        seg += [("-" if k == 0 else "\n-", False), (" " + it, True)]
    seg.append(("\nBuy: " + ", ".join(items) + ".", False))
    return _doc("shopping", "Write a shopping list.", seg, 2 * r.randrange(len(items)) + 1)


TASKS = {f.__name__: f for f in (record, code_line, story, shopping)}


def document(seed) -> Document:
    r = random.Random(seed)
    return TASKS[r.choice(sorted(TASKS))](r)


def eval_documents(n=N_HELD_OUT) -> list:
    return [document(EVAL_SEED_BASE + i) for i in range(n)]


def train_documents(n) -> list:
    held_out = {d.text for d in eval_documents()}
    return [d for d in (document(i) for i in range(n)) if d.text not in held_out]


def generation_set(n) -> list:
    """(task, prompt, answer) like tasks.train_set: the documents written whole."""
    return [(d.task, d.prompt, d.text) for d in train_documents(n)]


def word_holes(task_examples, seed) -> list:
    """One-word holes over tasks.py answers, cut as evaluate_infill.py cuts them (a word after the
    first, with the space before it), sometimes two: (task, prompt, fixed texts, hole texts)."""
    r = random.Random(seed)
    out = []
    for task, prompt, answer in task_examples:
        words = answer.split(" ")
        if len(words) < 2:
            continue
        picks = sorted(r.sample(range(1, len(words)), min(len(words) - 1, 1 + (r.random() < 0.25))))
        texts, fills, cur = [], [], words[0]
        for j in range(1, len(words)):
            if j in picks and words[j]:
                texts.append(cur)
                fills.append(" " + words[j])
                cur = ""
            else:
                cur += " " + words[j]
        if fills:
            out.append((task, prompt, texts + [cur], fills))
    return out


if __name__ == "__main__":
    for i in range(8):
        d = document(i)
        print(d.task, repr(d.prompt), d.parts({d.key}))
