"""The `dgemma` command as a user meets it: on a terminal (a pty), redirected (pipes and files), and
with bad input. The CLI runs in a child process of this interpreter, importing the same package."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

import dgemma
from dgemma.gguf import GGUFFile
from screen import Screen

ROOT = Path(__file__).resolve().parents[1]
DEMO = dgemma.demo_model_path()
SENTENCE = "Write a sentence: red car, runs"  # a prompt of the demo model's 'sentence' task


def cli_env() -> dict:
    env = dict(os.environ)
    package_parent = str(Path(dgemma.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    return env


def run_cli(*args, stdin=subprocess.DEVNULL, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dgemma.cli", *map(str, args)], env=cli_env(), stdin=stdin,
                          capture_output=True, text=True, timeout=300, **kw)


def run_on_terminal(*args) -> tuple[int, str, float]:
    """Runs the CLI with stdout and stderr on one 80x24 pty: (exit code, all it wrote, seconds)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dgemma.cli", *map(str, args)], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            proc.kill()
            raise AssertionError("the CLI did not finish")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    rc = proc.wait(timeout=60)
    os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace"), time.perf_counter() - t0


USER_LINE = "$ dgemma generate ...\r\n"  # what the shell showed before the command ran


# -- 1: the generated text stays on the terminal ----------------------------------------------------
def test_terminal_keeps_the_streamed_text():
    rc, raw, _ = run_on_terminal("generate", SENTENCE, "--seed", "0")
    assert rc == 0, raw
    screen = Screen(USER_LINE + raw)
    assert screen.screen_clears == 0
    lines = screen.text().splitlines()
    assert lines[0] == USER_LINE.strip()
    assert "The red car runs." in lines, screen.text()
    assert re.fullmatch(r"\[\d+ tokens? \+ EOS, .*eos\]", lines[-1]), lines


def test_terminal_progress_shows_while_nothing_is_streamed_and_then_goes():
    # JSON writes nothing until the end: the progress line is drawn, and gone from the final screen.
    rc, raw, _ = run_on_terminal("generate", SENTENCE, "--seed", "0", "--json")
    assert rc == 0
    assert "canvas 1, step 1" in raw
    screen = Screen(raw)
    assert "canvas 1" not in screen.text()
    assert json.loads(screen.text())["text"] == "The red car runs."


# -- 2: the repository reads nothing outside itself -------------------------------------------------
def test_reference_configs_come_from_the_clone(tmp_path):
    # A copy of what the tests read, placed where nothing lies beside it (no build-machine folders beside the clone).
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    (clone / "bench").mkdir()
    shutil.copy(ROOT / "tests" / "reference.py", clone / "tests")
    shutil.copy(ROOT / "bench" / "models.json", clone / "bench")
    r = subprocess.run([sys.executable, "-c", "import reference; print(sorted(reference.shared_config('tiny')))"],
                       cwd=clone / "tests", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "canvas_length" in r.stdout


# -- 3: quantize never replaces its input ---------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_quantize_refuses_to_write_over_its_input(tmp_path, spelling):
    src = tmp_path / "model.gguf"
    shutil.copy(DEMO, src)
    before = src.read_bytes()
    out = {"same": src, "dotted": tmp_path / "." / "sub" / ".." / "model.gguf"}.get(spelling, tmp_path / "alias.gguf")
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        out.symlink_to(src)
    elif spelling == "hardlink":
        os.link(src, out)
    r = run_cli("quantize", src, out, "Q8_0")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "is the input file" in r.stderr, r.stderr
    assert src.read_bytes() == before


# -- 4: finish_reason -------------------------------------------------------------------------------
def test_finish_reason_is_length_when_max_new_tokens_cut_the_text():
    chat = [{"role": "user", "content": "Copy: cat dog sun moon"}]
    with dgemma.Model(DEMO) as m:
        full = m.generate(chat, seed=0)
        assert full.finish_reason == "eos" and len(full.tokens) > 1  # the answer is longer than one token
        cut = m.generate(chat, seed=0, max_new_tokens=1)
    assert cut.tokens == full.tokens[:1]
    assert cut.finish_reason == "length"
    r = run_cli("generate", "-n", "1", "--json", "Copy: cat dog sun moon", "--seed", "0")
    assert json.loads(r.stdout)["finish_reason"] == "length"


# -- 5 and 9: pad is not text; tokens per forward counts what the contract counts ---------------------
def test_padding_is_not_text(monkeypatch, capsys):
    """Padding never becomes text, and a generation of padding only says why. The demo model, fine-tuned
    for infill, writes a few stray tokens for a prompt it does not know instead of padding only, so the
    CLI's no-text path is given such a generation in process."""
    from dgemma.cli import main
    from dgemma.generate import Generation

    with dgemma.Model(DEMO) as m:
        pad = m.tokenizer.pad
        g = m.generate([{"role": "user", "content": "What is the capital of France?"}], seed=0)
    assert pad not in g.tokens
    padding_only = Generation(text="", tokens=[], steps=3, canvases=1, finish_reason="length", prompt_tokens=12,
                              prefill_seconds=0.0, decode_seconds=0.0, sample_seconds=0.0, commit_seconds=0.0,
                              total_seconds=0.0)

    def stream(self, *args, **kwargs):
        yield padding_only

    monkeypatch.setattr(dgemma.Model, "stream", stream)
    assert main(["generate", "What is the capital of France?", "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "(the model produced no text: it produced only padding" in err
    assert err.strip().splitlines()[-1].startswith("[0 tokens,")


def test_tokens_per_forward_counts_the_eos_and_says_so():
    r = run_cli("generate", SENTENCE, "--seed", "0", "--json")
    d = json.loads(r.stdout)
    assert d["finish_reason"] == "eos"
    assert d["generated_tokens"] == len(d["tokens"]) + 1
    assert d["tokens_per_forward"] == pytest.approx(d["generated_tokens"] / d["steps"])
    r = run_cli("generate", SENTENCE, "--seed", "0")
    m = re.fullmatch(r"\[(\d+) tokens \+ EOS, (\d+) steps, ([\d.]+) tokens/forward, .*\]", r.stderr.strip())
    assert m, r.stderr
    assert float(m.group(3)) == pytest.approx((int(m.group(1)) + 1) / int(m.group(2)), abs=0.005)


def test_one_token_is_singular():
    r = run_cli("generate", "-n", "1", "Copy: cat dog sun moon", "--seed", "0")
    assert r.stderr.startswith("[1 token,"), r.stderr


# -- 6: --visual ------------------------------------------------------------------------------------
def test_visual_redirected_writes_the_text_once():
    r = run_cli("generate", SENTENCE, "--seed", "0", "--visual")
    assert r.returncode == 0
    assert r.stdout == "The red car runs.\n"
    assert "\x1b" not in r.stderr and "\r" not in r.stderr


def test_visual_on_a_terminal_draws_in_place_and_keeps_the_text():
    rc, raw, _ = run_on_terminal("generate", "Count from 27 to 40", "--seed", "0", "--visual", "--visual-delay", "0")
    assert rc == 0
    assert "[canvas 1, step 1]" in raw  # frames were drawn ...
    screen = Screen(USER_LINE + raw)
    assert screen.screen_clears == 0  # ... without clearing the screen
    lines = screen.text().splitlines()
    assert lines[0] == USER_LINE.strip()  # the user's command line survives
    answer = json.loads(run_cli("generate", "Count from 27 to 40", "--seed", "0", "--json").stdout)["text"]
    assert len(answer) > 20 and lines[1] == answer  # the answer, once, where the view was
    assert not any("[canvas" in line for line in lines)
    assert lines[-1].startswith("[")


def test_visual_delay_slows_each_frame():
    _, raw_fast, fast = run_on_terminal("generate", SENTENCE, "--seed", "0", "--visual", "--visual-delay", "0")
    frames = raw_fast.count("[canvas ")
    _, raw, slow = run_on_terminal("generate", SENTENCE, "--seed", "0", "--visual", "--visual-delay", "0.5")
    assert raw.count("[canvas ") == frames >= 2
    # The delayed run takes at least its frames' delays (a bound a loaded machine cannot break,
    # unlike a difference of two timings) and longer than the undelayed one.
    assert slow >= 0.5 * frames * 0.9 and slow > fast


def test_visual_delay_must_not_be_negative():
    r = run_cli("generate", "x", "--visual-delay", "-1")
    assert r.returncode == 2 and "--visual-delay" in r.stderr


# -- 7: the file says how it wants prompts --------------------------------------------------------------
def test_demo_model_declares_its_prompt_format():
    with dgemma.Model(DEMO) as m:
        assert m.prompt_format == "chat"


def test_passing_the_demo_model_explicitly_changes_nothing():
    a = run_cli("generate", SENTENCE, "--seed", "0", "--json")
    b = run_cli("generate", "-m", DEMO, SENTENCE, "--seed", "0", "--json")
    assert json.loads(a.stdout)["tokens"] == json.loads(b.stdout)["tokens"]
    assert json.loads(b.stdout)["text"] == "The red car runs."
    raw = run_cli("generate", "-m", DEMO, SENTENCE, "--seed", "0", "--json", "--raw")
    assert json.loads(raw.stdout)["tokens"] != json.loads(b.stdout)["tokens"]


def test_prompt_format_key(tmp_path):
    from gguf_edit import rewrite

    from dgemma.errors import FormatError
    from dgemma.gguf import ValueType

    none, bad = tmp_path / "none.gguf", tmp_path / "bad.gguf"
    rewrite(DEMO, none, kv={"dgemma.prompt_format": (None,)})
    rewrite(DEMO, bad, kv={"dgemma.prompt_format": ("markdown", ValueType.STRING)})
    with dgemma.Model(none) as m:
        assert m.prompt_format == "raw"  # a file that says nothing gets its prompts as given
    with dgemma.Model(bad) as m, pytest.raises(FormatError, match="dgemma.prompt_format"):
        m.prompt_format
    r = run_cli("generate", "-m", bad, "x")
    assert r.returncode == 1 and "dgemma.prompt_format" in r.stderr and "Traceback" not in r.stderr


def test_converter_writes_the_prompt_format(tiny_gguf):
    with GGUFFile(tiny_gguf) as f:
        expected = "chat" if f.kv.get("tokenizer.chat_template") else "raw"
        assert f.kv["dgemma.prompt_format"] == expected


def test_demo_metadata_script_keeps_every_tensor(tmp_path):
    copy = tmp_path / "demo.gguf"
    shutil.copy(DEMO, copy)
    r = subprocess.run([sys.executable, str(ROOT / "train" / "demo_metadata.py"), str(copy)], env=cli_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with GGUFFile(DEMO) as a, GGUFFile(copy) as b:
        assert list(a.tensors) == list(b.tensors)
        for name in a.tensors:
            assert np.array_equal(a.raw(name), b.raw(name)), name
        assert b.kv["dgemma.prompt_format"] == "chat" and b.kv["dgemma.prompt_examples"]


# -- 8: bad numbers are usage errors that name the flag -------------------------------------------------
@pytest.mark.parametrize("args, flag", [
    (["generate", "x", "-n", "99999999999999999999"], "-n"),
    (["generate", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["generate", "x", "--steps", "0"], "--steps"),
    (["generate", "x", "--seed", "-1"], "--seed"),
    (["generate", "x", "--t-min", "nan"], "--t-min"),
    (["generate", "x", "--threads", "0"], "--threads"),
    (["demo", "--prompt-tokens", "-5"], "--prompt-tokens"),
    (["demo", "--steps", "0"], "--steps"),
    (["quantize", "a.gguf", "b.gguf", "Q8_0", "--threads", "-2"], "--threads"),
])
def test_bad_numbers_are_one_line_usage_errors(args, flag):
    r = run_cli(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"argument {flag}:" in r.stderr


def test_max_new_tokens_past_the_context_is_an_error_stating_the_limit():
    with dgemma.Model(DEMO) as m:
        n_ctx, canvas = m.config.n_ctx, m.config.canvas_length
    r = run_cli("generate", "Copy: a b", "-n", n_ctx)
    assert r.returncode == 2
    limit = int(re.search(r"at most (\d+) new tokens", r.stderr).group(1))
    assert 0 < limit < n_ctx and limit % canvas == 0
    assert r.stderr.startswith(f"dgemma generate: error: -n {n_ctx}:")
    ok = run_cli("generate", "Copy: a b", "-n", limit, "--seed", "0", "--steps", "1")
    assert ok.returncode == 0, ok.stderr


def test_core_messages_name_the_flags_typed():
    r = run_cli("generate", "x", "--t-min", "5")
    assert r.returncode == 2
    assert "--t-min" in r.stderr and "--t-max" in r.stderr and "t_min" not in r.stderr


# -- 9 ---------------------------------------------------------------------------------------------------
def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"dgemma {dgemma.__version__}"


def test_tokenize_bos_with_chat_gives_one_bos():
    with dgemma.Model(DEMO) as m:
        bos = m.tokenizer.bos
    r = run_cli("tokenize", "-m", DEMO, "--bos", "--chat", "--json", "hi")
    ids = json.loads(r.stdout)["ids"]
    assert ids[0] == bos and ids.count(bos) == 1
    r = run_cli("tokenize", "-m", DEMO, "--bos", "--json", "hi")
    assert json.loads(r.stdout)["ids"][0] == bos


def test_more_threads_than_cores_warns_once():
    r = run_cli("generate", "Copy: a b", "-n", "1", "--seed", "0", "--threads", (os.cpu_count() or 1) + 1)
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "--threads" in warnings[0]
    r = run_cli("generate", "Copy: a b", "-n", "1", "--seed", "0", "--threads", "1")
    assert "warning" not in r.stderr


def test_prompt_from_a_terminal_stdin_is_announced():
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dgemma.cli", "generate", "--seed", "0"], env=cli_env(),
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    os.write(master, SENTENCE.encode() + b"\n\x04")
    out, err = proc.communicate(timeout=300)
    os.close(master)
    assert "reading the prompt from standard input; end with Ctrl-D" in err
    assert out == "The red car runs.\n"
    piped = run_cli("generate", "--seed", "0", stdin=None, input=SENTENCE + "\n")
    assert "reading the prompt" not in piped.stderr and piped.stdout == "The red car runs.\n"


def test_no_carriage_return_progress_into_a_log_file(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "dgemma.cli", "generate", "Count from 27 to 40", "--seed", "0"],
                           env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f, timeout=300)
    assert r.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    assert len(text.splitlines()) == 1  # the stats line
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "dgemma.cli", "quantize", DEMO, tmp_path / "q8.gguf", "Q8_0"],
                           env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f, timeout=300)
    assert r.returncode == 0
    text = log.read_text()
    assert "\r" not in text and text.startswith("wrote ")


# -- 10 and Also: dgemma info ---------------------------------------------------------------------------
def test_info_describes_the_file():
    r = run_cli("info", DEMO)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    with GGUFFile(DEMO) as f:
        kv = f.kv
        by_type: dict[str, list[int]] = {}
        for t in f.tensors.values():
            by_type.setdefault(t.type_name, []).append(t.nbytes)
    for example in kv["dgemma.prompt_examples"]:
        assert f"\n  {example}\n" in out
    assert "prompt format: chat" in out and "chat template: present" in out
    assert (f"max steps {kv['diffusion.eb_max_steps']}, t_min {kv['diffusion.eb_t_min']:g}, "
            f"t_max {kv['diffusion.eb_t_max']:g}") in out
    for name, sizes in by_type.items():
        assert re.search(rf"\n  {name}\s+{len(sizes)} tensors\s+{sum(sizes) / 1e6:.1f} MB\n", out), out
    assert re.search(rf"memory: {os.path.getsize(DEMO) / 1e6:.1f} MB file.*per session: KV cache at full context", out)


def test_info_memory_counts_the_full_context_cache():
    with dgemma.Model(DEMO) as m:
        c = m.config
        mem = m.memory()
    # by hand for the demo model: 5 sliding layers (2 KV heads x 32, window 63) and 1 full layer (1 x 64)
    assert [(layer.sliding, layer.n_head_kv, layer.head_dim) for layer in c.layers] == [(True, 2, 32)] * 5 + [(False, 1, 64)]
    assert mem["per_session"] == 4 * 2 * (5 * 63 * 2 * 32 + c.n_ctx * 1 * 64)
    assert mem["per_batch"] >= 4 * c.canvas_length * c.n_vocab  # one canvas of logits at least
    out = run_cli("info").stdout
    assert f"KV cache at full context {mem['per_session'] / 1e3:.1f} kB" in out


def test_every_prompt_example_gets_an_answer():
    with dgemma.Model(DEMO) as m:
        examples = m.metadata["dgemma.prompt_examples"]
        for prompt in examples:
            g = m.generate([{"role": "user", "content": prompt}], seed=0)
            assert g.finish_reason == "eos" and g.text.strip(), (prompt, g)
