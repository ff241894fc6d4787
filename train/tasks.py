"""Synthetic chat tasks with checkable answers, generated offline and deterministically from a seed.

Each example is (task, prompt, answer). `render_prompt` wraps the prompt in Gemma-4 turn markers and
opens the model turn; the model's answer is followed by END_OF_TURN, which the model learns as EOS.
Split: training uses seeds [0, EVAL_SEED_BASE), held-out evaluation seeds >= EVAL_SEED_BASE, and
training drops any example whose prompt also occurs in the held-out set.
"""
import random

TURN_START, END_OF_TURN = "<|turn>", "<turn|>"
EVAL_SEED_BASE = 10**9
N_HELD_OUT = 1000  # evaluation draws from the first N_HELD_OUT held-out seeds, whose prompts training never sees

WORDS = ("cat dog sun moon tree bird fish red blue green star rain book cup hat box car bus key door "
         "apple pear plum lime milk tea cake egg leaf rock sand snow wind fire lamp bell ring frog owl").split()
NAMES = "Ana Ben Cleo Dan Eva Finn Gus Hana Ivo Jon Kim Leo Mia Ned Oli Pia".split()
CITIES = "Paris Rome Oslo Lima Cairo Tokyo Delhi Quito Seoul Perth".split()
VERBS = "sleeps runs sings jumps swims reads waits eats".split()
COLORS = "red blue green pink gray gold black white".split()
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _items(r, lo, hi):
    pool = r.choice((WORDS, LETTERS, [str(i) for i in range(100)]))
    return [r.choice(pool) for _ in range(r.randint(lo, hi))]


def copy(r):
    xs = _items(r, 2, 9)
    return f"Copy: {' '.join(xs)}", " ".join(xs)


def reverse(r):
    xs = _items(r, 2, 8)
    return f"Reverse: {' '.join(xs)}", " ".join(reversed(xs))


def sort(r):
    xs = [r.randint(0, 99) for _ in range(r.randint(2, 7))]
    return f"Sort: {' '.join(map(str, xs))}", " ".join(map(str, sorted(xs)))


def count(r):
    xs = [r.choice(LETTERS[:5]) for _ in range(r.randint(3, 12))]
    c = r.choice(xs)
    return f"How many {c} in: {' '.join(xs)}", str(xs.count(c))


def count_up(r):  # long answers: spans two canvases of 32 tokens, trains multi-canvas decoding
    a = r.randint(0, 80)
    b = a + r.randint(3, 16)
    return f"Count from {a} to {b}", " ".join(str(i) for i in range(a, b + 1))


def arithmetic(r):
    op = r.choice("+-*")
    a, b = (r.randint(0, 99), r.randint(0, 99)) if op != "*" else (r.randint(0, 12), r.randint(0, 9))
    if op == "-" and b > a:
        a, b = b, a
    return f"What is {a} {op} {b}?", str(eval(f"{a}{op}{b}"))


def lookup(r):
    keys = r.sample(WORDS, r.randint(2, 5))
    vals = [r.randint(0, 99) for _ in keys]
    k = r.randrange(len(keys))
    table = ", ".join(f"{a}={v}" for a, v in zip(keys, vals))
    return f"{table}. What is {keys[k]}?", str(vals[k])


def sentence(r):
    name, age, city = r.choice(NAMES), r.randint(2, 90), r.choice(CITIES)
    if r.random() < 0.5:
        return f"Describe: name={name}, age={age}, city={city}", f"{name} is {age} years old and lives in {city}."
    adj, noun, verb = r.choice(COLORS), r.choice(WORDS), r.choice(VERBS)
    return f"Write a sentence: {adj} {noun}, {verb}", f"The {adj} {noun} {verb}."


def code(r):
    kind, n = r.randrange(3), r.randint(1, 99)
    if kind == 0:
        op, word = r.choice((("+", "plus"), ("-", "minus"), ("*", "times")))
        name = r.choice(("add", "calc", "f", "g", "step")) + r.choice(("", "_" + r.choice(WORDS)))
        return f"Python: function {name}(x) returning x {word} {n}", f"def {name}(x):\n    return x {op} {n}"
    if kind == 1:
        a = r.randint(0, 30)
        return f"Python: print numbers {a} to {a + n}", f"for i in range({a}, {a + n + 1}):\n    print(i)"
    var = r.choice(WORDS)
    return f"Python: set {var} to {n} and print it", f"{var} = {n}\nprint({var})"


TASKS = {f.__name__: f for f in (copy, reverse, sort, count, count_up, arithmetic, lookup, sentence, code)}


def example(seed):
    """-> (task name, prompt, answer), a pure function of the seed."""
    r = random.Random(seed)
    name = r.choice(sorted(TASKS))
    return (name, *TASKS[name](r))


def render_prompt(prompt):
    return f"{TURN_START}user\n{prompt}{END_OF_TURN}\n{TURN_START}model\n"


def eval_set(n):
    return [example(EVAL_SEED_BASE + i) for i in range(n)]


def train_set(n):
    held_out = {p for _, p, _ in eval_set(N_HELD_OUT)}
    return [e for e in (example(i) for i in range(n)) if e[1] not in held_out]


if __name__ == "__main__":
    for i in range(12):
        t, p, a = example(i)
        print(f"[{t}] {render_prompt(p)!r} -> {a + END_OF_TURN!r}")
