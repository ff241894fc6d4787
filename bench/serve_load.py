"""Load test of `dgemma serve` on loopback: C concurrent streaming clients for S seconds against
a server with continuous batching (--parallel C), then the same against one sequence at a time
(--parallel 1), in the same run. Every request must complete or get a clear HTTP error.

    python bench/serve_load.py [--clients 64] [--seconds 120] [--max-tokens 64] [-m MODEL]
    python bench/serve_load.py --medium        # 8 clients, the random medium model, token-id prompts

The demo model (or -m MODEL, which needs a tokenizer) gets streaming chat requests with drafts;
--medium writes the random-weight medium model (no tokenizer) to a temporary file and sends
/v1/completions with prompts of token ids (a fixed number of denoising steps: random weights never
stop early on their own). Its prompts never repeat, so its server keeps no prefix cache: the
cache's sessions (megabytes each here) would fill through the whole run and hide a leak among
them; the demo run, whose cache fills in seconds, covers the cache.

Prints one table: requests, errors, requests/s, tokens/s, p50/p99 time to the first canvas (the
first diffusion draft) and to the last token, and the server's resident memory sampled every
half second: before the first request, after the first tenth of the run (the workspaces of the
largest passes allocated by then), at half time, at the end, and the most it reached. Flat memory:
the last three about equal (a leak grows as much from half time to the end as before it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PROMPTS = ["Write a sentence: red car, runs", "Copy: cat dog sun moon", "Count from 27 to 40",
           "Describe: name=Mia, age=31, city=Oslo", "Reverse: t z v j"]
MEDIUM_PROMPT_TOKENS = 64
MEDIUM_STEPS = 8        # denoising steps per canvas (random weights: no early stop)
RSS_EVERY_S = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


class RssSampler(threading.Thread):
    """The server's resident memory every RSS_EVERY_S seconds, with the time of each sample."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stopped = pid, [], threading.Event()

    def run(self):
        while not self.stopped.wait(RSS_EVERY_S):
            self.samples.append((time.perf_counter(), rss_mb(self.pid)))

    def at(self, t: float) -> float:
        """The first sample taken at or after t (the last one if none)."""
        return next((mb for ts, mb in self.samples if ts >= t), self.samples[-1][1])


def request_body(args, i: int) -> tuple[str, dict]:
    if args.medium:
        prompt = [(7 * i + j) % args.n_vocab for j in range(MEDIUM_PROMPT_TOKENS)]
        return "/v1/completions", {"prompt": prompt, "max_tokens": args.max_tokens, "stream": True,
                                   "diffusion": True, "seed": i, "max_denoising_steps": MEDIUM_STEPS,
                                   "stability_threshold": 0, "confidence_threshold": 0.0}
    return "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                    "max_tokens": args.max_tokens, "stream": True, "diffusion": True, "seed": i}


def one_request(port: int, args, i: int) -> dict:
    path, body = request_body(args, i)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return {"error": f"HTTP {r.status}: {json.loads(r.read())['error']['message']}"}
        first = None
        tokens = None
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if first is None and ev.get("diffusion"):
                first = time.perf_counter() - t0
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
        if tokens is None:
            return {"error": "the stream ended without its final chunk"}
        return {"first": first, "last": time.perf_counter() - t0, "tokens": tokens}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def run_mode(args, parallel: int) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "dgemma.cli", "serve", "--port", str(port), "--parallel", str(parallel),
           "--queue", str(args.clients)] + (["-m", args.model] if args.model else []) + \
        (["--prefix-cache", "0"] if args.medium else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = RssSampler(server.pid)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        rss.start()
        rss_start = rss_mb(server.pid)
        one_request(port, args, 0)  # warm-up
        results, lock = [], threading.Lock()
        t0 = time.perf_counter()
        stop_at = t0 + args.seconds

        def client(k):
            i = k
            while time.perf_counter() < stop_at:
                r = one_request(port, args, i)
                with lock:
                    results.append(r)
                i += args.clients

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss_end = rss_mb(server.pid)
    finally:
        rss.stopped.set()
        if rss.is_alive():
            rss.join()
        server.terminate()
        server.wait(timeout=120)
    ok = [r for r in results if "error" not in r]
    errors = sorted({r["error"] for r in results if "error" in r})

    def pct(key, q):
        xs = sorted(r[key] for r in ok if r[key] is not None)
        return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else float("nan")

    return {"parallel": parallel, "requests": len(ok), "errors": len(results) - len(ok), "error_kinds": errors,
            "rps": len(ok) / wall, "tps": sum(r["tokens"] for r in ok) / wall,
            "first": (pct("first", 50), pct("first", 99)), "last": (pct("last", 50), pct("last", 99)),
            "rss": (rss_start, rss.at(t0 + wall / 10), rss.at(t0 + wall / 2), rss_end, max(mb for _, mb in rss.samples + [(0, rss_end)]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=None, help="concurrent clients (64; --medium: 8)")
    ap.add_argument("--seconds", type=float, default=120, help="seconds each mode runs (120)")
    ap.add_argument("--max-tokens", type=int, default=None, help="max_tokens per request (64; --medium: 256)")
    ap.add_argument("-m", "--model", default=None, help="GGUF with a tokenizer (default: the demo model)")
    ap.add_argument("--medium", action="store_true",
                    help="the random-weight medium model (written to a temporary file), token-id prompts")
    args = ap.parse_args()
    if args.medium and args.model:
        ap.error("--medium writes its own model: leave out -m")
    args.clients = args.clients or (8 if args.medium else 64)
    args.max_tokens = args.max_tokens or (256 if args.medium else 64)
    with tempfile.TemporaryDirectory() as tmp:
        if args.medium:
            from dgemma.convert.random_model import PRESETS, write_random_gguf

            args.model = os.path.join(tmp, "medium.gguf")
            write_random_gguf(args.model, "medium", "F32", seed=0)
            args.n_vocab = PRESETS["medium"]["vocab_size"]
        rows = [run_mode(args, args.clients), run_mode(args, 1)]
    what = (f"random medium model, {MEDIUM_PROMPT_TOKENS}-token id prompts, {MEDIUM_STEPS} steps per canvas"
            if args.medium else os.path.basename(args.model) if args.model else "demo model")
    print(f"{args.clients} streaming clients for {args.seconds:g} s each, max_tokens {args.max_tokens}, "
          f"{what}, loopback")
    print("| --parallel | requests | errors | req/s | tokens/s | first canvas p50/p99 (s) | last token p50/p99 (s) "
          "| server RSS (MB): start / 10 % / 50 % / end / max |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['parallel']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | {r['tps']:.1f} | "
              f"{r['first'][0]:.2f} / {r['first'][1]:.2f} | {r['last'][0]:.2f} / {r['last'][1]:.2f} | "
              f"{' / '.join(f'{x:.0f}' for x in r['rss'])} |")
    print(f"continuous batching over one at a time: {rows[0]['tps'] / rows[1]['tps']:.2f}x tokens/s")
    for r in rows:
        for e in r["error_kinds"]:
            print(f"error (--parallel {r['parallel']}): {e}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
