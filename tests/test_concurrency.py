"""The thread-safety contract (dgemma.h, "Threads"): closing a model while another thread
generates, callbacks that call back into the model, n_past read during a prefill, Ctrl-C seen at
every step. Each case runs in a child process, so that a crash or a deadlock fails the test
instead of taking pytest down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import dgemma

HERE = os.path.dirname(os.path.abspath(__file__))
# Never stops early (confidence 0), so one canvas runs all of its many steps: seconds of work.
LONG = "max_new_tokens=64, seed=0, max_denoising_steps=5000, stability_threshold=0, confidence_threshold=0.0"


def child_env() -> dict:
    env = dict(os.environ)
    if os.environ.get("DGEMMA_DEV"):
        env["PYTHONPATH"] = os.path.join(HERE, "..", "python") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    script = "import dgemma, dgemma.generate, threading, time\nMODEL = dgemma.demo_model_path()\n" + textwrap.dedent(code)
    try:
        return subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child hung (a deadlock?) after {timeout} s; stderr: {e.stderr!r}")


def test_close_while_a_stream_runs_waits_and_cancels():
    r = run_child(f"""
        m = dgemma.Model(MODEL, threads=1)
        items, started = [], threading.Event()
        def consume():
            try:
                for item in m.stream([5, 6, 7], drafts=True, {LONG}):
                    items.append(item)
                    started.set()
            except Exception as e:
                items.append(e)
        t = threading.Thread(target=consume)
        t.start()
        started.wait()
        t0 = time.perf_counter()
        m.close()
        waited = time.perf_counter() - t0
        t.join()
        last = items[-1]
        assert isinstance(last, dgemma.generate.Generation) and last.finish_reason == "cancelled", last
        assert waited < 5, waited  # one step, not the whole canvas
        try:
            m.session()
        except dgemma.InvalidArgumentError as e:
            print("refused:", e)
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert "refused: the model is closed" in r.stdout


def test_callbacks_may_call_back_into_the_model():
    r = run_child("""
        m = dgemma.Model(MODEL, threads=1)
        seen = []
        def on_step(step, draft):
            with m.session() as s:       # a new session, a prefill and n_past, from inside the callback
                s.prefill([1, 2, 3])
                seen.append(s.n_past)
            return False
        def on_canvas(tokens):
            seen.append(m.generate([4, 5], max_new_tokens=8, seed=1).finish_reason)
        g = dgemma.generate.run(m, [5, 6, 7], max_new_tokens=64, seed=0, on_step=on_step, on_canvas=on_canvas)
        alone = m.generate([5, 6, 7], max_new_tokens=64, seed=0)
        assert g.tokens == alone.tokens, (g.tokens, alone.tokens)  # the nested passes changed nothing
        assert 3 in seen and set(seen) <= {3, "eos", "length"} and len(set(seen)) == 2, seen
        try:
            dgemma.generate.run(m, [5, 6], max_new_tokens=8, seed=0, on_step=lambda s, d: m.close())
        except dgemma.InvalidArgumentError as e:
            print("refused:", e)
        m.close()
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert "cannot be closed from inside one of its own calls" in r.stdout


def test_n_past_is_read_under_the_lock(workdir):
    from dgemma.convert.random_model import write_random_gguf

    path = workdir / "tiny-8k.gguf"
    if not path.exists():
        write_random_gguf(path, "tiny", "F32", seed=5, max_position_embeddings=8192)
    r = run_child(f"""
        m = dgemma.Model({str(path)!r}, threads=1)
        N = 8000  # 16 encoder chunks of 512: n_past moves between them while the call runs
        seen = set()
        for _ in range(3):
            s = m.session()
            t = threading.Thread(target=s.prefill, args=([7] * N,))
            t.start()
            while t.is_alive():
                seen.add(s.n_past)
            t.join()
            seen.add(s.n_past)
            s.close()
        print(sorted(seen))
        assert seen <= {{0, N}}, sorted(seen)
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_ctrl_c_stops_generate_at_the_next_step():
    # The default handler, also where the test runner was started with SIGINT ignored (a background job).
    script = "import dgemma, signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" \
             "m = dgemma.Model(dgemma.demo_model_path(), threads=1)\n" \
             "print('go', flush=True)\n" \
             f"m.generate([5, 6, 7], {LONG})\n"
    p = subprocess.Popen([sys.executable, "-c", script], env=child_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "go"
        time.sleep(1.0)  # inside the long canvas
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
        assert time.perf_counter() - t0 < 5
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("Ctrl-C was not seen before the canvas ended")
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err
