"""The HTTP face of the engine: OpenAI's chat and completions endpoints (with and without server-sent
events), /v1/models, /health, /metrics and the page at /. Every bad request gets a 4xx with OpenAI's
error body: {"error": {"message", "type", "param", "code"}}.

A model without a tokenizer is served through /v1/completions with `prompt` as a list of token ids:
each choice (each stream chunk) carries the generated ids as `token_ids` and an empty `text`, and a
diffusion draft comes as `draft_ids`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from .errors import DgemmaError, InvalidArgumentError, OutOfRangeError
from .generate import SAMPLER_FIELDS, _Prompt
from .server_engine import Engine, EngineFull

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _int(body: dict, name: str, lo: int, hi: int | None = None, default=None):
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"'{name}' must be an integer, got {json.dumps(v)}", name)
    if v < lo or (hi is not None and v > hi):
        raise BadRequest(f"'{name}' must be between {lo} and {hi}, got {v}" if hi is not None
                         else f"'{name}' must be at least {lo}, got {v}", name)
    return v


def _sampler(body: dict) -> dict:
    """Sampler parameters as request extensions (the names of Model.generate)."""
    out = {}
    for name in SAMPLER_FIELDS:
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRequest(f"'{name}' must be a number, got {json.dumps(v)}", name)
        out[name] = v
    return out


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise BadRequest("'stop' must be a string or a list of up to 4 strings", "stop")
    return [s for s in stop if s]


def create_app(engine: Engine, model_id: str) -> FastAPI:
    app = FastAPI(title="dgemma", docs_url=None, redoc_url=None, openapi_url=None)
    model = engine.model
    n_ctx, C = model.config.n_ctx, model.config.canvas_length
    tok = engine.tok

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        engine.metrics.count_request(request.url.path, e.status)
        return JSONResponse(error_body(str(e), e.param, e.code), status_code=e.status)

    @app.exception_handler(404)
    async def not_found(request: Request, e):
        return JSONResponse(error_body(f"no route {request.method} {request.url.path}", code="not_found"), 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, e):
        return JSONResponse(error_body(f"{request.method} is not allowed on {request.url.path}"), 405)

    async def read_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        name = body.get("model")
        if name is not None and name != model_id:
            raise BadRequest(f"the model '{name}' does not exist; this server runs '{model_id}'", "model",
                             404, "model_not_found")
        return body

    def options(body: dict, n_prompt: int) -> dict:
        room = (n_ctx - n_prompt) // C * C
        if room <= 0:
            raise BadRequest(f"the prompt has {n_prompt} tokens; the context holds {n_ctx} with at least one "
                             f"canvas of {C} after it", "messages", code="context_length_exceeded")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        n = _int({name: limit}, name, 1, room, default=min(256, room))
        diffusion = body.get("diffusion", False)
        if not isinstance(diffusion, bool):
            raise BadRequest("'diffusion' must be true or false", "diffusion")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be true or false", "stream")
        seed = _int(body, "seed", 0, 2**64 - 1)
        stop = _stop(body)
        if stop and tok is None:
            raise BadRequest("'stop' needs a tokenizer, and this model has none", "stop")
        return dict(max_new_tokens=n, seed=seed, sampler=_sampler(body), stop=stop, drafts=diffusion and stream,
                    stream=stream)

    def parse_prompt(prompt, prompt_param: str):
        try:
            parsed = _Prompt(model, prompt, None)
        except DgemmaError as e:
            raise BadRequest(str(e), prompt_param) from None
        if len(parsed.ids) >= n_ctx:
            raise BadRequest(f"the prompt has {len(parsed.ids)} tokens; the context holds {n_ctx}", prompt_param,
                             code="context_length_exceeded")
        return parsed

    async def submit(parsed, opts: dict):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        try:
            req = engine.submit(parsed.ids, parsed.eos, max_new_tokens=opts["max_new_tokens"], seed=opts["seed"],
                                sampler=opts["sampler"], stop=opts["stop"], drafts=opts["drafts"], loop=loop,
                                events=events)
        except EngineFull as e:
            raise BadRequest(str(e), status=429, code="rate_limit_exceeded") from None
        except (InvalidArgumentError, OutOfRangeError) as e:
            raise BadRequest(str(e)) from None
        return req, events

    async def respond(request: Request, endpoint: str, parsed, opts: dict, chat: bool):
        req, events = await submit(parsed, opts)
        rid, created = uuid.uuid4().hex[:24], int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        prefix = "chatcmpl-" if chat else "cmpl-"
        engine.metrics.count_request(endpoint, 200)

        def usage(f):
            return {"prompt_tokens": f.prompt_tokens, "completion_tokens": len(f.tokens),
                    "total_tokens": f.prompt_tokens + len(f.tokens),
                    "prompt_tokens_details": {"cached_tokens": f.cached_tokens}}

        if not opts["stream"]:
            try:
                while True:
                    try:
                        ev = await asyncio.wait_for(events.get(), timeout=0.5)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            engine.cancel(req)
                        continue
                    if ev[0] == "done":
                        break
            except asyncio.CancelledError:
                engine.cancel(req)
                raise
            f = ev[1]
            choice = {"index": 0, "finish_reason": FINISH[f.finish_reason], "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": f.text}
            elif tok is None:
                choice.update(text="", token_ids=f.tokens)
            else:
                choice["text"] = f.text
            return JSONResponse({"id": prefix + rid, "object": obj, "created": created, "model": model_id,
                                 "choices": [choice], "usage": usage(f), "diffusion_steps": f.steps})

        stop = opts["stop"]
        holdback = max((len(s) for s in stop), default=1) - 1

        def sse(delta: dict | None, text: str | None = None, finish=None, extra=None, ids=None) -> str:
            choice = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = delta or {}
            else:
                choice["text"] = text or ""
            if ids is not None:
                choice["token_ids"] = ids
            payload = {"id": prefix + rid, "object": obj + (".chunk" if chat else ""), "created": created,
                       "model": model_id, "choices": [choice]}
            if extra:
                payload.update(extra)
            return f"data: {json.dumps(payload)}\n\n"

        def piece(text: str) -> str:
            return sse({"content": text}, text)

        async def stream():
            tokens: list[int] = []
            emitted = 0
            done = False
            try:
                if chat:
                    yield sse({"role": "assistant", "content": ""}, "")
                while True:
                    ev = await events.get()
                    if ev[0] == "draft" and tok is None:
                        yield sse({}, "", extra={"diffusion": {"step": ev[1], "draft_ids": ev[2]}})
                    elif ev[0] == "draft":
                        draft = tok.decode(ev[2], skip_special=True)
                        yield sse({}, "", extra={"diffusion": {"step": ev[1], "draft": draft}})
                    elif ev[0] == "canvas" and tok is None:
                        yield sse({}, "", ids=ev[1])
                    elif ev[0] == "canvas":
                        tokens += ev[1]
                        full = tok.decode(tokens, skip_special=True)
                        cuts = [i for i in (full.find(s) for s in stop) if i >= 0]
                        safe = min(cuts) if cuts else max(emitted, len(full) - holdback)
                        if safe > emitted:
                            yield piece(full[emitted:safe])
                            emitted = safe
                    else:
                        f = ev[1]
                        done = True
                        if f.text is not None and len(f.text) > emitted:
                            yield piece(f.text[emitted:])
                        yield sse({}, "", finish=FINISH[f.finish_reason], extra={"usage": usage(f)})
                        yield "data: [DONE]\n\n"
                        return
            finally:
                if not done:  # the client went away: its sequence leaves at the next step
                    engine.cancel(req)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        if tok is None:
            raise BadRequest("this model has no tokenizer, so no chat: send token ids to /v1/completions as "
                             "'prompt'", "messages")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content", ""), str)
                for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects with string content",
                             "messages")
        parsed = parse_prompt(messages, "messages")
        return await respond(request, "/v1/chat/completions", parsed, options(body, len(parsed.ids)), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        ok = isinstance(prompt, str) and prompt or (
            isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt))
        if not ok:
            raise BadRequest("'prompt' must be a non-empty string or a list of token ids", "prompt")
        if isinstance(prompt, str) and tok is None:
            raise BadRequest("this model has no tokenizer: 'prompt' must be a list of token ids", "prompt")
        if isinstance(prompt, list) and not all(0 <= t < model.config.n_vocab for t in prompt):
            raise BadRequest(f"'prompt' holds token ids outside [0, {model.config.n_vocab})", "prompt")
        parsed = parse_prompt(prompt, "prompt")
        return await respond(request, "/v1/completions", parsed, options(body, len(parsed.ids)), chat=False)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "dgemma"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "running_or_queued": engine.outstanding}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.prometheus(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page():
        html = resources.files("dgemma").joinpath("server_page.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{MODEL}}", model_id))

    return app
