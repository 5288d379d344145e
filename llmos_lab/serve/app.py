"""The HTTP routes: OpenAI's completions, chat completions and models, plus classification,
health, readiness and Prometheus metrics, over one :class:`~llmos_lab.kernel.ModelKernel`.

Every refusal is a 4xx in OpenAI's error shape naming the field at fault (``protocol.py``);
work goes through the serving engine (``engine.py``), so requests are scheduler steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import inference
from ..errors import LlmosError, RequestError, UnknownNameError
from ..kernel import Sequence
from ..model_task import ModelTask
from . import protocol as p
from .auth import Access, ApiKey
from .engine import ServingEngine
from .metrics import CONTENT_TYPE, ServeMetrics

CHAT_DEFAULT_TOKENS = 256  # chat's default budget when the request sets none


class _Bridge:
    """Engine notifications (scheduler thread) into an asyncio queue (the server's loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def __call__(self, kind: str, data: Any) -> None:
        # a RuntimeError: the loop is gone (server stopped) and nobody is listening
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, data))


def create_app(kernel, engine: ServingEngine, access: Access, metrics: ServeMetrics,
               max_body: int = p.MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="llmos-lab", version="0.1.0", docs_url=None, redoc_url=None)
    ctx = _Context(kernel, engine, access, metrics, max_body)
    app.state.models = ctx.model_list

    _install_counting_and_errors(app, metrics)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(model: str | None = None):
        return ctx.ready(model)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request):
        ctx.access.authenticate(request.headers.get("authorization"))
        return {"object": "list", "data": ctx.model_list()}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await ctx.generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await ctx.generate(request, chat=True)

    @app.post("/v1/classify")
    async def classify(request: Request):
        return await ctx.classify(request)

    return app


def _install_counting_and_errors(app: FastAPI, metrics: ServeMetrics) -> None:
    """Count every request by route and status; every refusal in OpenAI's error shape."""
    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except RequestError as exc:
            response = _error(exc)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.request_seconds.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return _error(exc)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return _error(RequestError(404, f"no route {request.method} {request.url.path}",
                                   code="not_found"))

    @app.exception_handler(405)
    async def bad_method(request: Request, exc):
        return _error(RequestError(405, f"{request.method} is not allowed on "
                                        f"{request.url.path}", code="method_not_allowed"))


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


class _Context:
    """What the routes share; one per app."""

    def __init__(self, kernel, engine, access, metrics, max_body):
        self.kernel, self.engine, self.access = kernel, engine, access
        self.metrics, self.max_body = metrics, max_body

    # ------------------------------------------------------------------ request basics

    async def body(self, request: Request, model: type) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise RequestError(413, f"the body is {int(length)} bytes, over the limit of "
                               f"{self.max_body}", code="body_too_large")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > self.max_body:
                raise RequestError(413, f"the body is over the limit of {self.max_body} bytes",
                                   code="body_too_large")
        return p.parse_body(bytes(raw), model)

    async def admit(self, request: Request, model_type: type):
        """Authenticate, parse, resolve the model, authorize, rate-limit: (body, key, rec,
        adapter, priority)."""
        key = self.access.authenticate(request.headers.get("authorization"))
        body = await self.body(request, model_type)
        name, _, adapter = body.model.partition(":")
        rec = self.record(name, adapter or None, body.model)
        self.access.authorize(key, body.model)
        self.access.admit(key)
        return body, key, rec, adapter or None, self.priority(body, key)

    def record(self, name: str, adapter: str | None, asked: str):
        try:
            rec = self.kernel.record(name)
        except UnknownNameError:
            raise RequestError(404, f"the model {asked!r} does not exist; loaded: "
                               f"{', '.join(m['id'] for m in self.model_list()) or '(none)'}",
                               param="model", code="model_not_found") from None
        if adapter is not None and adapter not in rec.adapters:
            raise RequestError(404, f"model {name!r} has no adapter {adapter!r}; its adapters: "
                               f"{', '.join(rec.adapters) or '(none)'}", param="model",
                               code="model_not_found")
        return rec

    @staticmethod
    def priority(body, key: ApiKey | None) -> int:
        default = key.priority if key is not None else 1
        if body.priority is None:
            return default
        if key is not None and body.priority > key.priority:
            raise RequestError(403, f"priority {body.priority} is above tenant "
                               f"{key.tenant!r}'s priority {key.priority}", param="priority",
                               type="permission_error")
        return body.priority

    def model_list(self) -> list[dict]:
        table = self.kernel.ps()
        out = []
        for row in table.itertuples():
            for ident in [row.name, *[f"{row.name}:{a}" for a in row.adapters]]:
                out.append({"id": ident, "object": "model", "created": 0,
                            "owned_by": "llmos-lab", "task": row.kind, "state": row.state})
        return out

    def ready(self, model: str | None) -> Response:
        states = {r.name: r.state for r in self.kernel.ps().itertuples()}
        for name in self.engine.loading:
            states[name] = "loading"
        if model is not None:
            base = model.partition(":")[0]
            if base not in states:
                return _error(RequestError(404, f"the model {model!r} does not exist",
                                           param="model", code="model_not_found"))
            wanted = [base]
        else:
            busy = self.engine.state()
            wanted = [m for m, s in busy.items() if s["running"] or s["queued"]]
        ok = all(states.get(m) == "resident" for m in wanted)
        return JSONResponse({"ready": ok, "models": states}, status_code=200 if ok else 503)

    # ------------------------------------------------------------------ generation

    @staticmethod
    def prompt_ids(body, rec, chat: bool) -> list[int]:
        if chat:
            return inference.prompt_ids(rec.tokenizer, messages=[m.plain() for m in body.messages])
        return inference.prompt_ids(rec.tokenizer, body.text())

    def sequence(self, body, rec, chat: bool, adapter: str | None
                 ) -> tuple[Sequence, list[str]]:
        if rec.task is not ModelTask.CAUSAL_LM:
            raise RequestError(400, f"model {rec.name!r} is a {rec.task} model and cannot "
                               f"generate; use /v1/classify", param="model",
                               code="model_not_supported")
        stops = body.stops()
        budget = body.budget()
        ids = self.prompt_ids(body, rec, chat)
        window = rec.max_positions or 2048
        field = "messages" if chat else "prompt"
        if not ids:
            raise RequestError(400, f"{field} is empty", param=field)
        if len(ids) >= window:
            raise RequestError(400, f"the {field} is {len(ids)} tokens, not shorter than the "
                               f"context window of {window} tokens", param=field,
                               code="context_length_exceeded")
        if budget is None:
            budget = min(CHAT_DEFAULT_TOKENS, window - len(ids))
        if len(ids) + budget > window:
            raise RequestError(400, f"max_tokens={budget} plus the {len(ids)} prompt tokens "
                               f"exceed the context window of {window} tokens", param="max_tokens",
                               code="context_length_exceeded")
        tok = rec.tokenizer
        stop_ids = {tok.eos_token_id} if tok.eos_token_id is not None and \
            not body.ignore_eos else set()
        return Sequence(ids, budget, temperature=body.temperature, seed=body.seed,
                        stop_ids=frozenset(stop_ids), adapter=adapter), stops

    async def generate(self, request: Request, chat: bool):
        body, key, rec, adapter, priority = await self.admit(
            request, p.ChatRequest if chat else p.CompletionRequest)
        seq, stops = self.sequence(body, rec, chat, adapter)
        self.metrics.tokens_in.inc(len(seq.prompt))
        self.access.charge(key, len(seq.prompt))
        bridge = _Bridge(asyncio.get_running_loop())
        job = self.engine.generate(rec.name, seq, bridge, priority=priority,
                                   tenant=key.tenant if key else None)
        text = p.TextStream(rec.tokenizer, stops)
        text.prompt_tokens = len(seq.prompt)
        rid = p.new_id("chatcmpl" if chat else "cmpl")
        events = self.events(job, bridge, text, key)
        if body.stream:
            return StreamingResponse(self.sse(events, rid, body, chat, text),
                                     media_type="text/event-stream")
        pieces, reason = [], "stop"
        async for kind, data in events:
            if kind == "text":
                pieces.append(data)
            else:
                reason = data
        used = p.usage(len(seq.prompt), len(text.ids))
        shape = p.chat_body if chat else p.completion_body
        return shape(rid, body.model, "".join(pieces), reason, used)

    async def events(self, job, bridge: _Bridge, text: p.TextStream, key):
        """('text', delta) as text becomes final, then ('end', finish_reason)."""
        finished = False
        try:
            while True:
                kind, data = await bridge.queue.get()
                if kind == "token":
                    delta = text.push(data)
                    if text.stopped:
                        self.engine.cancel(job, "stop")
                    if delta:
                        yield "text", delta
                elif kind == "error":
                    finished = True
                    raise _as_request_error(data)
                else:
                    finished = True
                    tail = text.finish()
                    if tail:
                        yield "text", tail
                    yield "end", "stop" if text.stopped or data == "stop" else "length"
                    return
        finally:
            self.access.charge(key, len(text.ids))
            if not finished:  # the client went away: leave the batch, free the cache
                self.engine.cancel(job)

    async def sse(self, events, rid: str, body, chat: bool, text: p.TextStream):
        first = True
        try:
            async for kind, data in events:
                if kind == "text":
                    yield p.chunk(rid, body.model, chat, data, first=first and chat)
                    first = False
                else:
                    if first and chat:
                        yield p.chunk(rid, body.model, chat, "", first=True)
                    yield p.chunk(rid, body.model, chat, None, reason=data)
            if body.include_usage():
                yield p.chunk(rid, body.model, chat, None,
                              used=p.usage(text.prompt_tokens, len(text.ids)))
        except RequestError as exc:  # headers are gone: the error travels as an event
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            await events.aclose()
        yield p.DONE

    # ------------------------------------------------------------------ classification

    async def classify(self, request: Request):
        body, key, rec, adapter, priority = await self.admit(request, p.ClassifyRequest)
        if rec.task is ModelTask.CAUSAL_LM:
            raise RequestError(400, f"model {rec.name!r} is a causal-lm and does not classify; "
                               f"use /v1/chat/completions", param="model",
                               code="model_not_supported")
        texts = body.texts()
        n_tokens = sum(len(x) for x in rec.tokenizer(texts)["input_ids"])
        self.metrics.tokens_in.inc(n_tokens)
        self.metrics.texts.inc(len(texts))
        self.access.charge(key, n_tokens)
        bridge = _Bridge(asyncio.get_running_loop())
        job = self.engine.classify(rec.name, texts, bridge, adapter=adapter, priority=priority,
                                   tenant=key.tenant if key else None)
        try:
            kind, frame = await bridge.queue.get()
        finally:
            self.engine.cancel(job)
        if kind == "error":
            raise _as_request_error(frame)
        return {"object": "list", "model": body.model, "data": _rows(frame, rec),
                "usage": p.usage(n_tokens)}


def _rows(frame, rec) -> list[dict]:
    if rec.task is ModelTask.TOKEN_CLASSIFICATION:
        return [{"index": i, "tokens": list(r.tokens), "tags": list(r.tags)}
                for i, r in enumerate(frame.itertuples())]
    out = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        probs = {str(label): float(row[f"p_{label}"]) for label in rec.labels}
        out.append({"index": i, "label": str(row["label"]), "score": float(row["score"]),
                    "probabilities": probs})
    return out


def _as_request_error(exc: BaseException) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, UnknownNameError):
        return RequestError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, LlmosError):
        return RequestError(400, str(exc))
    return RequestError(500, f"the server failed: {type(exc).__name__}: {exc}",
                        type="server_error")
