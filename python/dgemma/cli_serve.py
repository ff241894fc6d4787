"""`dgemma serve`: an OpenAI-compatible HTTP server with continuous batching (the `server` extra:
pip install "dgemma[server]")."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .cli_args import int_in, model_placement, placement_args, positive_int, warn_threads


def register(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser("serve", help="serve the model over OpenAI's HTTP API, with a web page at /")
    s.add_argument("-m", "--model", help="GGUF model file (default: the small demo model in the package)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int_in(1, 65535), default=8080, help="port (default 8080)")
    s.add_argument("--parallel", type=positive_int, default=8,
                   help="sequences decoded together, at most (default 8): the canvases of one decoder pass")
    s.add_argument("--queue", type=int_in(0), default=32,
                   help="requests that may wait beyond --parallel (default 32); past it: HTTP 429")
    s.add_argument("--prefix-cache", type=int_in(0), default=16,
                   help="finished conversations kept so that their next turn prefills only new tokens (16)")
    s.add_argument("--memory-mb", type=int_in(0), default=0,
                   help="MiB for the KV caches of running and cached sequences (0: no limit)")
    s.add_argument("--model-id", default=None, help="the model's name in the API (default: the file's name)")
    s.add_argument("--threads", type=positive_int, default=None, help="threads (default: one per core)")
    placement_args(s)
    s.set_defaults(func=run, parser=s)
    return s


def run(args) -> int:
    try:
        import uvicorn

        from .server_app import create_app
    except ImportError as e:
        print(f"dgemma serve: error: the server needs its extra ({e.name} is missing): "
              f"pip install \"dgemma[server]\"", file=sys.stderr)
        return 1
    from . import demo_model_path
    from .model import Model
    from .server_engine import Engine

    warn_threads(args.threads)
    path = args.model or demo_model_path()
    model_id = args.model_id or os.path.splitext(os.path.basename(path))[0]
    with Model(path, threads=args.threads, **model_placement(args, path, n_batch=args.parallel)) as model:
        engine = Engine(model, parallel=args.parallel, queue=args.queue, prefix_cache=args.prefix_cache,
                        memory_budget=args.memory_mb << 20)
        app = create_app(engine, model_id)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                timeout_graceful_shutdown=60)
        print(f"dgemma serve: {model_id} on http://{args.host}:{args.port}/ (OpenAI API at /v1)", file=sys.stderr,
              flush=True)
        # SIGTERM or Ctrl-C: uvicorn stops accepting and lets the requests in flight finish; then the
        # engine drains (nothing left) and the model closes.
        # uvicorn restores the handler it found and re-raises the signal once drained: a no-op here,
        # so that the engine drains and the process exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        uvicorn.Server(config).run()
        engine.drain(timeout=60)
    return 0
