"""`dgemma serve` through the official `openai` client: a server started here on a free port of
127.0.0.1 with the demo model, stopped by SIGTERM. Chat and completions, with and without streaming,
the diffusion extension, /v1/models, /health, /metrics, errors in OpenAI's shape, the bounded queue
(429), client disconnects and draining on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai", reason="the server tests need the openai client (pip install openai)")
pytest.importorskip("fastapi", reason="the server tests need the server extra (pip install 'dgemma[server]')")

import dgemma

HERE = os.path.dirname(os.path.abspath(__file__))
CHAT = [{"role": "user", "content": "Write a sentence: red car, runs"}]
# Never stops early: each canvas runs all its steps (seconds of work per request).
SLOW = {"max_denoising_steps": 400, "stability_threshold": 0, "confidence_threshold": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *flags: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if os.environ.get("DGEMMA_DEV"):
            env["PYTHONPATH"] = os.path.join(HERE, "..", "python") + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "dgemma.cli", "serve", "--port", str(self.port),
                                      "--threads", "1", *flags], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while True:
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                pytest.fail(f"the server did not start: {self.proc.communicate()}")
            time.sleep(0.2)
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0)

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return r.status, r.read().decode()

    def post_raw(self, path: str, data: bytes):
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail("the server did not exit after SIGTERM")
        return self.proc.returncode


@pytest.fixture(scope="module")
def server():
    s = Server("--parallel", "2", "--queue", "1")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def reference():
    with dgemma.Model(dgemma.demo_model_path(), threads=1) as m:
        yield {"chat": m.generate(CHAT, max_new_tokens=64, seed=0).text,
               "completion": m.generate("Copy: cat dog sun moon", max_new_tokens=32, seed=3).text}


def test_chat_with_and_without_streaming(server, reference):
    r = server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=64, seed=0)
    assert r.choices[0].message.content == reference["chat"] and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0 and r.model == "demo"
    chunks = list(server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=64, seed=0,
                                                        stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reference["chat"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_with_and_without_streaming(server, reference):
    r = server.client.completions.create(model="demo", prompt="Copy: cat dog sun moon", max_tokens=32, seed=3)
    assert r.choices[0].text == reference["completion"]
    chunks = list(server.client.completions.create(model="demo", prompt="Copy: cat dog sun moon", max_tokens=32,
                                                   seed=3, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == reference["completion"]


def test_diffusion_extension_streams_each_steps_canvas(server, reference):
    chunks = list(server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=64, seed=0,
                                                        stream=True, extra_body={"diffusion": True}))
    drafts = [c.model_extra["diffusion"] for c in chunks if (c.model_extra or {}).get("diffusion")]
    assert drafts and [d["step"] for d in drafts][:2] == [1, 2] and all(isinstance(d["draft"], str) for d in drafts)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reference["chat"]


def test_models_health_metrics_and_page(server):
    assert [m.id for m in server.client.models.list().data] == ["demo"]
    status, body = server.get("/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=32, seed=1)
    status, text = server.get("/metrics")
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["dgemma_completion_tokens_total"] > 0 and values["dgemma_steps_total"] > 0
    assert values["dgemma_decoder_passes_total"] > 0 and "dgemma_queue_depth" in values
    assert values['dgemma_requests_total{endpoint="/v1/chat/completions",status="200"}'] >= 1
    status, html = server.get("/")
    assert status == 200 and "<script>" in html and "http" not in html.split("<script>")[1].split("fetch")[0]


@pytest.mark.parametrize("kwargs, status, param", [
    (dict(model="no-such-model"), 404, "model"),
    (dict(max_tokens=-1), 400, "max_tokens"),
    (dict(max_tokens=10**9), 400, "max_tokens"),
    (dict(max_tokens="ten"), 400, "max_tokens"),
    (dict(messages=[{"role": "user", "content": "word " * 3000}]), 400, "messages"),
    (dict(messages="hello"), 400, "messages"),
    (dict(seed=-4), 400, "seed"),
    (dict(stop=[1, 2]), 400, "stop"),
    (dict(extra_body={"t_min": "low"}), 400, "t_min"),
    (dict(extra_body={"t_min": 0.9, "t_max": 0.5}), 400, None),
])
def test_bad_requests_get_openai_errors(server, kwargs, status, param):
    args = dict(model="demo", messages=CHAT, max_tokens=16, seed=0)
    args.update(kwargs)
    with pytest.raises(openai.APIStatusError) as e:
        server.client.chat.completions.create(**args)
    assert e.value.status_code == status
    err = e.value.body if "message" in (e.value.body or {}) else e.value.body["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and err.get("param") == param


def test_bad_json_and_unknown_routes(server):
    status, body = server.post_raw("/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = server.post_raw("/v1/completions", b"[1, 2]")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = server.post_raw("/v1/nothing", b"{}")
    assert status == 404 and "error" in body


def test_queue_limit_429_and_disconnect_cancels(server):
    # --parallel 2 --queue 1: three slow streams fill the server; a fourth request gets 429.
    streams = [server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=256, seed=i,
                                                     stream=True, extra_body=SLOW) for i in range(3)]
    for s in streams[:2]:
        next(iter(s))  # admitted and running
    deadline = time.time() + 20
    while json.loads(server.get("/health")[1])["running_or_queued"] < 3 and time.time() < deadline:
        time.sleep(0.1)
    with pytest.raises(openai.RateLimitError) as e:
        server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=16)
    assert e.value.status_code == 429 and "retry later" in e.value.body["message"]
    for s in streams:  # the clients go away: their sequences leave at the next step
        s.close()
    deadline = time.time() + 20
    while json.loads(server.get("/health")[1])["running_or_queued"] > 0:
        assert time.time() < deadline, "closed streams were not cancelled"
        time.sleep(0.1)
    assert server.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=16, seed=0).choices


def test_sigterm_drains_then_exits():
    s = Server()
    got = {}

    def slow_request():
        r = s.client.chat.completions.create(model="demo", messages=CHAT, max_tokens=32, seed=0,
                                             extra_body={"max_denoising_steps": 150, "stability_threshold": 0,
                                                         "confidence_threshold": 0.0})
        got.update(steps=r.model_extra["diffusion_steps"], text=r.choices[0].message.content)

    t = threading.Thread(target=slow_request)
    t.start()
    while json.loads(s.get("/health")[1])["running_or_queued"] == 0:
        time.sleep(0.05)
    assert s.stop() == 0  # SIGTERM while the request runs
    t.join()
    assert got["steps"] == 150 and got["text"]  # its canvas ran all its steps, not cancelled


@pytest.fixture(scope="module")
def untokenized(tmp_path_factory):
    """A server on a random-weight model whose GGUF has no tokenizer, and the model's path."""
    from dgemma.convert.random_model import write_random_gguf

    path = str(tmp_path_factory.mktemp("random") / "tiny.gguf")
    write_random_gguf(path, "tiny", "F32", seed=0)
    s = Server("-m", path)
    yield s, path
    assert s.stop() == 0


def test_model_without_tokenizer_serves_token_ids(untokenized):
    s, path = untokenized
    prompt, steps = [5, 17, 3, 99, 42], {"max_denoising_steps": 4, "stability_threshold": 0,
                                         "confidence_threshold": 0.0}
    with dgemma.Model(path, threads=1) as m:
        want = m.generate(prompt, max_new_tokens=40, seed=2, **steps).tokens
        C = m.config.canvas_length
    assert len(want) == 40
    r = s.client.completions.create(model="tiny", prompt=prompt, max_tokens=40, seed=2, extra_body=steps)
    assert r.choices[0].text == "" and r.choices[0].model_extra["token_ids"] == want
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"
    chunks = list(s.client.completions.create(model="tiny", prompt=prompt, max_tokens=40, seed=2, stream=True,
                                              extra_body={**steps, "diffusion": True}))
    assert sum((c.choices[0].model_extra.get("token_ids", []) for c in chunks if c.choices), []) == want
    drafts = [c.model_extra["diffusion"] for c in chunks if (c.model_extra or {}).get("diffusion")]
    assert [d["step"] for d in drafts] == [1, 2, 3, 4] * 3 and all(len(d["draft_ids"]) == C for d in drafts)


@pytest.mark.parametrize("path, body, param, says", [
    ("/v1/completions", {"prompt": "hello"}, "prompt", "list of token ids"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}]}, "messages", "no tokenizer"),
    ("/v1/completions", {"prompt": [1, 2, 3], "stop": "\n"}, "stop", "needs a tokenizer"),
])
def test_model_without_tokenizer_refuses_text(untokenized, path, body, param, says):
    status, err = untokenized[0].post_raw(path, json.dumps(body).encode())
    assert status == 400 and err["error"]["param"] == param and says in err["error"]["message"], err


def test_serve_flags_are_usage_errors():
    env = dict(os.environ)
    if os.environ.get("DGEMMA_DEV"):
        env["PYTHONPATH"] = os.path.join(HERE, "..", "python") + os.pathsep + env.get("PYTHONPATH", "")
    for flags, name in ((["--port", "70000"], "--port"), (["--parallel", "0"], "--parallel"),
                        (["--queue", "-1"], "--queue")):
        r = subprocess.run([sys.executable, "-m", "dgemma.cli", "serve", *flags], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and name in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
