"""Load test of `dgemma serve` on loopback: C concurrent streaming chat clients for S seconds against
a server with continuous batching (--parallel C), then the same against one sequence at a time
(--parallel 1), in the same run. Every request must complete or get a clear HTTP error.

    python bench/serve_load.py [--clients 64] [--seconds 120] [--max-tokens 64] [-m MODEL]

Prints one table: requests, errors, requests/s, tokens/s, p50/p99 time to the first canvas (the
first diffusion draft) and to the last token, and the server's resident memory at the start and end.
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
import threading
import time

PROMPTS = ["Write a sentence: red car, runs", "Copy: cat dog sun moon", "Count from 27 to 40",
           "Describe: name=Mia, age=31, city=Oslo", "Reverse: t z v j"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def one_request(port: int, i: int, max_tokens: int) -> dict:
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                       "max_tokens": max_tokens, "stream": True, "diffusion": True, "seed": i})
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            return {"error": f"HTTP {r.status}: {json.loads(r.read())['error']['message']}"}
        first = None
        tokens = 0
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if first is None and ev.get("diffusion"):
                first = time.perf_counter() - t0
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
        return {"first": first, "last": time.perf_counter() - t0, "tokens": tokens}
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def run_mode(args, parallel: int) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "dgemma.cli", "serve", "--port", str(port), "--parallel", str(parallel),
           "--queue", str(args.clients)] + (["-m", args.model] if args.model else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        one_request(port, 0, args.max_tokens)  # warm-up
        rss0 = rss_mb(server.pid)
        results, lock = [], threading.Lock()
        stop_at = time.perf_counter() + args.seconds

        def client(k):
            i = k
            while time.perf_counter() < stop_at:
                r = one_request(port, i, args.max_tokens)
                with lock:
                    results.append(r)
                i += args.clients

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss1 = rss_mb(server.pid)
    finally:
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
            "rss": (rss0, rss1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("-m", "--model", default=None, help="GGUF with a tokenizer (default: the demo model)")
    args = ap.parse_args()
    rows = [run_mode(args, args.clients), run_mode(args, 1)]
    print(f"{args.clients} streaming clients for {args.seconds:g} s each, max_tokens {args.max_tokens}, "
          f"{os.path.basename(args.model) if args.model else 'demo model'}, loopback")
    print("| --parallel | requests | errors | req/s | tokens/s | first canvas p50/p99 (s) | last token p50/p99 (s) "
          "| server RSS start -> end (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['parallel']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | {r['tps']:.1f} | "
              f"{r['first'][0]:.2f} / {r['first'][1]:.2f} | {r['last'][0]:.2f} / {r['last'][1]:.2f} | "
              f"{r['rss'][0]:.0f} -> {r['rss'][1]:.0f} |")
    print(f"continuous batching over one at a time: {rows[0]['tps'] / rows[1]['tps']:.2f}x tokens/s")
    for r in rows:
        for e in r["error_kinds"]:
            print(f"error (--parallel {r['parallel']}): {e}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
