"""`dgemma chat`: turns after the first reuse the conversation's cached tokens; Ctrl-C stops the
answer, not the program; /reset and /exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STATS = re.compile(r"\[(\d+) tokens, (\d+) steps; prompt (\d+) tokens, (\d+) of them from the previous turns' cache\]")


def chat(*flags: str, **kw) -> subprocess.Popen:
    env = dict(os.environ)
    if os.environ.get("DGEMMA_DEV"):
        env["PYTHONPATH"] = os.path.join(HERE, "..", "python") + os.pathsep + env.get("PYTHONPATH", "")
    # The default SIGINT handler, also where the test runner was started with SIGINT ignored.
    return subprocess.Popen([sys.executable, "-m", "dgemma.cli", "chat", "--threads", "1", *flags], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def test_second_turn_prefills_only_its_new_tokens():
    p = chat("--seed", "0")
    out, err = p.communicate("Write a sentence: red car, runs\nCopy: cat dog sun moon\n/exit\n", timeout=120)
    assert p.returncode == 0, err
    assert out.splitlines()[0] == "The red car runs."
    turns = [tuple(map(int, m.groups())) for m in STATS.finditer(err)]
    assert len(turns) == 2
    (_, _, prompt1, cached1), (_, _, prompt2, cached2) = turns
    answer_tokens = 5  # "The red car runs." in the demo model's vocabulary (README), then its end of turn
    assert cached1 == 0 and cached2 == prompt1 + answer_tokens + 1 and prompt2 > cached2


def test_ctrl_c_stops_the_answer_not_the_program():
    # 20000 steps without an early stop: a canvas far longer than the wait below on any machine.
    p = chat("--steps", "20000", "--stability-threshold", "0", "--confidence-threshold", "0")
    p.stdin.write("Write a sentence: red car, runs\n")
    p.stdin.flush()
    time.sleep(3)  # inside the first canvas
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate("/reset\n/exit\n", timeout=60)
    assert time.perf_counter() - t0 < 10
    assert p.returncode == 0, err
    assert "(stopped)" in err and "(new conversation)" in err.split("(stopped)")[1]
