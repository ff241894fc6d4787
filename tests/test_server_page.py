"""The page at / in a real headless browser (Debian's chromium), driven here over the DevTools
protocol: it loads from the server alone (no network beyond it), sends a prompt to the demo model,
shows the canvas while it denoises, then the answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from test_server import CHAT, Server, free_port

websockets_sync = pytest.importorskip("websockets.sync.client", reason="the browser test drives chromium with "
                                                                      "the websockets package (pip install websockets)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


# The browser is not ours to instrument: the sanitizer run preloads ASan into the test process, and
# chromium must not inherit it.
BROWSER_ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


class Browser:
    def __init__(self):
        self.profile = tempfile.TemporaryDirectory()
        self.log = tempfile.TemporaryFile()
        # A port picked free may be taken before chromium binds it: a browser that exits is started
        # again on another port, up to three times, within one minute in all.
        deadline = time.time() + 60
        for attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                          "--no-first-run", f"--remote-debugging-port={self.port}",
                                          f"--user-data-dir={self.profile.name}", "about:blank"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
                                         env=BROWSER_ENV, start_new_session=True)
            pages = self._wait_for_page(deadline)
            if pages:
                break
        else:
            self.log.seek(0)
            raise AssertionError("chromium did not start: " + self.log.read().decode(errors="replace")[-2000:])
        self.ws = websockets_sync.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def _wait_for_page(self, deadline: float):
        """The browser's first page target, or None if the browser exited or the deadline passed."""
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
                if pages:
                    return pages
            except OSError:
                pass
            time.sleep(0.2)
        self._stop()
        return None

    def _stop(self):
        """The browser and every process it started (renderer, crash handler: they write into the
        profile after the browser itself has exited, which once failed the profile's removal)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        deadline = time.time() + 10
        while True:  # the group's last members may take a moment to go
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            if time.time() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def close(self):
        self.ws.close()
        self._stop()
        self.profile.cleanup()


def test_page_sends_a_prompt_and_shows_the_canvas_then_the_answer():
    import dgemma

    with dgemma.Model(dgemma.demo_model_path(), threads=1) as m:
        expect = m.generate(CHAT, max_new_tokens=256, seed=0).text
    server = Server()
    try:
        browser = Browser()
    except BaseException:
        server.stop()
        raise
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.base + "/?seed=0")
        deadline = time.time() + 30
        while browser.js("document.readyState") != "complete" or not browser.js("!!document.getElementById('send')"):
            assert time.time() < deadline, "the page did not load"
            time.sleep(0.1)
        browser.js(f"document.getElementById('prompt').value = {json.dumps(CHAT[0]['content'])};"
                   "document.getElementById('form').requestSubmit();")
        deadline = time.time() + 60
        while browser.js("(document.querySelector('#log .assistant') || {dataset: {}}).dataset.done") is None:
            assert time.time() < deadline, "no answer on the page"
            time.sleep(0.02)
        assert browser.js("document.querySelector('#log .assistant').dataset.done") == "1"
        assert browser.js("document.querySelector('#log .assistant').textContent") == "model: " + expect
        # Only the diffusion events write the canvas box: the last step's canvas stays shown.
        assert browser.js("document.getElementById('canvas').textContent")
        assert re.fullmatch(r"done: [1-9]\d* steps, [1-9]\d* tokens", browser.js("document.getElementById('status').textContent"))
    finally:
        browser.close()
        assert server.stop() == 0
